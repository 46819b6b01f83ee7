//! ESO API versions and kinds, and whether an ESO CRD is usable.

use kube::core::ApiResource;

use super::CrdSummary;

/// API group of every ESO kind.
pub const GROUP: &str = "external-secrets.io";
/// Name of the ExternalSecret CRD; its presence is the CRD gate.
pub const EXTERNAL_SECRET_CRD: &str = "externalsecrets.external-secrets.io";
/// API version of ESO's generator kinds (`Password`, `ClusterGenerator`, ...).
pub const GENERATORS_API_VERSION: &str = "generators.external-secrets.io/v1alpha1";
/// ESO's annotation that makes it re-sync an ExternalSecret when its value changes.
pub const FORCE_SYNC_ANNOTATION: &str = "force-sync";

/// ESO API versions the operator can write, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EsoVersion {
    /// `external-secrets.io/v1` (ESO 0.16 and later).
    V1,
    /// `external-secrets.io/v1beta1` (ESO 0.10 to 0.16).
    V1beta1,
}

impl EsoVersion {
    pub const PREFERENCE: [EsoVersion; 2] = [EsoVersion::V1, EsoVersion::V1beta1];

    pub fn as_str(self) -> &'static str {
        match self {
            EsoVersion::V1 => "v1",
            EsoVersion::V1beta1 => "v1beta1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|v| v.as_str() == s)
    }

    pub fn api_version(self) -> String {
        format!("{GROUP}/{}", self.as_str())
    }
}

/// The ESO kinds the operator reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EsoKind {
    ExternalSecret,
    SecretStore,
    ClusterSecretStore,
}

impl EsoKind {
    /// The kind a bundle's `secretStoreRef.kind` names.
    pub fn of_store(kind: secretbundle_api::StoreKind) -> Self {
        match kind {
            secretbundle_api::StoreKind::ClusterSecretStore => EsoKind::ClusterSecretStore,
            secretbundle_api::StoreKind::SecretStore => EsoKind::SecretStore,
        }
    }

    pub const ALL: [EsoKind; 3] = [
        EsoKind::ExternalSecret,
        EsoKind::SecretStore,
        EsoKind::ClusterSecretStore,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            EsoKind::ExternalSecret => "ExternalSecret",
            EsoKind::SecretStore => "SecretStore",
            EsoKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            EsoKind::ExternalSecret => "externalsecrets",
            EsoKind::SecretStore => "secretstores",
            EsoKind::ClusterSecretStore => "clustersecretstores",
        }
    }

    pub fn crd_name(self) -> String {
        format!("{}.{GROUP}", self.plural())
    }

    pub fn from_crd_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.crd_name() == name)
    }

    pub fn api_resource(self, version: EsoVersion) -> ApiResource {
        ApiResource {
            group: GROUP.into(),
            version: version.as_str().into(),
            api_version: version.api_version(),
            kind: self.kind().into(),
            plural: self.plural().into(),
        }
    }
}

/// Why a CRD cannot be used (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdProblem {
    Absent,
    NotEstablished,
    Terminating,
    NoSupportedVersion(Vec<String>),
}

impl std::fmt::Display for CrdProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrdProblem::Absent => write!(f, "is not installed"),
            CrdProblem::NotEstablished => write!(f, "is not Established yet"),
            CrdProblem::Terminating => write!(f, "is being deleted"),
            CrdProblem::NoSupportedVersion(served) => write!(
                f,
                "serves [{}], none of which this operator supports (v1, v1beta1)",
                served.join(", ")
            ),
        }
    }
}

/// The version to use for a CRD: `v1` when served, else `v1beta1`; only once it is Established.
pub fn usable_version<S>(crd: Option<&CrdSummary<S>>) -> Result<EsoVersion, CrdProblem> {
    let crd = crd.ok_or(CrdProblem::Absent)?;
    if crd.terminating() {
        return Err(CrdProblem::Terminating);
    }
    if !crd.established() {
        return Err(CrdProblem::NotEstablished);
    }
    preferred_served(crd)
}

/// The version to use among those `crd` serves, whether or not it is Established yet.
pub fn preferred_served<S>(crd: &CrdSummary<S>) -> Result<EsoVersion, CrdProblem> {
    let served = crd.served_versions();
    EsoVersion::PREFERENCE
        .into_iter()
        .find(|v| served.contains(&v.as_str()))
        .ok_or_else(|| {
            CrdProblem::NoSupportedVersion(served.iter().map(|s| s.to_string()).collect())
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd(versions: &[(&str, bool)], established: bool) -> CrdSummary {
        serde_json::from_value(json!({
            "metadata": {"name": EXTERNAL_SECRET_CRD},
            "spec": {
                "group": GROUP, "scope": "Namespaced",
                "names": {"plural": "externalsecrets", "kind": "ExternalSecret"},
                "versions": versions.iter().map(|(n, served)| json!({"name": n, "served": served, "storage": false})).collect::<Vec<_>>()
            },
            "status": {"conditions": [{"type": "Established", "status": if established {"True"} else {"False"}}]}
        }))
        .expect("valid crd")
    }

    #[test]
    fn prefers_v1_and_falls_back_to_v1beta1() {
        assert_eq!(
            usable_version(Some(&crd(&[("v1", true), ("v1beta1", true)], true))),
            Ok(EsoVersion::V1)
        );
        assert_eq!(
            usable_version(Some(&crd(&[("v1alpha1", true), ("v1beta1", true)], true))),
            Ok(EsoVersion::V1beta1)
        );
        // v2.9.0 keeps v1beta1 in the CRD with served: false.
        assert_eq!(
            usable_version(Some(&crd(&[("v1", true), ("v1beta1", false)], true))),
            Ok(EsoVersion::V1)
        );
    }

    #[test]
    fn reports_why_a_crd_is_unusable() {
        assert_eq!(usable_version(None::<&CrdSummary>), Err(CrdProblem::Absent));
        assert_eq!(
            usable_version(Some(&crd(&[("v1", true)], false))),
            Err(CrdProblem::NotEstablished)
        );
        let err = usable_version(Some(&crd(&[("v1alpha1", true), ("v1beta1", false)], true)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "serves [v1alpha1], none of which this operator supports (v1, v1beta1)"
        );
    }
}
