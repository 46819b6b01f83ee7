//! The client-side rate limit: a token bucket (`qps` per second, up to `burst` at once) shared
//! by every request, that serves writes of children before anything else. Statuses, events
//! and reads wait while a child write does, so when many gates open at once (ESO installed
//! while hundreds of bundles wait) the burst goes to the children users are waiting for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt as _};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Child writes waiting for a token; others wait while there are any.
    urgent_waiting: usize,
}

/// The share of the burst only child writes may use. Everything else still gets `qps` on
/// average: the reserve only refills first.
const RESERVED: f64 = 0.8;

/// A token bucket with two priorities.
#[derive(Debug)]
pub struct Limiter {
    qps: f64,
    burst: f64,
    /// Tokens only child writes may take: the burst is kept for the children of a gate that
    /// opens, whatever statuses and events were written just before.
    reserve: f64,
    bucket: Mutex<Bucket>,
    freed: Notify,
}

impl Limiter {
    pub fn new(qps: u32, burst: u32) -> Arc<Self> {
        let qps = f64::from(qps.max(1));
        let burst = f64::from(burst).max(qps);
        Arc::new(Limiter {
            qps,
            burst,
            reserve: (burst * RESERVED).min(burst - 1.0).max(0.0),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                urgent_waiting: 0,
            }),
            freed: Notify::new(),
        })
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a token, or says how long until one may be there.
    fn try_take(&self, urgent: bool) -> Result<(), Duration> {
        let mut b = self.bucket();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.qps).min(self.burst);
        b.last = now;
        let floor = if urgent { 0.0 } else { self.reserve };
        if b.tokens >= 1.0 + floor && (urgent || b.urgent_waiting == 0) {
            b.tokens -= 1.0;
            return Ok(());
        }
        let missing = (1.0 + floor - b.tokens).max(0.0);
        // A request behind urgent ones re-checks when they are served (or after a while).
        let wait = Duration::from_secs_f64(missing / self.qps).max(Duration::from_millis(1));
        Err(wait)
    }

    /// Waits for a token; `urgent` requests go first.
    pub async fn acquire(&self, urgent: bool) {
        let _waiting = urgent.then(|| Waiting::new(self));
        loop {
            let freed = self.freed.notified();
            match self.try_take(urgent) {
                Ok(()) => {
                    self.freed.notify_waiters();
                    return;
                }
                Err(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = freed => {}
                    }
                }
            }
        }
    }
}

/// Counts an urgent request as waiting until it is served or given up.
struct Waiting<'a>(&'a Limiter);

impl<'a> Waiting<'a> {
    fn new(l: &'a Limiter) -> Self {
        l.bucket().urgent_waiting += 1;
        Waiting(l)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut b = self.0.bucket();
        b.urgent_waiting = b.urgent_waiting.saturating_sub(1);
        drop(b);
        self.0.freed.notify_waiters();
    }
}

/// Writes of ExternalSecrets: what users wait for when a gate opens.
pub fn is_urgent<B>(req: &Request<B>) -> bool {
    *req.method() != Method::GET
        && req
            .uri()
            .path()
            .split('/')
            .any(|segment| segment == "externalsecrets")
}

/// Applies a [`Limiter`] to a client's requests. The request is passed on only once it has a
/// token, so layers below it (the leadership fence) see it when it actually leaves.
#[derive(Clone)]
pub struct LimitLayer(pub Arc<Limiter>);

impl<S> Layer<S> for LimitLayer
where
    S: Service<Request<kube::client::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync + 'static,
{
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner: Buffer::new(inner, 1024),
            limiter: self.0.clone(),
        }
    }
}

pub struct Limited<S>
where
    S: Service<Request<kube::client::Body>>,
{
    inner: Buffer<Request<kube::client::Body>, S::Future>,
    limiter: Arc<Limiter>,
}

impl<S> Service<Request<kube::client::Body>> for Limited<S>
where
    S: Service<Request<kube::client::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is decided per request, by the limiter, in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let urgent = is_urgent(&req);
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            limiter.acquire(urgent).await;
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_keeps_the_rate() {
        let l = Limiter::new(10, 20);
        let start = Instant::now();
        for _ in 0..20 {
            l.acquire(true).await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(5),
            "the burst is free"
        );
        for _ in 0..10 {
            l.acquire(true).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_millis(1100),
            "then 10 per second: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn most_of_the_burst_is_kept_for_child_writes() {
        let l = Limiter::new(10, 20);
        let start = Instant::now();
        for _ in 0..4 {
            l.acquire(false).await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(5),
            "a fifth is free"
        );
        l.acquire(false).await;
        assert!(
            start.elapsed() >= Duration::from_millis(90),
            "then statuses wait for the rate: {:?}",
            start.elapsed()
        );
        let children = Instant::now();
        for _ in 0..16 {
            l.acquire(true).await;
        }
        assert!(
            children.elapsed() < Duration::from_millis(5),
            "the reserve is there for children"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn child_writes_go_first() {
        let l = Limiter::new(1, 1);
        l.acquire(false).await; // the bucket is empty now
        let order = Arc::new(Mutex::new(Vec::new()));
        let task = |urgent: bool, tag: &'static str| {
            let (l, order) = (l.clone(), order.clone());
            tokio::spawn(async move {
                l.acquire(urgent).await;
                order.lock().expect("lock").push(tag);
            })
        };
        let status = task(false, "status");
        tokio::task::yield_now().await;
        let child = task(true, "child");
        let (a, b) = tokio::join!(status, child);
        a.expect("status");
        b.expect("child");
        assert_eq!(*order.lock().expect("lock"), ["child", "status"]);
    }

    #[test]
    fn only_externalsecret_writes_are_urgent() {
        let req = |m: Method, p: &str| Request::builder().method(m).uri(p).body(()).expect("req");
        let es = "/apis/external-secrets.io/v1/namespaces/a/externalsecrets/x";
        assert!(is_urgent(&req(Method::PATCH, es)));
        assert!(is_urgent(&req(Method::DELETE, es)));
        assert!(!is_urgent(&req(Method::GET, es)));
        assert!(!is_urgent(&req(
            Method::PATCH,
            "/apis/secrets.ameide.io/v1alpha1/secretbundles/x/status"
        )));
    }
}
