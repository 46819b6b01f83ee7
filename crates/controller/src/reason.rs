//! The bounded set of reasons a bundle reports. Each is a status reason, an event reason and a
//! metrics label value, so the set must stay small and stable.

/// Why a bundle is (or is not) Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Every child is applied and ESO reports each one Ready.
    Ready,
    /// `spec.suspend` is true.
    Suspended,
    WaitingForNamespace,
    WaitingForCRD,
    WaitingForDependency,
    WaitingForStore,
    /// Children are applied; ESO has not reported all of them Ready (yet).
    SecretsNotReady,
    /// `dependsOn` leads back to the bundle itself.
    DependencyCycle,
    /// A store's `spec.conditions` exclude the target namespace.
    StoreNotAllowed,
    /// An ExternalSecret of the same name exists and the bundle does not manage it.
    Conflict,
    /// The spec passed the schema but cannot be rendered (the message names the field).
    InvalidSpec,
}

/// How a reason maps onto the kstatus conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Ready=True.
    Ready,
    /// Ready=False, Reconciling=True: it will move on by itself when the world changes.
    Progressing,
    /// Ready=False, Stalled=True: a person has to change something.
    Stalled,
    /// Ready=False with neither: the user asked for nothing to happen.
    Suspended,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Ready,
        Reason::Suspended,
        Reason::WaitingForNamespace,
        Reason::WaitingForCRD,
        Reason::WaitingForDependency,
        Reason::WaitingForStore,
        Reason::SecretsNotReady,
        Reason::DependencyCycle,
        Reason::StoreNotAllowed,
        Reason::Conflict,
        Reason::InvalidSpec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::Suspended => "Suspended",
            Reason::WaitingForNamespace => "WaitingForNamespace",
            Reason::WaitingForCRD => "WaitingForCRD",
            Reason::WaitingForDependency => "WaitingForDependency",
            Reason::WaitingForStore => "WaitingForStore",
            Reason::SecretsNotReady => "SecretsNotReady",
            Reason::DependencyCycle => "DependencyCycle",
            Reason::StoreNotAllowed => "StoreNotAllowed",
            Reason::Conflict => "Conflict",
            Reason::InvalidSpec => "InvalidSpec",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn phase(self) -> Phase {
        match self {
            Reason::Ready => Phase::Ready,
            Reason::Suspended => Phase::Suspended,
            Reason::DependencyCycle
            | Reason::StoreNotAllowed
            | Reason::Conflict
            | Reason::InvalidSpec => Phase::Stalled,
            Reason::WaitingForNamespace
            | Reason::WaitingForCRD
            | Reason::WaitingForDependency
            | Reason::WaitingForStore
            | Reason::SecretsNotReady => Phase::Progressing,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
