//! The import's coverage: every field of an ExternalSecret's spec, in any ESO release the
//! operator knows, and the bundle field it is carried to or why it is refused. Tests hold this
//! table to the vendored ESO CRDs (every field listed), to the conversion (each row behaves as it
//! says) and to docs/migration-from-helmfile.md (which prints it).

/// One ExternalSecret field (list indices left out, e.g. `spec.data[].secretKey`).
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub es: &'static str,
    /// The bundle field it lands in, relative to `spec`; `None`: refused.
    pub bundle: Option<&'static str>,
    /// For a carried field, what to know (values refused, defaults); for a refused one, why.
    pub note: &'static str,
}

const fn carried(es: &'static str, bundle: &'static str, note: &'static str) -> Field {
    Field {
        es,
        bundle: Some(bundle),
        note,
    }
}

const fn refused(es: &'static str, why: &'static str) -> Field {
    Field {
        es,
        bundle: None,
        note: why,
    }
}

/// Every field, in the ExternalSecret's order. A refused row covers its whole subtree.
pub const FIELDS: &[Field] = &[
    carried(
        "spec.secretStoreRef.name",
        "secretStoreRef.name",
        "the most common store becomes the bundle's; others stay on their entry (`secrets[].secretStoreRef`); not written for an entry fed only by generators, which reads no store",
    ),
    carried(
        "spec.secretStoreRef.kind",
        "secretStoreRef.kind",
        "unset means `SecretStore` (ESO's default), written out because a bundle's default is `ClusterSecretStore`",
    ),
    carried(
        "spec.refreshInterval",
        "refreshInterval",
        "the most common interval becomes the bundle's, others stay on their entry (`secrets[].refreshInterval`); unset means ESO's default, `1h`",
    ),
    carried("spec.refreshPolicy", "secrets[].refreshPolicy", ""),
    refused(
        "spec.syncWindows",
        "bundles have no sync windows (ESO v2.x): the entry would sync outside them",
    ),
    carried(
        "spec.target.name",
        "secrets[].targetName",
        "left out when it is the ExternalSecret's own name",
    ),
    carried(
        "spec.target.creationPolicy",
        "secrets[].creationPolicy",
        "`CreateOrMerge` (ESO v2.x) is refused: bundles do not have it",
    ),
    carried("spec.target.deletionPolicy", "secrets[].deletionPolicy", ""),
    carried("spec.target.immutable", "secrets[].immutable", ""),
    refused(
        "spec.target.manifest",
        "bundles write Secrets only, not other kinds of target (ESO v2.x)",
    ),
    carried("spec.target.template.type", "secrets[].type", ""),
    carried(
        "spec.target.template.metadata.labels",
        "secrets[].labels",
        "",
    ),
    carried(
        "spec.target.template.metadata.annotations",
        "secrets[].annotations",
        "",
    ),
    refused(
        "spec.target.template.metadata.finalizers",
        "bundles set no finalizers on Secrets",
    ),
    carried(
        "spec.target.template.engineVersion",
        "secrets[].template.engineVersion",
        "`v1` is refused: bundles use engine v2, and v1 templates need rewriting",
    ),
    carried("spec.target.template.data", "secrets[].template.data", ""),
    carried(
        "spec.target.template.mergePolicy",
        "secrets[].template.mergePolicy",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].configMap.name",
        "secrets[].template.templateFrom[].configMap.name",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].configMap.items[].key",
        "secrets[].template.templateFrom[].configMap.items[].key",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].configMap.items[].templateAs",
        "secrets[].template.templateFrom[].configMap.items[].templateAs",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].secret.name",
        "secrets[].template.templateFrom[].secret.name",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].secret.items[].key",
        "secrets[].template.templateFrom[].secret.items[].key",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].secret.items[].templateAs",
        "secrets[].template.templateFrom[].secret.items[].templateAs",
        "",
    ),
    carried(
        "spec.target.template.templateFrom[].target",
        "secrets[].template.templateFrom[].target",
        "",
    ),
    refused(
        "spec.target.template.templateFrom[].literal",
        "bundles take templates from `template.data` or a ConfigMap or Secret; move the literal into `template.data`",
    ),
    refused(
        "spec.target.template.templateFrom[].valuesDecodingStrategy",
        "bundles do not decode template values (ESO v2.x)",
    ),
    carried("spec.data[].secretKey", "secrets[].data[].secretKey", ""),
    carried(
        "spec.data[].remoteRef.key",
        "secrets[].data[].remoteRef.key",
        "",
    ),
    carried(
        "spec.data[].remoteRef.property",
        "secrets[].data[].remoteRef.property",
        "",
    ),
    carried(
        "spec.data[].remoteRef.version",
        "secrets[].data[].remoteRef.version",
        "",
    ),
    carried(
        "spec.data[].remoteRef.conversionStrategy",
        "secrets[].data[].remoteRef.conversionStrategy",
        "",
    ),
    carried(
        "spec.data[].remoteRef.decodingStrategy",
        "secrets[].data[].remoteRef.decodingStrategy",
        "",
    ),
    carried(
        "spec.data[].remoteRef.metadataPolicy",
        "secrets[].data[].remoteRef.metadataPolicy",
        "",
    ),
    refused(
        "spec.data[].remoteRef.nullBytePolicy",
        "bundles have no null-byte policy (ESO v2.x)",
    ),
    refused(
        "spec.data[].sourceRef",
        "a per-key store or generator: bundle `data[]` reads the entry's store; put a generator in `dataFrom[].sourceRef`, or another store in its own entry",
    ),
    carried(
        "spec.dataFrom[].extract.key",
        "secrets[].dataFrom[].extract.key",
        "",
    ),
    carried(
        "spec.dataFrom[].extract.property",
        "secrets[].dataFrom[].extract.property",
        "",
    ),
    carried(
        "spec.dataFrom[].extract.version",
        "secrets[].dataFrom[].extract.version",
        "",
    ),
    carried(
        "spec.dataFrom[].extract.conversionStrategy",
        "secrets[].dataFrom[].extract.conversionStrategy",
        "",
    ),
    carried(
        "spec.dataFrom[].extract.decodingStrategy",
        "secrets[].dataFrom[].extract.decodingStrategy",
        "",
    ),
    carried(
        "spec.dataFrom[].extract.metadataPolicy",
        "secrets[].dataFrom[].extract.metadataPolicy",
        "",
    ),
    refused(
        "spec.dataFrom[].extract.nullBytePolicy",
        "bundles have no null-byte policy (ESO v2.x)",
    ),
    carried(
        "spec.dataFrom[].find.path",
        "secrets[].dataFrom[].find.path",
        "",
    ),
    carried(
        "spec.dataFrom[].find.name.regexp",
        "secrets[].dataFrom[].find.name.regexp",
        "",
    ),
    carried(
        "spec.dataFrom[].find.tags",
        "secrets[].dataFrom[].find.tags",
        "",
    ),
    carried(
        "spec.dataFrom[].find.conversionStrategy",
        "secrets[].dataFrom[].find.conversionStrategy",
        "",
    ),
    carried(
        "spec.dataFrom[].find.decodingStrategy",
        "secrets[].dataFrom[].find.decodingStrategy",
        "",
    ),
    refused(
        "spec.dataFrom[].find.nullBytePolicy",
        "bundles have no null-byte policy (ESO v2.x)",
    ),
    carried(
        "spec.dataFrom[].rewrite[].regexp.source",
        "secrets[].dataFrom[].rewrite[].regexp.source",
        "",
    ),
    carried(
        "spec.dataFrom[].rewrite[].regexp.target",
        "secrets[].dataFrom[].rewrite[].regexp.target",
        "",
    ),
    carried(
        "spec.dataFrom[].rewrite[].transform.template",
        "secrets[].dataFrom[].rewrite[].transform.template",
        "",
    ),
    refused(
        "spec.dataFrom[].rewrite[].merge",
        "bundles have no merge rewrite (ESO v2.x)",
    ),
    carried(
        "spec.dataFrom[].sourceRef.generatorRef.apiVersion",
        "secrets[].dataFrom[].sourceRef.generatorRef",
        "only `generators.external-secrets.io/v1alpha1`, which the operator always writes; another is refused",
    ),
    carried(
        "spec.dataFrom[].sourceRef.generatorRef.kind",
        "secrets[].dataFrom[].sourceRef.generatorRef.kind",
        "",
    ),
    carried(
        "spec.dataFrom[].sourceRef.generatorRef.name",
        "secrets[].dataFrom[].sourceRef.generatorRef.name",
        "",
    ),
    refused(
        "spec.dataFrom[].sourceRef.storeRef",
        "a per-source store: a bundle entry reads one store; give that source its own entry with `secretStoreRef`",
    ),
];

/// Why the field at `path` (with list indices) is refused.
pub fn why_refused(path: &str) -> String {
    let pattern = super::super::schema::pattern(path);
    FIELDS
        .iter()
        .find(|f| f.bundle.is_none() && f.es == pattern)
        .map(|f| f.note.to_string())
        .unwrap_or_else(|| "bundles have no field for it".into())
}
