//! Gathers the facts the gates need. A reconcile reads them from the caches the watches keep
//! (no request); `explain` fetches them with GETs. Dependencies come from a bundle cache (the
//! controller's is filled before any dependent is woken).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use secretbundle_api::{SecretBundle, StoreKind};
use serde::de::{DeserializeOwned, IgnoredAny};

use super::gates;
use crate::cache::{Caches, StoreId, store_ids};
use crate::error::{Error, KubeContext};
use crate::eso::{self, CrdProblem, CrdSummary, EsoKind, EsoVersion, ServedSchema};
use crate::facts::{DependencyFact, Facts, NamespaceFact, Peer, StoreFact, StoreKey, read_store};

/// The facts for `bundle`, from the caches.
pub fn facts(caches: &Caches, bundles: &Store<SecretBundle>, bundle: &SecretBundle) -> Facts {
    let namespace = caches.namespace(&bundle.spec.target_namespace);
    let crd = caches.external_secrets();
    // Each store kind is cached at the version its own CRD serves, which need not be the
    // ExternalSecret CRD's (the CRDs of one ESO install can be upgraded one by one).
    let stores = store_ids(bundle)
        .into_iter()
        .map(|id| (caches.store(&id), id))
        .collect();
    let peer = |name: &str| {
        bundles
            .get(&ObjectRef::new(name))
            .map(|b| Peer::of(&b))
            .or_else(|| caches.peer(name))
    };
    assemble(&peer, bundle, namespace, crd, stores)
}

/// The facts for `bundle`, fetched from the cluster (for `explain`, which keeps no caches).
pub async fn fetch(
    client: &Client,
    bundles: &Store<SecretBundle>,
    bundle: &SecretBundle,
) -> Result<Facts, Error> {
    let namespace = match Api::<Namespace>::all(client.clone())
        .get_opt(&bundle.spec.target_namespace)
        .await
        .during("get namespace")?
    {
        None => NamespaceFact::Absent,
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => NamespaceFact::Terminating,
        Some(ns) => NamespaceFact::Active {
            labels: ns.labels().clone(),
        },
    };
    let (crd, eso_schema) = external_secret_api(client).await?;
    let mut versions = BTreeMap::new();
    let mut stores = Vec::new();
    for id in store_ids(bundle) {
        let kind = EsoKind::of_store(id.kind);
        let version = match versions.get(&kind) {
            Some(v) => *v,
            None => {
                let v = crd_version(client, kind).await?.ok();
                versions.insert(kind, v);
                v
            }
        };
        let fact = match version {
            Some(v) => fetch_store(client, v, &id).await?,
            None => StoreFact::Absent,
        };
        stores.push((fact, id));
    }
    let peer = |name: &str| bundles.get(&ObjectRef::new(name)).map(|b| Peer::of(&b));
    Ok(assemble(
        &peer,
        bundle,
        namespace,
        (crd, eso_schema.map(Arc::new)),
        stores,
    ))
}

/// The ESO version children are written in, or why the ExternalSecret CRD cannot be used, and
/// the schema the CRD serves for it (what the bundle may use).
async fn external_secret_api(
    client: &Client,
) -> Result<(Result<EsoVersion, CrdProblem>, Option<ServedSchema>), Error> {
    let crd = get_crd::<serde_json::Value>(client, EsoKind::ExternalSecret).await?;
    let version = eso::usable_version(crd.as_ref());
    let schema = match (&crd, &version) {
        (Some(crd), Ok(v)) => ServedSchema::of(crd, *v),
        _ => None,
    };
    Ok((version, schema))
}

/// The version to read or write `kind` in, from its own CRD.
async fn crd_version(
    client: &Client,
    kind: EsoKind,
) -> Result<Result<EsoVersion, CrdProblem>, Error> {
    // Only its versions and conditions are read: a store CRD's schema is not decoded.
    let crd = get_crd::<IgnoredAny>(client, kind).await?;
    Ok(eso::usable_version(crd.as_ref()))
}

async fn get_crd<S: DeserializeOwned + Clone + std::fmt::Debug>(
    client: &Client,
    kind: EsoKind,
) -> Result<Option<CrdSummary<S>>, Error> {
    Api::<CrdSummary<S>>::all(client.clone())
        .get_opt(&kind.crd_name())
        .await
        .during("get ESO CRD")
}

async fn fetch_store(
    client: &Client,
    version: EsoVersion,
    id: &StoreId,
) -> Result<StoreFact, Error> {
    let resource = EsoKind::of_store(id.kind).api_resource(version);
    let api: Api<DynamicObject> = match id.kind {
        StoreKind::ClusterSecretStore => Api::all_with(client.clone(), &resource),
        StoreKind::SecretStore => Api::namespaced_with(client.clone(), &id.namespace, &resource),
    };
    let store = match api.get_opt(&id.name).await {
        Ok(store) => store,
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e).during("get secret store"),
    };
    Ok(store.map_or(StoreFact::Absent, |s| read_store(&s.data)))
}

/// `peer`: a bundle by name, from this shard's cache or (of another shard) what is kept of it.
fn assemble(
    peer: &dyn Fn(&str) -> Option<Peer>,
    bundle: &SecretBundle,
    namespace: NamespaceFact,
    (crd, eso_schema): (Result<EsoVersion, CrdProblem>, Option<Arc<ServedSchema>>),
    stores: Vec<(StoreFact, StoreId)>,
) -> Facts {
    let dependencies: Vec<(String, DependencyFact)> = bundle
        .spec
        .depends_on
        .iter()
        .map(|d| {
            let fact = peer(d).map_or(DependencyFact::Missing, |p| p.fact);
            (d.clone(), fact)
        })
        .collect();
    let me = bundle.name_any();
    let depends_on = |n: &str| -> Vec<String> {
        if n == me {
            return bundle.spec.depends_on.clone();
        }
        peer(n).map(|p| p.depends_on).unwrap_or_default()
    };
    let cycle = gates::find_cycle(&me, &depends_on);

    let stores = if crd.is_ok() {
        stores
            .into_iter()
            .map(|(fact, id)| {
                let key = StoreKey {
                    kind: id.kind,
                    name: id.name,
                };
                (key, fact)
            })
            .collect()
    } else {
        Vec::new()
    };
    Facts {
        namespace,
        crd,
        eso_schema,
        dependencies,
        cycle,
        stores,
    }
}
