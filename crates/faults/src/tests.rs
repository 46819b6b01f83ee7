use std::sync::atomic::AtomicUsize;

use http_body_util::BodyExt as _;
use tower::{ServiceExt as _, service_fn};

use super::*;

fn decisions(faults: &Faults, method: &Method, path: &str, n: usize) -> Vec<Option<Kind>> {
    (0..n)
        .map(|_| faults.decide(method, path, false).fault)
        .collect()
}

#[test]
fn a_seed_replays_the_same_faults_whatever_runs_in_between() {
    let a = Faults::new(Plan::new(0.2, 7));
    let b = Faults::new(Plan::new(0.2, 7));
    let path = "/apis/secrets.ameide.io/v1alpha1/secretbundles/x/status";
    let first = decisions(&a, &Method::PATCH, path, 200);
    // Other paths interleaved on `b` do not shift this path's decisions.
    let mut second = Vec::new();
    for i in 0..200 {
        b.decide(&Method::GET, &format!("/api/v1/namespaces/n{i}"), false);
        second.push(b.decide(&Method::PATCH, path, false).fault);
    }
    assert_eq!(first, second);
    let other = decisions(&Faults::new(Plan::new(0.2, 8)), &Method::PATCH, path, 200);
    assert_ne!(first, other, "another seed, other faults");
}

#[test]
fn the_rate_is_the_fraction_of_requests_faulted_and_every_kind_occurs() {
    let f = Faults::new(Plan::new(0.05, 1));
    for i in 0..10_000 {
        let method = if i % 2 == 0 {
            Method::GET
        } else {
            Method::PATCH
        };
        let d = f.decide(&method, &format!("/p/{}", i % 97), false);
        if method == Method::GET {
            assert_ne!(d.fault, Some(Kind::Conflict), "409 only answers writes");
        }
    }
    let s = f.stats();
    assert_eq!(s.requests, 10_000);
    assert!((400..=600).contains(&s.faults()), "{s}");
    for k in Kind::ALL {
        assert!(s.of(k) > 20, "{k:?}: {s}");
    }
    assert!(Faults::new(Plan::off()).is_off());
    assert_eq!(
        decisions(&Faults::new(Plan::off()), &Method::GET, "/x", 100),
        vec![None; 100]
    );
}

#[test]
fn a_targeted_plan_faults_only_what_it_matches_and_only_so_often() {
    let only: Filter = Arc::new(|m, p| *m == Method::PATCH && p.ends_with("/b"));
    let f = Faults::new(Plan::targeted(Kind::ServerError, 3, only));
    assert_eq!(
        decisions(&f, &Method::GET, "/a/b", 5),
        vec![None; 5],
        "not matched"
    );
    let got = decisions(&f, &Method::PATCH, "/a/b", 5);
    let want = [Some(Kind::ServerError); 3]
        .into_iter()
        .chain([None, None])
        .collect::<Vec<_>>();
    assert_eq!(got, want);
}

type Inner = Response<http_body_util::Full<Bytes>>;

/// A server that counts the requests reaching it and answers each with `body`.
fn server(
    hits: Arc<AtomicUsize>,
    body: &'static str,
) -> impl Service<Request<()>, Response = Inner, Error = BoxError, Future: Send + 'static> {
    service_fn(move |_req: Request<()>| {
        hits.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, BoxError>(Response::new(http_body_util::Full::new(Bytes::from(body)))) }
    })
}

fn only(kind: Kind) -> Faults {
    Faults::new(Plan::targeted(kind, 1, Arc::new(|_, _| true)))
}

async fn call(
    faults: &Faults,
    hits: &Arc<AtomicUsize>,
    req: Request<()>,
) -> Result<(u16, Option<String>, String), BoxError> {
    let svc = faults.layer(server(hits.clone(), "from the server"));
    let resp = svc.oneshot(req).await?;
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, retry, String::from_utf8_lossy(&body).into_owned()))
}

fn patch(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::PATCH)
        .uri(path)
        .body(())
        .expect("request")
}

#[tokio::test]
async fn error_answers_are_status_objects_and_never_reach_the_server() {
    for (kind, code, reason) in [
        (Kind::ServerError, 500u64, "InternalError"),
        (Kind::Conflict, 409, "Conflict"),
        (Kind::TooManyRequests, 429, "TooManyRequests"),
    ] {
        let hits = Arc::new(AtomicUsize::new(0));
        let (got, retry, body) = call(&only(kind), &hits, patch("/apis/x/y"))
            .await
            .expect("answer");
        assert_eq!(u64::from(got), code);
        assert_eq!(
            hits.load(Ordering::Relaxed),
            0,
            "{kind:?} reached the server"
        );
        let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(status["kind"], "Status");
        assert_eq!(
            (status["code"].as_u64(), status["reason"].as_str()),
            (Some(code), Some(reason)),
            "{body}"
        );
        assert_eq!(retry.is_some(), kind == Kind::TooManyRequests);
    }
}

#[tokio::test]
async fn a_dropped_request_never_arrives_and_a_lost_response_did() {
    let hits = Arc::new(AtomicUsize::new(0));
    let e = call(&only(Kind::Dropped), &hits, patch("/a"))
        .await
        .expect_err("dropped");
    assert!(e.to_string().contains("before the request was sent"), "{e}");
    assert_eq!(hits.load(Ordering::Relaxed), 0);
    let e = call(&only(Kind::ResponseLost), &hits, patch("/a"))
        .await
        .expect_err("lost");
    assert!(e.to_string().contains("after the request was sent"), "{e}");
    assert_eq!(hits.load(Ordering::Relaxed), 1, "the server acted on it");
}

#[tokio::test(start_paused = true)]
async fn a_delayed_answer_is_the_servers_own_held_back() {
    let hits = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let (code, _, body) = call(&only(Kind::Delay), &hits, patch("/a"))
        .await
        .expect("answer");
    let held = start.elapsed();
    assert_eq!((code, body.as_str()), (200, "from the server"));
    assert!(
        (Duration::from_millis(200)..=Duration::from_secs(2)).contains(&held),
        "{held:?}"
    );
}

/// A watch body of endless frames, or of none at all.
fn watch_server(
    frames: bool,
) -> impl Service<Request<()>, Response = Response<Stream>, Error = BoxError, Future: Send + 'static>
{
    service_fn(move |_req: Request<()>| async move {
        Ok::<_, BoxError>(Response::new(Stream { frames }))
    })
}

struct Stream {
    frames: bool,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.frames {
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"{\"type\":\"ADDED\"}\n",
            )))))
        } else {
            Poll::Pending
        }
    }
}

fn watch() -> Request<()> {
    Request::builder()
        .uri("/apis/x/y?watch=true&resourceVersion=5")
        .body(())
        .expect("request")
}

#[tokio::test]
async fn a_busy_watch_is_cut_after_some_frame() {
    let faults = Faults::new(Plan {
        kinds: vec![],
        ..Plan::new(0.05, 3)
    });
    let resp = faults
        .layer(watch_server(true))
        .oneshot(watch())
        .await
        .expect("watch");
    let mut body = resp.into_body();
    let mut frames = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => break e,
            None => panic!("ended without a cut"),
        }
        assert!(frames < 10_000, "never cut");
    };
    assert!(err.to_string().contains("watch stream cut"), "{err}");
    assert!(body.frame().await.is_none(), "ends after the cut");
    assert_eq!(faults.stats().watch_cuts, 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_watch_is_cut_within_its_lifetime() {
    let faults = Faults::new(Plan {
        kinds: vec![],
        ..Plan::new(0.05, 3)
    });
    let resp = faults
        .layer(watch_server(false))
        .oneshot(watch())
        .await
        .expect("watch");
    let start = tokio::time::Instant::now();
    let frame = resp.into_body().frame().await;
    assert!(matches!(frame, Some(Err(_))), "cut");
    assert!(
        start.elapsed() <= Duration::from_secs(40),
        "{:?}",
        start.elapsed()
    );
}
