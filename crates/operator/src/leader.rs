//! Leader election on a coordination.k8s.io Lease, with a renew deadline that fences every write.
//!
//! A small elector of our own rather than kube-lease-manager (used before), because "never two
//! writers" needs what that crate does not offer: it does not say when it last renewed (its
//! channel only flips between leader and not), so writes could not be fenced on the age of the last
//! renewal; its renewals are patches without a resourceVersion precondition, so a leader waking
//! from a freeze could still write a Lease another replica holds; and it judges expiry by comparing
//! renewTime with the local wall clock.
//!
//! The protocol is client-go's. The holder renews every [`RETRY_PERIOD`] with an update conditional
//! on the resourceVersion it last wrote. A standby treats the Lease as expired once the record has
//! not changed for its lease duration as timed by the standby's own monotonic clock from when it
//! first saw that version, so no clocks are compared across nodes. The holder writes only while its
//! last successful renewal, timed from when that request was sent, is younger than
//! [`RENEW_DEADLINE`]; the standby cannot take over before that send time plus [`LEASE_DURATION`],
//! which leaves 5 s for requests already in flight. `Instant` is CLOCK_MONOTONIC, which keeps
//! counting while the process is stopped: a leader frozen past the deadline finds its fence shut
//! the moment it runs again, before any timer or watch event can start a write.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt as _};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::BoxError;
use tracing::{info, warn};

const LEASE_SECONDS: i32 = 15;
/// How long a Lease stays valid without renewal; a standby takes over after this.
pub const LEASE_DURATION: Duration = Duration::from_secs(LEASE_SECONDS as u64);
/// The leader stops writing when it has not renewed for this long.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Between renewals, and between a standby's attempts to acquire.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// When the last successful renewal was sent; `None` while this replica does not lead.
#[derive(Clone, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    /// Whether a write may go out now.
    pub fn open(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    fn deadline(&self) -> Option<Instant> {
        let sent = self.0.lock().ok().and_then(|g| *g)?;
        Some(sent + RENEW_DEADLINE)
    }

    fn renewed(&self, sent: Instant) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(sent);
        }
    }

    fn shut(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
}

/// A tower layer for the controller's client: refuses every request that can change something
/// (anything but GET and HEAD; list and watch are GETs) while the fence is shut.
#[derive(Clone)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, B> tower::Service<Request<B>> for Fenced<S>
where
    S: tower::Service<Request<B>>,
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !matches!(*req.method(), Method::GET | Method::HEAD) && !self.fence.open() {
            let err = format!(
                "not sending {} {}: leadership not renewed within {}s",
                req.method(),
                req.uri().path(),
                RENEW_DEADLINE.as_secs()
            );
            return Box::pin(std::future::ready(Err(err.into())));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Competes for one Lease under one identity.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Seconds from sending a renewal to its answer (any answer).
    renewals: Histogram,
}

enum Renewal {
    Renewed(Lease),
    /// Someone else changed the Lease but it is still ours: retry on the new version.
    Changed(Lease),
    Lost(String),
    Failed(kube::Error),
}

impl Elector {
    /// `client` must not be fenced: the elector writes the Lease while the controller may not.
    /// Each renewal's latency goes to `renewals` (the operator's metric).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        renewals: Histogram,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            renewals,
        }
    }

    /// Waits until this replica holds the Lease; `None` if `stop` fires first.
    pub async fn acquire(self, stop: &mut watch::Receiver<bool>) -> Option<Leader> {
        // The version of the record last seen, and when (by our clock) it was first seen.
        let mut seen = None;
        loop {
            match self.try_acquire(&mut seen).await {
                Ok(Some((lease, sent))) => return Some(Leader::start(self, lease, sent)),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "leader election: cannot read or take the Lease"),
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    async fn try_acquire(
        &self,
        seen: &mut Option<(String, Instant)>,
    ) -> kube::Result<Option<(Lease, Instant)>> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.held_spec(None)),
            };
            let sent = Instant::now();
            return conflict_is_none(self.api.create(&PostParams::default(), &lease).await)
                .map(|l| l.map(|l| (l, sent)));
        };
        let now = Instant::now();
        let version = current.resource_version().unwrap_or_default();
        let first_seen = match seen {
            Some((v, t)) if *v == version => *t,
            _ => seen.insert((version, now)).1,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        // A Lease naming our own identity is not taken over early: with a duplicated identity
        // two processes would otherwise both lead.
        let free = match spec.holder_identity.as_deref() {
            None | Some("") => true,
            Some(_) => now.duration_since(first_seen) >= duration,
        };
        if !free {
            return Ok(None);
        }
        let mut next = current.clone();
        next.spec = Some(self.held_spec(Some(&spec)));
        let sent = Instant::now();
        conflict_is_none(
            self.api
                .replace(&self.name, &PostParams::default(), &next)
                .await,
        )
        .map(|l| l.map(|l| (l, sent)))
    }

    fn held_spec(&self, prev: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let prev = prev.cloned().unwrap_or_default();
        let transitions = prev.lease_transitions.unwrap_or(0)
            + i32::from(prev.holder_identity.as_deref() != Some(&self.identity));
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(LEASE_SECONDS),
            lease_transitions: Some(transitions),
            ..prev
        }
    }

    /// Updates renewTime, conditional on the Lease being exactly the version we last wrote.
    async fn renew(&self, held: &Lease) -> Renewal {
        let mut next = held.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => Renewal::Renewed(l),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                Renewal::Lost("the Lease was deleted".into())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => match self.api.get_opt(&self.name).await {
                Ok(Some(l)) if holder(&l) == Some(self.identity.as_str()) => Renewal::Changed(l),
                Ok(l) => Renewal::Lost(format!(
                    "the Lease is held by {:?}",
                    l.as_ref().and_then(holder)
                )),
                Err(e) => Renewal::Failed(e),
            },
            Err(e) => Renewal::Failed(e),
        }
    }

    /// Clears the holder (and the times, which kube-lease-manager, the elector of earlier
    /// releases, reads as "free"), conditional on the Lease still being the version we wrote.
    async fn release(&self, held: Lease) -> kube::Result<()> {
        let mut next = held;
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        self.api
            .replace(&self.name, &PostParams::default(), &next)
            .await
            .map(drop)
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// A 409 means another replica wrote first: not an error, just not ours.
fn conflict_is_none(r: kube::Result<Lease>) -> kube::Result<Option<Lease>> {
    match r {
        Ok(l) => Ok(Some(l)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Held leadership: a renewing task and the fence it keeps open.
pub struct Leader {
    fence: Fence,
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    renewer: JoinHandle<Option<(Elector, Lease)>>,
}

impl Leader {
    fn start(elector: Elector, lease: Lease, sent: Instant) -> Self {
        let fence = Fence::default();
        fence.renewed(sent);
        let (lost_tx, lost) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let renewer = tokio::spawn(renew(elector, lease, fence.clone(), lost_tx, stop_rx));
        Leader {
            fence,
            lost,
            stop,
            renewer,
        }
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Becomes true once leadership is lost: the renew deadline passed or another replica holds
    /// the Lease. A watch, so the controller's runtime can wait on it (see [`lost_when`]).
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stops renewing and, if the Lease is still ours, clears its holder so that a standby
    /// takes over at once instead of after expiry. Call it only once every write has finished.
    pub async fn release(self) -> bool {
        let _ = self.stop.send(true);
        let Ok(Some((elector, lease))) = self.renewer.await else {
            return false;
        };
        // Past the deadline a standby may hold the Lease already: write nothing more.
        let Some(remaining) = self
            .fence
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .filter(|r| !r.is_zero())
        else {
            return false;
        };
        self.fence.shut();
        match tokio::time::timeout(remaining, elector.release(lease)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!(error = %e, "could not release the Lease; a standby takes over when it expires");
                false
            }
            Err(_) => false,
        }
    }
}

/// Resolves once `lost` says so (or its sender is gone, which only happens once it has).
pub async fn lost_when(mut lost: watch::Receiver<bool>) {
    let _ = lost.wait_for(|l| *l).await;
}

async fn renew(
    elector: Elector,
    mut lease: Lease,
    fence: Fence,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Option<(Elector, Lease)> {
    while let Some(deadline) = fence.deadline() {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Some((elector, lease)),
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = tokio::time::sleep(RETRY_PERIOD) => {}
        }
        // Checked before renewing: a process that wakes from a freeze past the deadline must
        // not write, not even the Lease.
        let sent = Instant::now();
        let remaining = deadline.saturating_duration_since(sent);
        if remaining.is_zero() {
            warn!(
                "not renewed within {}s; stepping down",
                RENEW_DEADLINE.as_secs()
            );
            break;
        }
        let answer = tokio::time::timeout(remaining, elector.renew(&lease)).await;
        elector.renewals.observe(sent.elapsed().as_secs_f64());
        match answer {
            Ok(Renewal::Renewed(l)) => {
                lease = l;
                fence.renewed(sent);
            }
            Ok(Renewal::Changed(l)) => lease = l,
            Ok(Renewal::Lost(why)) => {
                info!(why, "lost the Lease");
                break;
            }
            Ok(Renewal::Failed(e)) => warn!(error = %e, "renewing the Lease failed; retrying"),
            // The deadline passed while waiting; the next turn steps down.
            Err(_) => {}
        }
    }
    fence.shut();
    let _ = lost.send(true);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_on_renewal_and_shuts_at_the_deadline() {
        let fence = Fence::default();
        assert!(!fence.open(), "shut until the first renewal");
        fence.renewed(Instant::now());
        assert!(fence.open());
        let old = Instant::now().checked_sub(RENEW_DEADLINE);
        fence.renewed(old.expect("the clock runs for longer than the deadline"));
        assert!(
            !fence.open(),
            "a renewal as old as the deadline no longer counts"
        );
        fence.renewed(Instant::now());
        fence.shut();
        assert!(!fence.open());
    }

    #[tokio::test]
    async fn the_fence_refuses_writes_and_lets_reads_through() {
        use tower::{Layer as _, ServiceExt as _};
        let fence = Fence::default();
        let inner = tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>("sent") });
        let svc = FenceLayer(fence.clone()).layer(inner);
        let req = |m: Method| Request::builder().method(m).uri("/x").body(());
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let r = svc.clone().oneshot(req(m.clone()).expect("request")).await;
            assert!(r.is_err(), "{m} goes through a shut fence");
        }
        let r = svc
            .clone()
            .oneshot(req(Method::GET).expect("request"))
            .await;
        assert_eq!(r.ok(), Some("sent"));
        fence.renewed(Instant::now());
        let r = svc.oneshot(req(Method::PATCH).expect("request")).await;
        assert_eq!(r.ok(), Some("sent"));
    }
}
