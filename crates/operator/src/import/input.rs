//! Where `import` reads ExternalSecrets: manifest files (or stdin), or one namespace of the
//! cluster with get and list only.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{Selector, SelectorExt as _};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde::Deserialize as _;
use serde_json::Value;

use super::ImportArgs;

/// The ExternalSecrets to import, as JSON objects with namespaces filled in.
pub async fn read(args: &ImportArgs) -> anyhow::Result<Vec<Value>> {
    if args.files.is_empty() {
        let Some(ns) = &args.namespace else {
            bail!("give -f FILE, or -n NAMESPACE to read the cluster");
        };
        return from_cluster(ns, args.selector.as_deref()).await;
    }
    let selector = args
        .selector
        .as_deref()
        .map(secretbundle_controller::shard::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--selector: {e}"))?;
    let mut out = Vec::new();
    for path in &args.files {
        let (name, text) = if path.as_os_str() == "-" {
            (
                "stdin".to_string(),
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
            )
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), text)
        };
        out.extend(from_text(
            &name,
            &text,
            args.namespace.as_deref(),
            selector.as_ref(),
        )?);
    }
    if out.is_empty() {
        bail!("no ExternalSecret matches the selector");
    }
    Ok(out)
}

/// The ExternalSecrets of one manifest; other kinds are noted and skipped, but a manifest with
/// no ExternalSecret at all is an error (a wrong file, or a release that has none).
pub fn from_text(
    file: &str,
    text: &str,
    namespace: Option<&str>,
    selector: Option<&Selector>,
) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = Value::deserialize(doc).with_context(|| format!("{file}: not YAML"))?;
        match v {
            Value::Null => {}
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                objects.extend(
                    o.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Value::Object(_) => objects.push(v),
            other => bail!("{file}: a document that is not an object: {other}"),
        }
    }
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    let mut found = 0;
    for mut o in objects {
        let kind = o["kind"].as_str().unwrap_or("(no kind)").to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or("(no name)")
            .to_string();
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        if kind != EsoKind::ExternalSecret.kind()
            || !api_version.starts_with("external-secrets.io/")
        {
            ignored.push(format!("{kind} {name}"));
            continue;
        }
        found += 1;
        match (o["metadata"]["namespace"].as_str(), namespace) {
            (Some(own), Some(given)) if own != given => {
                bail!("{file}: ExternalSecret {name} is in namespace {own:?}, not {given:?} (-n)")
            }
            (Some(_), _) => {}
            (None, Some(given)) => o["metadata"]["namespace"] = given.into(),
            (None, None) => bail!(
                "{file}: ExternalSecret {name} names no namespace (helm get manifest leaves it \
                 out): pass -n NAMESPACE"
            ),
        }
        let labels = serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
        if selector.is_none_or(|sel| sel.matches(&labels)) {
            out.push(o);
        }
    }
    if found == 0 {
        if ignored.is_empty() {
            bail!("{file}: no objects in it");
        }
        bail!(
            "{file}: no ExternalSecret in it, only {}",
            ignored.join(", ")
        );
    }
    if !ignored.is_empty() {
        eprintln!(
            "note: {file}: ignored, not ExternalSecrets: {}",
            ignored.join(", ")
        );
    }
    Ok(out)
}

/// Lists the namespace's ExternalSecrets in the newest version the cluster serves.
async fn from_cluster(namespace: &str, selector: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let client = Client::try_default().await.context("loading kubeconfig")?;
    let mut params = ListParams::default();
    if let Some(s) = selector {
        secretbundle_controller::shard::parse(s).map_err(|e| anyhow::anyhow!("--selector: {e}"))?;
        params = params.labels(s);
    }
    let mut last = None;
    for version in EsoVersion::PREFERENCE {
        let ar = EsoKind::ExternalSecret.api_resource(version);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        match api.list(&params).await {
            Ok(list) if list.items.is_empty() => {
                return Err(nothing_found(&client, namespace, selector).await);
            }
            Ok(list) => {
                let mut out = Vec::new();
                for mut item in list.items {
                    // List items carry no apiVersion and kind; the conversion checks both.
                    item.types = Some(kube::core::TypeMeta {
                        api_version: ar.api_version.clone(),
                        kind: ar.kind.clone(),
                    });
                    item.metadata
                        .namespace
                        .get_or_insert_with(|| namespace.to_string());
                    out.push(serde_json::to_value(&item)?);
                }
                return Ok(out);
            }
            // This version is not served (an older or newer ESO): try the next.
            Err(kube::Error::Api(s)) if s.code == 404 => last = Some(s.message),
            Err(e) => return Err(e).context(format!("listing ExternalSecrets in {namespace}")),
        }
    }
    bail!(
        "the cluster serves no ExternalSecret API this operator reads (v1, v1beta1): {}",
        last.unwrap_or_default()
    )
}

/// Why a list came back empty: an absent namespace says so (when namespaces may be read).
async fn nothing_found(client: &Client, namespace: &str, selector: Option<&str>) -> anyhow::Error {
    let matching = selector
        .map(|s| format!(" matching {s:?}"))
        .unwrap_or_default();
    match Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(None) => anyhow::anyhow!("namespace {namespace:?} does not exist"),
        _ => anyhow::anyhow!("no ExternalSecret in namespace {namespace:?}{matching}"),
    }
}
