//! A scripted API server for unit tests: a `kube::Client` whose every request is handed to the
//! test, which answers it when it chooses (so a test decides the order of a response, a watch
//! event and whatever else it races with). Like tower-test's mock, in a few lines.

use std::convert::Infallible;

use bytes::Bytes;
use futures::SinkExt as _;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, combinators::BoxBody};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::oneshot;

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// One request, waiting for its answer.
pub struct Exchange {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
    reply: oneshot::Sender<Reply>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

impl Exchange {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// Answers with a JSON body.
    pub fn json(self, code: u16, body: &Value) {
        let bytes = Bytes::from(body.to_string());
        let body = http_body_util::Full::new(bytes).boxed();
        let _ = self.reply.send(response(code, body));
    }

    /// Answers with a Kubernetes `Status` carrying `code` and `message`, as the apiserver does.
    pub fn status(self, code: u16, message: &str) {
        let reason = match code {
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            _ => "InternalError",
        };
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        });
        self.json(code, &body);
    }
}

fn response(code: u16, body: BoxBody<Bytes, Infallible>) -> Reply {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A client and the requests it sends.
pub fn pair() -> (Client, mpsc::UnboundedReceiver<Exchange>) {
    let (tx, rx) = mpsc::unbounded::<Exchange>();
    let service = tower::service_fn(move |req: Request<Body>| {
        let mut tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (reply, answer) = oneshot::channel();
            let exchange = Exchange {
                method: parts.method,
                uri: parts.uri.to_string(),
                body,
                reply,
            };
            tx.send(exchange)
                .await
                .map_err(|_| "the test stopped listening")?;
            answer
                .await
                .map_err(|_| tower::BoxError::from("the test dropped the request"))
        }
    });
    (Client::new(service, "default"), rx)
}
