//! One error type for the reconciler, with a bounded category for metrics and logs.

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The cluster rejected a child; already reported in the bundle's status.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A small, fixed label value: safe as a metrics label and for log grouping.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 => "forbidden",
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api",
            Error::Kube { .. } => "transport",
            Error::Serialize { .. } => "serialize",
            Error::Rejected(_) => "rejected",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }
}

/// Adds the action that failed to a kube error.
pub(crate) trait KubeContext<T> {
    fn during(self, action: &'static str) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn during(self, action: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { action, source })
    }
}
