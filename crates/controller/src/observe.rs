//! Gathers the facts the gates need: fresh GETs for what lives outside the bundle, the
//! controller's bundle cache for dependencies (filled before any dependent is woken).

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use secretbundle_api::{SecretBundle, StoreKind};
use serde_json::Value;

use crate::error::{Error, KubeContext};
use crate::eso::{self, EsoKind, EsoVersion, ServedSchema};
use crate::gates::{
    self, DependencyFact, Facts, NamespaceFact, StoreCondition, StoreFact, StoreKey,
};

pub async fn facts(
    client: &Client,
    bundles: &Store<SecretBundle>,
    bundle: &SecretBundle,
) -> Result<Facts, Error> {
    let ns_name = &bundle.spec.target_namespace;
    let namespace = match Api::<Namespace>::all(client.clone())
        .get_opt(ns_name)
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

    let dependencies: Vec<(String, DependencyFact)> = bundle
        .spec
        .depends_on
        .iter()
        .map(|d| {
            (
                d.clone(),
                gates::dependency_fact(bundles.get(&ObjectRef::new(d)).as_deref()),
            )
        })
        .collect();
    let me = bundle.name_any();
    let depends_on = |n: &str| -> Vec<String> {
        if n == me {
            return bundle.spec.depends_on.clone();
        }
        bundles
            .get(&ObjectRef::new(n))
            .map(|b| b.spec.depends_on.clone())
            .unwrap_or_default()
    };
    let cycle = gates::find_cycle(&me, &depends_on);

    let mut stores = Vec::new();
    if crd.is_ok() {
        // Each store kind is read at the version its own CRD serves, which need not be the
        // ExternalSecret CRD's (the CRDs of one ESO install can be upgraded one by one).
        let mut versions = std::collections::BTreeMap::new();
        for key in gates::referenced_stores(bundle) {
            let kind = store_kind(key.kind);
            let version = match versions.get(&kind) {
                Some(v) => *v,
                None => {
                    let v = crd_version(client, kind).await?.ok();
                    versions.insert(kind, v);
                    v
                }
            };
            let fact = match version {
                Some(v) => store_fact(client, v, &key, ns_name).await?,
                None => StoreFact::Absent,
            };
            stores.push((key, fact));
        }
    }
    Ok(Facts {
        namespace,
        crd,
        eso_schema,
        dependencies,
        cycle,
        stores,
    })
}

/// The ESO version children are written in, or why the ExternalSecret CRD cannot be used.
pub async fn eso_version(client: &Client) -> Result<Result<EsoVersion, eso::CrdProblem>, Error> {
    crd_version(client, EsoKind::ExternalSecret).await
}

/// [`eso_version`], plus the schema the CRD serves for it (what the bundle may use).
pub async fn external_secret_api(
    client: &Client,
) -> Result<(Result<EsoVersion, eso::CrdProblem>, Option<ServedSchema>), Error> {
    let crd = get_crd(client, EsoKind::ExternalSecret).await?;
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
) -> Result<Result<EsoVersion, eso::CrdProblem>, Error> {
    Ok(eso::usable_version(get_crd(client, kind).await?.as_ref()))
}

async fn get_crd(
    client: &Client,
    kind: EsoKind,
) -> Result<Option<CustomResourceDefinition>, Error> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(&kind.crd_name())
        .await
        .during("get ESO CRD")
}

fn store_kind(kind: StoreKind) -> EsoKind {
    match kind {
        StoreKind::ClusterSecretStore => EsoKind::ClusterSecretStore,
        StoreKind::SecretStore => EsoKind::SecretStore,
    }
}

async fn store_fact(
    client: &Client,
    version: EsoVersion,
    key: &StoreKey,
    ns: &str,
) -> Result<StoreFact, Error> {
    let resource = store_kind(key.kind).api_resource(version);
    let api: Api<DynamicObject> = match key.kind {
        StoreKind::ClusterSecretStore => Api::all_with(client.clone(), &resource),
        StoreKind::SecretStore => Api::namespaced_with(client.clone(), ns, &resource),
    };
    // A 404 also covers "the store CRD is not installed": either way the store is not there.
    let store = match api.get_opt(&key.name).await {
        Ok(store) => store,
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e).during("get secret store"),
    };
    Ok(store.map_or(StoreFact::Absent, |s| read_store(&s.data)))
}

/// A store is usable when ESO reports `Ready=True`; its `spec.conditions` restrict namespaces.
pub fn read_store(data: &Value) -> StoreFact {
    let ready = data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    match ready {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            let conditions: Vec<StoreCondition> = data
                .pointer("/spec/conditions")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            StoreFact::Ready { conditions }
        }
        Some(c) => {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
            StoreFact::NotReady {
                message: format!("{}: {}", field("reason"), field("message")),
            }
        }
        None => StoreFact::NotReady {
            message: "ESO has not reported on it yet".into(),
        },
    }
}
