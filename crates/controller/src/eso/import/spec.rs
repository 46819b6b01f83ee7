//! An ExternalSecret's spec, field by field, into a bundle entry. Each function takes the keys
//! it knows out of its object and hands the rest to [`Reader::rest`], which refuses them.

use std::collections::BTreeSet;

use secretbundle_api::{
    BundleSecret, DataFrom, Find, FindName, GeneratorRef, RemoteRef, Rewrite, RewriteRegexp,
    RewriteTransform, SecretData, SecretStoreRef, SecretTemplate, SourceRef, StoreKind,
    TemplateFrom, TemplateItem, TemplateSource,
};
use serde_json::{Map, Value};

use super::Refusal;
use super::reader::{Reader, at};
use crate::eso::GENERATORS_API_VERSION;

/// ESO's refresh interval when the spec sets none.
const ESO_DEFAULT_REFRESH: &str = "1h";

pub(super) struct Converted {
    pub store: Option<SecretStoreRef>,
    pub refresh_interval: String,
    pub secret: BundleSecret,
    pub refusals: Vec<Refusal>,
    pub notes: Vec<Refusal>,
}

type Obj = Map<String, Value>;

pub(super) fn convert(name: &str, spec: Option<&Value>) -> Converted {
    let mut r = Reader::default();
    let mut spec = match spec {
        Some(Value::Object(o)) => o.clone(),
        None | Some(Value::Null) => Obj::new(),
        Some(other) => {
            r.refuse("spec".into(), format!("expected an object, found {other}"));
            Obj::new()
        }
    };
    let p = "spec";
    let store = r
        .object(&mut spec, p, "secretStoreRef")
        .map(|m| store_ref(&mut r, m, &at(p, "secretStoreRef")));
    let refresh_interval = r
        .string(&mut spec, p, "refreshInterval")
        .unwrap_or_else(|| ESO_DEFAULT_REFRESH.into());
    let refresh_policy = r.parsed(&mut spec, p, "refreshPolicy");
    let mut secret = BundleSecret {
        name: name.to_string(),
        target_name: None,
        secret_type: None,
        labels: Default::default(),
        annotations: Default::default(),
        secret_store_ref: None,
        refresh_interval: None,
        refresh_policy,
        adoption_policy: None,
        creation_policy: None,
        deletion_policy: None,
        immutable: None,
        template: None,
        data: Vec::new(),
        data_from: Vec::new(),
    };
    if let Some(target) = r.object(&mut spec, p, "target") {
        self::target(&mut r, target, &mut secret);
    }
    secret.data = r
        .objects(&mut spec, p, "data")
        .into_iter()
        .map(|(path, m)| data(&mut r, m, &path))
        .collect();
    secret.data_from = r
        .objects(&mut spec, p, "dataFrom")
        .into_iter()
        .map(|(path, m)| data_from(&mut r, m, &path))
        .collect();
    r.rest(spec, p);
    check(&mut r, &secret);

    let mut notes = Vec::new();
    match &store {
        Some(s) if !secret.reads_store() => notes.push(Refusal {
            field: "spec.secretStoreRef".into(),
            message: format!(
                "not written: every source is a generator, so ESO never reads store {:?}",
                s.name
            ),
        }),
        None if secret.reads_store() => r.refuse(
            "spec.secretStoreRef".into(),
            "required: a source reads a store, but none is named",
        ),
        _ => {}
    }
    Converted {
        store,
        refresh_interval,
        secret,
        refusals: r.refusals,
        notes,
    }
}

/// What the bundle's schema would reject, refused here so the printed bundle applies.
fn check(r: &mut Reader, s: &BundleSecret) {
    if s.data.is_empty() && s.data_from.is_empty() {
        r.refuse(
            "spec.data".into(),
            "neither data nor dataFrom: there is nothing for a bundle entry to deliver",
        );
    }
    let mut keys = BTreeSet::new();
    for (i, d) in s.data.iter().enumerate() {
        if !keys.insert(&d.secret_key) {
            r.refuse(
                format!("spec.data[{i}].secretKey"),
                format!(
                    "{:?} appears twice; a bundle entry keys data by secretKey",
                    d.secret_key
                ),
            );
        }
    }
    use secretbundle_api::{CreationPolicy as C, SecretDeletionPolicy as D};
    match (s.creation_policy, s.deletion_policy) {
        (Some(c), Some(D::Delete)) if c != C::Owner => r.refuse(
            "spec.target.deletionPolicy".into(),
            "Delete needs creationPolicy Owner: ESO deletes only Secrets it owns",
        ),
        (Some(C::None), Some(D::Merge)) => r.refuse(
            "spec.target.deletionPolicy".into(),
            "Merge cannot be used with creationPolicy None: there is no Secret to merge into",
        ),
        _ => {}
    }
}

fn store_ref(r: &mut Reader, mut m: Obj, p: &str) -> SecretStoreRef {
    let name = r.required(&mut m, p, "name");
    // ESO's default kind is SecretStore; a bundle's is ClusterSecretStore, so it is written out.
    let kind = r
        .parsed(&mut m, p, "kind")
        .unwrap_or(StoreKind::SecretStore);
    r.rest(m, p);
    SecretStoreRef {
        name,
        kind: Some(kind),
    }
}

fn target(r: &mut Reader, mut m: Obj, s: &mut BundleSecret) {
    let p = "spec.target";
    s.target_name = r.string(&mut m, p, "name").filter(|n| *n != s.name);
    s.creation_policy = r.parsed(&mut m, p, "creationPolicy");
    s.deletion_policy = r.parsed(&mut m, p, "deletionPolicy");
    s.immutable = r.boolean(&mut m, p, "immutable");
    if let Some(t) = r.object(&mut m, p, "template") {
        template(r, t, s);
    }
    r.rest(m, p);
}

fn template(r: &mut Reader, mut m: Obj, s: &mut BundleSecret) {
    let p = "spec.target.template";
    s.secret_type = r.string(&mut m, p, "type");
    if let Some(mut meta) = r.object(&mut m, p, "metadata") {
        let mp = at(p, "metadata");
        s.labels = r.string_map(&mut meta, &mp, "labels");
        s.annotations = r.string_map(&mut meta, &mp, "annotations");
        r.rest(meta, &mp);
    }
    // Only what the bundle's `template` holds makes it one: a template of type and metadata alone
    // maps to the entry's `type`, `labels` and `annotations`.
    let engine = r.string(&mut m, p, "engineVersion");
    if let Some(v) = engine.as_deref().filter(|v| *v != "v2") {
        r.refuse(
            at(p, "engineVersion"),
            format!("{v:?}: bundles use template engine v2; rewrite the templates in v2 syntax"),
        );
    }
    let data = r.string_map(&mut m, p, "data");
    let merge_policy = r.parsed(&mut m, p, "mergePolicy");
    let template_from: Vec<TemplateFrom> = r
        .objects(&mut m, p, "templateFrom")
        .into_iter()
        .map(|(path, t)| template_from(r, t, &path))
        .collect();
    r.rest(m, p);
    if engine.is_some() || !data.is_empty() || merge_policy.is_some() || !template_from.is_empty() {
        s.template = Some(Box::new(SecretTemplate {
            engine_version: engine.filter(|v| v == "v2"),
            data,
            merge_policy,
            template_from,
        }));
    }
}

fn template_from(r: &mut Reader, mut m: Obj, p: &str) -> TemplateFrom {
    let source = |r: &mut Reader, m: &mut Obj, key: &str| {
        let mut o = r.object(m, p, key)?;
        let sp = at(p, key);
        let name = r.required(&mut o, &sp, "name");
        let items = r
            .objects(&mut o, &sp, "items")
            .into_iter()
            .map(|(ip, mut i)| {
                let item = TemplateItem {
                    key: r.required(&mut i, &ip, "key"),
                    template_as: r.parsed(&mut i, &ip, "templateAs"),
                };
                r.rest(i, &ip);
                item
            })
            .collect();
        r.rest(o, &sp);
        Some(TemplateSource { name, items })
    };
    let config_map = source(r, &mut m, "configMap");
    let secret = source(r, &mut m, "secret");
    let target = r.parsed(&mut m, p, "target");
    r.rest(m, p);
    TemplateFrom {
        config_map,
        secret,
        target,
    }
}

fn data(r: &mut Reader, mut m: Obj, p: &str) -> SecretData {
    let secret_key = r.required(&mut m, p, "secretKey");
    let remote_ref = match r.object(&mut m, p, "remoteRef") {
        Some(o) => remote_ref(r, o, &at(p, "remoteRef")),
        None => {
            r.refuse(at(p, "remoteRef"), "required, but not set");
            RemoteRef::default()
        }
    };
    r.rest(m, p);
    SecretData {
        secret_key,
        remote_ref,
    }
}

fn remote_ref(r: &mut Reader, mut m: Obj, p: &str) -> RemoteRef {
    let out = RemoteRef {
        key: r.required(&mut m, p, "key"),
        property: r.string(&mut m, p, "property"),
        version: r.string(&mut m, p, "version"),
        conversion_strategy: r.parsed(&mut m, p, "conversionStrategy"),
        decoding_strategy: r.parsed(&mut m, p, "decodingStrategy"),
        metadata_policy: r.parsed(&mut m, p, "metadataPolicy"),
    };
    r.rest(m, p);
    out
}

fn data_from(r: &mut Reader, mut m: Obj, p: &str) -> DataFrom {
    let extract = r
        .object(&mut m, p, "extract")
        .map(|o| remote_ref(r, o, &at(p, "extract")));
    let find = r
        .object(&mut m, p, "find")
        .map(|o| find(r, o, &at(p, "find")));
    let source_ref = r
        .object(&mut m, p, "sourceRef")
        .and_then(|o| source_ref(r, o, &at(p, "sourceRef")));
    let rewrite = r
        .objects(&mut m, p, "rewrite")
        .into_iter()
        .map(|(rp, o)| rewrite(r, o, &rp))
        .collect();
    r.rest(m, p);
    let sources = [extract.is_some(), find.is_some(), source_ref.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        r.refuse(
            p.to_string(),
            "needs exactly one of extract, find or sourceRef.generatorRef",
        );
    }
    DataFrom {
        extract,
        find,
        source_ref,
        rewrite,
    }
}

fn find(r: &mut Reader, mut m: Obj, p: &str) -> Find {
    let name = r.object(&mut m, p, "name").map(|mut n| {
        let np = at(p, "name");
        let regexp = r.required(&mut n, &np, "regexp");
        r.rest(n, &np);
        FindName { regexp }
    });
    let out = Find {
        path: r.string(&mut m, p, "path"),
        name,
        tags: r.string_map(&mut m, p, "tags"),
        conversion_strategy: r.parsed(&mut m, p, "conversionStrategy"),
        decoding_strategy: r.parsed(&mut m, p, "decodingStrategy"),
    };
    r.rest(m, p);
    out
}

fn source_ref(r: &mut Reader, mut m: Obj, p: &str) -> Option<SourceRef> {
    let generator = r.object(&mut m, p, "generatorRef").map(|mut g| {
        let gp = at(p, "generatorRef");
        let api_version = r.string(&mut g, &gp, "apiVersion");
        if let Some(v) = api_version.filter(|v| v != GENERATORS_API_VERSION) {
            r.refuse(
                at(&gp, "apiVersion"),
                format!("{v:?}: bundles reference generators of {GENERATORS_API_VERSION} only"),
            );
        }
        let out = GeneratorRef {
            kind: r.required(&mut g, &gp, "kind"),
            name: r.required(&mut g, &gp, "name"),
        };
        r.rest(g, &gp);
        out
    });
    r.rest(m, p);
    generator.map(|generator_ref| SourceRef { generator_ref })
}

fn rewrite(r: &mut Reader, mut m: Obj, p: &str) -> Rewrite {
    let regexp = r.object(&mut m, p, "regexp").map(|mut o| {
        let rp = at(p, "regexp");
        let out = RewriteRegexp {
            source: r.required(&mut o, &rp, "source"),
            target: r.string(&mut o, &rp, "target").unwrap_or_default(),
        };
        r.rest(o, &rp);
        out
    });
    let transform = r.object(&mut m, p, "transform").map(|mut o| {
        let tp = at(p, "transform");
        let out = RewriteTransform {
            template: r.required(&mut o, &tp, "template"),
        };
        r.rest(o, &tp);
        out
    });
    r.rest(m, p);
    if regexp.is_some() == transform.is_some() {
        r.refuse(p.to_string(), "needs exactly one of regexp or transform");
    }
    Rewrite { regexp, transform }
}
