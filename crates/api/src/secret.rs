//! One ExternalSecret of a bundle, and how ESO shapes and keeps the Secret it writes.
//!
//! As in `source`, optional fields inside `secrets[]` are `Option`s without schema defaults
//! (Argo CD compares lists whole); the operator or ESO applies the defaults in code.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::{AdoptionPolicy, DataFrom, SecretData, SecretStoreRef};

/// One ExternalSecret of the bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0)")
        .message("each secret needs at least one entry in data or dataFrom"),
    validation = Rule::new("!has(self.deletionPolicy) || self.deletionPolicy != 'Delete' || !has(self.creationPolicy) || self.creationPolicy == 'Owner'")
        .message("deletionPolicy Delete needs creationPolicy Owner: ESO deletes only Secrets it owns"),
    validation = Rule::new("!has(self.deletionPolicy) || self.deletionPolicy != 'Merge' || !has(self.creationPolicy) || self.creationPolicy != 'None'")
        .message("deletionPolicy Merge cannot be used with creationPolicy None: there is no Secret to merge into"),
)]
pub struct BundleSecret {
    /// Name of the ExternalSecret, unique in the bundle.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Name of the Kubernetes Secret ESO writes; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub target_name: Option<String>,

    /// Type of the Secret, e.g. `kubernetes.io/dockerconfigjson`; defaults to `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_type: Option<String>,

    /// Labels for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Store for this secret only; defaults to the bundle's `secretStoreRef`. A secret whose
    /// every source is a generator reads no store, and waits for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<Box<SecretStoreRef>>,

    /// Refresh interval for this secret only; defaults to the bundle's `refreshInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"))]
    pub refresh_interval: Option<String>,

    /// When ESO re-reads the sources (ESO v0.16.1 and later); ESO's default is `Periodic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,

    /// Adoption policy for this secret only; defaults to the bundle's `adoptionPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption_policy: Option<AdoptionPolicy>,

    /// Whether ESO creates the Secret and owns it; ESO's default is `Owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,

    /// What ESO does with the Secret when every remote value it reads is gone (not what happens
    /// when the bundle is deleted: that is `spec.deletionPolicy`, and under creationPolicy Owner
    /// the Secret goes with its ExternalSecret). ESO's default is `Retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<SecretDeletionPolicy>,

    /// Make the Secret immutable: once written, ESO can no longer update it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,

    /// Compose the Secret's data from the fetched values with templates (ESO engine v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Box<SecretTemplate>>,

    /// Individual keys: one Secret key per remote key (or property of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["secretKey".into()]))]
    pub data: Vec<SecretData>,

    /// Many keys at once: whole remote secrets, searches, or generators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub data_from: Vec<DataFrom>,
}

impl BundleSecret {
    /// The Kubernetes Secret this entry produces.
    pub fn target_secret_name(&self) -> &str {
        self.target_name.as_deref().unwrap_or(&self.name)
    }

    /// Whether any source reads from a secret store (generators do not).
    pub fn reads_store(&self) -> bool {
        !self.data.is_empty() || self.data_from.iter().any(DataFrom::reads_store)
    }
}

/// When ESO re-reads the sources (ESO v0.16.1 and later; ESO's default is `Periodic`):
/// `CreatedOnce` once, never again, refresh requests included; `Periodic` every
/// `refreshInterval` and on changes and refresh requests (once, with a zero interval);
/// `OnChange` only when the ExternalSecret changes, refresh requests included.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RefreshPolicy {
    /// Once, when the ExternalSecret is first synced; never again (refresh requests included).
    CreatedOnce,
    /// Every `refreshInterval`, on changes and on refresh requests (ESO's default); with a zero
    /// interval, once.
    Periodic,
    /// Only when the ExternalSecret changes, refresh requests included; `refreshInterval` is ignored.
    OnChange,
}

/// Whether ESO creates and owns the Secret (ESO's default is `Owner`): `Owner` creates it and
/// it is deleted with its ExternalSecret; `Orphan` creates it and it outlives its
/// ExternalSecret; `Merge` only adds ESO's keys to a Secret someone else created (not Ready
/// until that Secret exists); `None` writes no Secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum CreationPolicy {
    /// ESO creates the Secret and owns it: it is deleted with its ExternalSecret (ESO's default).
    Owner,
    /// ESO creates and updates the Secret but does not own it: it outlives its ExternalSecret.
    Orphan,
    /// ESO only adds its keys to a Secret someone else created, leaving the other keys alone;
    /// until that Secret exists, the entry is not Ready.
    Merge,
    /// ESO writes no Secret.
    None,
}

/// What ESO does with the Secret when every remote value it reads is gone (ESO's default is
/// `Retain`): `Delete` it (needs creationPolicy Owner), `Merge` (remove ESO's keys) or `Retain`
/// it. Not what happens when the bundle is deleted: that is `spec.deletionPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SecretDeletionPolicy {
    /// Delete the Secret (needs creationPolicy Owner).
    Delete,
    /// Remove ESO's keys, keep the Secret.
    Merge,
    /// Keep the Secret as it is (ESO's default).
    Retain,
}

/// Templates that compose the Secret's data (ESO's template engine v2: Go templates with
/// Sprig functions; each fetched key is a field, e.g. `{{ .password | urlquery }}`).
/// The Secret's type and metadata come from the entry's `type`, `labels` and `annotations`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// ESO's template engine: only `v2`, the one bundles use (and ESO's default), is accepted, so
    /// a template copied from ESO's documentation applies as it is. Optional: v2 either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'v2'").message("bundles use template engine v2: engineVersion must be v2 (v1 templates need rewriting in v2 syntax)"))]
    pub engine_version: Option<String>,
    /// Secret keys and the template that computes each, e.g.
    /// `url: "postgresql://{{ .username }}:{{ .password | urlquery }}@{{ .host }}/app"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub data: BTreeMap<String, String>,
    /// `Replace`: the Secret holds only the templated keys (ESO's default). `Merge`: the
    /// fetched keys too, templated keys winning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<TemplateMergePolicy>,
    /// Templates kept in a ConfigMap or Secret of the target namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub template_from: Vec<TemplateFrom>,
}

/// Whether fetched keys are kept beside the templated ones: `Replace`, only the templated keys
/// (ESO's default); `Merge`, both, templated keys winning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TemplateMergePolicy {
    /// Only the templated keys (ESO's default).
    Replace,
    /// Fetched keys and templated keys.
    Merge,
}

/// Templates from a ConfigMap or a Secret (exactly one) in the target namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)")
    .message("each templateFrom entry needs exactly one of configMap or secret"))]
pub struct TemplateFrom {
    /// A ConfigMap holding templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateSource>,
    /// A Secret holding templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateSource>,
    /// What the templates produce: `Data` (ESO's default), `Annotations` or `Labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TemplateTarget>,
}

/// A ConfigMap or Secret and the keys of it that are templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSource {
    /// Name of the ConfigMap or Secret in the target namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Its keys that hold templates.
    #[schemars(length(min = 1, max = 64))]
    pub items: Vec<TemplateItem>,
}

/// One template of a ConfigMap or Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateItem {
    /// The key holding the template.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// `Values`: the template becomes the value of `key` (ESO's default). `KeysAndValues`: it
    /// renders YAML whose keys and values all become Secret entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_as: Option<TemplateAs>,
}

/// How a template from a ConfigMap or Secret is used: `Values`, its output is the value of its
/// key (ESO's default); `KeysAndValues`, its output is YAML whose every entry becomes a key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TemplateAs {
    /// The rendered template is the value of its key.
    Values,
    /// The rendered template is YAML; each of its entries becomes a key.
    KeysAndValues,
}

/// What a template from a ConfigMap or Secret produces: `Data` (ESO's default), `Annotations`
/// or `Labels` of the Secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TemplateTarget {
    /// Secret data (ESO's default).
    Data,
    /// Secret annotations.
    Annotations,
    /// Secret labels.
    Labels,
}
