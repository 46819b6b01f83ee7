//! Watches that start with a streaming list where the apiserver offers one: the current state
//! arrives as watch events on one request, whatever the number of objects, and no page of
//! objects is ever held in memory. So a restart costs a fixed handful of requests. Where the
//! apiserver cannot (before Kubernetes 1.32, or the WatchList feature turned off), the first
//! failure switches every watch to paged lists.
//!
//! A streaming list completes with a bookmark the apiserver's watch cache sends on its next
//! tick, up to a second later. That second is paid once at startup; a watch that starts while
//! bundles wait for it (an ESO CRD just installed) lists in pages instead, so its bundles
//! proceed within a round trip.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, stream};
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// Whether watches start with a streaming list; shared by every watch of one operator.
#[derive(Clone, Debug)]
pub struct Lists(Arc<AtomicBool>);

impl Lists {
    /// Asks the apiserver its version once: streaming lists from 1.32, where WatchList is on by
    /// default.
    pub async fn detect(client: &Client) -> Self {
        let streaming = match client.apiserver_version().await {
            Ok(v) => {
                let minor: u32 = v
                    .minor
                    .trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                v.major == "1" && minor >= 32
            }
            Err(e) => {
                warn!(error = %e, "could not read the apiserver version; using paged lists");
                false
            }
        };
        info!(streaming, "initial lists of watches");
        Self::new(streaming)
    }

    /// Watches that start with a streaming list when `streaming`, else with paged lists.
    pub fn new(streaming: bool) -> Self {
        Lists(Arc::new(AtomicBool::new(streaming)))
    }

    /// Watches that list in pages, for watches bundles are waiting on.
    pub fn paged(&self) -> Self {
        Self::new(false)
    }

    fn streaming(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn give_up_streaming(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// A [`watcher`] that lists by streaming when it can.
    pub fn watch<K>(
        &self,
        api: Api<K>,
        wc: watcher::Config,
    ) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let streaming = self.streaming();
        let start = |streaming: bool, api: Api<K>, wc: watcher::Config| -> BoxStream<'static, _> {
            let wc = if streaming { wc.streaming_lists() } else { wc };
            watcher(api, wc).boxed()
        };
        let state = State {
            inner: start(streaming, api.clone(), wc.clone()),
            streaming,
            listed: false,
            lists: self.clone(),
            api,
            wc,
        };
        stream::unfold(state, move |mut st| async move {
            loop {
                let item = st.inner.next().await?;
                match &item {
                    Ok(watcher::Event::InitDone) => st.listed = true,
                    Err(e) if st.streaming && !st.listed && refuses_streaming(e) => {
                        warn!(error = %e, "streaming list refused; using paged lists");
                        st.lists.give_up_streaming();
                        st.streaming = false;
                        st.inner = start(false, st.api.clone(), st.wc.clone());
                        continue;
                    }
                    _ => {}
                }
                return Some((item, st));
            }
        })
    }
}

/// Whether an error before the first list says the apiserver cannot stream lists (an apiserver
/// without WatchList rejects `sendInitialEvents` as invalid). Anything else (a dropped
/// connection, a 5xx, throttling, an expired resourceVersion) is passing, and must not turn
/// streaming off for every watch for the life of the process: the watch retries as it was.
fn refuses_streaming(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(code, 400 | 422)
}

struct State<K: Resource + 'static> {
    inner: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    streaming: bool,
    listed: bool,
    lists: Lists,
    api: Api<K>,
    wc: watcher::Config,
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::core::PartialObjectMeta;

    use super::*;
    use crate::mock_api;

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status::failure("no", "Reason").with_code(code))
    }

    #[test]
    fn only_a_refusal_of_the_request_turns_streaming_off() {
        let start = |code| watcher::Error::WatchStartFailed(kube::Error::Api(status(code)));
        assert!(refuses_streaming(&start(422)));
        assert!(refuses_streaming(&start(400)));
        assert!(refuses_streaming(&watcher::Error::WatchError(status(422))));
        for code in [403, 410, 429, 500, 503] {
            assert!(!refuses_streaming(&start(code)), "{code}");
        }
        let dropped = watcher::Error::WatchFailed(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert!(!refuses_streaming(&dropped));
    }

    /// One streaming list answered by a passing 503, another by a refusal.
    #[tokio::test(start_paused = true)]
    async fn a_passing_error_keeps_streaming_and_a_refusal_turns_it_off() {
        let (client, mut requests) = mock_api::pair();
        let lists = Lists::new(true);
        let api = Api::<PartialObjectMeta<Namespace>>::all(client);
        let mut watch = lists.watch(api, watcher::Config::default()).boxed();
        let mut next = tokio::spawn(async move { while watch.next().await.is_some() {} });
        let first = requests.next().await.expect("a streaming list");
        assert!(
            first.uri.contains("sendInitialEvents=true"),
            "{}",
            first.uri
        );
        first.status(503, "the server is currently unable to handle the request");
        // The watcher retries after its own backoff; the error reached the caller.
        let again = requests.next().await.expect("a retry");
        assert!(
            again.uri.contains("sendInitialEvents=true"),
            "gave up streaming on a 503: {}",
            again.uri
        );
        assert!(lists.streaming());
        again.status(
            422,
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        );
        let paged = requests.next().await.expect("a paged list");
        assert!(!paged.uri.contains("sendInitialEvents"), "{}", paged.uri);
        assert!(!lists.streaming());
        next.abort();
        let _ = (&mut next).await;
    }
}
