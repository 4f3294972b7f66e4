//! Runner for the Gateway API's upstream conformance tests (v1.6.1) against the real
//! binary, over a manifest folder or over the API-server double ([`Mode`]).
//!
//! The upstream tests are Go code against a cluster; their manifests are data
//! (`conformance/base/manifests.yaml` and `conformance/tests/*.yaml`), read from
//! [`gateway_api_dir`]. Each test here names the upstream test (its `ShortName`), its
//! manifests, the features it needs, and either what Portico must do (a check written
//! from reading the Go test) or why it is skipped. Each test runs in a world of its own
//! ([`world::Ctx`]): a fresh folder (or API server), fresh echo backends, a fresh
//! controller.

pub mod exchange;
pub mod grpc_tests;
pub mod http_tests;
pub mod status;
pub mod world;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use world::Ctx;
pub use world::Mode;

/// The upstream version whose tests these are.
pub const GATEWAY_API_VERSION: &str = "v1.6.1";
/// Environment variable naming the upstream `conformance` folder.
pub const DIR_ENV: &str = "PORTICO_GATEWAY_API_DIR";
/// Environment variable that, when set, prints a failing test's checks that held and
/// the controller's log.
pub const LOG_ENV: &str = "PORTICO_GATEWAY_LOG";
/// Environment variable keeping only the tests whose name contains it.
pub const FILTER_ENV: &str = "PORTICO_GATEWAY_TEST";

/// `$PORTICO_GATEWAY_API_DIR`, else `../shared/gateway-api/conformance` beside the
/// repository (for a linked worktree, beside its main checkout).
pub fn gateway_api_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return PathBuf::from(dir);
    }
    crate::suite::beside_repository("../shared/gateway-api/conformance")
}

/// Features the core of a profile requires; any other feature makes a test extended.
pub const CORE_FEATURES: &[&str] = &["Gateway", "HTTPRoute", "ReferenceGrant", "GRPCRoute"];

pub type TestFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
pub type TestFn = for<'a> fn(&'a mut Ctx) -> TestFuture<'a>;

/// What to do with an upstream test.
#[derive(Clone, Copy)]
pub enum Plan {
    /// Run it; it must pass.
    Run(TestFn),
    /// Run it; it is known to fail, for this reason (a pass is reported, so the list
    /// stays honest).
    ExpectFail(TestFn, &'static str),
    /// Do not run it, for this reason.
    Skip(&'static str),
}

/// One upstream test.
#[derive(Clone, Copy)]
pub struct Case {
    /// The upstream `ShortName`.
    pub name: &'static str,
    /// Its manifests, below `conformance/tests/`.
    pub manifests: &'static [&'static str],
    pub features: &'static [&'static str],
    pub plan: Plan,
}

impl Case {
    pub fn is_core(&self) -> bool {
        self.features.iter().all(|f| CORE_FEATURES.contains(f))
    }
}

/// How one test came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Failed as the list says it does.
    ExpectedFail(String),
    /// Listed as failing, but passed.
    UnexpectedPass(&'static str),
    Skip(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::ExpectedFail(_) => "FAIL (expected)",
            Outcome::UnexpectedPass(_) => "PASS (listed as failing)",
            Outcome::Skip(_) => "SKIP",
        }
    }

    /// Whether the cargo test must fail for it.
    pub fn is_problem(&self) -> bool {
        matches!(self, Outcome::Fail(_) | Outcome::UnexpectedPass(_))
    }
}

/// One line of the report.
pub struct TestResult {
    pub case: Case,
    pub profile: &'static str,
    pub mode: Mode,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// Run `cases` of `profile` in `mode` (one at a time: each starts its own controller),
/// printing each result as it comes.
pub async fn run(
    root: &Path,
    profile: &'static str,
    cases: &[Case],
    mode: Mode,
) -> Vec<TestResult> {
    let filter = std::env::var(FILTER_ENV).unwrap_or_default();
    let mut out = Vec::new();
    for case in cases
        .iter()
        .filter(|c| filter.is_empty() || c.name.contains(&filter))
    {
        let start = Instant::now();
        let outcome = match case.plan {
            Plan::Skip(why) => Outcome::Skip(why.to_owned()),
            Plan::Run(f) => match run_one(root, case, f, mode).await {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            },
            Plan::ExpectFail(f, why) => match run_one(root, case, f, mode).await {
                Ok(()) => Outcome::UnexpectedPass(why),
                Err(e) => Outcome::ExpectedFail(format!("{why}\n      measured: {e}")),
            },
        };
        let result = TestResult {
            case: *case,
            profile,
            mode,
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        };
        crate::suite::notice(&line(&result));
        out.push(result);
    }
    out
}

async fn run_one(root: &Path, case: &Case, f: TestFn, mode: Mode) -> Result<(), String> {
    let mut ctx = Ctx::start(root, case.manifests, mode).await?;
    let result = f(&mut ctx).await;
    // What held before the failure, and what the binary said, on request.
    if result.is_err() && std::env::var_os(LOG_ENV).is_some() {
        crate::suite::notice(&ctx.notes.join("\n"));
        crate::suite::notice(&ctx.controller.log());
    }
    result
}

/// `[GATEWAY-HTTP manifest-folder] PASS  HTTPRouteSimpleSameNamespace  (core, 1.2s)`
/// and the reason, if any.
pub fn line(r: &TestResult) -> String {
    let level = if r.case.is_core() { "core" } else { "extended" };
    let mut s = format!(
        "[{} {}] {:<26} {:<58} ({level}, {:.1}s)",
        r.profile,
        r.mode.name(),
        r.outcome.label(),
        r.case.name,
        r.seconds
    );
    let why = match &r.outcome {
        Outcome::Fail(e) | Outcome::ExpectedFail(e) | Outcome::Skip(e) => Some(e.clone()),
        Outcome::UnexpectedPass(why) => Some(format!(
            "passes now: take it off the expected failures (listed because: {why})"
        )),
        Outcome::Pass => None,
    };
    if let Some(why) = why {
        s.push_str(&format!("\n      {why}"));
    }
    s
}

/// Counts per profile part, as an upstream report's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Statistics of the core and the extended tests of `profile` in `results`.
pub fn statistics(results: &[TestResult], profile: &str) -> (Stats, Stats) {
    let (mut core, mut ext) = (Stats::default(), Stats::default());
    for r in results.iter().filter(|r| r.profile == profile) {
        let s = if r.case.is_core() {
            &mut core
        } else {
            &mut ext
        };
        match r.outcome {
            Outcome::Pass | Outcome::UnexpectedPass(_) => s.passed += 1,
            Outcome::Fail(_) | Outcome::ExpectedFail(_) => s.failed += 1,
            Outcome::Skip(_) => s.skipped += 1,
        }
    }
    (core, ext)
}

/// Where to write the report in the upstream `ConformanceReport` format, when set (see
/// [`report_path`]).
pub const REPORT_ENV: &str = "PORTICO_GATEWAY_REPORT";

/// The report of `mode` for `$PORTICO_GATEWAY_REPORT`: that file for the manifest
/// folder, and beside it, named for its mode, for the API server (`report.yaml`,
/// `report.api-server-double.yaml`).
pub fn report_path(base: &Path, mode: Mode) -> PathBuf {
    match mode {
        Mode::Folder => base.to_path_buf(),
        Mode::ApiDouble => {
            let stem = base.file_stem().unwrap_or_default().to_string_lossy();
            let name = match base.extension() {
                Some(ext) => format!("{stem}.{}.{}", mode.name(), ext.to_string_lossy()),
                None => format!("{stem}.{}", mode.name()),
            };
            base.with_file_name(name)
        }
    }
}

/// The results of one mode as an upstream `ConformanceReport` (YAML), its `mode` named:
/// per profile, the core and extended results and statistics, the extended features
/// some passing test needs (supported) and the others (unsupported), and the failed and
/// skipped tests by name.
pub fn report(results: &[TestResult], date: &str, mode: Mode) -> String {
    use serde_json::{json, Value};
    let mut profiles = Vec::new();
    for profile in ["GATEWAY-HTTP", "GATEWAY-GRPC"] {
        let of: Vec<&TestResult> = results.iter().filter(|r| r.profile == profile).collect();
        let (core, ext) = statistics(results, profile);
        let names = |core_part: bool, f: fn(&Outcome) -> bool| -> Vec<&str> {
            of.iter()
                .filter(|r| r.case.is_core() == core_part && f(&r.outcome))
                .map(|r| r.case.name)
                .collect()
        };
        let failed = |o: &Outcome| matches!(o, Outcome::Fail(_) | Outcome::ExpectedFail(_));
        let skipped = |o: &Outcome| matches!(o, Outcome::Skip(_));
        let extended: std::collections::BTreeSet<&str> = of
            .iter()
            .flat_map(|r| r.case.features.iter().copied())
            .filter(|f| !CORE_FEATURES.contains(f))
            .collect();
        // Supported: some test that needs the feature passes (the failing ones are
        // listed with their reasons); a feature only skipped or failing is not.
        let exercised = |f: &&str| {
            of.iter().any(|r| {
                matches!(r.outcome, Outcome::Pass | Outcome::UnexpectedPass(_))
                    && r.case.features.contains(f)
            })
        };
        let supported: Vec<&str> = extended.iter().copied().filter(exercised).collect();
        let unsupported: Vec<&str> = extended.iter().copied().filter(|f| !exercised(f)).collect();
        let part = |stats: Stats, core_part: bool| -> Value {
            let result = if stats.failed > 0 {
                "failure"
            } else if stats.skipped > 0 || stats.passed == 0 {
                "partial"
            } else {
                "success"
            };
            let mut v = json!({
                "result": result,
                "statistics": {"Passed": stats.passed, "Failed": stats.failed, "Skipped": stats.skipped},
            });
            let (f, s) = (names(core_part, failed), names(core_part, skipped));
            if !f.is_empty() {
                v["failedTests"] = json!(f);
            }
            if !s.is_empty() {
                v["skippedTests"] = json!(s);
            }
            v
        };
        let mut extended_part = part(ext, false);
        extended_part["supportedFeatures"] = json!(supported);
        extended_part["unsupportedFeatures"] = json!(unsupported);
        profiles.push(json!({
            "name": profile,
            "core": part(core, true),
            "extended": extended_part,
        }));
    }
    let doc = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ConformanceReport",
        "date": date,
        "gatewayAPIChannel": "standard",
        "gatewayAPIVersion": GATEWAY_API_VERSION,
        "implementation": {
            "organization": "portico",
            "project": "portico",
            "version": env!("CARGO_PKG_VERSION"),
            "contact": [],
        },
        "mode": mode.name(),
        "profiles": profiles,
    });
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &mut Ctx) -> TestFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    fn result(
        name: &'static str,
        features: &'static [&'static str],
        outcome: Outcome,
    ) -> TestResult {
        TestResult {
            case: Case {
                name,
                manifests: &[],
                features,
                plan: Plan::Run(never),
            },
            profile: "GATEWAY-HTTP",
            mode: Mode::Folder,
            outcome,
            seconds: 0.0,
        }
    }

    #[test]
    fn the_report_counts_core_and_extended_apart() {
        let results = [
            result("A", &["Gateway", "HTTPRoute"], Outcome::Pass),
            result(
                "B",
                &["Gateway", "HTTPRoute"],
                Outcome::ExpectedFail("why".into()),
            ),
            result(
                "C",
                &["HTTPRoute", "HTTPRouteMethodMatching"],
                Outcome::Pass,
            ),
            result(
                "D",
                &["HTTPRoute", "HTTPRouteRequestMirror"],
                Outcome::Skip("no".into()),
            ),
        ];
        let (core, ext) = statistics(&results, "GATEWAY-HTTP");
        assert_eq!((core.passed, core.failed, core.skipped), (1, 1, 0));
        assert_eq!((ext.passed, ext.failed, ext.skipped), (1, 0, 1));
        let yaml = report(&results, "2026-01-01T00:00:00Z", Mode::ApiDouble);
        let doc: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["mode"], "api-server-double");
        let http = &doc["profiles"][0];
        assert_eq!(http["core"]["result"], "failure");
        assert_eq!(http["core"]["failedTests"][0], "B");
        assert_eq!(http["extended"]["result"], "partial");
        assert_eq!(
            http["extended"]["supportedFeatures"][0],
            "HTTPRouteMethodMatching"
        );
        assert_eq!(
            http["extended"]["unsupportedFeatures"][0],
            "HTTPRouteRequestMirror"
        );
        assert_eq!(http["extended"]["skippedTests"][0], "D");
    }

    #[test]
    fn each_mode_has_a_report_file_of_its_own() {
        let base = Path::new("/tmp/report.yaml");
        assert_eq!(report_path(base, Mode::Folder), base);
        assert_eq!(
            report_path(base, Mode::ApiDouble),
            Path::new("/tmp/report.api-server-double.yaml")
        );
        assert_eq!(
            report_path(Path::new("out"), Mode::ApiDouble),
            Path::new("out.api-server-double")
        );
    }

    #[test]
    fn a_listed_failure_that_passes_is_a_problem() {
        assert!(Outcome::UnexpectedPass("x").is_problem());
        assert!(Outcome::Fail("x".into()).is_problem());
        assert!(!Outcome::ExpectedFail("x".into()).is_problem());
        assert!(!Outcome::Skip("x".into()).is_problem());
    }
}
