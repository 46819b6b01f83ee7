//! The writer against a scripted API server, in paused time: every order in which its own
//! patch's answer, the watch event of that patch and a newer report can arrive.

use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc::UnboundedReceiver;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::*;
use crate::mock_api::{self, Exchange};

fn bundle(rv: u64, labels: Value) -> SecretBundle {
    serde_json::from_value(json!({
        "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
        "metadata": {"name": "b", "uid": "u1", "generation": 1, "resourceVersion": rv.to_string(),
                     "labels": labels},
        "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "vault"},
                 "secrets": [{"name": "s", "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]}]},
    }))
    .expect("bundle")
}

fn report(reason: Reason) -> Report {
    Report {
        reason,
        message: format!("{reason}"),
        eso_version: None,
        secrets: vec![],
        last_handled_refresh: None,
    }
}

struct Api {
    writer: Arc<StatusWriter>,
    cache: Writer<SecretBundle>,
    store: Store<SecretBundle>,
    requests: UnboundedReceiver<Exchange>,
    registry: Registry,
    /// The apiserver's copy of the bundle.
    server: SecretBundle,
    _run: crate::task::AbortOnDrop,
}

impl Api {
    fn start(shard: Option<&str>) -> Self {
        let (client, requests) = mock_api::pair();
        let (store, cache) = reflector::store();
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let shard = shard.map(|s| crate::shard::parse(s).expect("selector"));
        let writer = StatusWriter::new(client, store.clone(), recorder, metrics, shard);
        let run = crate::task::AbortOnDrop(tokio::spawn(writer.clone().run()));
        let mut api = Api {
            writer,
            cache,
            store,
            requests,
            registry,
            server: bundle(1, json!({})),
            _run: run,
        };
        api.watch_event();
        api
    }

    /// The watch delivers the apiserver's copy to the bundle cache.
    fn watch_event(&mut self) {
        self.cache
            .apply_watcher_event(&watcher::Event::Apply(self.server.clone()));
    }

    /// A reconcile concludes `reason`, reading the bundle from the cache as reconciles do.
    fn report(&self, reason: Reason) {
        let cached = self.store.get(&ObjectRef::new("b")).expect("cached");
        self.writer.submit(&cached, report(reason));
    }

    /// The next request other than an event (answered as created).
    async fn next(&mut self) -> Option<Exchange> {
        loop {
            let ex = tokio::time::timeout(Duration::from_secs(60), self.requests.next())
                .await
                .ok()??;
            if ex.path().contains("/events") {
                let body = ex.body.clone();
                ex.json(201, &body);
                continue;
            }
            return Some(ex);
        }
    }

    async fn patch(&mut self) -> (Exchange, Reason) {
        let ex = self.next().await.expect("a status write");
        assert_eq!(
            (ex.method.as_str(), ex.path()),
            (
                "PATCH",
                "/apis/secrets.ameide.io/v1alpha1/secretbundles/b/status"
            )
        );
        let status: SecretBundleStatus =
            serde_json::from_value(ex.body["status"].clone()).expect("status");
        let reason = conditions::ready_reason(Some(&status)).expect("a Ready condition");
        (ex, reason)
    }

    /// The apiserver applies `ex` and answers it.
    fn accept(&mut self, ex: Exchange) {
        let rv: u64 = self
            .server
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.server.metadata.resource_version = Some((rv + 1).to_string());
        self.server.status = serde_json::from_value(ex.body["status"].clone()).ok();
        ex.json(200, &serde_json::to_value(&self.server).expect("json"));
    }

    fn server_reason(&self) -> Option<Reason> {
        conditions::ready_reason(self.server.status.as_ref())
    }

    fn scrape(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }
}

/// Ready, written and seen by the cache.
async fn ready() -> Api {
    let mut api = Api::start(None);
    api.report(Reason::Ready);
    let (ex, reason) = api.patch().await;
    assert_eq!(reason, Reason::Ready);
    api.accept(ex);
    api.watch_event();
    api
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The apiserver answers the writer's patch.
    Answer,
    /// The watch delivers that patch to the bundle cache.
    WatchEvent,
    /// A reconcile concludes Ready again.
    NewReport,
}

/// Ready -> a child not Ready -> SecretsNotReady written -> the child Ready again before the
/// cache shows the write. Whatever the order, the status ends Ready, in one more write.
#[tokio::test(start_paused = true)]
async fn a_report_undoing_the_last_write_is_written_in_every_order() {
    use Step::*;
    let orders = [
        [Answer, WatchEvent, NewReport],
        [Answer, NewReport, WatchEvent],
        [WatchEvent, Answer, NewReport],
        [WatchEvent, NewReport, Answer],
        [NewReport, Answer, WatchEvent],
        [NewReport, WatchEvent, Answer],
    ];
    for order in orders {
        let mut api = ready().await;
        api.report(Reason::SecretsNotReady);
        let (ex, reason) = api.patch().await;
        assert_eq!(reason, Reason::SecretsNotReady);
        // The apiserver has applied the patch; who hears of it first is the question.
        let mut answered = api.server.clone();
        let rv: u64 = answered
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        answered.metadata.resource_version = Some((rv + 1).to_string());
        answered.status = serde_json::from_value(ex.body["status"].clone()).ok();
        api.server = answered;
        let mut ex = Some(ex);
        for step in order {
            match step {
                Answer => {
                    let body = serde_json::to_value(&api.server).expect("json");
                    ex.take().expect("one answer").json(200, &body);
                    // Let the writer take the answer in before the next step.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                WatchEvent => api.watch_event(),
                NewReport => api.report(Reason::Ready),
            }
        }
        let (ex, reason) = api.patch().await;
        assert_eq!(reason, Reason::Ready, "{order:?}");
        api.accept(ex);
        api.watch_event();
        assert_eq!(api.server_reason(), Some(Reason::Ready), "{order:?}");
        // And nothing more: the status says what the last report says.
        api.report(Reason::Ready);
        assert!(
            api.next().await.is_none(),
            "{order:?}: a write with nothing changed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_written_when_the_status_already_says_it() {
    let mut api = ready().await;
    api.report(Reason::Ready);
    assert!(api.next().await.is_none());
    // Nor when the cache is behind but the last write said it.
    api.report(Reason::SecretsNotReady);
    let (ex, _) = api.patch().await;
    api.accept(ex);
    api.report(Reason::SecretsNotReady);
    assert!(
        api.next().await.is_none(),
        "the write the cache has not seen yet said it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_counted_and_retried_with_backoff() {
    let mut api = Api::start(None);
    api.report(Reason::Ready);
    let (ex, _) = api.patch().await;
    ex.status(500, "etcdserver: request timed out");
    let failed = tokio::time::Instant::now();
    let (ex, reason) = api.patch().await;
    assert!(
        failed.elapsed() >= Duration::from_secs(1),
        "retried after a backoff"
    );
    assert_eq!(reason, Reason::Ready);
    ex.status(403, "secretbundles/status is forbidden");
    let (ex, _) = api.patch().await;
    api.accept(ex);
    let metrics = api.scrape();
    for category in ["server_error", "forbidden"] {
        let line = format!("secretbundle_status_write_failures_total{{category=\"{category}\"}} 1");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}

/// A write that failed is not retried once a newer report says what the status already says.
#[tokio::test(start_paused = true)]
async fn a_newer_report_replaces_a_failed_write() {
    let mut api = ready().await;
    api.report(Reason::SecretsNotReady);
    let (ex, _) = api.patch().await;
    ex.status(503, "the server is currently unable to handle the request");
    api.report(Reason::Ready);
    assert!(
        api.next().await.is_none(),
        "the failed, older report was written after all"
    );
    assert_eq!(api.server_reason(), Some(Reason::Ready));
}

#[tokio::test(start_paused = true)]
async fn a_report_queued_before_the_bundle_moved_to_another_shard_is_not_written() {
    let mut api = Api::start(Some("shard=a"));
    api.server = bundle(2, json!({"shard": "a"}));
    api.watch_event();
    // Not Ready waits out the settle delay: meanwhile the bundle is relabelled.
    api.report(Reason::SecretsNotReady);
    api.server = bundle(3, json!({"shard": "b"}));
    api.watch_event();
    assert!(
        api.next().await.is_none(),
        "the old shard wrote a bundle it no longer owns"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_bundle_is_not_written() {
    let mut api = Api::start(None);
    api.report(Reason::SecretsNotReady);
    api.writer.forget("b");
    assert!(api.next().await.is_none());
}

#[test]
fn the_cache_has_caught_up_once_it_holds_the_written_version() {
    assert!(caught_up(Some("12"), Some("12")));
    assert!(caught_up(Some("13"), Some("12")));
    assert!(!caught_up(Some("9"), Some("12")), "numbers, not strings");
    assert!(!caught_up(None, Some("12")));
    assert!(caught_up(Some("x"), Some("x")));
}

/// Shutdown waits for the write in flight, and no longer: `drained` wakes when it is answered.
#[tokio::test(start_paused = true)]
async fn drained_returns_once_the_write_in_flight_is_answered() {
    let mut api = Api::start(None);
    api.report(Reason::Ready);
    let (ex, _) = api.patch().await;
    api.writer.stop();
    let writer = api.writer.clone();
    let mut drained = tokio::spawn(async move { writer.drained().await });
    // Paused time: an hour passes at once while the patch is unanswered; still not drained.
    let early = tokio::time::timeout(Duration::from_secs(3600), &mut drained).await;
    assert!(early.is_err(), "drained before the write was answered");
    api.accept(ex);
    // The write ends with the bundle's event, which `next` answers.
    tokio::select! {
        done = drained => done.expect("task"),
        other = api.next() => panic!("not drained; next request: {:?}", other.map(|e| e.path().to_string())),
    }
    assert!(api.writer.idle());
}

/// What was written is kept only until the cache holds it: at steady state nothing is.
#[tokio::test(start_paused = true)]
async fn a_write_is_forgotten_once_the_cache_holds_it() {
    let mut api = Api::start(None);
    api.report(Reason::Ready);
    let (ex, _) = api.patch().await;
    api.accept(ex);
    while api.writer.queue().written.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stale = api.store.get(&ObjectRef::new("b")).expect("cached");
    api.writer.seen(&stale);
    assert_eq!(api.writer.queue().written.len(), 1, "the cache is behind");
    api.watch_event();
    api.writer.seen(&api.server);
    assert!(api.writer.queue().written.is_empty());
    // ...and a report equal to the status now in the cache still writes nothing.
    api.report(Reason::Ready);
    assert!(api.next().await.is_none());
}
