//! Entries into bundles: one per target namespace, with the settings most entries share lifted
//! to the bundle and the others kept on their entry, so rendering gives each ExternalSecret back.

use std::collections::{BTreeMap, BTreeSet};

use secretbundle_api::{
    AdoptionPolicy, DeletionPolicy, SecretBundle, SecretBundleSpec, SecretStoreRef,
};

use super::{Entry, Refusal};

/// The outcome of an import: the bundles, and what was left out of them, by object.
#[derive(Debug, Default)]
pub struct Imported {
    pub bundles: Vec<SecretBundle>,
    /// `namespace/name` of an ExternalSecret (or a namespace) and what was refused in it.
    pub refused: Vec<(String, Refusal)>,
    /// Carried, in a form that differs from the input without changing what ESO does.
    pub notes: Vec<(String, Refusal)>,
}

/// Groups `entries` into bundles, one per target namespace, each with `adoptionPolicy:
/// IfExists` so it takes the existing ExternalSecrets over in place. A bundle is named `name`,
/// else after the Helm release all its entries share, else after its namespace; when several
/// namespaces would give the same name, each gets `-<namespace>` appended.
pub fn bundles(entries: Vec<Entry>, name: Option<&str>) -> Imported {
    let mut out = Imported::default();
    let mut by_namespace: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        let id = e.id();
        out.notes
            .extend(e.notes.iter().map(|n| (id.clone(), n.clone())));
        if !e.refusals.is_empty() {
            out.refused
                .extend(e.refusals.iter().map(|r| (id.clone(), r.clone())));
            continue;
        }
        let group = by_namespace.entry(e.namespace.clone()).or_default();
        if group.iter().any(|g| g.secret.name == e.secret.name) {
            out.refused.push((
                id,
                dup("metadata.name", "this ExternalSecret was given twice"),
            ));
        } else if let Some(g) = group
            .iter()
            .find(|g| g.secret.target_secret_name() == e.secret.target_secret_name())
        {
            let msg = format!(
                "writes the same Secret as {}; a bundle has one writer per Secret",
                g.secret.name
            );
            out.refused.push((id, dup("spec.target.name", &msg)));
        } else {
            group.push(e);
        }
    }
    let names: Vec<(String, String)> = by_namespace
        .iter()
        .map(|(ns, es)| (ns.clone(), base_name(name, ns, es)))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, n) in &names {
        *counts.entry(n).or_default() += 1;
    }
    for (ns, n) in &names {
        let bundle_name = if counts[n.as_str()] > 1 && n != ns {
            format!("{n}-{ns}")
        } else {
            n.clone()
        };
        let mut entries = by_namespace.remove(ns).unwrap_or_default();
        entries.sort_by(|a, b| a.secret.name.cmp(&b.secret.name));
        match bundle(&bundle_name, ns, entries) {
            Ok(b) => out.bundles.push(b),
            Err(r) => out.refused.push((format!("namespace {ns}"), r)),
        }
    }
    out
}

fn dup(field: &str, message: &str) -> Refusal {
    Refusal {
        field: field.into(),
        message: message.into(),
    }
}

fn base_name(name: Option<&str>, namespace: &str, entries: &[Entry]) -> String {
    if let Some(n) = name {
        return n.to_string();
    }
    let releases: BTreeSet<Option<&str>> = entries.iter().map(|e| e.release.as_deref()).collect();
    match releases.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(release)] => release.to_string(),
        _ => namespace.to_string(),
    }
}

/// The value most entries share (the first seen among equals).
fn most_common<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, (usize, usize)> = BTreeMap::new();
    for (i, v) in values.enumerate() {
        counts.entry(v).or_insert((0, i)).0 += 1;
    }
    counts
        .into_iter()
        .max_by(|(_, (n1, i1)), (_, (n2, i2))| n1.cmp(n2).then(i2.cmp(i1)))
        .map(|(v, _)| v)
}

fn bundle(name: &str, namespace: &str, entries: Vec<Entry>) -> Result<SecretBundle, Refusal> {
    let store_key = |s: &SecretStoreRef| (s.name.clone(), s.kind());
    // Stores the entries read win; a store only generator-fed entries name is a fallback.
    let named = |reading: bool| {
        entries
            .iter()
            .filter(move |e| !reading || e.secret.reads_store())
            .filter_map(|e| e.store.as_ref())
            .map(store_key)
    };
    let store = most_common(named(true))
        .or_else(|| most_common(named(false)))
        .map(|(name, kind)| SecretStoreRef {
            name,
            kind: Some(kind),
        })
        .ok_or_else(|| Refusal {
            field: "spec.secretStoreRef".into(),
            message: "every ExternalSecret here reads only generators: a bundle still needs a \
                      secretStoreRef (unused); write the bundle by hand"
                .into(),
        })?;
    let refresh = most_common(entries.iter().map(|e| e.refresh_interval.clone()))
        .unwrap_or_else(|| "1h".into());
    let secrets = entries
        .into_iter()
        .map(|e| {
            let mut s = e.secret;
            s.secret_store_ref = e
                .store
                .filter(|own| s.reads_store() && store_key(own) != store_key(&store))
                .map(Box::new);
            s.refresh_interval = Some(e.refresh_interval).filter(|r| *r != refresh);
            s
        })
        .collect();
    Ok(SecretBundle::new(
        name,
        SecretBundleSpec {
            target_namespace: namespace.to_string(),
            secret_store_ref: store,
            refresh_interval: refresh,
            depends_on: Vec::new(),
            suspend: false,
            deletion_policy: DeletionPolicy::Delete,
            adoption_policy: AdoptionPolicy::IfExists,
            secrets,
        },
    ))
}
