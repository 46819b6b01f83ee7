//! What one request of each kind costs the apiserver, with nothing else running: the preset's
//! `cost_requests` requests of one kind sent one at a time, and kube-apiserver's (and etcd's) CPU
//! over them divided by their number. With the CRD as shipped, with the old pairwise uniqueness
//! rule, without that rule, without any CEL rule and without a schema, to see what each costs.
//! The bundles are the benchmark's (20 secrets each).

use anyhow::Result;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{CustomResourceExt, Resource, ResourceExt};
use secretbundle_api::{MANAGER, SecretBundle};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde_json::{Value, json};

use crate::cluster::{Cluster, bundles, desired};
use crate::scenarios::{Metrics, Preset};

pub async fn cost(m: &mut Metrics, p: &Preset) -> Result<()> {
    let n = p.cost_requests;
    let c = Cluster::start(true).await?;
    let nss = vec!["cost".to_string()];
    c.namespaces(&nss).await?;
    let set = bundles("cost", n, 20, &nss);
    c.create_bundles(set.clone()).await?;
    let children = desired(&c.client).await?;
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let es = Api::<DynamicObject>::namespaced_with(c.client.clone(), "cost", &ar);
    let apply = PatchParams::apply(MANAGER).force();
    for o in &children {
        es.patch(&o.name_any(), &apply, &Patch::Apply(o)).await?;
    }
    let api = Api::<SecretBundle>::all(c.client.clone());
    for rules in [
        "shipped",
        "pairwise_rule",
        "without_rule",
        "without_cel",
        "without_schema",
    ] {
        if rules != "shipped" {
            apply_variant(&c, rules).await?;
        }
        // The first round warms caches; the second is recorded.
        for round in 0..2 {
            let tag = |i: usize| format!("r{round}-{i}");
            let kinds: [(&str, Vec<Request>); 5] = [
                (
                    "bundle_spec",
                    (0..n)
                        .map(|i| {
                            // The whole list again with one key changed: every rule over it runs.
                            let mut secrets = serde_json::to_value(&set[i].spec.secrets)?;
                            secrets[0]["data"][0]["remoteRef"]["key"] = json!(tag(i));
                            Ok(Request::Bundle(i, json!({"spec": {"secrets": secrets}})))
                        })
                        .collect::<Result<_>>()?,
                ),
                (
                    "bundle_metadata",
                    (0..n)
                        .map(|i| {
                            Request::Bundle(i, json!({"metadata": {"labels": {"bench": tag(i)}}}))
                        })
                        .collect(),
                ),
                (
                    "bundle_status",
                    (0..n)
                        .map(|i| Request::Status(i, status(&set[i], &tag(i))))
                        .collect(),
                ),
                (
                    // As the operator writes it: server-side apply, one field manager.
                    "bundle_status_apply",
                    (0..n)
                        .map(|i| Request::StatusApply(i, status(&set[i], &tag(i))))
                        .collect(),
                ),
                (
                    "child_apply",
                    (0..n)
                        .map(|i| {
                            let mut o = children[i].clone();
                            o.annotations_mut().insert("bench".into(), tag(i));
                            Request::Child(Box::new(o))
                        })
                        .collect(),
                ),
            ];
            for (kind, requests) in kinds {
                let before = c.server_cpu()?;
                for r in requests {
                    r.send(&api, &es).await?;
                }
                let after = c.server_cpu()?;
                if round == 1 {
                    let per = |a: f64, b: f64| (a - b) * 1e6 / n as f64;
                    m.insert(
                        format!("cost.{rules}.{kind}.apiserver_us"),
                        per(after.0, before.0),
                    );
                    m.insert(
                        format!("cost.{rules}.{kind}.etcd_us"),
                        per(after.1, before.1),
                    );
                }
            }
        }
    }
    Ok(())
}

enum Request {
    Bundle(usize, Value),
    Status(usize, Value),
    StatusApply(usize, Value),
    Child(Box<DynamicObject>),
}

impl Request {
    async fn send(self, bundles: &Api<SecretBundle>, es: &Api<DynamicObject>) -> Result<()> {
        let pp = PatchParams::default();
        match self {
            Request::Bundle(i, patch) => {
                bundles
                    .patch(&format!("cost-{i}"), &pp, &Patch::Merge(patch))
                    .await?;
            }
            Request::Status(i, patch) => {
                bundles
                    .patch_status(&format!("cost-{i}"), &pp, &Patch::Merge(patch))
                    .await?;
            }
            Request::StatusApply(i, mut patch) => {
                patch["apiVersion"] = json!(SecretBundle::api_version(&()));
                patch["kind"] = json!(SecretBundle::kind(&()));
                bundles
                    .patch_status(
                        &format!("cost-{i}"),
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(patch),
                    )
                    .await?;
            }
            Request::Child(o) => {
                es.patch(
                    &o.name_any(),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&o),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// A status as the operator writes it for a bundle whose 20 children are not Ready yet.
fn status(b: &SecretBundle, message: &str) -> Value {
    let secrets: Vec<Value> = b
        .spec
        .secrets
        .iter()
        .map(|s| json!({"name": s.name, "ready": false, "reason": "Pending", "message": message}))
        .collect();
    json!({"status": {
        "observedGeneration": 1,
        "esoApiVersion": "external-secrets.io/v1",
        "readySecrets": 0,
        "totalSecrets": secrets.len(),
        "secretsReady": format!("0/{}", secrets.len()),
        "secrets": secrets,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "SecretsNotReady", "message": message,
             "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Reconciling", "status": "True", "reason": "SecretsNotReady", "message": message,
             "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
    }})
}

/// The CRD with the old pairwise uniqueness rule (`pairwise_rule`), without that rule on
/// `spec.secrets` (`without_rule`), without any CEL
/// rule (`without_cel`), or with no schema below `spec` and `status` at all
/// (`without_schema`: what validation, pruning and field tracking cost, by their absence).
async fn apply_variant(c: &Cluster, variant: &str) -> Result<()> {
    let mut crd = serde_json::to_value(SecretBundle::crd())?;
    let schema = "/spec/versions/0/schema/openAPIV3Schema";
    let secrets = format!("{schema}/properties/spec/properties/secrets");
    match variant {
        // The rule before it was made linear (every entry against every entry).
        "pairwise_rule" => {
            let rule = "self.all(x, self.exists_one(y, (has(y.targetName) ? y.targetName : y.name) == (has(x.targetName) ? x.targetName : x.name)))";
            if let Some(r) = crd.pointer_mut(&format!("{secrets}/x-kubernetes-validations/0/rule"))
            {
                *r = json!(rule);
            }
        }
        "without_rule" => {
            if let Some(v) = crd.pointer_mut(&secrets) {
                strip_rules(v, false);
            }
        }
        "without_cel" => {
            if let Some(v) = crd.pointer_mut(schema) {
                strip_rules(v, true);
            }
        }
        _ => {
            if let Some(props) = crd
                .pointer_mut(&format!("{schema}/properties"))
                .and_then(Value::as_object_mut)
            {
                for part in ["spec", "status"] {
                    props.insert(
                        part.into(),
                        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                    );
                }
            }
            if let Some(root) = crd.pointer_mut(schema).and_then(Value::as_object_mut) {
                root.remove("x-kubernetes-validations");
            }
            // The printer columns and selectable fields read fields the schema no longer has.
            if let Some(v) = crd
                .pointer_mut("/spec/versions/0")
                .and_then(Value::as_object_mut)
            {
                v.remove("additionalPrinterColumns");
                v.remove("selectableFields");
            }
        }
    }
    let crd = serde_json::from_value(crd)?;
    secretbundle_tests::apply_crds(&c.client, vec![crd]).await
}

/// Removes `x-kubernetes-validations` here and, with `deep`, everywhere below.
fn strip_rules(v: &mut Value, deep: bool) {
    if let Some(o) = v.as_object_mut() {
        o.remove("x-kubernetes-validations");
        if deep {
            o.values_mut().for_each(|v| strip_rules(v, true));
        }
    } else if let (Some(a), true) = (v.as_array_mut(), deep) {
        a.iter_mut().for_each(|v| strip_rules(v, true));
    }
}
