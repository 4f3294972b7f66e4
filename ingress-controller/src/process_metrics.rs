//! The standard `process_*` metrics of Prometheus client libraries, read from `/proc` at
//! each scrape (Linux; elsewhere none are exported).
//!
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds` and `process_threads`, with the meanings the Go and Python
//! clients give them. A value that cannot be read is left out of that scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What one scrape reads about this process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    /// The soft limit on open files; absent when unlimited.
    pub max_fds: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` used here, in their raw units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" from `/proc/<pid>/limits`; `None` when unlimited.
pub fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ProcessStats {
    /// Read this process's figures now.
    #[cfg(target_os = "linux")]
    pub fn read() -> ProcessStats {
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read process figures");
                None
            }
        };
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        let ticks = sysconf(libc::_SC_CLK_TCK).filter(|t| *t > 0);
        let page = sysconf(libc::_SC_PAGESIZE);
        let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            // The count includes the descriptor reading the folder, as other clients'.
            .map(|dir| dir.count() as u64);
        ProcessStats {
            cpu_seconds: stat
                .zip(ticks)
                .map(|(s, t)| (s.utime + s.stime) as f64 / t as f64),
            resident_bytes: stat.zip(page).map(|(s, p)| s.rss_pages.saturating_mul(p)),
            virtual_bytes: stat.map(|s| s.vsize),
            threads: stat.map(|s| s.threads),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot)
                .map(|((s, t), b)| b as f64 + s.starttime as f64 / t as f64),
            open_fds,
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(parse_max_open_files),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> ProcessStats {
        ProcessStats::default()
    }
}

#[cfg(target_os = "linux")]
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a system constant; it has no pointer arguments.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok()
}

/// Encodes [`ProcessStats::read`] at each scrape. Register it in a registry without a
/// prefix: these names are the same in every program.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(v) = stats.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stats.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                stats.max_fds,
            ),
            ("process_threads", "Number of OS threads.", stats.threads),
        ] {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        if let Some(v) = stats.start_time_seconds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as `/proc` shows it unescaped.
        let text = "4242 (ingress (ctl) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 50 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17096 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 150,
                stime: 50,
                threads: 7,
                starttime: 123456,
                vsize: 104857600,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no name at all"), None);
    }

    #[test]
    fn boot_time_and_file_limit() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764990000\nprocesses 9\n"),
            Some(1764990000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            65536                1048576              files     \n";
        assert_eq!(parse_max_open_files(limits), Some(65536));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 1 << 20), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(
            s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap_or(0)),
            "{s:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = s.start_time_seconds.unwrap_or(0.0);
        assert!(start > now - 86_400.0 * 30.0 && start <= now + 2.0, "{s:?}");
        assert!(s.cpu_seconds.is_some(), "{s:?}");
    }
}
