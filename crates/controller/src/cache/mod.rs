//! The operator's view of the cluster, kept by watches and read by every reconcile instead of
//! per-reconcile GETs and LISTs. One rule makes it safe: each watch updates its cache first and
//! only then wakes the bundles the change affects, so a bundle is always evaluated against
//! state at least as new as the event that woke it.

mod child;
mod compact;
mod elsewhere;
mod index;
mod mirror;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use secretbundle_api::{SecretBundle, StoreKind};

pub(crate) use child::other_claims_spec;
pub use child::{Child, EsObject, Foreign, Ready};
pub use elsewhere::Elsewhere;
pub use index::{ChildKey, Index, StoreId, child_key, store_ids};
pub use mirror::{Cached, Changed, Mirror};

use crate::eso::{CrdProblem, EsoKind, EsoVersion, ServedSchema};
use crate::facts::{NamespaceFact, Peer, StoreFact};

impl Cached for Peer {
    fn version(&self) -> Option<u64> {
        self.resource_version
    }
    fn same(&self, other: &Self) -> bool {
        self.depends_on == other.depends_on && self.fact == other.fact
    }
}

impl Cached for NamespaceFact {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

impl Cached for StoreFact {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// Reads never wait on a poisoned lock: the data is still the last consistent write.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mirror of ExternalSecrets with a secondary index (by bundle label, or by owner UID).
#[derive(Debug)]
struct Indexed<V> {
    mirror: Mirror<ChildKey, V>,
    by: HashMap<String, BTreeSet<ChildKey>>,
    keys_of: fn(&V) -> Vec<String>,
}

impl<V: Cached + Clone> Indexed<V> {
    fn new(keys_of: fn(&V) -> Vec<String>) -> Self {
        Self {
            mirror: Mirror::default(),
            by: HashMap::new(),
            keys_of,
        }
    }

    fn record(&mut self, changes: &[Changed<ChildKey, V>]) {
        for (key, old, new) in changes {
            for k in old.iter().flat_map(self.keys_of) {
                if let Some(set) = self.by.get_mut(&k) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by.remove(&k);
                    }
                }
            }
            for k in new.iter().flat_map(self.keys_of) {
                self.by.entry(k).or_default().insert(key.clone());
            }
        }
    }

    fn apply(&mut self, event: watcher::Event<(ChildKey, V)>) -> Vec<Changed<ChildKey, V>> {
        let changes = self.mirror.apply(event);
        self.record(&changes);
        changes
    }

    fn indexed(&self, k: &str) -> Vec<(ChildKey, V)> {
        self.by
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|key| Some((key.clone(), self.mirror.get(key)?.clone())))
            .collect()
    }
}

/// What the operator knows about one ESO kind.
#[derive(Clone, Debug)]
struct Kind {
    /// What reconciles see: a version only once this kind's caches hold a complete list.
    published: Result<EsoVersion, CrdProblem>,
    /// Its CRD has been listed at least once.
    listed: bool,
    /// The version its CRD serves now, if usable.
    wanted: Option<EsoVersion>,
    /// A version whose caches are still being filled.
    pending: Option<EsoVersion>,
}

impl Default for Kind {
    fn default() -> Self {
        Kind {
            published: Err(CrdProblem::Absent),
            listed: false,
            wanted: None,
            pending: None,
        }
    }
}

/// Where an ExternalSecret of a given name stands.
#[derive(Clone, Debug)]
pub enum Current {
    /// Labelled for some bundle (this one or another).
    Labelled(Arc<Child>),
    /// Labelled for a bundle of another shard (or for this shard's, which just moved here).
    Elsewhere(Elsewhere),
    /// Exists without the bundle label.
    Foreign(Foreign),
    Absent,
}

/// Who may create a child that does not exist yet (the operator's bundles share one field
/// manager, so the apiserver cannot tell two of them apart).
pub enum Claim<'a> {
    /// Ours until dropped, which must happen after the created object was put in the cache.
    Granted(ClaimGuard<'a>),
    /// Another bundle is creating it right now.
    Held(String),
    /// It exists after all (created since the caller looked).
    Exists,
}

pub struct ClaimGuard<'a> {
    caches: &'a Caches,
    key: ChildKey,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.caches.claims().remove(&self.key);
    }
}

pub type Wake = mpsc::UnboundedSender<ObjectRef<SecretBundle>>;

/// Every cache a reconcile reads, and the channel that wakes bundles.
pub struct Caches {
    wake: Wake,
    index: RwLock<Index>,
    namespaces: RwLock<Mirror<String, NamespaceFact>>,
    kinds: RwLock<BTreeMap<EsoKind, Kind>>,
    stores: RwLock<BTreeMap<EsoKind, Mirror<StoreId, StoreFact>>>,
    children: RwLock<Indexed<Arc<Child>>>,
    foreign: RwLock<Indexed<Foreign>>,
    /// Sharded: other shards' bundles and children, as much of them as this shard needs.
    sharded: bool,
    peers: RwLock<Mirror<String, Peer>>,
    elsewhere: RwLock<Indexed<Elsewhere>>,
    claims: Mutex<HashMap<ChildKey, String>>,
    /// The schema the ExternalSecret CRD serves (what a bundle may use).
    eso_schema: RwLock<Option<Arc<ServedSchema>>>,
    running: std::sync::atomic::AtomicBool,
    /// Bumped whenever something [`Caches::ready`] depends on changes.
    progress: tokio::sync::watch::Sender<u64>,
}

impl Caches {
    pub fn new(wake: Wake) -> Self {
        Self::with_shards(wake, false)
    }

    /// `sharded`: reconciles also wait for the other shards' bundles to be listed (their
    /// children are part of the ExternalSecret watch's own list).
    pub fn with_shards(wake: Wake, sharded: bool) -> Self {
        Caches {
            sharded,
            peers: RwLock::default(),
            elsewhere: RwLock::new(Indexed::new(|e: &Elsewhere| vec![e.bundle().to_string()])),
            wake,
            index: RwLock::default(),
            namespaces: RwLock::default(),
            kinds: RwLock::default(),
            stores: RwLock::default(),
            children: RwLock::new(Indexed::new(|c: &Arc<Child>| {
                c.bundle().map(str::to_string).into_iter().collect()
            })),
            foreign: RwLock::new(Indexed::new(|f: &Foreign| f.owners.clone())),
            claims: Mutex::default(),
            eso_schema: RwLock::default(),
            running: std::sync::atomic::AtomicBool::new(false),
            progress: tokio::sync::watch::Sender::new(0),
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<ChildKey, String>> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn progressed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes bundles by name (only fails once the controller is gone).
    pub fn wake(&self, names: impl IntoIterator<Item = String>) {
        for n in names {
            let _ = self.wake.unbounded_send(ObjectRef::new(&n));
        }
    }

    pub fn wake_all(&self) {
        self.wake(read(&self.index).all());
    }

    // --- Bundles -------------------------------------------------------------------------

    /// After the bundle cache applied `event`: re-index, and wake the bundles depending on it.
    pub fn bundle_event(&self, event: &watcher::Event<SecretBundle>, store: &Store<SecretBundle>) {
        let touched = match event {
            watcher::Event::Apply(b) => {
                write(&self.index).upsert(b);
                b.name_any()
            }
            watcher::Event::Delete(b) => {
                write(&self.index).remove(&b.name_any());
                b.name_any()
            }
            watcher::Event::InitDone => {
                let all = store.state();
                write(&self.index).rebuild(all.iter().map(AsRef::as_ref));
                return;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
        };
        let dependents = read(&self.index).dependents(&touched);
        self.wake(dependents);
    }

    /// Another shard's bundle changed: wake this shard's bundles that depend on it. Returns
    /// whether the watch has listed everything.
    pub fn peer_event(&self, event: watcher::Event<(String, Peer)>) -> bool {
        let mut peers = write(&self.peers);
        let was_synced = peers.synced();
        let changes = peers.apply(event);
        let synced = peers.synced();
        drop(peers);
        if synced && !was_synced {
            self.progressed();
        }
        let index = read(&self.index);
        let names: Vec<String> = changes
            .iter()
            .flat_map(|(name, _, _)| index.dependents(name))
            .collect();
        drop(index);
        self.wake(names);
        synced
    }

    /// What is kept of another shard's bundle.
    pub fn peer(&self, name: &str) -> Option<Peer> {
        read(&self.peers).get(&name.to_string()).cloned()
    }

    // --- Namespaces ----------------------------------------------------------------------

    pub fn namespace_event(&self, event: watcher::Event<(String, NamespaceFact)>) {
        let changes = write(&self.namespaces).apply(event);
        if changes.is_empty() {
            return;
        }
        self.progressed();
        let index = read(&self.index);
        let names: Vec<String> = changes
            .iter()
            .flat_map(|(ns, _, _)| index.targeting(ns))
            .collect();
        drop(index);
        self.wake(names);
    }

    pub fn namespace(&self, name: &str) -> NamespaceFact {
        read(&self.namespaces)
            .get(&name.to_string())
            .cloned()
            .unwrap_or(NamespaceFact::Absent)
    }

    // --- CRDs ----------------------------------------------------------------------------

    /// The ESO version `kind` is read and written in, or why its CRD cannot be used.
    pub fn crd(&self, kind: EsoKind) -> Result<EsoVersion, CrdProblem> {
        read(&self.kinds)
            .get(&kind)
            .map_or(Err(CrdProblem::Absent), |k| k.published.clone())
    }

    /// What children are written in, or why they cannot be, and the schema of that version.
    pub fn external_secrets(&self) -> (Result<EsoVersion, CrdProblem>, Option<Arc<ServedSchema>>) {
        let version = self.crd(EsoKind::ExternalSecret);
        // While a new version's caches fill, the published version is still the old one.
        let schema = read(&self.eso_schema)
            .clone()
            .filter(|s| version.as_ref().is_ok_and(|v| *v == s.version));
        (version, schema)
    }

    /// The ExternalSecret CRD's schema changed: an ESO upgrade within one API version can
    /// admit fields a waiting bundle uses, so every bundle looks again.
    pub fn set_eso_schema(&self, schema: Option<Arc<ServedSchema>>) {
        let mut current = write(&self.eso_schema);
        if *current == schema {
            return;
        }
        *current = schema;
        drop(current);
        self.wake_all();
    }

    /// Its CRD cannot be used: reconciles see why at once.
    pub fn crd_unusable(&self, kind: EsoKind, problem: CrdProblem) {
        let mut kinds = write(&self.kinds);
        let k = kinds.entry(kind).or_default();
        k.listed = true;
        k.wanted = None;
        k.pending = None;
        drop(kinds);
        self.publish(kind, Err(problem));
    }

    /// Its CRD serves `version`; with `refill`, its caches are being filled at that version
    /// (what reconciles see changes only once they are, see [`Caches::synced`]).
    pub fn crd_usable(&self, kind: EsoKind, version: EsoVersion, refill: bool) {
        let mut kinds = write(&self.kinds);
        let k = kinds.entry(kind).or_default();
        k.listed = true;
        k.wanted = Some(version);
        if refill {
            k.pending = Some(version);
        }
        drop(kinds);
        self.progressed();
    }

    /// The caches of `kind` hold a complete list at `version`: reconciles may use it.
    pub fn synced(&self, kind: EsoKind, version: EsoVersion) {
        let mut kinds = write(&self.kinds);
        let k = kinds.entry(kind).or_default();
        if k.wanted != Some(version) {
            return; // a watch already replaced
        }
        if k.pending == Some(version) {
            k.pending = None;
        }
        drop(kinds);
        self.publish(kind, Ok(version));
    }

    /// Sets what reconciles see for `kind`; wakes the bundles it concerns when that changed:
    /// every bundle for ExternalSecrets, the bundles reading such a store for a store kind (a
    /// SecretStore CRD installed next to 50,000 cached children woke every bundle, and the few
    /// waiting for it queued behind thousands with nothing to do).
    fn publish(&self, kind: EsoKind, state: Result<EsoVersion, CrdProblem>) {
        let mut kinds = write(&self.kinds);
        let k = kinds.entry(kind).or_default();
        let changed = k.published != state;
        k.published = state;
        drop(kinds);
        self.progressed();
        if !changed {
            return;
        }
        let store = match kind {
            EsoKind::ExternalSecret => return self.wake_all(),
            EsoKind::SecretStore => StoreKind::SecretStore,
            EsoKind::ClusterSecretStore => StoreKind::ClusterSecretStore,
        };
        let names = read(&self.index).using_store_kind(store);
        self.wake(names);
    }

    /// Forgets every cached object of `kind` (its watch stopped).
    pub fn forget(&self, kind: EsoKind) {
        match kind {
            EsoKind::ExternalSecret => {
                let mut c = write(&self.children);
                let changes = c.mirror.clear();
                c.record(&changes);
                let mut f = write(&self.foreign);
                let changes = f.mirror.clear();
                f.record(&changes);
                let mut e = write(&self.elsewhere);
                let changes = e.mirror.clear();
                e.record(&changes);
            }
            EsoKind::SecretStore | EsoKind::ClusterSecretStore => {
                write(&self.stores).remove(&kind);
            }
        }
    }

    /// All CRDs listed, namespaces listed, and no kind still filling its caches.
    pub fn ready(&self) -> bool {
        let kinds = read(&self.kinds);
        read(&self.namespaces).synced()
            && (!self.sharded || read(&self.peers).synced())
            && EsoKind::ALL.iter().all(|k| {
                kinds
                    .get(k)
                    .is_some_and(|s| s.listed && s.pending.is_none())
            })
    }

    /// Waits until [`Caches::ready`]: reconciles must not act on caches still being filled.
    pub async fn wait_ready(&self) {
        let mut rx = self.progress.subscribe();
        while !self.ready() {
            if rx.changed().await.is_err() {
                return;
            }
        }
        self.running
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reconciles have started: the caches were complete once.
    pub fn running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    // --- Stores --------------------------------------------------------------------------

    /// Returns whether the store watch of `kind` has now listed everything.
    pub fn store_event(&self, kind: EsoKind, event: watcher::Event<(StoreId, StoreFact)>) -> bool {
        let mut stores = write(&self.stores);
        let mirror = stores.entry(kind).or_default();
        let changes = mirror.apply(event);
        let synced = mirror.synced();
        drop(stores);
        let index = read(&self.index);
        let names: Vec<String> = changes
            .iter()
            .flat_map(|(id, _, _)| index.using_store(id))
            .collect();
        drop(index);
        self.wake(names);
        synced
    }

    /// A store as the gate sees it: absent unless its CRD is usable and it is there.
    pub fn store(&self, id: &StoreId) -> StoreFact {
        let kind = EsoKind::of_store(id.kind);
        if self.crd(kind).is_err() {
            return StoreFact::Absent;
        }
        read(&self.stores)
            .get(&kind)
            .and_then(|m| m.get(id).cloned())
            .unwrap_or(StoreFact::Absent)
    }

    // --- ExternalSecrets -----------------------------------------------------------------

    /// A change to one of the operator's children: wake its bundle(s) and same-name contenders.
    /// Returns whether the watch has listed everything.
    pub fn child_event(&self, event: watcher::Event<(ChildKey, Arc<Child>)>) -> bool {
        let mut children = write(&self.children);
        let changes = children.apply(event);
        let synced = children.mirror.synced();
        drop(children);
        self.wake_for_labelled(&changes, |c| c.bundle());
        synced
    }

    /// Wakes the bundle a changed child is labelled for (before and after) and same-name
    /// contenders.
    fn wake_for_labelled<V>(
        &self,
        changes: &[Changed<ChildKey, V>],
        bundle: impl Fn(&V) -> Option<&str>,
    ) {
        let index = read(&self.index);
        let mut names = BTreeSet::new();
        for (key, old, new) in changes {
            names.extend(
                old.iter()
                    .chain(new)
                    .filter_map(|c| bundle(c).map(str::to_string)),
            );
            names.extend(index.wanting(key));
        }
        drop(index);
        self.wake(names);
    }

    /// A change to another shard's child: wake its bundle (it may have just moved here) and
    /// same-name contenders. Returns whether the watch has listed everything.
    pub fn elsewhere_event(&self, event: watcher::Event<(ChildKey, Elsewhere)>) -> bool {
        let mut elsewhere = write(&self.elsewhere);
        let changes = elsewhere.apply(event);
        let synced = elsewhere.mirror.synced();
        drop(elsewhere);
        self.wake_for_labelled(&changes, |e| Some(e.bundle()));
        synced
    }

    /// A change to an ExternalSecret no bundle label claims.
    pub fn foreign_event(&self, event: watcher::Event<(ChildKey, Foreign)>) -> bool {
        let mut foreign = write(&self.foreign);
        let changes = foreign.apply(event);
        let synced = foreign.mirror.synced();
        drop(foreign);
        let index = read(&self.index);
        let mut names = BTreeSet::new();
        for (key, old, new) in &changes {
            names.extend(index.wanting(key));
            for uid in old.iter().chain(new).flat_map(|f| &f.owners) {
                names.extend(index.with_uid(uid));
            }
        }
        drop(index);
        self.wake(names);
        synced
    }

    pub fn current(&self, key: &ChildKey) -> Current {
        if let Some(c) = read(&self.children).mirror.get(key) {
            return Current::Labelled(c.clone());
        }
        if let Some(e) = read(&self.elsewhere).mirror.get(key) {
            return Current::Elsewhere(e.clone());
        }
        match read(&self.foreign).mirror.get(key) {
            Some(f) => Current::Foreign(f.clone()),
            None => Current::Absent,
        }
    }

    /// Children labelled for `bundle`, and unlabelled ones it owns (`uid`), in any namespace.
    pub fn children_of(&self, bundle: &str, uid: Option<&str>) -> Vec<(ChildKey, Current)> {
        let mut out: Vec<(ChildKey, Current)> = read(&self.children)
            .indexed(bundle)
            .into_iter()
            .map(|(k, c)| (k, Current::Labelled(c)))
            .collect();
        // Moved here from another shard and not relabelled yet; never listed twice.
        let elsewhere: Vec<_> = read(&self.elsewhere).indexed(bundle);
        for (k, e) in elsewhere {
            if !out.iter().any(|(have, _)| *have == k) {
                out.push((k, Current::Elsewhere(e)));
            }
        }
        if let Some(uid) = uid {
            out.extend(
                read(&self.foreign)
                    .indexed(uid)
                    .into_iter()
                    .map(|(k, f)| (k, Current::Foreign(f))),
            );
        }
        out
    }

    /// Reserves the creation of `key` for `bundle`, unless another bundle creates it right now or
    /// it exists. Checking and reserving happen under one lock, and a creator puts what it created
    /// in the cache before its claim ends, so two bundles never both create one name.
    pub fn claim(&self, key: &ChildKey, bundle: &str) -> Claim<'_> {
        let mut claims = self.claims();
        if let Some(other) = claims.get(key) {
            return Claim::Held(other.clone());
        }
        if !matches!(self.current(key), Current::Absent) {
            return Claim::Exists;
        }
        claims.insert(key.clone(), bundle.to_string());
        Claim::Granted(ClaimGuard {
            caches: self,
            key: key.clone(),
        })
    }

    /// Puts an object the operator just wrote (the apiserver's response) in the cache, and wakes
    /// other bundles that want the same name.
    pub fn written(&self, key: ChildKey, child: Arc<Child>, by: &str) {
        let mut children = write(&self.children);
        let changes: Vec<_> = children.mirror.put(key, child).into_iter().collect();
        children.record(&changes);
        drop(children);
        let index = read(&self.index);
        let others: Vec<String> = changes
            .iter()
            .flat_map(|(k, _, _)| index.wanting(k))
            .filter(|n| n != by)
            .collect();
        drop(index);
        self.wake(others);
    }

    /// Forgets an object the operator just deleted.
    pub fn deleted(&self, key: &ChildKey) {
        let mut children = write(&self.children);
        let changes: Vec<_> = children.mirror.remove(key, None).into_iter().collect();
        children.record(&changes);
    }
}
