//! The seed document's Heat-shaped `deployments`: the cache's sources they become (as
//! os-collect-config splits them) and the signal each gets after a refresh.

use crate::config::collect::{Signal, SignalStatus, SEED_SOURCE};
use crate::config::refresh::{RefreshError, Step};
use crate::config::runparts::RunPartsError;
use serde_json::Value;

/// The cache's sources for a seed document, in merge order: the document itself, then the
/// `config` mapping of every deployment whose group is `os-apply-config` or
/// `Heat::Ungrouped` (the default), as os-collect-config's `merged_list_from_content` splits
/// Heat's `deployments`, so templates read `{{demo.greeting}}` rather than walking the list.
/// Each is named `deployment-<name>` (characters outside `[A-Za-z0-9_.-]` become `_`).
pub fn sources(data: &Value) -> Vec<(String, Value)> {
    let mut out = vec![(SEED_SOURCE.to_string(), data.clone())];
    let list = data.get("deployments").and_then(Value::as_array);
    for d in list.into_iter().flatten() {
        let (Some(name), Some(config)) = (
            d.get("name").and_then(Value::as_str),
            d.get("config").filter(|c| c.is_object()),
        ) else {
            continue;
        };
        let group = d
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or("Heat::Ungrouped");
        if group != "os-apply-config" && group != "Heat::Ungrouped" {
            continue;
        }
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        out.push((format!("deployment-{safe}"), config.clone()));
    }
    out
}

/// The names in the metadata's `deployments` list (os-collect-config's Heat shape).
pub fn deployment_names(data: &Value) -> Vec<String> {
    data.get("deployments")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The signal for each deployment after a refresh that ended with `result`.
pub fn signals_for(
    data: &Value,
    counter: u64,
    result: &Result<Vec<Step>, RefreshError>,
) -> Vec<Signal> {
    let (status, reason, outputs) = match result {
        Ok(steps) => {
            let mut ran = Vec::new();
            let mut changed = 0;
            for s in steps {
                match s {
                    Step::Phase { scripts, .. } => {
                        ran.extend(scripts.iter().map(|p| p.display().to_string()))
                    }
                    Step::Apply(files) => {
                        changed += files
                            .iter()
                            .filter(|(_, o)| *o != crate::config::apply::Outcome::Unchanged)
                            .count()
                    }
                }
            }
            let stdout = format!("files changed: {changed}\nscripts run: {}\n", ran.join(" "));
            (
                SignalStatus::Complete,
                None,
                outputs(stdout, String::new(), 0),
            )
        }
        Err(RefreshError::Phase {
            phase,
            source:
                RunPartsError::Failed {
                    script,
                    status,
                    output,
                },
        }) => {
            let code = status.code().unwrap_or(-1);
            let reason = format!(
                "{} failed in {phase} ({status}):\n{output}",
                script.display()
            );
            (
                SignalStatus::Failed,
                Some(reason),
                outputs(String::new(), output.clone(), code),
            )
        }
        Err(e) => {
            let msg = crate::config::error_chain(e);
            (
                SignalStatus::Failed,
                Some(msg.clone()),
                outputs(String::new(), msg, 1),
            )
        }
    };
    deployment_names(data)
        .into_iter()
        .map(|deployment| Signal {
            deployment,
            status,
            reason: reason.clone(),
            outputs: outputs.clone(),
            counter,
        })
        .collect()
}

fn outputs(stdout: String, stderr: String, code: i32) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("deploy_stdout".into(), stdout.into());
    m.insert("deploy_stderr".into(), stderr.into());
    m.insert("deploy_status_code".into(), code.into());
    m
}
