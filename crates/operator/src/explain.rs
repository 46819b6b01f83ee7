//! `explain`: the gate chain of a bundle, from the cluster, as a tree.

use std::fmt::Write as _;

use anyhow::Context as _;
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Api, Client};
use secretbundle_api::SecretBundle;
use secretbundle_controller::facts::{DependencyFact, NamespaceFact, StoreFact};
use secretbundle_controller::reconcile::gates;
use secretbundle_controller::reconcile::observe;

use crate::cli::ExplainArgs;

pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await.context("loading kubeconfig")?;
    let api = Api::<SecretBundle>::all(client.clone());
    let all = api
        .list(&Default::default())
        .await
        .context("listing SecretBundles")?
        .items;
    let (store, mut writer) = reflector::store();
    for b in &all {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(b.clone()));
    }
    let mut out = String::new();
    explain_one(&client, &store, &args.bundle, 0, &mut Vec::new(), &mut out).await?;
    print!("{out}");
    Ok(())
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

async fn explain_one(
    client: &Client,
    store: &reflector::Store<SecretBundle>,
    name: &str,
    depth: usize,
    path: &mut Vec<String>,
    out: &mut String,
) -> anyhow::Result<()> {
    let pad = "  ".repeat(depth);
    let Some(bundle) = store.get(&ObjectRef::new(name)) else {
        writeln!(out, "{pad}✘ SecretBundle {name}: not found")?;
        return Ok(());
    };
    let ready = secretbundle_controller::status::ready_reason(bundle.status.as_ref());
    let message = bundle
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_else(|| "no status yet".into());
    let is_ready = ready == Some(secretbundle_controller::Reason::Ready);
    let reason = ready.map_or("Unknown", |r| r.as_str());
    writeln!(
        out,
        "{pad}{} SecretBundle {name}: {reason}: {message}",
        mark(is_ready)
    )?;
    if path.iter().any(|p| p == name) {
        writeln!(out, "{pad}  ✘ dependency cycle back to {name}")?;
        return Ok(());
    }
    let facts = observe::fetch(client, store, &bundle).await?;
    let pad = "  ".repeat(depth + 1);
    writeln!(
        out,
        "{pad}{} suspend: {}",
        mark(!bundle.spec.suspend),
        bundle.spec.suspend
    )?;
    let ns = &bundle.spec.target_namespace;
    let ns_line = match &facts.namespace {
        NamespaceFact::Absent => format!("✘ namespace {ns}: does not exist"),
        NamespaceFact::Terminating => format!("✘ namespace {ns}: terminating"),
        NamespaceFact::Active { .. } => format!("✔ namespace {ns}: active"),
    };
    writeln!(out, "{pad}{ns_line}")?;
    match &facts.crd {
        Ok(v) => match gates::eso_support(&bundle, *v, facts.eso_schema.as_deref()) {
            Ok(()) => writeln!(
                out,
                "{pad}✔ ExternalSecret CRD: serving {}",
                v.api_version()
            )?,
            Err(b) => writeln!(
                out,
                "{pad}✘ ExternalSecret CRD: serving {}, which cannot express: {}",
                v.api_version(),
                b.message
            )?,
        },
        Err(p) => writeln!(out, "{pad}✘ ExternalSecret CRD: {p}")?,
    }
    path.push(name.to_string());
    for (dep, fact) in &facts.dependencies {
        writeln!(
            out,
            "{pad}{} dependsOn {dep}",
            mark(*fact == DependencyFact::Ready)
        )?;
        Box::pin(explain_one(client, store, dep, depth + 2, path, out)).await?;
    }
    path.pop();
    for (key, fact) in &facts.stores {
        let line = match fact {
            StoreFact::Absent => format!("✘ {key}: does not exist"),
            StoreFact::NotReady { message } => format!("✘ {key}: not Ready: {message}"),
            StoreFact::Ready { conditions } => {
                let labels = match &facts.namespace {
                    NamespaceFact::Active { labels } => labels.clone(),
                    _ => Default::default(),
                };
                if gates::namespace_allowed(conditions, ns, &labels) {
                    format!("✔ {key}: Ready")
                } else {
                    format!("✘ {key}: Ready, but its conditions exclude namespace {ns}")
                }
            }
        };
        writeln!(out, "{pad}{line}")?;
    }
    for s in bundle.status.iter().flat_map(|s| &s.secrets) {
        writeln!(
            out,
            "{pad}{} ExternalSecret {ns}/{}: {} {}",
            mark(s.ready),
            s.name,
            s.reason,
            s.message
        )?;
    }
    Ok(())
}
