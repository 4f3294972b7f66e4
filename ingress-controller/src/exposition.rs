//! The two text formats `/metrics` speaks, and which one a scraper gets.
//!
//! `prometheus-client` writes OpenMetrics 1.0 only. The Prometheus text format 0.0.4 is
//! derived from it here: counters are named with their `_total` suffix in `# HELP` and
//! `# TYPE`, `# UNIT` and `# EOF` are dropped, and OpenMetrics-only types map to the
//! nearest Prometheus one. Sample lines are the same in both formats.
//!
//! The choice follows the Prometheus client libraries (`expfmt.NegotiateIncludingOpenMetrics`):
//! the `Accept` header's media ranges, highest `q` first (then the one with more
//! parameters, then the client's order), and the first one served wins:
//! `application/openmetrics-text` with no version or version `1.0.0` or `0.0.1` gets
//! OpenMetrics; `text/plain` with no version or version `0.0.4` gets the Prometheus text
//! format. A range with `q=0` is refused, as RFC 9110 says. Anything else (no `Accept`,
//! `*/*`, the protobuf format, an unknown version) gets the Prometheus text format, the
//! format every scraper understands.

use std::fmt::Write as _;

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`, ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format for a request with these `Accept` header values (joined by `,`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut offers: Vec<MediaRange> = accept.split(',').filter_map(MediaRange::parse).collect();
        // Stable: equal ranks keep the client's order.
        offers.sort_by(|a, b| b.q.total_cmp(&a.q).then_with(|| b.params.cmp(&a.params)));
        offers
            .iter()
            .filter(|o| o.q > 0.0)
            .find_map(|o| o.format)
            .unwrap_or(Format::Prometheus)
    }
}

/// One media range of an `Accept` header, reduced to what negotiation needs.
#[derive(Debug)]
struct MediaRange {
    q: f32,
    /// How many parameters other than `q` it names (more is more specific).
    params: usize,
    /// What it asks for, when that is a format served here.
    format: Option<Format>,
}

impl MediaRange {
    fn parse(text: &str) -> Option<MediaRange> {
        let mut parts = text.split(';');
        let media = parts.next()?.trim().to_ascii_lowercase();
        let (ty, subtype) = media.split_once('/')?;
        let (mut q, mut params, mut version) = (1.0f32, 0, None);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            if key.trim().eq_ignore_ascii_case("q") {
                // An unreadable weight makes the range unusable rather than preferred.
                q = value
                    .parse()
                    .ok()
                    .filter(|q: &f32| q.is_finite())
                    .unwrap_or(0.0);
            } else {
                params += 1;
                if key.trim().eq_ignore_ascii_case("version") {
                    version = Some(value.to_owned());
                }
            }
        }
        let version = version.as_deref();
        let format = match (ty.trim(), subtype.trim()) {
            ("application", "openmetrics-text")
                if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
            {
                Some(Format::OpenMetrics)
            }
            ("text", "plain") if matches!(version, None | Some("0.0.4")) => {
                Some(Format::Prometheus)
            }
            _ => None,
        };
        Some(MediaRange { q, params, format })
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics text as `prometheus-client` writes
/// it (no exemplars, no `_created` samples).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE`, which decides the family's name in this format.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (renamed, ty) = match ty {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), ty),
                _ => (name.to_owned(), "untyped"),
            };
            match help.take() {
                Some((help_name, text)) if help_name == name => {
                    let _ = writeln!(out, "# HELP {renamed} {text}");
                }
                other => flush_help(&mut out, other),
            }
            let _ = writeln!(out, "# TYPE {renamed} {ty}");
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, help.take());
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, help);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        let _ = writeln!(out, "# HELP {name} {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_the_format_they_ask_for() {
        use Format::*;
        let cases = [
            (None, Prometheus),
            (Some(""), Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("text/plain; version=0.0.4"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            (Some("application/openmetrics-text; version=1.0.0"), OpenMetrics),
            (Some("Application/OpenMetrics-Text;Version=\"0.0.1\""), OpenMetrics),
            // Prometheus 2.x's scrape header, and 3.x's default.
            (
                Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
                OpenMetrics,
            ),
            // A scraper configured for the classic format first.
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"),
                Prometheus,
            ),
            // Equal weights: the client's order.
            (Some("text/plain, application/openmetrics-text"), Prometheus),
            (Some("application/openmetrics-text, text/plain"), OpenMetrics),
            // Refused, unknown versions and formats not served fall back.
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (Some("application/openmetrics-text;version=2.0.0"), Prometheus),
            (Some("text/plain;version=1.0.0, application/openmetrics-text;q=0.1"), OpenMetrics),
            (
                Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"),
                Prometheus,
            ),
            (Some("application/json"), Prometheus),
            (Some("garbage;;;,,"), Prometheus),
            (Some("application/openmetrics-text;q=abc"), Prometheus),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let om = "# HELP portico_requests Requests answered.\n\
                  # TYPE portico_requests counter\n\
                  portico_requests_total{status=\"200\"} 3\n\
                  # HELP portico_latency_seconds Latency.\n\
                  # TYPE portico_latency_seconds histogram\n\
                  # UNIT portico_latency_seconds seconds\n\
                  portico_latency_seconds_sum 0.5\n\
                  portico_latency_seconds_count 1\n\
                  portico_latency_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP portico_build Build.\n\
                  # TYPE portico_build info\n\
                  portico_build_info{version=\"1\"} 1\n\
                  # HELP x Odd.\n\
                  # TYPE x unknown\n\
                  x 1\n\
                  # EOF\n";
        let want = "# HELP portico_requests_total Requests answered.\n\
                    # TYPE portico_requests_total counter\n\
                    portico_requests_total{status=\"200\"} 3\n\
                    # HELP portico_latency_seconds Latency.\n\
                    # TYPE portico_latency_seconds histogram\n\
                    portico_latency_seconds_sum 0.5\n\
                    portico_latency_seconds_count 1\n\
                    portico_latency_seconds_bucket{le=\"+Inf\"} 1\n\
                    # HELP portico_build_info Build.\n\
                    # TYPE portico_build_info gauge\n\
                    portico_build_info{version=\"1\"} 1\n\
                    # HELP x Odd.\n\
                    # TYPE x untyped\n\
                    x 1\n";
        assert_eq!(to_prometheus_text(om), want);
    }
}
