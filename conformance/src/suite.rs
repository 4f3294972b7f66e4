//! Running a folder of features against the real binary, and where the folders are.

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;
use crate::gherkin_run::{feature_files, load, run_all, Scenario};
use crate::harness::{binary_path, workspace_root};
use crate::world::run_scenario;

/// Environment variable naming the upstream conformance features folder.
pub const FEATURES_ENV: &str = "PORTICO_CONFORMANCE_FEATURES";

/// `$PORTICO_CONFORMANCE_FEATURES`, else `../shared/conformance/features` beside the
/// repository root (for a linked git worktree, beside its main checkout).
pub fn upstream_features_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(FEATURES_ENV) {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    let beside = |repo: &Path| repo.join("../shared/conformance/features");
    if !beside(&root).is_dir() {
        if let Some(main) = main_checkout(&root) {
            if beside(&main).is_dir() {
                return beside(&main);
            }
        }
    }
    beside(&root)
}

/// `relative` to the repository root, or to the main checkout's when only that exists
/// (a linked git worktree shares the main checkout's neighbours).
pub fn beside_repository(relative: &str) -> PathBuf {
    let root = workspace_root();
    let beside = |repo: &Path| repo.join(relative);
    if !beside(&root).exists() {
        if let Some(main) = main_checkout(&root) {
            if beside(&main).exists() {
                return beside(&main);
            }
        }
    }
    beside(&root)
}

/// The main checkout of a linked worktree, whose `.git` file reads
/// `gitdir: <main>/.git/worktrees/<name>`.
fn main_checkout(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(root.join(".git")).ok()?;
    let gitdir = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    // <main>/.git/worktrees/<name> -> <main>
    Some(gitdir.parent()?.parent()?.parent()?.to_path_buf())
}

/// Print past the test harness's output capture, so a skip is visible in every run.
pub fn notice(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Portico's own scenarios, kept in this crate.
pub fn own_features_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("features")
}

/// Every scenario of every feature in `dir`; `filter` (from `PORTICO_SCENARIO`) keeps the
/// scenarios whose feature or name contains it.
pub fn scenarios(dir: &Path) -> Result<Vec<Scenario>, String> {
    let filter = std::env::var("PORTICO_SCENARIO").unwrap_or_default();
    let mut out = Vec::new();
    for file in feature_files(dir).map_err(|e| e.to_string())? {
        out.extend(load(&file).map_err(|e| e.to_string())?);
    }
    out.retain(|s| filter.is_empty() || s.name.contains(&filter) || s.feature.contains(&filter));
    Ok(out)
}

/// Run `scenarios`, each on a fresh cluster from `make`; panic listing the failures.
pub async fn run<C, F, Fut>(label: &str, scenarios: Vec<Scenario>, make: F)
where
    C: Cluster,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<C, String>>,
{
    if let Err(e) = binary_path() {
        panic!("{e}");
    }
    assert!(!scenarios.is_empty(), "[{label}] no scenarios to run");
    let failures = run_all(label, scenarios, |s| {
        let cluster = make();
        async move { run_scenario(cluster.await, s).await }
    })
    .await;
    if !failures.is_empty() {
        let names: Vec<String> = failures
            .iter()
            .map(|f| format!("{}: {}", f.scenario.feature, f.scenario.name))
            .collect();
        panic!(
            "[{label}] {} scenario(s) failed:\n  {}",
            failures.len(),
            names.join("\n  ")
        );
    }
}
