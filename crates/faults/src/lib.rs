//! Test-only fault injection for a kube `Client`: a tower layer that answers a seeded fraction of
//! requests the way a struggling API server or network does, and cuts watch streams at random.
//!
//! With rate `r`, each request gets a fault with probability `r`, one of (uniformly, among those
//! that apply):
//!
//! - `500 InternalError`, or `409 Conflict` (writes only), or `429 TooManyRequests` with
//!   `Retry-After: 1`: answered here, the request never reaches the server;
//! - a connection dropped before the request is sent (the server never sees it);
//! - a response lost: the server handles the request, the client gets a connection error
//!   (a write that happened although the caller was told it failed);
//! - a delay: the server's answer is held back 0.2-2 s (the server has already acted on it, so
//!   watch events can overtake the response).
//!
//! Watch responses (`?watch=true`) that get through are cut, as a reset connection: after each
//! data frame with probability `r`, and at the latest after a lifetime drawn uniformly from
//! 0 to `2/r` seconds, so idle streams are cut too.
//!
//! Deterministic by seed: the n-th request of a method to a path (query aside) gets the same
//! decision for the same seed, whatever other requests ran in between. ChaCha8 and the mixing
//! below are portable, so a seed replays across machines and compilers.

mod body;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt as _, SeedableRng as _};
use tower::{BoxError, Layer, Service};

pub use body::FaultBody;

/// What a request may be answered with instead of the server's own answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ServerError,
    Conflict,
    TooManyRequests,
    Dropped,
    ResponseLost,
    Delay,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ServerError,
        Kind::Conflict,
        Kind::TooManyRequests,
        Kind::Dropped,
        Kind::ResponseLost,
        Kind::Delay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServerError => "500",
            Kind::Conflict => "409",
            Kind::TooManyRequests => "429",
            Kind::Dropped => "dropped",
            Kind::ResponseLost => "response-lost",
            Kind::Delay => "delay",
        }
    }

    /// A real API server answers 409 only to writes.
    fn applies_to(self, method: &Method) -> bool {
        self != Kind::Conflict || !matches!(*method, Method::GET | Method::HEAD)
    }
}

/// Which requests a plan may fault: `(method, path)`.
pub type Filter = Arc<dyn Fn(&Method, &str) -> bool + Send + Sync>;

/// What to inject.
#[derive(Clone)]
pub struct Plan {
    /// Probability that one request gets a fault, and that a watch is cut after one frame.
    pub rate: f64,
    pub seed: u64,
    /// The faults drawn from.
    pub kinds: Vec<Kind>,
    /// Only requests it accepts may get a fault (`None`: every request).
    pub only: Option<Filter>,
    /// At most this many request faults in all.
    pub limit: Option<u64>,
    pub cut_watches: bool,
}

impl Plan {
    /// Every kind at `rate`, watches cut; `rate` is clamped to 0..=1.
    pub fn new(rate: f64, seed: u64) -> Self {
        Plan {
            rate: if rate.is_finite() {
                rate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            seed,
            kinds: Kind::ALL.to_vec(),
            only: None,
            limit: None,
            cut_watches: true,
        }
    }

    /// No faults: the layer passes everything through.
    pub fn off() -> Self {
        Plan::new(0.0, 0)
    }

    /// The first `limit` requests `only` accepts get `kind`; nothing else is touched.
    pub fn targeted(kind: Kind, limit: u64, only: Filter) -> Self {
        Plan {
            kinds: vec![kind],
            only: Some(only),
            limit: Some(limit),
            cut_watches: false,
            ..Plan::new(1.0, 0)
        }
    }
}

/// How many faults were injected, by kind, and of how many requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub by_kind: Vec<(Kind, u64)>,
    pub watch_cuts: u64,
}

impl Stats {
    pub fn of(&self, kind: Kind) -> u64 {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    pub fn faults(&self) -> u64 {
        self.by_kind.iter().map(|(_, n)| n).sum()
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults in {} requests (",
            self.faults(),
            self.requests
        )?;
        for (k, n) in &self.by_kind {
            write!(f, "{} {n}, ", k.as_str())?;
        }
        write!(f, "watches cut {})", self.watch_cuts)
    }
}

#[derive(Default)]
struct State {
    /// Requests seen per (method, path) key.
    seen: Mutex<HashMap<u64, u64>>,
    requests: AtomicU64,
    injected: [AtomicU64; 6],
    faults: AtomicU64,
    watch_cuts: AtomicU64,
}

/// The layer; clones share the plan and the counters.
#[derive(Clone)]
pub struct Faults {
    plan: Arc<Plan>,
    state: Arc<State>,
}

/// What happens to one request.
#[derive(Debug)]
pub struct Decision {
    pub fault: Option<Kind>,
    /// For [`Kind::Delay`].
    pub delay: Duration,
    cut: Option<body::Cut>,
}

impl Faults {
    pub fn new(plan: Plan) -> Self {
        Faults {
            plan: Arc::new(plan),
            state: Arc::default(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.plan.rate <= 0.0
    }

    pub fn stats(&self) -> Stats {
        let s = &self.state;
        Stats {
            requests: s.requests.load(Ordering::Relaxed),
            by_kind: Kind::ALL
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, s.injected[i].load(Ordering::Relaxed)))
                .collect(),
            watch_cuts: s.watch_cuts.load(Ordering::Relaxed),
        }
    }

    /// Decides the fate of a request (and counts it).
    pub fn decide(&self, method: &Method, path: &str, watch: bool) -> Decision {
        let plan = &self.plan;
        let none = Decision {
            fault: None,
            delay: Duration::ZERO,
            cut: None,
        };
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        if plan.rate <= 0.0 || plan.only.as_ref().is_some_and(|f| !f(method, path)) {
            return none;
        }
        let key = fnv1a(method.as_str().as_bytes(), path.as_bytes());
        let n = {
            let mut seen = self
                .state
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(plan.seed ^ mix(key ^ mix(n))));
        let kinds: Vec<Kind> = plan
            .kinds
            .iter()
            .copied()
            .filter(|k| k.applies_to(method))
            .collect();
        let mut fault = None;
        if !kinds.is_empty() && rng.random_bool(plan.rate) && self.within_limit() {
            let kind = kinds[rng.random_range(0..kinds.len())];
            if let Some(i) = Kind::ALL.iter().position(|k| *k == kind) {
                self.state.injected[i].fetch_add(1, Ordering::Relaxed);
            }
            // A log line per fault: a run's log says what it went through, even when killed.
            tracing::info!(fault = kind.as_str(), %method, path, n, "injected fault");
            fault = Some(kind);
        }
        let delay = Duration::from_millis(rng.random_range(200..=2000));
        let cut = (watch && plan.cut_watches).then(|| {
            let lifetime =
                Duration::from_secs_f64(rng.random_range(0.0..=(2.0 / plan.rate).min(3600.0)));
            body::Cut::new(plan.rate, lifetime, rng, self.state.clone())
        });
        Decision { fault, delay, cut }
    }

    fn within_limit(&self) -> bool {
        let Some(limit) = self.plan.limit else {
            self.state.faults.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        self.state
            .faults
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }
}

impl<S> Layer<S> for Faults {
    type Service = Faulty<S>;

    fn layer(&self, inner: S) -> Faulty<S> {
        Faulty {
            inner,
            faults: self.clone(),
        }
    }
}

pub struct Faulty<S> {
    inner: S,
    faults: Faults,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Faulty<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<FaultBody<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let d = self
            .faults
            .decide(req.method(), req.uri().path(), is_watch(req.uri()));
        match d.fault {
            Some(Kind::Dropped) => {
                return Box::pin(std::future::ready(Err(reset(
                    "before the request was sent",
                ))));
            }
            Some(kind @ (Kind::ServerError | Kind::Conflict | Kind::TooManyRequests)) => {
                let answer = synthetic(kind, req.uri().path());
                return Box::pin(std::future::ready(Ok(answer)));
            }
            _ => {}
        }
        let sent = self.inner.call(req);
        Box::pin(async move {
            let response = sent.await.map_err(Into::into)?;
            match d.fault {
                Some(Kind::ResponseLost) => return Err(reset("after the request was sent")),
                // Holding back the answer, not a condition to await: this is the fault.
                Some(Kind::Delay) => tokio::time::sleep(d.delay).await,
                _ => {}
            }
            Ok(response.map(|b| FaultBody::wrap(b, d.cut)))
        })
    }
}

/// Whether a request to `uri` is a watch.
pub fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

fn reset(when: &str) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        format!("connection reset by peer {when} (injected fault)"),
    ))
}

/// The API server's own shape of an error answer: a `Status` object.
fn synthetic<B>(kind: Kind, path: &str) -> Response<FaultBody<B>> {
    let (code, reason, message) = match kind {
        Kind::Conflict => (
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {path}: injected conflict"),
        ),
        Kind::TooManyRequests => (
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later \
             (injected)"
                .to_string(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: injected fault on {path}"),
        ),
    };
    let details = if kind == Kind::TooManyRequests {
        r#","details":{"retryAfterSeconds":1}"#
    } else {
        ""
    };
    let body = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":{},"reason":"{reason}"{details},"code":{}}}"#,
        json_string(&message),
        code.as_u16()
    );
    let mut response = Response::new(FaultBody::synthetic(Bytes::from(body)));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if kind == Kind::TooManyRequests {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// FNV-1a over the method, a separator and the path: stable everywhere.
fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(b" ").chain(b) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: spreads nearby seeds and counters apart.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
