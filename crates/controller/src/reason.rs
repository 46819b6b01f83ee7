//! The bounded set of reasons a bundle reports. Each is a status reason, an event reason and a
//! metrics label value, so the set must stay small and stable.

/// Why a bundle is (or is not) Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Every child is applied and ESO reports each one Ready.
    Ready,
    /// `spec.suspend` is true.
    Suspended,
    /// The target namespace does not exist (or is being deleted).
    WaitingForNamespace,
    /// The ExternalSecret CRD is not installed or not usable.
    WaitingForCRD,
    /// A bundle in `dependsOn` is missing, or not Ready and itself waiting or failing.
    WaitingForDependency,
    /// A bundle in `dependsOn` is not Ready yet and is being worked on.
    DependencyProgressing,
    /// A referenced store does not exist.
    WaitingForStore,
    /// A referenced store exists but ESO does not report it Ready.
    StoreNotReady,
    /// Children are applied; ESO has not reported all of them Ready yet.
    SecretsNotReady,
    /// ESO reports that it cannot sync a child (its words are in the message).
    SecretSyncFailed,
    /// The API server rejected a child (admission, schema, RBAC); retried with backoff.
    ApplyFailed,
    /// `dependsOn` leads back to the bundle itself.
    DependencyCycle,
    /// A store's `spec.conditions` exclude the target namespace.
    StoreNotAllowed,
    /// An ExternalSecret of the same name exists and the bundle does not manage it.
    Conflict,
    /// The spec passed the schema but cannot be rendered (the message names the field).
    InvalidSpec,
    /// The installed ESO cannot express a field the bundle uses (the message names the field
    /// and the ESO version); nothing is applied until ESO is upgraded.
    EsoUpgradeRequired,
}

/// How a reason maps onto the kstatus conditions (and so onto Argo CD and Flux health).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Ready=True.
    Ready,
    /// Ready=False alone: waiting for something that is absent, which is not a fault. GitOps
    /// tools see it as healthy (kstatus Current), so sync waves and `wait: true` move on, while
    /// `kubectl wait --for=condition=Ready` and `dependsOn` still see it is not Ready.
    Idle,
    /// Ready=False, Reconciling=True: work is under way and will finish by itself.
    Progressing,
    /// Ready=False, Stalled=True: something is wrong; the message says what.
    Stalled,
    /// Ready=False with neither: the user asked for nothing to happen.
    Suspended,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Ready,
        Reason::Suspended,
        Reason::WaitingForNamespace,
        Reason::WaitingForCRD,
        Reason::WaitingForDependency,
        Reason::DependencyProgressing,
        Reason::WaitingForStore,
        Reason::StoreNotReady,
        Reason::SecretsNotReady,
        Reason::SecretSyncFailed,
        Reason::ApplyFailed,
        Reason::DependencyCycle,
        Reason::StoreNotAllowed,
        Reason::Conflict,
        Reason::InvalidSpec,
        Reason::EsoUpgradeRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::Suspended => "Suspended",
            Reason::WaitingForNamespace => "WaitingForNamespace",
            Reason::WaitingForCRD => "WaitingForCRD",
            Reason::WaitingForDependency => "WaitingForDependency",
            Reason::DependencyProgressing => "DependencyProgressing",
            Reason::WaitingForStore => "WaitingForStore",
            Reason::StoreNotReady => "StoreNotReady",
            Reason::SecretsNotReady => "SecretsNotReady",
            Reason::SecretSyncFailed => "SecretSyncFailed",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::DependencyCycle => "DependencyCycle",
            Reason::StoreNotAllowed => "StoreNotAllowed",
            Reason::Conflict => "Conflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::EsoUpgradeRequired => "EsoUpgradeRequired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn phase(self) -> Phase {
        match self {
            Reason::Ready => Phase::Ready,
            Reason::Suspended => Phase::Suspended,
            // Absent pieces: a service not installed in this environment, ESO not installed yet,
            // a dependency that is itself waiting, a store not created yet.
            Reason::WaitingForNamespace
            | Reason::WaitingForCRD
            | Reason::WaitingForDependency
            | Reason::WaitingForStore => Phase::Idle,
            Reason::DependencyProgressing | Reason::StoreNotReady | Reason::SecretsNotReady => {
                Phase::Progressing
            }
            Reason::SecretSyncFailed
            | Reason::ApplyFailed
            | Reason::DependencyCycle
            | Reason::StoreNotAllowed
            | Reason::Conflict
            | Reason::InvalidSpec
            | Reason::EsoUpgradeRequired => Phase::Stalled,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
