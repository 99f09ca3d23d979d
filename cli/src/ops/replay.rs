//! The replay gate: `martix replay` runs stored histories against the workflow code of this
//! build and names, per run, the first step where the code does something else than the run
//! did; `martix workflow export` writes histories to files for it (and for a corpus that CI
//! replays, `workflows/tests/histories/`). A change that would break runs in flight fails
//! here, not in production.

use super::{Conn, client};
use anyhow::{Context, Result, bail};
use martix_sdk::{ListOptions, ReplayError, WorkflowHistory, WorkflowSummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Which runs of a live engine: a type, how recent, how many (the newest first).
#[derive(clap::Args, Debug)]
pub(crate) struct Runs {
    /// Only runs of this workflow type.
    #[arg(long = "type")]
    pub workflow_type: Option<String>,
    /// Only runs started within this long ago (`7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many runs, the most recently started first.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
}

impl Runs {
    async fn list(&self, c: &martix_sdk::Client) -> Result<Vec<WorkflowSummary>> {
        let mut options = ListOptions::new().page_size(self.limit.clamp(1, 1000) as u32);
        if let Some(t) = &self.workflow_type {
            options = options.workflow_type(t.clone());
        }
        if let Some(since) = self.since {
            options = options.started_from(SystemTime::now() - since);
        }
        let mut found = Vec::new();
        loop {
            let page = c.list_workflows(&options).await?;
            found.extend(page.items);
            match page.next_page_token {
                Some(next) if found.len() < self.limit => options = options.page_token(next),
                _ => break,
            }
        }
        found.truncate(self.limit);
        Ok(found)
    }
}

/// `martix workflow export`: one JSON file per run (`<workflow id>.<run id>.json`), what
/// `martix replay --dir` and `Replayer::replay_json` read.
pub(crate) async fn export(c: &martix_sdk::Client, runs: Runs, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut written = 0;
    for w in runs.list(c).await? {
        let history = c
            .run_handle(&w.workflow_id, &w.run_id)
            .export_history()
            .await?;
        let path = to.join(file_name(&w.workflow_id, &w.run_id));
        std::fs::write(&path, serde_json::to_vec_pretty(&history)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    println!("exported {written} histories to {}", to.display());
    Ok(())
}

/// A file name for a run: the workflow id with anything but letters, digits, `-` and `_`
/// replaced, then the run id.
fn file_name(workflow_id: &str, run_id: &str) -> String {
    let id: String = workflow_id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}.{run_id}.json")
}

/// Where `martix replay` reads histories from.
pub(crate) enum Source {
    /// A folder of exported histories (`*.json`).
    Dir(PathBuf),
    /// A live engine.
    Engine(Conn, Runs),
}

/// `martix replay`: every history against this build's workflows; exit status 1 if one
/// does not replay.
pub(crate) async fn replay(source: Source) -> Result<()> {
    let histories: Vec<(String, Result<WorkflowHistory>)> = match source {
        Source::Dir(dir) => read_dir(&dir)?,
        Source::Engine(conn, runs) => {
            let c = client(&conn).await?;
            let mut v = Vec::new();
            for w in runs.list(&c).await? {
                let name = format!("{} {}", w.workflow_id, w.run_id);
                let h = c
                    .run_handle(&w.workflow_id, &w.run_id)
                    .export_history()
                    .await
                    .map_err(anyhow::Error::from);
                v.push((name, h));
            }
            v
        }
    };
    let report = check(&martix_workflows::replayer(), histories);
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "replayed {}: {} as they ran, {} not, {} of a type this build does not run",
        report.total(),
        report.ok,
        report.failed,
        report.skipped
    );
    if report.failed > 0 {
        bail!(
            "{} of {} runs do not replay against this build: the change would break them",
            report.failed,
            report.total()
        );
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<(String, Result<WorkflowHistory>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no exported histories (*.json) in {}", dir.display());
    }
    Ok(files
        .into_iter()
        .map(|p| {
            let h = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))
                .and_then(|text| Ok(WorkflowHistory::from_json(&text)?));
            (p.display().to_string(), h)
        })
        .collect())
}

/// What a replay of many runs found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    /// One line per run that did not replay, or was skipped.
    pub lines: Vec<String>,
}

impl Report {
    fn total(&self) -> usize {
        self.ok + self.failed + self.skipped
    }
}

/// Replays each history; a run of a type `replayer` does not know is skipped, not failed.
pub(crate) fn check(
    replayer: &martix_sdk::Replayer,
    histories: Vec<(String, Result<WorkflowHistory>)>,
) -> Report {
    let mut report = Report::default();
    for (name, history) in histories {
        let history = match history {
            Ok(h) => h,
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!("FAIL {name}: {e:#}"));
                continue;
            }
        };
        match replayer.replay_history(&history) {
            Ok(()) => report.ok += 1,
            Err(ReplayError::UnknownType(t)) => {
                report.skipped += 1;
                report
                    .lines
                    .push(format!("skip {name}: type '{t}' is not in this build"));
            }
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!("FAIL {name}: {e}"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_to_safe_characters() {
        assert_eq!(
            file_name("default/o-1 ä", "01a2"),
            "default_o-1__.01a2.json"
        );
    }
}
