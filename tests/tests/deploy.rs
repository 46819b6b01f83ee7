//! What ships: the Helm chart (linted, rendered, applied), the kustomize examples, the Argo CD
//! Lua health check and Flux's kstatus and CEL health rule reading real status objects, and the
//! offline CLI.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use kube::api::{DynamicObject, ListParams};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::controlplane::built;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::{Env, eso, repo_root, simple_bundle, wait};
use serde::Deserialize;

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child.stdin.take().context("stdin")?.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn kubectl_stdin(env: &Env, args: &[&str], input: &[u8]) -> Result<String> {
    let mut cmd = Command::new(secretbundle_tests::kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(env.cp.kubeconfig_path()?)
        .args(args);
    run(&mut cmd, Some(input))
}

#[tokio::test]
async fn helm_chart_lints_renders_and_applies() -> Result<()> {
    let tools = built("hack/tools.sh")?;
    let chart = repo_root().join("deploy/helm/secretbundle-operator");
    let lint = run(
        Command::new(tools.join("helm"))
            .arg("lint")
            .arg("--strict")
            .arg(&chart),
        None,
    )?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = run(
        Command::new(tools.join("helm"))
            .args([
                "template",
                "secretbundle-operator",
                "--namespace",
                "secretbundle-system",
                "--include-crds",
            ])
            .args(["--set", "replicas=2,serviceMonitor.enabled=false"])
            .arg(&chart),
        None,
    )?;
    let env = Env::start().await?;
    env.create_namespace("secretbundle-system").await?;
    let applied = kubectl_stdin(
        &env,
        &["apply", "--server-side", "-f", "-"],
        rendered.as_bytes(),
    )?;
    for kind in [
        "customresourcedefinition",
        "clusterrole",
        "clusterrolebinding",
        "role",
        "rolebinding",
        "serviceaccount",
        "deployment",
        "service",
    ] {
        let listed = applied
            .lines()
            .any(|l| l.starts_with(&format!("{kind}.")) || l.starts_with(&format!("{kind}/")));
        assert!(listed, "{kind} not applied:\n{applied}");
    }
    // The chart's CRD is the generated one.
    let crd = std::fs::read_to_string(chart.join("crds/secretbundles.secrets.ameide.io.yaml"))?;
    assert_eq!(
        crd,
        std::fs::read_to_string(repo_root().join("crds/secretbundles.secrets.ameide.io.yaml"))?
    );
    Ok(())
}

/// Values that cannot work are refused when the chart is rendered, with the reason.
#[test]
fn two_replicas_without_leader_election_are_refused() -> Result<()> {
    let tools = built("hack/tools.sh")?;
    let chart = repo_root().join("deploy/helm/secretbundle-operator");
    let out = Command::new(tools.join("helm"))
        .args(["template", "secretbundle-operator"])
        .args(["--set", "replicas=2,leaderElection.enabled=false"])
        .arg(&chart)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rendered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("replicas > 1 needs leaderElection.enabled=true"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn example_overlays_render_and_apply() -> Result<()> {
    let env = Env::start().await?;
    env.install_eso_crds("v2.9.0").await?;
    let store = repo_root().join("examples/store/cluster-secret-store.yaml");
    let out = env.kubectl(&["apply", "--server-side", "-f", &store.to_string_lossy()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Vec::new();
    for overlay in ["local", "staging", "production"] {
        let dir = repo_root().join("examples/overlays").join(overlay);
        let out = env.kubectl(&["apply", "--server-side", "-k", &dir.to_string_lossy()])?;
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.strip_prefix("secretbundle.secrets.ameide.io/")?
                    .split_whitespace()
                    .next()
                    .map(String::from)
            })
            .collect();
        names.sort();
        seen.push((overlay, names));
    }
    assert_eq!(
        seen[0].1,
        ["argocd", "data-plane", "observability", "platform"],
        "local, as the seed's flags"
    );
    assert_eq!(
        seen[2].1.len(),
        7,
        "production runs every bundle: {:?}",
        seen[2].1
    );
    Ok(())
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Health {
    name: String,
    argo_status: String,
    argo_message: String,
    kstatus: String,
    flux_cel: String,
}

/// Argo CD's verdict (the Lua health check in gopher-lua, as Argo CD runs it), Flux's default
/// kstatus and Flux's verdict under the shipped healthCheckExprs, on each bundle.
fn health(objects: &[SecretBundle]) -> Result<Vec<Health>> {
    let lua = repo_root().join("deploy/argocd/secretbundle-health.lua");
    let exprs = repo_root().join("deploy/flux/health-check-exprs.yaml");
    let json = serde_json::to_vec(objects)?;
    let out = run(
        Command::new(built("hack/tools.sh")?.join("healthcheck"))
            .arg(lua)
            .arg("--health-check-exprs")
            .arg(exprs),
        Some(&json),
    )?;
    let mut verdicts: Vec<Health> = serde_json::from_str(&out)?;
    verdicts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(verdicts)
}

#[tokio::test]
async fn argocd_lua_and_flux_kstatus_read_real_status() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("ready").await?;
    env.apply_bundle(&simple_bundle("ready", "ready", &["a"]))
        .await?;
    env.apply_bundle(&simple_bundle("syncing", "ready", &["s"]))
        .await?;
    env.apply_bundle(&simple_bundle("failing", "ready", &["f"]))
        .await?;
    env.apply_bundle(&simple_bundle("waiting", "absent", &["a"]))
        .await?;
    let mut suspended = simple_bundle("suspended", "absent", &["a"]);
    suspended.spec.suspend = true;
    env.apply_bundle(&suspended).await?;
    let mut cyclic = simple_bundle("cyclic", "ready", &["b"]);
    cyclic.spec.depends_on = vec!["cyclic-peer".into()];
    let mut peer = simple_bundle("cyclic-peer", "ready", &["c"]);
    peer.spec.depends_on = vec!["cyclic".into()];
    env.apply_bundle(&cyclic).await?;
    env.apply_bundle(&peer).await?;

    let es = eso::external_secrets(&env.client, "ready", EsoVersion::V1);
    for name in ["a", "s", "f"] {
        wait::until(&es, name, "applied", |o: Option<&DynamicObject>| {
            o.is_some()
        })
        .await?;
    }
    eso::set_ready(&es, "a", "True", "SecretSynced", "").await?;
    eso::set_ready(
        &es,
        "f",
        "False",
        "SecretSyncedError",
        "could not get secret data",
    )
    .await?;
    let bundles = env.bundles();
    wait::bundle_reason(&bundles, "ready", "Ready").await?;
    wait::bundle_reason(&bundles, "syncing", "SecretsNotReady").await?;
    wait::bundle_reason(&bundles, "failing", "SecretSyncFailed").await?;
    wait::bundle_reason(&bundles, "waiting", "WaitingForNamespace").await?;
    wait::bundle_reason(&bundles, "suspended", "Suspended").await?;
    wait::bundle_reason(&bundles, "cyclic", "DependencyCycle").await?;
    // A spec change the controller has not observed yet: stop it first so it cannot catch up.
    let mut env = env;
    env.stop_operator();
    let mut stale = simple_bundle("ready", "ready", &["a", "b"]);
    stale.metadata.resource_version = None;
    env.apply_bundle(&stale).await?;

    let mut objects: Vec<SecretBundle> = bundles.list(&ListParams::default()).await?.items;
    objects.retain(|b| b.metadata.name.as_deref() != Some("cyclic-peer"));
    let verdicts = health(&objects)?;
    let got: Vec<(&str, &str, &str, &str)> = verdicts
        .iter()
        .map(|h| {
            let (name, argo) = (h.name.as_str(), h.argo_status.as_str());
            (name, argo, h.kstatus.as_str(), h.flux_cel.as_str())
        })
        .collect();
    // (bundle, Argo CD, Flux kstatus default, Flux with deploy/flux/health-check-exprs.yaml)
    assert_eq!(
        got,
        [
            ("cyclic", "Degraded", "Failed", "Failed"),
            ("failing", "Degraded", "Failed", "Failed"),
            // generation ahead of observedGeneration
            ("ready", "Progressing", "InProgress", "InProgress"),
            ("suspended", "Suspended", "InProgress", "Current"),
            ("syncing", "Progressing", "InProgress", "InProgress"),
            // idle: kstatus's generic rule reads any Ready=False as InProgress
            ("waiting", "Healthy", "InProgress", "Current"),
        ],
        "{verdicts:#?}"
    );
    let message = |name: &str| {
        verdicts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.argo_message.clone())
            .unwrap_or_default()
    };
    assert!(message("cyclic").contains("cyclic -> cyclic-peer -> cyclic"));
    assert!(message("failing").contains("could not get secret data"));
    assert_eq!(
        message("waiting"),
        r#"Idle, waiting (WaitingForNamespace): namespace "absent" does not exist"#
    );

    // Caught up again, the same bundle is Healthy / Current, as Flux's `wait: true` needs.
    env.start_operator();
    let es_b = eso::external_secrets(&env.client, "ready", EsoVersion::V1);
    wait::until(&es_b, "b", "applied", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;
    eso::set_ready(&es_b, "b", "True", "SecretSynced", "").await?;
    let ready = wait::bundle_reason(&bundles, "ready", "Ready").await?;
    let caught_up = health(&[ready])?;
    assert_eq!(
        (
            caught_up[0].argo_status.as_str(),
            caught_up[0].kstatus.as_str(),
            caught_up[0].flux_cel.as_str()
        ),
        ("Healthy", "Current", "Current")
    );
    Ok(())
}

/// The Lua embedded in deploy/argocd/README.md and the Flux rule in docs/gitops.md are the
/// shipped files, so users copy what the tests run.
#[test]
fn docs_embed_the_shipped_health_rules() -> Result<()> {
    let root = repo_root();
    let lua = std::fs::read_to_string(root.join("deploy/argocd/secretbundle-health.lua"))?;
    let readme = std::fs::read_to_string(root.join("deploy/argocd/README.md"))?;
    let blocks = embedded(
        &readme,
        "resource.customizations.health.secrets.ameide.io_SecretBundle: |",
    );
    assert_eq!(blocks.len(), 2, "argocd-cm and Helm values");
    for block in blocks {
        assert_eq!(block, lua);
    }
    let exprs = std::fs::read_to_string(root.join("deploy/flux/health-check-exprs.yaml"))?;
    let list: String = exprs
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let gitops = std::fs::read_to_string(root.join("docs/gitops.md"))?;
    let blocks = embedded(&gitops, "healthCheckExprs:");
    assert_eq!(blocks, [list], "docs/gitops.md healthCheckExprs");
    Ok(())
}

/// The indented block under each line ending in `key`, dedented, up to the closing fence.
fn embedded(doc: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if !line.trim_end().ends_with(key) {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let indent = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        out.push(
            body.iter()
                .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
                .collect(),
        );
    }
    out
}

#[tokio::test]
async fn render_prints_what_the_controller_applies_and_explain_shows_the_gates() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("monitoring").await?;
    let mut b = simple_bundle("observability", "monitoring", &["grafana", "loki"]);
    b.spec.depends_on = vec!["platform".into()];
    let yaml = serde_yaml::to_string(&b)?;
    let rendered = run(
        Command::new(operator_bin()).args(["render", "-f", "-"]),
        Some(yaml.as_bytes()),
    )?;
    let rendered: Vec<DynamicObject> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| DynamicObject::deserialize(d).context("rendered YAML"))
        .collect::<Result<_>>()?;
    let beta = run(
        Command::new(operator_bin()).args(["render", "--eso-version", "v1beta1", "-f", "-"]),
        Some(yaml.as_bytes()),
    )?;
    assert!(beta.contains("apiVersion: external-secrets.io/v1beta1"));

    env.apply_bundle(&b).await?;
    wait::bundle_reason(&env.bundles(), "observability", "WaitingForDependency").await?;
    let explain = run(
        Command::new(operator_bin())
            .env("KUBECONFIG", env.cp.kubeconfig_path()?)
            .args(["explain", "observability"]),
        None,
    )?;
    for line in [
        "✘ SecretBundle observability: WaitingForDependency",
        "✔ namespace monitoring: active",
        "✔ ExternalSecret CRD: serving external-secrets.io/v1",
        "✘ dependsOn platform",
        "✘ SecretBundle platform: not found",
        r#"✔ ClusterSecretStore "test-store": Ready"#,
    ] {
        assert!(explain.contains(line), "missing {line:?} in:\n{explain}");
    }

    env.apply_bundle(&simple_bundle("platform", "monitoring", &["db"]))
        .await?;
    let es = eso::external_secrets(&env.client, "monitoring", EsoVersion::V1);
    wait::until(&es, "db", "applied", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;
    eso::set_ready(&es, "db", "True", "SecretSynced", "").await?;
    for r in &rendered {
        let name = r.metadata.name.clone().unwrap_or_default();
        let applied = wait::until(&es, &name, "applied", |o: Option<&DynamicObject>| {
            o.is_some()
        })
        .await?;
        // Same spec and labels; the cluster adds defaults, the owner and the applied hash.
        assert!(
            secretbundle_controller::applied::is_subset(&r.data["spec"], &applied.data["spec"]),
            "{name}"
        );
        assert_eq!(r.metadata.labels, applied.metadata.labels);
    }
    Ok(())
}
