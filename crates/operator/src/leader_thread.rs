//! Leader election on a thread of its own. The operator runs on one thread (it waits on the
//! apiserver, it does not compute), but relisting 10,000 children or rendering a mass apply can
//! hold that thread for a while, and a renewal queued behind it lets the fence shut: leadership
//! would flap exactly when the operator is busiest. So the elector gets its own thread, runtime
//! and client (a client's connections and request buffer run on the runtime that built it), and
//! a renewal waits for nothing the controller does.

use std::future::Future;
use std::thread::JoinHandle;

use anyhow::Context as _;
use kube::Config;
use kube::client::ClientBuilder;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{oneshot, watch};

use crate::leader::{Elector, Fence, lost_when};
use crate::reach::{Reach, ReachLayer};

/// Which Lease to compete for, under which identity.
pub struct Candidate {
    pub config: Config,
    pub reach: Reach,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub renewals: Histogram,
}

/// Leadership held by the election thread.
pub struct Leader {
    fence: Fence,
    lost: watch::Receiver<bool>,
    release: oneshot::Sender<oneshot::Sender<bool>>,
    thread: JoinHandle<()>,
}

/// Starts the election thread and waits until this replica holds the Lease; `None` if `stop`
/// fires first.
pub async fn acquire(
    candidate: Candidate,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Leader>> {
    let (acquired_tx, acquired) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<oneshot::Sender<bool>>();
    let thread = std::thread::Builder::new()
        .name("leader-election".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = acquired_tx.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            runtime.block_on(elect(candidate, stop, acquired_tx, release_rx));
        })
        .context("starting the leader-election thread")?;
    let Ok(won) = acquired.await else {
        anyhow::bail!("the leader-election thread stopped");
    };
    Ok(won?.map(|(fence, lost)| Leader {
        fence,
        lost,
        release,
        thread,
    }))
}

type Acquired = anyhow::Result<Option<(Fence, watch::Receiver<bool>)>>;

/// The election thread's life: acquire, renew until released or lost, release.
async fn elect(
    c: Candidate,
    mut stop: watch::Receiver<bool>,
    acquired: oneshot::Sender<Acquired>,
    release: oneshot::Receiver<oneshot::Sender<bool>>,
) {
    // Built here, so its connections are driven by this thread's runtime.
    let client = match ClientBuilder::try_from(c.config) {
        Ok(b) => b.with_layer(&ReachLayer(c.reach)).build(),
        Err(e) => {
            let _ = acquired.send(Err(e.into()));
            return;
        }
    };
    let elector = Elector::new(client, &c.namespace, &c.lease, &c.identity, c.renewals);
    let Some(leader) = elector.acquire(&mut stop).await else {
        let _ = acquired.send(Ok(None));
        return;
    };
    if acquired
        .send(Ok(Some((leader.fence(), leader.lost_signal()))))
        .is_err()
    {
        return;
    }
    // Dropped without a release request: the process is ending; the Lease then expires.
    if let Ok(reply) = release.await {
        let _ = reply.send(leader.release().await);
    }
}

impl Leader {
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Resolves once leadership is lost: the renew deadline passed or another replica holds it.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        lost_when(self.lost.clone())
    }

    /// Stops renewing and clears the Lease's holder if it is still ours (see
    /// [`crate::leader::Leader::release`]); whether it was released.
    pub async fn release(self) -> bool {
        let (reply, released) = oneshot::channel();
        if self.release.send(reply).is_err() {
            return false;
        }
        let released = released.await.unwrap_or(false);
        // The thread ends right after answering.
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        released
    }
}
