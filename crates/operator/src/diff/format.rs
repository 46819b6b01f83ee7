//! Turning outcomes into text and a verdict: noise stripped as `kubectl diff` strips it, then
//! one unified diff per child. Pure, so every shape of output is unit-tested here.

use std::fmt::Write as _;

use secretbundle_controller::reason::Phase;
use serde_json::Value;

use super::Verdict;
use super::plan::{Change, Outcome};

/// Metadata the apiserver maintains, which differs between any two reads and says nothing about
/// what the object asks for.
const NOISE: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// `obj` without status and server-maintained metadata.
pub fn normalize(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for key in NOISE {
                meta.remove(key);
            }
        }
    }
    obj
}

fn yaml(obj: &Value) -> String {
    // Keys come sorted (serde_json maps are ordered), so both sides line up.
    serde_yaml::to_string(&normalize(obj)).unwrap_or_else(|e| format!("# not printable: {e}\n"))
}

/// A unified diff of two texts, three lines of context, `git diff` style headers.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// What to print on stdout and on stderr for one bundle, and its verdict.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub out: String,
    pub err: String,
    pub verdict: Verdict,
}

pub fn outcome(outcome: &Outcome) -> Report {
    let mut r = Report::default();
    match outcome {
        Outcome::Invalid { bundle, message } => {
            r.err = format!("SecretBundle {bundle}: invalid: {message}\n");
            r.verdict = Verdict::Error;
        }
        Outcome::Blocked { bundle, blocked } => {
            let line = format!(
                "SecretBundle {bundle}: {}: {}",
                blocked.reason, blocked.message
            );
            if blocked.reason.phase() == Phase::Stalled {
                r.err = format!("{line}\n");
                r.verdict = Verdict::Error;
            } else {
                r.out = format!("{line}; nothing would be applied or pruned now\n");
            }
        }
        Outcome::Children { bundle, changes } => {
            for c in changes {
                change(&mut r, bundle, c);
            }
        }
    }
    r
}

fn change(r: &mut Report, bundle: &str, change: &Change) {
    let head = format!("SecretBundle {bundle}:");
    // Writing to a String cannot fail.
    let _ = match change {
        Change::Create { key, applied } => writeln!(
            r.out,
            "{head} would create ExternalSecret {key}\n{}",
            unified("", &yaml(applied), "/dev/null", &format!("applied/{key}"))
        ),
        Change::Update {
            key,
            live,
            applied,
            adopted,
        } => {
            let (old, new) = (yaml(live), yaml(applied));
            if old == new {
                return;
            }
            let how = if *adopted { " (adopting it)" } else { "" };
            writeln!(
                r.out,
                "{head} would change ExternalSecret {key}{how}\n{}",
                unified(
                    &old,
                    &new,
                    &format!("live/{key}"),
                    &format!("applied/{key}")
                )
            )
        }
        Change::Prune { key, live } => writeln!(
            r.out,
            "{head} would prune ExternalSecret {key}: no longer in spec.secrets\n{}",
            unified(&yaml(live), "", &format!("live/{key}"), "/dev/null")
        ),
        Change::Conflict { message } => {
            r.verdict = Verdict::Error;
            writeln!(r.err, "{head} Conflict: {message}")
        }
        Change::Rejected { key, message } => {
            r.verdict = Verdict::Error;
            writeln!(r.err, "{head} ApplyFailed: ExternalSecret {key}: {message}")
        }
    };
    if r.verdict == Verdict::Same && !r.out.is_empty() {
        r.verdict = Verdict::Differs;
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
