//! Where a secret's values come from: single keys, whole remote secrets, searches, generators.
//!
//! Every optional field is an `Option` without a schema default: these types sit inside list
//! items, where a server-side default would make Argo CD (which compares lists whole) report the
//! bundle OutOfSync forever. ESO applies its own defaults, named in each field's description.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One key of the target Secret and where its value lives in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretData {
    /// Key in the target Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_key: String,
    /// Where the value lives in the store.
    pub remote_ref: RemoteRef,
}

/// A location in the external store (a Vault path, optionally one property of it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// Key (path) in the store, e.g. `argocd/admin`.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Property within the key, e.g. `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub property: Option<String>,
    /// Version of the key, where the store supports versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub version: Option<String>,
    /// How characters that Secret keys cannot hold are replaced in keys taken from the store
    /// (`extract`); ESO's default is `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// How the fetched value is decoded; ESO's default is `None` (kept as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    /// `Fetch` reads the remote secret's metadata (e.g. Vault custom metadata) instead of its
    /// data; ESO's default is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<MetadataPolicy>,
}

/// How characters Secret keys cannot hold, in keys taken from the store, are replaced:
/// `Default`, by `_` (ESO's default); `Unicode`, by `_Uxxxx_`, their code point.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ConversionStrategy {
    /// Each becomes `_` (ESO's default).
    Default,
    /// Each becomes `_Uxxxx_`, its Unicode code point.
    Unicode,
}

/// How a fetched value is decoded before it is stored: `None`, kept as it is (ESO's default);
/// `Base64`; `Base64URL`; `Auto`, base64 or base64url when it parses as one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DecodingStrategy {
    /// Base64 or Base64URL when the value parses as one, else as it is.
    Auto,
    /// Standard base64.
    Base64,
    /// URL-safe base64.
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Kept as it is (ESO's default).
    None,
}

/// Whether the remote secret's data (`None`, ESO's default) or its metadata (`Fetch`, e.g.
/// Vault KV v2 custom metadata) is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MetadataPolicy {
    /// The data (ESO's default).
    None,
    /// The metadata, e.g. Vault KV v2 custom metadata.
    Fetch,
}

/// A source of many keys at once: exactly one of `extract`, `find` or `sourceRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.extract) ? 1 : 0) + (has(self.find) ? 1 : 0) + (has(self.sourceRef) ? 1 : 0) == 1")
    .message("each dataFrom entry needs exactly one of extract, find or sourceRef"))]
pub struct DataFrom {
    /// Every property of one remote key becomes a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Every remote secret matching a name pattern or tags; each becomes a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<Find>,
    /// A generator instead of the store: e.g. a `Password` generator, so a cluster without
    /// the credential in its store (or without a store) still gets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
    /// Renames the keys this entry produces, in order, before they reach the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rewrite: Vec<Rewrite>,
}

impl DataFrom {
    /// Whether this entry reads from a secret store (a generator does not).
    pub fn reads_store(&self) -> bool {
        self.extract.is_some() || self.find.is_some()
    }
}

/// A search of the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) || (has(self.tags) && size(self.tags) > 0)")
    .message("find needs a name regexp or tags"))]
pub struct Find {
    /// Only secrets under this path, e.g. `data-plane/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
    /// Only secrets whose name matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Only secrets carrying all of these tags (Vault: custom metadata).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// As in `remoteRef`; ESO's default is `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// As in `remoteRef`; ESO's default is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// A name pattern.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// Go regular expression (RE2), unanchored, e.g. `^db-`.
    #[schemars(length(min = 1, max = 1024))]
    pub regexp: String,
}

/// One key rewrite: exactly one of `regexp` or `transform`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.regexp) != has(self.transform)")
    .message("each rewrite needs exactly one of regexp or transform"))]
pub struct Rewrite {
    /// Replace what `source` matches with `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    /// Compute the new key with a template, e.g. `{{ .value | upper }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RewriteTransform>,
}

/// A regular-expression replacement on key names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// Go regular expression (RE2), e.g. `^db-(.*)`.
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,
    /// Replacement; `$1` names the first group.
    #[schemars(length(max = 1024))]
    pub target: String,
}

/// A template that computes each new key name from `.value`, the old one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteTransform {
    /// Go template (ESO template functions available), e.g. `{{ .value | lower }}`.
    #[schemars(length(min = 1, max = 4096))]
    pub template: String,
}

/// Where generated values come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// An ESO generator (`generators.external-secrets.io/v1alpha1`) in the target namespace, or
    /// a cluster-scoped `ClusterGenerator`.
    pub generator_ref: GeneratorRef,
}

/// A reference to an ESO generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorRef {
    /// Kind of the generator, e.g. `Password`, `UUID` or `ClusterGenerator`. Which kinds exist
    /// depends on the installed ESO; a kind it does not know is reported as EsoUpgradeRequired.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Z][A-Za-z0-9]*$"))]
    pub kind: String,
    /// Name of the generator object.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}
