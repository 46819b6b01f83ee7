use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a bundle, in the kstatus form that Flux, Argo CD and `kubectl wait` read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretBundleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises; `Reconciling` is present while work is in progress or waiting;
    /// `Stalled` is present when only a change by a person can help.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// ESO API version the children are written in (`external-secrets.io/v1` or `/v1beta1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eso_api_version: Option<String>,

    /// Children reporting ESO `Ready=True`.
    #[serde(default)]
    pub ready_secrets: i32,

    /// Children in the spec.
    #[serde(default)]
    pub total_secrets: i32,

    /// `ready/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_ready: Option<String>,

    /// The last value of the refresh annotation that was passed on to every child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh: Option<String>,

    /// One entry per secret in the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub secrets: Vec<SecretStatus>,
}

/// Observed state of one child ExternalSecret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    /// Name of the ExternalSecret.
    pub name: String,
    /// Whether ESO reports it `Ready=True`.
    pub ready: bool,
    /// ESO's reason, or the operator's when the child is not applied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// ESO's message, or the operator's when the child is not applied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Condition types.
pub mod condition {
    /// Summary: every child is applied and ESO reports it Ready.
    pub const READY: &str = "Ready";
    /// Work in progress, or waiting for a precondition that is expected to appear.
    pub const RECONCILING: &str = "Reconciling";
    /// Cannot progress without a change by a person.
    pub const STALLED: &str = "Stalled";
}
