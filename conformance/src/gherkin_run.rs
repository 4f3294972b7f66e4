//! Loading Gherkin features and running their scenarios: Background steps first, Scenario
//! Outlines expanded once per Examples row, each scenario in a fresh world.

use std::future::Future;
use std::path::{Path, PathBuf};

/// One step, ready to run: its text with outline placeholders filled in.
#[derive(Clone, Debug)]
pub struct Step {
    pub keyword: String,
    pub text: String,
    pub docstring: Option<String>,
    /// Rows of cells; the first row is the header.
    pub table: Option<Vec<Vec<String>>>,
    pub line: usize,
}

/// One runnable scenario (an Outline yields one per Examples row).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub feature: String,
    pub file: PathBuf,
    pub name: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("reading features in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Every `*.feature` file in `dir`, sorted.
pub fn feature_files(dir: &Path) -> Result<Vec<PathBuf>, FeatureError> {
    let read = |source| FeatureError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("feature") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The runnable scenarios of one feature file.
pub fn load(path: &Path) -> Result<Vec<Scenario>, FeatureError> {
    let feature =
        gherkin::Feature::parse_path(path, gherkin::GherkinEnv::default()).map_err(|e| {
            FeatureError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
    let background: Vec<Step> = feature
        .background
        .iter()
        .flat_map(|b| b.steps.iter())
        .map(|s| convert(s, &[]))
        .collect();
    let mut out = Vec::new();
    let scenarios = feature
        .scenarios
        .iter()
        .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()));
    for scenario in scenarios {
        let rows: Vec<Vec<(String, String)>> = examples_rows(scenario);
        if rows.is_empty() {
            let steps = background
                .iter()
                .cloned()
                .chain(scenario.steps.iter().map(|s| convert(s, &[])))
                .collect();
            out.push(Scenario {
                feature: feature.name.clone(),
                file: path.to_path_buf(),
                name: first_line(&scenario.name),
                steps,
            });
            continue;
        }
        for row in rows {
            let label: Vec<String> = row.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let steps = background
                .iter()
                .map(|s| substitute_step(s, &row))
                .chain(scenario.steps.iter().map(|s| convert(s, &row)))
                .collect();
            out.push(Scenario {
                feature: feature.name.clone(),
                file: path.to_path_buf(),
                name: format!("{} [{}]", first_line(&scenario.name), label.join(", ")),
                steps,
            });
        }
    }
    Ok(out)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

fn examples_rows(scenario: &gherkin::Scenario) -> Vec<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for examples in &scenario.examples {
        let Some(table) = &examples.table else {
            continue;
        };
        let Some((header, body)) = table.rows.split_first() else {
            continue;
        };
        for row in body {
            rows.push(
                header
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect::<Vec<_>>(),
            );
        }
    }
    rows
}

/// Replace `<name>` with the row's value, for the row's columns only.
fn substitute(text: &str, row: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in row {
        out = out.replace(&format!("<{k}>"), v);
    }
    out
}

fn substitute_step(step: &Step, row: &[(String, String)]) -> Step {
    Step {
        keyword: step.keyword.clone(),
        text: substitute(&step.text, row),
        docstring: step.docstring.as_deref().map(|d| substitute(d, row)),
        table: step.table.as_ref().map(|t| {
            t.iter()
                .map(|r| r.iter().map(|c| substitute(c, row)).collect())
                .collect()
        }),
        line: step.line,
    }
}

fn convert(step: &gherkin::Step, row: &[(String, String)]) -> Step {
    substitute_step(
        &Step {
            keyword: step.keyword.trim().to_owned(),
            text: step.value.trim().to_owned(),
            docstring: step.docstring.clone(),
            table: step.table.as_ref().map(|t| t.rows.clone()),
            line: step.position.line,
        },
        row,
    )
}

/// Match `text` against `pattern`, where `{}` captures a string up to the next literal
/// (or the end) and `{n}` captures an unsigned integer. Literal text must match exactly.
pub fn capture(pattern: &str, text: &str) -> Option<Vec<String>> {
    let mut caps = Vec::new();
    let mut rest_pat = pattern;
    let mut rest = text;
    loop {
        let next = [rest_pat.find("{}"), rest_pat.find("{n}")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            return (rest == rest_pat).then_some(caps);
        };
        let literal = &rest_pat[..at];
        rest = rest.strip_prefix(literal)?;
        let numeric = rest_pat[at..].starts_with("{n}");
        rest_pat = &rest_pat[at + if numeric { 3 } else { 2 }..];
        if numeric {
            let len = rest.chars().take_while(char::is_ascii_digit).count();
            if len == 0 {
                return None;
            }
            caps.push(rest[..len].to_owned());
            rest = &rest[len..];
        } else {
            // Up to the next literal character of the pattern (or the end of the text).
            let stop = rest_pat.chars().next();
            let len = match stop {
                Some(c) => rest.find(c)?,
                None => rest.len(),
            };
            caps.push(rest[..len].to_owned());
            rest = &rest[len..];
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub error: Option<String>,
}

/// Scenarios run at once: `$PORTICO_CONFORMANCE_JOBS`, default 2 (most of a scenario is
/// waiting on sockets and the controller, so two overlap well on two cores).
pub fn jobs() -> usize {
    std::env::var("PORTICO_CONFORMANCE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|j| *j > 0)
        .unwrap_or(2)
}

/// Run every scenario with `run`, print one line per scenario and a summary, and return
/// the failures.
pub async fn run_all<F, Fut>(label: &str, scenarios: Vec<Scenario>, run: F) -> Vec<Outcome>
where
    F: FnMut(Scenario) -> Fut,
    Fut: Future<Output = Outcome>,
{
    use futures::StreamExt;
    let total = scenarios.len();
    let mut failures = Vec::new();
    let mut outcomes = futures::stream::iter(scenarios)
        .map(run)
        .buffer_unordered(jobs());
    while let Some(outcome) = outcomes.next().await {
        match &outcome.error {
            None => println!(
                "ok    [{label}] {}: {}",
                outcome.scenario.feature, outcome.scenario.name
            ),
            Some(e) => {
                println!(
                    "FAIL  [{label}] {}: {}\n      {}",
                    outcome.scenario.feature,
                    outcome.scenario.name,
                    e.replace('\n', "\n      ")
                );
                failures.push(outcome);
            }
        }
    }
    println!(
        "[{label}] scenarios: {} passed, {} failed",
        total - failures.len(),
        failures.len()
    );
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_strings_and_numbers() {
        assert_eq!(
            capture(
                r#"I send a "{}" request to http://"{}"/"{}""#,
                r#"I send a "GET" request to http://""/"sub-path""#
            ),
            Some(vec!["GET".into(), "".into(), "sub-path".into()])
        );
        assert_eq!(
            capture(
                r#"I send {n} requests to "{}""#,
                r#"I send 100 requests to "http://load-balancing""#
            ),
            Some(vec!["100".into(), "http://load-balancing".into()])
        );
        assert_eq!(
            capture(
                "the response status-code must be {n}",
                "the response status-code must be 404"
            ),
            Some(vec!["404".into()])
        );
        assert_eq!(
            capture(
                "the response status-code must be {n}",
                "the response status-code must be x"
            ),
            None
        );
        assert_eq!(capture(r#"the "{}" service"#, r#"the "a" service!"#), None);
    }

    #[test]
    fn outlines_expand_per_row_and_keep_table_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.feature");
        std::fs::write(
            &path,
            "Feature: F\n\n  Background:\n    Given a new random namespace\n\n  Scenario Outline: S\n    When I send a \"<method>\" request to http://\"<host>\"/\"<path>\"\n    Then the response headers must contain <key> with matching <value>\n      | key  | value |\n      | Date | *     |\n\n    Examples:\n      | method | host | path |\n      | GET    | a    |      |\n      | PUT    |      | r    |\n\n  Scenario: Plain\n    Then the response status-code must be 404\n",
        )
        .unwrap();
        let scenarios = load(&path).unwrap();
        assert_eq!(scenarios.len(), 3);
        assert_eq!(scenarios[0].steps[0].text, "a new random namespace");
        assert_eq!(
            scenarios[0].steps[1].text,
            "I send a \"GET\" request to http://\"a\"/\"\""
        );
        assert_eq!(
            scenarios[1].steps[1].text,
            "I send a \"PUT\" request to http://\"\"/\"r\""
        );
        assert_eq!(
            scenarios[0].steps[2].text,
            "the response headers must contain <key> with matching <value>"
        );
        assert_eq!(
            scenarios[0].steps[2].table.as_ref().unwrap()[1],
            vec!["Date".to_owned(), "*".to_owned()]
        );
        assert_eq!(scenarios[2].steps.len(), 2);
    }
}
