use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{BundleSecret, SecretBundleStatus};

/// One service's ExternalSecrets for one target namespace.
///
/// The operator applies them only once the namespace exists, the ESO CRDs are installed, every
/// bundle in `dependsOn` is Ready and the secret store is Ready; the status says which it waits for.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secrets.ameide.io",
    version = "v1alpha1",
    kind = "SecretBundle",
    plural = "secretbundles",
    shortname = "sb",
    status = "SecretBundleStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetNamespace"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Secrets","type":"string","jsonPath":".status.secretsReady","description":"ready/total"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    validation = Rule::new("!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)")
        .message("a bundle cannot depend on itself")
        .field_path(".spec.dependsOn"),
)]
#[serde(rename_all = "camelCase")]
pub struct SecretBundleSpec {
    /// Namespace that receives the ExternalSecrets. It may not exist yet: the bundle waits for it.
    /// Immutable; create a new bundle to target another namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("targetNamespace is immutable; create a new SecretBundle for another namespace"))]
    pub target_namespace: String,

    /// The store every secret reads from unless it names its own.
    pub secret_store_ref: SecretStoreRef,

    /// How often ESO re-reads the store (Go duration, e.g. "1h", "15m"; "0" disables refresh).
    #[serde(default = "default_refresh_interval")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"))]
    pub refresh_interval: String,

    /// Bundles (by name) that must be Ready before this one applies anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub depends_on: Vec<BundleName>,

    /// Stop reconciling: nothing is applied or pruned until this is false again. Deleting a
    /// suspended bundle still carries out its `deletionPolicy`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,

    /// What happens to the ExternalSecrets when the bundle is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Whether the bundle may take over an existing ExternalSecret of the same name that no
    /// bundle manages yet (migration from Helm-made ExternalSecrets). Secrets can override it.
    #[serde(default)]
    pub adoption_policy: AdoptionPolicy,

    /// The ExternalSecrets, one per entry, keyed by `name`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    // Names are unique (the list's key), so only an explicit targetName can collide: each one
    // must be the Secret of exactly one entry. Equivalent to comparing every pair, but linear
    // when targetName is rare: the pairwise rule ran on every write of a bundle, status and
    // metadata too, and doubled its cost (73 vs 38 ms of apiserver CPU at 20 entries, bench
    // step `cost`).
    #[x_kube(validation = Rule::new(
        "self.all(x, !has(x.targetName) || self.exists_one(y, (has(y.targetName) ? y.targetName : y.name) == x.targetName))"
    ).message("two entries write the same Secret: targetName (or name, when targetName is unset) must be unique in a bundle"))]
    pub secrets: Vec<BundleSecret>,
}

impl SecretBundleSpec {
    /// The ExternalSecret names this spec renders: a child of the bundle with another name is
    /// one to prune.
    pub fn secret_names(&self) -> std::collections::BTreeSet<&str> {
        self.secrets.iter().map(|s| s.name.as_str()).collect()
    }
}

/// A DNS-1123 subdomain, as Kubernetes object names are.
pub type BundleName = String;

fn default_refresh_interval() -> String {
    "1h".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A reference to an ESO `ClusterSecretStore` or (namespaced, in the target namespace) `SecretStore`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Name of the store.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Kind of the store; `ClusterSecretStore` when omitted. No schema default on purpose: this
    /// struct also sits inside list items, where a server-side default would make Argo CD (which
    /// compares lists whole) report the bundle OutOfSync forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
}

impl SecretStoreRef {
    /// The kind, with its default applied.
    pub fn kind(&self) -> StoreKind {
        self.kind.unwrap_or_default()
    }
}

/// The kinds of ESO store a bundle can read from.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum StoreKind {
    /// Cluster-scoped store (the default).
    #[default]
    ClusterSecretStore,
    /// Namespaced store, looked up in the target namespace.
    SecretStore,
}

/// What happens to the ExternalSecrets when their bundle is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Delete the ExternalSecrets (ESO then handles their Secrets per its own deletionPolicy).
    #[default]
    Delete,
    /// Leave the ExternalSecrets in place, released from the bundle.
    Orphan,
}

/// Whether an existing ExternalSecret that the operator does not manage may be taken over.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AdoptionPolicy {
    /// Never touch it: the bundle reports `Conflict` naming it.
    #[default]
    Never,
    /// Take it over in place (same object, same UID, its Secret never disappears).
    IfExists,
}
