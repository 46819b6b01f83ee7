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
        Lists(Arc::new(AtomicBool::new(streaming)))
    }

    /// Watches that list in pages, for watches bundles are waiting on.
    pub fn paged(&self) -> Self {
        Lists(Arc::new(AtomicBool::new(false)))
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
                    Err(e) if st.streaming && !st.listed => {
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

struct State<K: Resource + 'static> {
    inner: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    streaming: bool,
    listed: bool,
    lists: Lists,
    api: Api<K>,
    wc: watcher::Config,
}
