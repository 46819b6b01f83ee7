//! The move from Helm-made ExternalSecrets to bundles, watched from the API server: real Helm
//! releases of the `vault-secrets` fixture chart, every version of the target Secrets as a watch
//! sees them, and every write to them in the audit log with who made it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use tokio::task::JoinHandle;

use crate::controlplane::{ControlPlane, built, read_audit_log};
use crate::repo_root;

/// The fixture chart: plain ExternalSecrets, values per service, as Layer 15 ships them.
pub fn chart() -> PathBuf {
    repo_root().join("tests/fixtures/charts/vault-secrets")
}

/// The seven Layer 15 releases: service (release `vault-secrets-<service>`, values file, bundle
/// name) and the namespace it is installed into.
pub const RELEASES: [(&str, &str); 7] = [
    ("platform", "ameide"),
    ("argocd", "argocd"),
    ("cert-manager", "cert-manager"),
    ("k8s-dashboard", "kubernetes-dashboard"),
    ("neo4j", "neo4j"),
    ("observability", "monitoring"),
    ("data-plane", "ameide"),
];

pub fn release(service: &str) -> String {
    format!("vault-secrets-{service}")
}

/// The helm CLI (built by `hack/tools.sh`) against one control plane, with its caches and
/// config inside the control plane's directory rather than the user's home.
pub struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    pub fn new(cp: &ControlPlane) -> Result<Self> {
        Ok(Helm {
            bin: built("hack/tools.sh")?.join("helm"),
            kubeconfig: cp.kubeconfig_path()?,
            home: cp.dir().join("helm"),
        })
    }

    /// Runs helm; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()?;
        if !out.status.success() {
            bail!(
                "helm {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// Runs `program args` with `stdin` piped in; the whole output, whatever the exit status.
pub fn run_with_stdin(program: &Path, args: &[&str], stdin: &str) -> Result<Output> {
    pipe(Command::new(program).args(args), stdin)
        .with_context(|| format!("running {}", program.display()))
}

/// Runs `cmd` with `stdin` piped in; the whole output, whatever the exit status.
pub fn pipe(cmd: &mut Command, stdin: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// A Secret by namespace and name.
pub type Key = (String, String);

/// One version of a Secret as the API server served it (values are compared, never printed).
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub uid: String,
    pub resource_version: String,
    pub data: BTreeMap<String, Vec<u8>>,
    pub deleted: bool,
}

impl Version {
    pub fn of(s: &Secret, deleted: bool) -> Self {
        Version {
            uid: s.uid().unwrap_or_default(),
            resource_version: s.resource_version().unwrap_or_default(),
            data: s
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            deleted,
        }
    }
}

/// Every version of the Secrets in some namespaces that a watch delivers, from its first list.
pub struct Recorder {
    seen: Arc<Mutex<Vec<(Key, Version)>>>,
    changed: tokio::sync::watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub fn start(client: &Client, namespaces: BTreeSet<String>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, changed) = tokio::sync::watch::channel(0);
        let log = seen.clone();
        let stream = watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
        );
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let (secret, deleted) = match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (s, false),
                    Ok(watcher::Event::Delete(s)) => (s, true),
                    // A watch error is retried by the watcher; a relist replays every Secret.
                    _ => continue,
                };
                let ns = secret.namespace().unwrap_or_default();
                if !namespaces.contains(&ns) {
                    continue;
                }
                let key = (ns, secret.name_any());
                let mut seen = log.lock().unwrap_or_else(PoisonError::into_inner);
                seen.push((key, Version::of(&secret, deleted)));
                tx.send_replace(seen.len());
            }
        });
        Recorder {
            seen,
            changed,
            task,
        }
    }

    pub fn seen(&self) -> Vec<(Key, Version)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the watch has delivered the version each of `keys` has now on the server,
    /// so nothing written before this call is missing from [`Recorder::seen`].
    pub async fn catch_up(&mut self, client: &Client, keys: &BTreeSet<Key>) -> Result<()> {
        let mut current = BTreeMap::new();
        for (ns, name) in keys {
            let s = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?;
            let rv = s.map(|s| s.resource_version().unwrap_or_default());
            current.insert((ns.clone(), name.clone()), rv);
        }
        let caught_up = |seen: &[(Key, Version)]| {
            current.iter().all(|(key, rv)| match rv {
                Some(rv) => seen
                    .iter()
                    .any(|(k, v)| k == key && &v.resource_version == rv),
                None => seen.iter().any(|(k, v)| k == key && v.deleted),
            })
        };
        let wait = async {
            while !caught_up(&self.seen()) {
                self.changed.changed().await?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .context("the Secret watch did not catch up in 60 s")?
    }
}

/// What a check of the move found.
#[derive(Debug, Default)]
pub struct MoveReport {
    /// Each way a Secret was lost or changed: the move failed when this is not empty.
    pub violations: Vec<String>,
    /// Secrets written again with byte-identical data: (Secret, number of new versions).
    pub identical_rewrites: Vec<(Key, usize)>,
}

/// Checks every version the watch saw against the baseline taken before the move: the same
/// object (UID), never deleted, and the same data, key by key (keys named, values never).
pub fn check_move(baseline: &BTreeMap<Key, Version>, seen: &[(Key, Version)]) -> MoveReport {
    let mut report = MoveReport::default();
    for (key, before) in baseline {
        let (ns, name) = key;
        let mut versions = BTreeSet::new();
        let mut problems = BTreeSet::new();
        for (_, v) in seen.iter().filter(|(k, _)| k == key) {
            if v.deleted {
                problems.insert(format!("Secret {ns}/{name} was deleted"));
            } else if v.uid != before.uid {
                problems.insert(format!(
                    "Secret {ns}/{name} was replaced (UID {} -> {})",
                    before.uid, v.uid
                ));
            } else if v.data != before.data {
                problems.insert(format!(
                    "Secret {ns}/{name} data changed: {}",
                    data_change(&before.data, &v.data)
                ));
            } else if v.resource_version != before.resource_version {
                versions.insert(v.resource_version.clone());
            }
        }
        report.violations.extend(problems);
        if !versions.is_empty() {
            report
                .identical_rewrites
                .push((key.clone(), versions.len()));
        }
    }
    report
}

/// Which keys were removed, added or changed (names only).
fn data_change(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> String {
    let mut parts = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => parts.push(format!("removed {k}")),
            Some(w) if w != v => parts.push(format!("changed {k}")),
            Some(_) => {}
        }
    }
    parts.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("added {k}")),
    );
    parts.join(", ")
}

/// One write to a Secret, from the audit log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretWrite {
    pub user: String,
    /// The client's name: the user agent up to its first `/` (ESO and the tests share a user).
    pub agent: String,
    pub verb: String,
    pub namespace: String,
    pub name: String,
    pub code: i64,
}

/// The size of the audit log now: writes after this offset happened after this call.
pub fn audit_offset(cp: &ControlPlane) -> Result<u64> {
    Ok(std::fs::metadata(cp.audit_log())?.len())
}

/// Every completed write (create, update, patch, delete) to Secrets in `namespaces`, logged
/// after `offset`.
pub fn secret_writes(
    cp: &ControlPlane,
    offset: u64,
    namespaces: &BTreeSet<String>,
) -> Result<Vec<SecretWrite>> {
    let text = read_audit_log(&cp.audit_log(), offset)?;
    let mut writes = Vec::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let s = |p: &str| {
            e.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let verb = s("/verb");
        if s("/stage") != "ResponseComplete"
            || s("/objectRef/resource") != "secrets"
            || !namespaces.contains(&s("/objectRef/namespace"))
            || !matches!(
                verb.as_str(),
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
        {
            continue;
        }
        let agent = s("/userAgent");
        writes.push(SecretWrite {
            user: s("/user/username"),
            agent: agent.split('/').next().unwrap_or_default().to_string(),
            verb,
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: e
                .pointer("/responseStatus/code")
                .and_then(|v| v.as_i64())
                .unwrap_or_default(),
        });
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(uid: &str, rv: &str, data: &[(&str, &str)], deleted: bool) -> Version {
        Version {
            uid: uid.into(),
            resource_version: rv.into(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            deleted,
        }
    }

    #[test]
    fn the_check_catches_every_way_a_secret_is_lost_and_reports_identical_rewrites() {
        let key: Key = ("ns".into(), "s".into());
        let before = v("u1", "1", &[("a", "1"), ("b", "2")], false);
        let baseline = BTreeMap::from([(key.clone(), before.clone())]);
        let clean = check_move(
            &baseline,
            &[
                (key.clone(), before.clone()),
                (key.clone(), v("u1", "5", &[("a", "1"), ("b", "2")], false)),
            ],
        );
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        assert_eq!(clean.identical_rewrites, [(key.clone(), 1)]);
        for (version, expected) in [
            (
                v("u1", "6", &[("a", "1")], false),
                "Secret ns/s data changed: removed b",
            ),
            (
                v("u1", "6", &[("a", "1"), ("b", "3"), ("c", "")], false),
                "Secret ns/s data changed: changed b, added c",
            ),
            (v("u1", "7", &[], true), "Secret ns/s was deleted"),
            (
                v("u2", "8", &[("a", "1"), ("b", "2")], false),
                "Secret ns/s was replaced (UID u1 -> u2)",
            ),
        ] {
            let r = check_move(&baseline, &[(key.clone(), version)]);
            assert_eq!(r.violations, [expected.to_string()]);
        }
    }
}
