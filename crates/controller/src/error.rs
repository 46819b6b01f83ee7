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
    /// The cluster refused a child (`code`: 400, 403 or 422); already reported in the status.
    #[error("{message}")]
    Rejected { code: u16, message: String },
    /// Deletion waits for something before the finalizer may go; reported in the status.
    #[error("{0}")]
    CleanupBlocked(String),
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A small, fixed label value: safe as a metrics label and for log grouping.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => kube_category(source),
            Error::Serialize { .. } => "serialize",
            Error::Rejected { code, .. } => status_category(*code),
            Error::CleanupBlocked(_) => "cleanup_blocked",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }
}

/// Every category a failure can be counted under (documented in docs/operations.md). Only tests
/// read the list: they hold it against every error's category and against the docs.
#[cfg(test)]
pub const CATEGORIES: [&str; 9] = [
    "forbidden",
    "rejected",
    "conflict",
    "server_error",
    "api",
    "transport",
    "serialize",
    "cleanup_blocked",
    "finalizer",
];

/// The category of an apiserver answer: what an alert tells apart. A missing permission
/// (403) needs the ClusterRole fixed, a rejected object (400, 422) the bundle or an admission
/// policy, a conflict (409) usually resolves itself, and a server error or throttling (429,
/// 5xx) is the apiserver's.
pub fn status_category(code: u16) -> &'static str {
    match code {
        403 => "forbidden",
        400 | 422 => "rejected",
        409 => "conflict",
        429 | 500..=599 => "server_error",
        _ => "api",
    }
}

/// The category of a failed request: the apiserver's answer, or no answer at all.
pub fn kube_category(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => status_category(s.code),
        _ => "transport",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        let status = kube::core::Status::failure("no", "Reason").with_code(code);
        Error::Kube {
            action: "apply ExternalSecret",
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn apiserver_answers_fall_in_distinct_categories() {
        let of = |code| api_error(code).category();
        assert_eq!(of(403), "forbidden");
        assert_eq!((of(400), of(422)), ("rejected", "rejected"));
        assert_eq!(of(409), "conflict");
        assert_eq!(
            (of(429), of(500), of(503)),
            ("server_error", "server_error", "server_error")
        );
        assert_eq!(of(404), "api");
    }

    #[test]
    fn a_refused_child_is_counted_by_its_code() {
        let rejected = |code| {
            Error::Rejected {
                code,
                message: "no".into(),
            }
            .category()
        };
        assert_eq!(
            rejected(403),
            "forbidden",
            "a missing permission is not a bad object"
        );
        assert_eq!(rejected(422), "rejected");
    }

    #[test]
    fn every_category_is_listed() {
        for c in [403, 400, 409, 500, 404].map(status_category) {
            assert!(CATEGORIES.contains(&c), "{c}");
        }
        let others = [
            Error::CleanupBlocked("x".into()).category(),
            kube_category(&kube::Error::LinesCodecMaxLineLengthExceeded),
        ];
        for c in others {
            assert!(CATEGORIES.contains(&c), "{c}");
        }
    }
}
