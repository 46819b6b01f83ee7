//! Whether the kube-apiserver answers: learnt from every request the operator sends, so /readyz
//! and the log say when it stopped answering and when it came back.
//!
//! Any HTTP response, even an error status, means the apiserver is reachable; only a request that
//! got no response (refused, reset, timed out) counts against it. While it is unreachable, a probe
//! asks every [`PROBE_PERIOD`], so the state clears even when nothing else would send a request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::Notify;
use tower::BoxError;
use tracing::{info, warn};

pub const PROBE_PERIOD: Duration = Duration::from_secs(2);

struct Outage {
    since: Instant,
    error: String,
}

/// Shared between the clients' layers, the probe and the HTTP handler.
#[derive(Clone, Default)]
pub struct Reach {
    outage: Arc<Mutex<Option<Outage>>>,
    lost: Arc<Notify>,
}

impl Reach {
    fn outage(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answered(&self) {
        if let Some(o) = self.outage().take() {
            info!(
                after = ?o.since.elapsed(),
                "kube-apiserver reachable again"
            );
        }
    }

    /// The first failure is logged and starts the outage; later ones only refresh its error.
    fn failed(&self, error: String) {
        let mut outage = self.outage();
        match outage.as_mut() {
            Some(o) => o.error = error,
            None => {
                warn!(%error, "kube-apiserver unreachable");
                *outage = Some(Outage {
                    since: Instant::now(),
                    error,
                });
                self.lost.notify_one();
            }
        }
    }

    /// `None` while the apiserver answers; otherwise what /readyz should say.
    pub fn problem(&self) -> Option<String> {
        self.outage().as_ref().map(|o| {
            format!(
                "kube-apiserver unreachable for {}s: {}",
                o.since.elapsed().as_secs(),
                o.error
            )
        })
    }

    /// Asks the apiserver for its version every [`PROBE_PERIOD`] while it is unreachable; the
    /// layer on `client` records the outcome.
    pub async fn probe(self, client: Client) {
        loop {
            self.lost.notified().await;
            while self.outage().is_some() {
                tokio::time::sleep(PROBE_PERIOD).await;
                let _ = client.apiserver_version().await;
            }
        }
    }
}

/// A tower layer recording whether each request got a response.
#[derive(Clone)]
pub struct ReachLayer(pub Reach);

impl<S> tower::Layer<S> for ReachLayer {
    type Service = Reaching<S>;

    fn layer(&self, inner: S) -> Reaching<S> {
        Reaching {
            inner,
            reach: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Reaching<S> {
    inner: S,
    reach: Reach,
}

impl<S, R> tower::Service<R> for Reaching<S>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let fut = self.inner.call(req);
        let reach = self.reach.clone();
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            match &result {
                Ok(_) => reach.answered(),
                Err(e) => reach.failed(error_chain(e.as_ref())),
            }
            result
        })
    }
}

/// "connection refused" is usually several sources deep.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, ServiceExt as _};

    #[tokio::test]
    async fn a_failed_request_is_an_outage_until_one_gets_an_answer() {
        let reach = Reach::default();
        let fail = ReachLayer(reach.clone()).layer(tower::service_fn(|_: ()| async {
            Err::<(), BoxError>("tcp connect error: Connection refused (os error 111)".into())
        }));
        let ok = ReachLayer(reach.clone())
            .layer(tower::service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
        assert_eq!(reach.problem(), None);
        assert!(fail.oneshot(()).await.is_err());
        let problem = reach.problem().expect("an outage");
        assert!(
            problem.starts_with("kube-apiserver unreachable for 0s: tcp connect error"),
            "{problem}"
        );
        ok.oneshot(()).await.expect("ok");
        assert_eq!(reach.problem(), None);
    }
}
