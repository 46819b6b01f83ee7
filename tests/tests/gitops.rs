//! The GitOps engines' own rules, on the real control plane with the real ESO controller and
//! OpenBao, applying the example overlay `examples/overlays/local` in an environment without
//! Argo CD (its namespace never appears): Argo CD's sync waves with the shipped health Lua, and
//! Flux's server-side apply with `wait: true` (`fluxcd/pkg/ssa`), both played by
//! `tools/healthcheck` (`argo-sync`, `flux-apply`).

use std::ffi::OsString;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use secretbundle_api::SecretBundle;
use secretbundle_tests::controlplane::built;
use secretbundle_tests::stack::{self, Stack};
use secretbundle_tests::{repo_root, wait};
use serde_json::{Value, json};

/// The service this environment does not run.
const ABSENT: &str = "argocd";

/// The stack, OpenBao seeded for the overlay, and the overlay's bundles (rendered by kustomize).
async fn stack_with_overlay() -> Result<(Stack, Vec<Value>)> {
    let s = Stack::start().await?;
    // The local overlay generates its database credentials, as its kustomization says.
    let generator = repo_root().join("examples/store/local-password-generator.yaml");
    let out = s
        .env
        .kubectl(&["apply", "--server-side", "-f", &generator.to_string_lossy()])?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlay = repo_root().join("examples/overlays/local");
    let out = s.env.kubectl(&["kustomize", &overlay.to_string_lossy()])?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).context("rendered overlay"))
        .collect::<Result<_>>()?;
    let bundles: Vec<SecretBundle> = docs
        .iter()
        .map(|d| serde_json::from_value(d.clone()))
        .collect::<Result<_, _>>()?;
    for (key, props) in stack::demo_vault_keys(&bundles) {
        let pairs: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        s.bao.put(&key, &pairs)?;
    }
    Ok((s, docs))
}

fn target_namespace(bundle: &Value) -> &str {
    bundle["spec"]["targetNamespace"]
        .as_str()
        .unwrap_or_default()
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// The service namespaces of these bundles, except the absent one.
fn namespaces(bundles: &[Value]) -> Vec<Value> {
    let mut names: Vec<&str> = bundles
        .iter()
        .map(target_namespace)
        .filter(|ns| *ns != ABSENT)
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect()
}

fn in_wave(mut obj: Value, wave: i32) -> Value {
    obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] = json!(wave.to_string());
    obj
}

fn yaml(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d)?);
    }
    Ok(out)
}

/// Runs `tools/healthcheck` with these arguments and stdin, on a blocking thread: the
/// operator runs on this test's runtime.
async fn run_healthcheck(args: Vec<OsString>, stdin: Vec<u8>) -> Result<Output> {
    let mut cmd = Command::new(built("hack/tools.sh")?.join("healthcheck"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || -> Result<Output> {
        let mut child = cmd.spawn()?;
        child.stdin.take().context("stdin")?.write_all(&stdin)?;
        Ok(child.wait_with_output()?)
    })
    .await?
}

/// `healthcheck SUBCOMMAND --kubeconfig K ...` on the manifests: whether it succeeded, and the
/// JSON lines it reported.
async fn healthcheck(s: &Stack, args: &[&str], manifests: &str) -> Result<(bool, Vec<Value>)> {
    let mut argv: Vec<OsString> = vec![args[0].into(), "--kubeconfig".into()];
    argv.push(s.env.cp.kubeconfig_path()?.into());
    argv.extend(args[1..].iter().map(OsString::from));
    let out = run_healthcheck(argv, manifests.as_bytes().to_vec()).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{l}\nstderr: {stderr}")))
        .collect::<Result<Vec<Value>>>()?;
    for e in &events {
        eprintln!("{e}");
    }
    Ok((out.status.success(), events))
}

/// `healthcheck SCRIPT.lua` on these objects: Argo CD's verdict on each.
async fn lua_health(script: &str, objects: &[SecretBundle]) -> Result<Vec<Value>> {
    let out = run_healthcheck(vec![script.into()], serde_json::to_vec(objects)?).await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Result<&Value> {
    events
        .iter()
        .find(|e| pred(e))
        .with_context(|| format!("no such event in {events:#?}"))
}

/// The bundles settle as the environment allows: the absent service's waits, the rest Ready.
async fn assert_settled(s: &Stack, bundles: &[Value]) -> Result<()> {
    let api = s.env.bundles();
    for b in bundles {
        let reason = if target_namespace(b) == ABSENT {
            "WaitingForNamespace"
        } else {
            "Ready"
        };
        wait::bundle_reason(&api, name(b), reason).await?;
    }
    Ok(())
}

#[tokio::test]
async fn argocd_sync_waves_complete_without_the_argocd_namespace() -> Result<()> {
    let (s, bundles) = stack_with_overlay().await?;
    let lua = repo_root().join("deploy/argocd/secretbundle-health.lua");
    let lua = lua.to_string_lossy();
    // Wave 0 the bundles, wave 1 the namespaces they target (but argocd's): the bundles can only
    // wait in wave 0, and the sync moves on only if waiting is healthy.
    let mut docs: Vec<Value> = bundles.iter().map(|b| in_wave(b.clone(), 0)).collect();
    docs.extend(namespaces(&bundles).into_iter().map(|n| in_wave(n, 1)));
    let (ok, events) = healthcheck(
        &s,
        &["argo-sync", "--lua", &lua, "--timeout", "120s"],
        &yaml(&docs)?,
    )
    .await?;
    assert!(ok, "sync failed: {events:#?}");

    let wave0 = find(&events, |e| e["event"] == "wave-done" && e["wave"] == 0)?;
    for b in &bundles {
        let h = &wave0["health"][format!("SecretBundle/{}", name(b))];
        assert_eq!(h["status"], "Healthy", "{}: {wave0:#}", name(b));
        let message = h["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Idle, waiting (WaitingFor"),
            "wave 0 waited on {}: {message}",
            name(b)
        );
    }
    find(&events, |e| e["event"] == "wave-applied" && e["wave"] == 1)?;
    let synced = find(&events, |e| e["event"] == "sync")?;
    assert_eq!(synced["phase"], "Succeeded", "{synced:#}");
    // The Application turns Healthy (its bundles idle or Ready), so an app-of-apps parent moves
    // on too.
    let app = events
        .iter()
        .rev()
        .find(|e| e["event"] == "app-health")
        .context("no app-health event")?;
    assert_eq!(app["status"], "Healthy", "{app:#}");

    // Once ESO has synced, every bundle is Healthy by the Lua: argocd idle, the rest Ready.
    assert_settled(&s, &bundles).await?;
    let live = s.env.bundles().list(&Default::default()).await?.items;
    let verdicts = lua_health(&lua, &live).await?;
    assert_eq!(verdicts.len(), bundles.len());
    for v in &verdicts {
        assert_eq!(v["argoStatus"], "Healthy", "{v:#}");
        let message = v["argoMessage"].as_str().unwrap_or_default();
        if v["name"] == ABSENT {
            assert_eq!(
                message,
                r#"Idle, waiting (WaitingForNamespace): namespace "argocd" does not exist"#
            );
        } else {
            assert!(message.ends_with("secrets ready"), "{message}");
        }
    }

    // Degraded fails the sync, and the waves after it never run.
    let cyclic = |n: &str, peer: &str| {
        in_wave(
            json!({
                "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
                "metadata": {"name": n},
                "spec": {"targetNamespace": "ameide", "secretStoreRef": {"name": stack::VAULT_STORE},
                         "dependsOn": [peer],
                         "secrets": [{"name": n, "dataFrom": [{"extract": {"key": "platform/db"}}]}]}
            }),
            0,
        )
    };
    let later = in_wave(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "after-cycle"}}),
        1,
    );
    let docs = [
        cyclic("cycle-a", "cycle-b"),
        cyclic("cycle-b", "cycle-a"),
        later,
    ];
    let (ok, events) = healthcheck(
        &s,
        &["argo-sync", "--lua", &lua, "--timeout", "60s"],
        &yaml(&docs)?,
    )
    .await?;
    assert!(!ok, "a sync with Degraded bundles must fail: {events:#?}");
    let failed = find(&events, |e| e["event"] == "sync")?;
    assert_eq!(failed["phase"], "Failed", "{failed:#}");
    let h = &failed["health"]["SecretBundle/cycle-a"];
    assert_eq!(h["status"], "Degraded", "{failed:#}");
    assert!(
        h["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cycle-a -> cycle-b -> cycle-a")
    );
    let ns = Api::<Namespace>::all(s.env.client.clone());
    assert!(ns.get_opt("after-cycle").await?.is_none(), "wave 1 ran");
    Ok(())
}

#[tokio::test]
async fn flux_wait_finishes_without_the_argocd_namespace() -> Result<()> {
    let (s, bundles) = stack_with_overlay().await?;
    let mut docs = bundles.clone();
    docs.extend(namespaces(&bundles));
    let manifests = yaml(&docs)?;
    let exprs = repo_root().join("deploy/flux/health-check-exprs.yaml");
    let (ok, events) = healthcheck(
        &s,
        &[
            "flux-apply",
            "--timeout",
            "60s",
            "--health-check-exprs",
            &exprs.to_string_lossy(),
        ],
        &manifests,
    )
    .await?;
    assert!(ok, "wait: true failed: {events:#?}");
    let waited = find(&events, |e| e["phase"] == "wait")?;
    assert!(waited["seconds"].as_f64().unwrap_or(f64::MAX) < 60.0);
    assert_settled(&s, &bundles).await?;

    // Without the SecretBundle rule, kstatus's generic rule reads Ready=False as InProgress:
    // `wait: true` then times out on the idle bundle, and on nothing else.
    let (ok, events) = healthcheck(&s, &["flux-apply", "--timeout", "12s"], &manifests).await?;
    assert!(!ok, "{events:#?}");
    let error = find(&events, |e| e["phase"] == "wait")?["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        error,
        "timeout waiting for: [SecretBundle/argocd status: 'InProgress']"
    );
    Ok(())
}
