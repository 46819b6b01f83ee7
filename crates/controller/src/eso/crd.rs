//! A CRD as the operator's watches read it: served versions, Established, deletion, and each
//! version's schema as plain JSON, or skipped.
//!
//! ESO's two store CRDs carry some 500 KB of schema each (every provider's fields). Decoded as
//! a typed `CustomResourceDefinition` they took ~5 MB of heap at startup, which the allocator
//! then kept, although nothing of a store CRD but its versions and conditions is read. Their
//! watches read them as `CrdSummary<IgnoredAny>`, which skips every schema; the ExternalSecret
//! CRD's is kept as JSON for [`ServedSchema::of`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use super::EsoVersion;
#[cfg(doc)]
use super::ServedSchema;

/// A CRD with its versions' schemas as `S`: JSON, or `serde::de::IgnoredAny` to skip them.
#[derive(Clone, Debug, Deserialize)]
pub struct CrdSummary<S = Value> {
    pub metadata: ObjectMeta,
    spec: Spec<S>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Clone, Debug, Deserialize)]
struct Spec<S> {
    #[serde(default = "Vec::new")]
    versions: Vec<Version<S>>,
}

#[derive(Clone, Debug, Deserialize)]
struct Version<S> {
    name: String,
    #[serde(default)]
    served: bool,
    /// `{"openAPIV3Schema": ...}`.
    #[serde(default = "Option::default")]
    schema: Option<S>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Status {
    /// `null` on a CRD just created, before any condition is set.
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
}

#[derive(Clone, Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl<S> CrdSummary<S> {
    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether the API server serves the CRD's objects yet.
    pub fn established(&self) -> bool {
        let conditions = self.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    }

    pub fn served_versions(&self) -> Vec<&str> {
        let served = self.spec.versions.iter().filter(|v| v.served);
        served.map(|v| v.name.as_str()).collect()
    }
}

impl CrdSummary {
    /// The `openAPIV3Schema` of `version`, if the CRD has one.
    pub(crate) fn open_api_schema(&self, version: EsoVersion) -> Option<&Value> {
        let v = self
            .spec
            .versions
            .iter()
            .find(|v| v.name == version.as_str())?;
        v.schema.as_ref()?.get("openAPIV3Schema")
    }
}

impl<S> k8s_openapi::Resource for CrdSummary<S> {
    const API_VERSION: &'static str = CustomResourceDefinition::API_VERSION;
    const GROUP: &'static str = CustomResourceDefinition::GROUP;
    const KIND: &'static str = CustomResourceDefinition::KIND;
    const VERSION: &'static str = CustomResourceDefinition::VERSION;
    const URL_PATH_SEGMENT: &'static str = CustomResourceDefinition::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl<S> k8s_openapi::ListableResource for CrdSummary<S> {
    const LIST_KIND: &'static str = CustomResourceDefinition::LIST_KIND;
}

impl<S> k8s_openapi::Metadata for CrdSummary<S> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use kube::core::WatchEvent;
    use serde_json::json;

    use super::*;
    use crate::eso::{CrdProblem, usable_version};

    fn crd(established: &str) -> serde_json::Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "externalsecrets.external-secrets.io", "resourceVersion": "7"},
            "spec": {"group": "external-secrets.io", "versions": [
                {"name": "v1beta1", "served": false, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "description": "old"}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"target": {"type": "object"}}}}}}}]},
            "status": {"conditions": [{"type": "Established", "status": established}]}
        })
    }

    /// As a watch reads it: one line of a watch response.
    #[test]
    fn a_watch_event_keeps_versions_conditions_and_the_schema() {
        let line =
            serde_json::to_vec(&json!({"type": "MODIFIED", "object": crd("True")})).expect("json");
        let event: WatchEvent<CrdSummary> = serde_json::from_slice(&line).expect("decodes");
        let WatchEvent::Modified(summary) = event else {
            panic!("not a modification")
        };
        assert_eq!(usable_version(Some(&summary)), Ok(EsoVersion::V1));
        assert_eq!(
            summary.open_api_schema(EsoVersion::V1),
            Some(&crd("True")["spec"]["versions"][1]["schema"]["openAPIV3Schema"]),
            "the served version's schema, as sent"
        );
        // A store CRD's watch skips the schemas and still sees what decides usability.
        let skipped: WatchEvent<CrdSummary<serde::de::IgnoredAny>> =
            serde_json::from_slice(&line).expect("decodes");
        let WatchEvent::Modified(skipped) = skipped else {
            panic!("not a modification")
        };
        assert_eq!(usable_version(Some(&skipped)), Ok(EsoVersion::V1));
    }

    #[test]
    fn not_established_or_terminating_is_not_usable() {
        let decode = |v: serde_json::Value| -> CrdSummary {
            serde_json::from_str(&v.to_string()).expect("decodes")
        };
        let summary = decode(crd("False"));
        assert_eq!(
            usable_version(Some(&summary)),
            Err(CrdProblem::NotEstablished)
        );
        let mut gone = crd("True");
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let summary = decode(gone);
        assert_eq!(usable_version(Some(&summary)), Err(CrdProblem::Terminating));
        // As the apiserver sends a CRD it has just created: a watch that failed on it saw the
        // CRD only at its next change.
        let mut created = crd("True");
        created["status"] = json!({"acceptedNames": {"kind": "", "plural": ""},
            "conditions": null, "storedVersions": ["v1"]});
        let line = json!({"type": "ADDED", "object": created}).to_string();
        let event: WatchEvent<CrdSummary<serde::de::IgnoredAny>> =
            serde_json::from_str(&line).expect("decodes");
        let WatchEvent::Added(summary) = event else {
            panic!("not an addition")
        };
        assert_eq!(
            usable_version(Some(&summary)),
            Err(CrdProblem::NotEstablished)
        );
    }
}
