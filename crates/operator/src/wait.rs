//! `wait`: block until bundles are Ready, for consumers (a migration Job, a smoke test) that must
//! not start before their credentials exist. Watch-driven: it re-decides on every bundle event.
//!
//! Needs only get/list/watch on secretbundles. Exit codes: 0 done, 1 timed out (each blocking
//! bundle printed), 2 usage or connection error.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client, ResourceExt as _};
use secretbundle_api::SecretBundle;

use crate::cli::WaitArgs;

// Ready reasons read as strings, so a reason added to the controller later is simply "not idle".
const WAITING_FOR_NAMESPACE: &str = "WaitingForNamespace";
const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";
const SUSPENDED: &str = "Suspended";

/// Which bundles must be done.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    Named(Vec<String>),
    /// Every bundle; unless `require_all`, idle ones (see [`evaluate`]) count as done.
    All {
        require_all: bool,
    },
}

/// One bundle and why it is (not) Ready.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub name: String,
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.name, self.reason, self.message)
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub ready: Vec<String>,
    /// Counted as done without being Ready (only with `--all`), and why.
    pub idle: Vec<Line>,
    pub blocking: Vec<Line>,
}

impl Verdict {
    pub fn done(&self) -> bool {
        self.blocking.is_empty()
    }
}

/// What a bundle's status says, trusted only when it describes the current generation.
enum Observed<'a> {
    Ready,
    NotReady(&'a Condition),
    /// No status for the current generation yet: always blocking.
    Unknown(Line),
}

fn observe(b: &SecretBundle) -> Observed<'_> {
    let name = b.name_any();
    let status = b.status.as_ref();
    let Some(ready) = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")) else {
        return Observed::Unknown(Line {
            name,
            reason: "NoStatus".into(),
            message: "the operator has not reported on this bundle yet".into(),
        });
    };
    let observed = ready
        .observed_generation
        .or_else(|| status.and_then(|s| s.observed_generation));
    if observed != b.metadata.generation {
        return Observed::Unknown(Line {
            name,
            reason: "Progressing".into(),
            message: format!(
                "status describes generation {}, the bundle is at generation {} ({}: {})",
                observed.unwrap_or(0),
                b.metadata.generation.unwrap_or(0),
                ready.reason,
                ready.message
            ),
        });
    }
    if ready.status == "True" {
        Observed::Ready
    } else {
        Observed::NotReady(ready)
    }
}

/// Whether a bundle can only become Ready once something absent appears: its namespace is
/// missing, it is suspended, or it waits only on bundles that are idle in this sense.
fn idle<'a>(
    name: &'a str,
    index: &BTreeMap<&'a str, &'a SecretBundle>,
    memo: &mut BTreeMap<&'a str, bool>,
    visiting: &mut BTreeSet<&'a str>,
) -> bool {
    if let Some(&known) = memo.get(name) {
        return known;
    }
    let Some(&bundle) = index.get(name) else {
        return false; // a dependency that does not exist is more likely a typo than idle
    };
    // A cycle is never idle: the controller reports DependencyCycle on one of its members.
    if !visiting.insert(name) {
        return false;
    }
    let result = match observe(bundle) {
        Observed::NotReady(c) if c.reason == WAITING_FOR_NAMESPACE || c.reason == SUSPENDED => true,
        Observed::NotReady(c) if c.reason == WAITING_FOR_DEPENDENCY => {
            let pending: Vec<&str> = bundle
                .spec
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| {
                    !index
                        .get(d)
                        .is_some_and(|b| matches!(observe(b), Observed::Ready))
                })
                .collect();
            // Every dependency Ready: the bundle is about to move on, so it is not idle.
            !pending.is_empty() && pending.iter().all(|d| idle(d, index, memo, visiting))
        }
        _ => false,
    };
    visiting.remove(name);
    memo.insert(name, result);
    result
}

/// Decides, from the bundles as listed, whether the wait is over.
pub fn evaluate(bundles: &[SecretBundle], selection: &Selection) -> Verdict {
    let index: BTreeMap<&str, &SecretBundle> = bundles
        .iter()
        .filter_map(|b| Some((b.metadata.name.as_deref()?, b)))
        .collect();
    let (names, allow_idle): (Vec<&str>, bool) = match selection {
        Selection::Named(names) => (names.iter().map(String::as_str).collect(), false),
        Selection::All { require_all } => (index.keys().copied().collect(), !require_all),
    };
    let mut memo = BTreeMap::new();
    let mut verdict = Verdict::default();
    for name in names.into_iter().collect::<BTreeSet<_>>() {
        let Some(bundle) = index.get(name) else {
            verdict.blocking.push(Line {
                name: name.into(),
                reason: "NotFound".into(),
                message: format!("SecretBundle {name:?} not found"),
            });
            continue;
        };
        match observe(bundle) {
            Observed::Ready => verdict.ready.push(name.into()),
            Observed::Unknown(line) => verdict.blocking.push(line),
            Observed::NotReady(c) => {
                let line = Line {
                    name: name.into(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                };
                if allow_idle && idle(name, &index, &mut memo, &mut BTreeSet::new()) {
                    verdict.idle.push(line);
                } else {
                    verdict.blocking.push(line);
                }
            }
        }
    }
    verdict
}

pub async fn wait(args: WaitArgs) -> ExitCode {
    match watch(args).await {
        Ok(code) => code,
        Err(e) => {
            // The outer context and the root cause: the middle of a kube error chain repeats both.
            match e.chain().len() {
                1 => eprintln!("error: {e}"),
                _ => eprintln!("error: {e}: {}", e.root_cause()),
            }
            ExitCode::from(2)
        }
    }
}

async fn watch(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let selection = if args.all {
        Selection::All {
            require_all: args.require_all,
        }
    } else {
        Selection::Named(args.bundles)
    };
    let deadline = tokio::time::Instant::now() + args.timeout;
    let client = Client::try_default().await.context("loading kubeconfig")?;
    let (store, writer) = reflector::store();
    let stream = watcher(Api::<SecretBundle>::all(client), watcher::Config::default());
    let mut events = reflector(writer, stream).default_backoff().boxed();
    let (mut synced, mut last_waiting, mut verdict) = (false, None, Verdict::default());
    loop {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the SecretBundle watch ended"),
            Err(_) if !synced => bail!("no list of SecretBundles within {:?}", args.timeout),
            Err(_) => {
                eprintln!("timed out after {:?}; blocking:", args.timeout);
                for line in &verdict.blocking {
                    eprintln!("  {line}");
                }
                return Ok(ExitCode::from(1));
            }
        };
        match event {
            // Before the first list, an error is a setup problem (kubeconfig, RBAC, no CRD).
            Err(e) if !synced => return Err(e).context("listing SecretBundles"),
            // Afterwards the watcher retries with backoff; the last verdict stands meanwhile.
            Err(e) => {
                eprintln!("watch error (retrying): {e}");
                continue;
            }
            Ok(watcher::Event::InitDone) => synced = true,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
        }
        if !synced {
            continue;
        }
        let bundles: Vec<SecretBundle> = store.state().iter().map(|b| (**b).clone()).collect();
        verdict = evaluate(&bundles, &selection);
        if verdict.done() {
            report_done(&verdict);
            return Ok(ExitCode::SUCCESS);
        }
        let waiting: Vec<String> = verdict
            .blocking
            .iter()
            .map(|l| format!("{} ({})", l.name, l.reason))
            .collect();
        if last_waiting.as_ref() != Some(&waiting) {
            eprintln!("waiting for: {}", waiting.join(", "));
            last_waiting = Some(waiting);
        }
    }
}

fn report_done(verdict: &Verdict) {
    for line in &verdict.idle {
        println!("counted as done, not Ready: {line}");
    }
    let mut summary = format!("done: {} Ready", verdict.ready.len());
    if !verdict.ready.is_empty() {
        summary += &format!(" ({})", verdict.ready.join(", "));
    }
    if !verdict.idle.is_empty() {
        summary += &format!(", {} counted as done while idle", verdict.idle.len());
    }
    println!("{summary}");
}

#[cfg(test)]
#[path = "wait_tests.rs"]
mod tests;
