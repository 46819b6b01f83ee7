//! What the controller would do with one bundle now: the same facts, gates and rendering, the
//! same ownership rules as `apply::sync`, and each write replaced by a dry run.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use secretbundle_api::{AdoptionPolicy, BUNDLE_LABEL, MANAGER, SecretBundle};
use secretbundle_controller::Reason;
use secretbundle_controller::cache::Foreign;
use secretbundle_controller::eso::EsoKind;
use secretbundle_controller::reconcile::apply;
use secretbundle_controller::reconcile::gates::{self, Blocked};
use secretbundle_controller::reconcile::observe;
use serde_json::Value;

/// What applying one bundle would do.
#[derive(Debug)]
pub enum Outcome {
    /// The apiserver refused the bundle itself.
    Invalid { bundle: String, message: String },
    /// A gate is closed: nothing would be applied or pruned now.
    Blocked { bundle: String, blocked: Blocked },
    /// The gates are open: what would happen to each child.
    Children {
        bundle: String,
        changes: Vec<Change>,
    },
}

/// What would happen to one child (`key` is `namespace/name`).
#[derive(Debug)]
pub enum Change {
    Create {
        key: String,
        applied: Value,
    },
    /// Applied over a live object; `adopted` when the bundle takes it over.
    Update {
        key: String,
        live: Value,
        applied: Value,
        adopted: bool,
    },
    Prune {
        key: String,
        live: Value,
    },
    /// Another owner holds it: the controller would report Conflict.
    Conflict {
        message: String,
    },
    /// The apiserver refused the dry-run apply: the controller would report ApplyFailed.
    Rejected {
        key: String,
        message: String,
    },
}

/// The live bundles, for dependency and cycle facts.
pub fn bundle_store(live: Vec<SecretBundle>) -> Store<SecretBundle> {
    let (store, mut writer) = reflector::store();
    for b in live {
        writer.apply_watcher_event(&watcher::Event::Apply(b));
    }
    store
}

pub async fn plan(
    client: &Client,
    store: &Store<SecretBundle>,
    bundle: &SecretBundle,
) -> anyhow::Result<Outcome> {
    let me = bundle.name_any();
    let blocked = |blocked| Outcome::Blocked {
        bundle: me.clone(),
        blocked,
    };
    let facts = observe::fetch(client, store, bundle).await?;
    let version = match gates::evaluate(bundle, &facts) {
        Ok(v) => v,
        Err(b) => return Ok(blocked(b)),
    };
    let desired = match apply::desired(bundle, version) {
        Ok(d) => d,
        Err(e) => {
            return Ok(blocked(Blocked {
                reason: Reason::InvalidSpec,
                message: e.to_string(),
            }));
        }
    };
    let ns = &bundle.spec.target_namespace;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &EsoKind::ExternalSecret.api_resource(version),
    );
    let live: BTreeMap<String, DynamicObject> = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing ExternalSecrets in {ns}"))?
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect();
    let mut changes = Vec::new();
    for (want, spec) in desired.into_iter().zip(&bundle.spec.secrets) {
        let adopt =
            spec.adoption_policy.unwrap_or(bundle.spec.adoption_policy) == AdoptionPolicy::IfExists;
        changes.push(settle(&api, bundle, want, live.get(&spec.name), adopt).await?);
    }
    let wanted = bundle.spec.secret_names();
    for (name, obj) in &live {
        if !wanted.contains(name.as_str())
            && (label(obj) == Some(&me) || Foreign::of(&obj.metadata).owned_by(bundle))
        {
            changes.push(Change::Prune {
                key: format!("{ns}/{name}"),
                live: serde_json::to_value(obj)?,
            });
        }
    }
    Ok(Outcome::Children {
        bundle: me,
        changes,
    })
}

fn label(obj: &DynamicObject) -> Option<&String> {
    obj.labels().get(BUNDLE_LABEL)
}

/// The ownership decisions of `apply::sync`, each write a dry run.
async fn settle(
    api: &Api<DynamicObject>,
    bundle: &SecretBundle,
    mut want: DynamicObject,
    live: Option<&DynamicObject>,
    adopt: bool,
) -> anyhow::Result<Change> {
    let (ns, name, me) = (
        &bundle.spec.target_namespace,
        want.name_any(),
        bundle.name_any(),
    );
    let key = format!("{ns}/{name}");
    let forced = PatchParams::apply(MANAGER).force().dry_run();
    let Some(live) = live else {
        // Created without force, as the controller does.
        let pp = PatchParams::apply(MANAGER).dry_run();
        return Ok(match dry_run(api, &want, &pp).await? {
            Ok(applied) => Change::Create { key, applied },
            Err(message) => Change::Rejected { key, message },
        });
    };
    let adopted = match label(live) {
        Some(other) if *other != me => {
            return Ok(Change::Conflict {
                message: apply::managed_by_other(ns, &name, other),
            });
        }
        Some(_) => false,
        None => {
            let foreign = Foreign::of(&live.metadata);
            if !(foreign.owned_by(bundle) || foreign.carries(&want) || adopt) {
                return Ok(Change::Conflict {
                    message: apply::not_ours(ns, &name),
                });
            }
            want.metadata
                .resource_version
                .clone_from(&live.metadata.resource_version);
            true
        }
    };
    Ok(match dry_run(api, &want, &forced).await? {
        Ok(applied) => Change::Update {
            key,
            live: serde_json::to_value(live)?,
            applied,
            adopted,
        },
        Err(message) => Change::Rejected { key, message },
    })
}

/// The object the apiserver would hold after the apply, or its reason for refusing it (the
/// statuses `apply::sync` reports as ApplyFailed).
async fn dry_run(
    api: &Api<DynamicObject>,
    want: &DynamicObject,
    pp: &PatchParams,
) -> anyhow::Result<Result<Value, String>> {
    match api.patch(&want.name_any(), pp, &Patch::Apply(want)).await {
        Ok(obj) => Ok(Ok(serde_json::to_value(obj)?)),
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 409 | 422) => Ok(Err(s.message)),
        Err(e) => Err(e).context("dry-run apply of an ExternalSecret"),
    }
}
