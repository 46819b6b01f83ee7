//! What the benchmark sees of the cluster: when each child ExternalSecret first appeared and
//! each bundle's Ready reason, from watches (children metadata-only, so watching 10,000 of
//! them costs the machine little next to the process being measured).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Seen {
    /// "ns/name" of each child, with when it was first seen.
    pub children: HashMap<String, Instant>,
    /// Each bundle's Ready reason for its current generation ("" without one), and since when.
    pub bundles: HashMap<String, (String, Instant)>,
}

/// Watches children and bundles until dropped.
pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    changed: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Observer {
    /// Starts watching bundles and (if their CRD exists) children.
    pub fn start(client: &Client) -> Self {
        let (tx, changed) = watch::channel(0u64);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut obs = Observer {
            seen,
            changed,
            tasks: Vec::new(),
        };
        obs.tasks.push(tokio::spawn(watch_bundles(
            client.clone(),
            obs.seen.clone(),
            tx.clone(),
        )));
        obs.tasks.push(tokio::spawn(watch_children(
            client.clone(),
            obs.seen.clone(),
            tx,
        )));
        obs
    }

    fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Forgets children (after their CRD, and so they, went away).
    pub fn forget_children(&self) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .children
            .clear();
    }

    /// Waits until `cond` holds, re-checking on every change; fails after `timeout`.
    pub async fn until<T>(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Seen) -> Option<T>,
    ) -> Result<T> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.with(&cond) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("{what}: the watches stopped"),
                Err(_) => bail!("{what}: not reached within {timeout:?}"),
            }
        }
    }

    /// Waits until every child in `keys` ("ns/name") exists; returns when the last appeared.
    pub async fn all_children(&self, keys: &[String], timeout: Duration) -> Result<Instant> {
        let what = format!("{} children", keys.len());
        self.until(&what, timeout, |s| {
            keys.iter()
                .map(|k| s.children.get(k).copied())
                .try_fold(None::<Instant>, |last, t| Some(last.max(Some(t?))))
                .flatten()
        })
        .await
    }

    /// Waits until every bundle in `names` reports `reason`; returns when the last one did.
    pub async fn bundles_reason(
        &self,
        names: &[String],
        reason: &str,
        timeout: Duration,
    ) -> Result<Instant> {
        let what = format!("{} bundles {reason}", names.len());
        self.until(&what, timeout, |s| {
            names
                .iter()
                .map(|n| match s.bundles.get(n) {
                    Some((r, t)) if r == reason => Some(*t),
                    _ => None,
                })
                .try_fold(None::<Instant>, |last, t| Some(last.max(Some(t?))))
                .flatten()
        })
        .await
    }
}

fn ready_reason(b: &SecretBundle) -> String {
    b.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.observed_generation == b.metadata.generation)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn watch_bundles(client: Client, seen: Arc<Mutex<Seen>>, tx: watch::Sender<u64>) {
    let api = Api::<SecretBundle>::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .backoff(quick_backoff())
        .touched_objects()
        .boxed();
    while let Some(ev) = events.next().await {
        let Ok(b) = ev else { continue };
        let now = Instant::now();
        let reason = if b.metadata.deletion_timestamp.is_some() {
            String::new()
        } else {
            ready_reason(&b)
        };
        {
            let mut s = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = s
                .bundles
                .entry(b.name_any())
                .or_insert_with(|| (String::new(), now));
            if entry.0 != reason {
                *entry = (reason, now);
            }
        }
        tx.send_modify(|n| *n += 1);
    }
}

/// Retries a failed watch (e.g. while the ExternalSecret CRD is absent) every 100 ms, so a
/// child is seen within that of its CRD appearing.
fn quick_backoff() -> impl kube::runtime::utils::Backoff {
    backoff::Quick
}

mod backoff {
    use std::time::Duration;

    pub struct Quick;

    impl Iterator for Quick {
        type Item = Duration;
        fn next(&mut self) -> Option<Duration> {
            Some(Duration::from_millis(100))
        }
    }

    impl kube::runtime::utils::Backoff for Quick {
        fn reset(&mut self) {}
    }
}

async fn watch_children(client: Client, seen: Arc<Mutex<Seen>>, tx: watch::Sender<u64>) {
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let wc = watcher::Config::default().labels(BUNDLE_LABEL);
    let mut events = watcher(api, wc).backoff(quick_backoff()).boxed();
    while let Some(ev) = events.next().await {
        let now = Instant::now();
        let mut s = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                s.children.entry(key).or_insert(now);
            }
            _ => continue,
        }
        drop(s);
        tx.send_modify(|n| *n += 1);
    }
}
