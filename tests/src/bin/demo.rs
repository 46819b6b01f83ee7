//! `make demo`: a local control plane, ESO, OpenBao, the operator and the example bundles,
//! showing a bundle that waits for its namespace and turns Ready once it exists.

use std::process::Command;

use anyhow::{Context as _, Result};
use kube::CustomResourceExt;
use secretbundle_api::SecretBundle;
use secretbundle_tests::stack::{self, OpenBao, Proc};
use secretbundle_tests::{ControlPlane, apply_crds, kubectl_with, repo_root, wait};

fn step(msg: &str) {
    println!("\n==> {msg}");
}

#[tokio::main]
async fn main() -> Result<()> {
    step(
        "Starting etcd, kube-apiserver and kube-controller-manager (built from pinned Go modules, cached)",
    );
    let cp = ControlPlane::start().await?;
    let kubeconfig = cp.kubeconfig_path()?;
    let client = cp.client().await?;
    let kubectl = |args: &[&str]| -> Result<()> {
        let out = kubectl_with(&kubeconfig, args)?;
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };

    step("Installing the SecretBundle CRD, ESO v0.16.2 CRDs and the local password generator");
    apply_crds(&client, vec![SecretBundle::crd()]).await?;
    stack::install_eso_v0_16(&client).await?;
    let generator = repo_root().join("examples/store/local-password-generator.yaml");
    kubectl(&["apply", "--server-side", "-f", &generator.to_string_lossy()])?;
    // After the CRDs, so its garbage collector knows them from the start.
    cp.start_controller_manager()?;

    step("Starting OpenBao (dev mode) and seeding example credentials");
    let bao = OpenBao::start(cp.dir()).await?;
    let overlay = repo_root().join("examples/overlays/local");
    let rendered = kubectl_with(&kubeconfig, &["kustomize", &overlay.to_string_lossy()])?;
    let bundles: Vec<SecretBundle> = serde_yaml::Deserializer::from_slice(&rendered.stdout)
        .map(|d| serde::Deserialize::deserialize(d).context("parsing example bundles"))
        .collect::<Result<_>>()?;
    for (key, props) in stack::demo_vault_keys(&bundles) {
        let pairs: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        bao.put(&key, &pairs)?;
        println!(
            "    secret/{key}: {}",
            props.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    stack::create_vault_store(&client, &bao).await?;

    step("Starting the ESO controller and the SecretBundle operator");
    let _eso = stack::start_eso(&kubeconfig, cp.dir())?;
    let operator_bin = std::env::var("SB_OPERATOR_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| repo_root().join("target/debug/secretbundle-operator"));
    let _operator = Proc::spawn(
        Command::new(operator_bin)
            .env("KUBECONFIG", &kubeconfig)
            .args(["run", "--http-addr", "127.0.0.1:0"]),
        &cp.dir().join("operator.log"),
    )?;

    let missing = "argocd";
    step(&format!(
        "Creating every target namespace except {missing:?}, then applying examples/overlays/local"
    ));
    for b in &bundles {
        let ns = &b.spec.target_namespace;
        if ns != missing {
            let _ = kubectl_with(&kubeconfig, &["create", "namespace", ns]);
        }
    }
    kubectl(&["apply", "-k", &overlay.to_string_lossy()])?;
    let api = kube::Api::<SecretBundle>::all(client.clone());
    for b in bundles
        .iter()
        .filter(|b| b.spec.target_namespace != missing)
    {
        wait::bundle_reason(&api, &b.metadata.name.clone().unwrap_or_default(), "Ready").await?;
    }
    wait::bundle_reason(&api, missing, "WaitingForNamespace").await?;
    kubectl(&["get", "secretbundles"])?;
    step(&format!(
        "{missing} waits for its namespace; what it waits for, as `explain` shows it:"
    ));
    let explain = Command::new(repo_root().join("target/debug/secretbundle-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["explain", missing])
        .output()?;
    print!("{}", String::from_utf8_lossy(&explain.stdout));

    step(&format!(
        "Creating namespace {missing:?} with Argo CD's own argocd-secret: the bundle proceeds at once, \
         driven by its watch, and merges its keys into that Secret"
    ));
    let argocd = cp.dir().join("argocd.yaml");
    std::fs::write(
        &argocd,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {missing}}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: argocd-secret, namespace: {missing}}}\n\
             stringData: {{server.secretkey: written-by-argo-cd}}\n"
        ),
    )?;
    kubectl(&["apply", "-f", &argocd.to_string_lossy()])?;
    // Had ESO looked before the Secret existed, a refresh request makes it look again now.
    kubectl(&[
        "annotate",
        "--overwrite",
        "sb",
        missing,
        "secrets.ameide.io/refresh-requested-at=argocd-secret-created",
    ])?;
    wait::bundle_reason(&api, missing, "Ready").await?;
    kubectl(&["get", "secretbundles"])?;
    kubectl(&["get", "externalsecrets,secrets", "-n", missing])?;

    step("Running. Try it yourself:");
    println!("    export KUBECONFIG={}", kubeconfig.display());
    println!("    .venv/bin/kubectl get sb -o wide");
    println!(
        "    .venv/bin/kubectl annotate sb argocd secrets.ameide.io/refresh-requested-at=$(date +%s)"
    );
    println!(
        "    BAO_ADDR={} BAO_TOKEN=root .venv/bin/bao kv get secret/argocd/admin",
        bao.addr
    );
    println!(
        "Logs: {}   Press Ctrl-C to stop everything.",
        cp.dir().display()
    );
    // Ctrl-C, or SIGTERM from `timeout`, a supervisor or `kill`: either way everything started
    // here is stopped as the values holding it are dropped.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    println!("\nStopping.");
    Ok(())
}
