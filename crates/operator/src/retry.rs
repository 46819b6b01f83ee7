//! How the operator's client retries: as kube does by default (429, 503 and 504, backing off
//! exponentially, honouring `Retry-After`), except that a watch answered 429 is first retried
//! within a fraction of a second.
//!
//! The apiserver answers a watch of a resource whose watch cache is still starting with 429
//! "storage is (re)initializing" and `Retry-After: 1`, the least a whole number of seconds can
//! say. That is every watch of a kind whose CRD was created a moment ago, which is exactly when
//! bundles wait on it, and the cache is ready milliseconds later: honouring the header cost
//! those bundles a second (the `store_crd` benchmark's tail). A refused watch costs the
//! apiserver about a millisecond, so a few quick retries are cheap even when the 429 is
//! overload; after them, the header is honoured again.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::client::retry::RetryPolicy;
use tower::BoxError;
use tower::retry::Policy;

/// Delays of the quick retries of a watch answered 429, before `Retry-After` applies.
const WATCH_DELAYS: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// kube's [`RetryPolicy::server_retry`], with quick retries for a watch answered 429.
#[derive(Clone)]
pub struct Retry {
    kube: RetryPolicy,
    quick: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            kube: RetryPolicy::server_retry(),
            quick: 0,
        }
    }
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for Retry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        let refused_watch = secretbundle_faults::is_watch(req.uri())
            && matches!(result, Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS);
        if refused_watch && let Some(delay) = WATCH_DELAYS.get(self.quick) {
            self.quick += 1;
            return Some(tokio::time::sleep(*delay));
        }
        self.kube.retry(req, result)
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        Policy::<Request<Body>, Response<Res>, BoxError>::clone_request(&mut self.kube, req)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;
    use tower::retry::RetryLayer;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;

    /// When each request reached the apiserver, which refuses the first `refusals` with 429
    /// and `Retry-After: 1`.
    async fn arrivals(uri: &str, refusals: usize) -> Vec<Duration> {
        let start = Instant::now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = service_fn({
            let seen = seen.clone();
            move |_req: Request<Body>| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().expect("not poisoned");
                    seen.push(start.elapsed());
                    let status = if seen.len() <= refusals {
                        StatusCode::TOO_MANY_REQUESTS
                    } else {
                        StatusCode::OK
                    };
                    let response = Response::builder()
                        .status(status)
                        .header("Retry-After", "1")
                        .body(())?;
                    Ok::<_, BoxError>(response)
                }
            }
        });
        let client = RetryLayer::new(Retry::default()).layer(server);
        let req = Request::get(uri).body(Body::empty()).expect("a request");
        let response = client.oneshot(req).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        seen.lock().expect("not poisoned").clone()
    }

    fn ms(d: &[Duration]) -> Vec<u128> {
        d.iter().map(Duration::as_millis).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_watch_is_retried_quickly_then_as_the_server_asks() {
        let watch = "/apis/external-secrets.io/v1/secretstores?watch=true&resourceVersion=7";
        assert_eq!(ms(&arrivals(watch, 1).await), [0, 50]);
        // After the quick retries the apiserver's Retry-After counts again.
        assert_eq!(ms(&arrivals(watch, 5).await), [0, 50, 150, 350, 750, 1750]);
    }

    #[tokio::test(start_paused = true)]
    async fn any_other_refused_request_waits_as_the_server_asks() {
        let list = "/apis/external-secrets.io/v1/secretstores?limit=500";
        assert_eq!(ms(&arrivals(list, 1).await), [0, 1000]);
    }
}
