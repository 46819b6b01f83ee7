//! `secretbundle-operator wait`, the real binary, on a real control plane: it returns once a
//! bundle turns Ready, reports what blocks at its timeout, counts idle bundles as done for
//! `--all`, and needs nothing but read access to bundles (proven with the example consumers' RBAC).
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ListParams, PostParams};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::{Env, eso, identity, repo_root, simple_bundle, wait};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// A running `secretbundle-operator wait`, its stdout and stderr merged line by line.
struct Waiter {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Waiter {
    fn start(kubeconfig: &Path, args: &[&str]) -> Result<Self> {
        let mut child = tokio::process::Command::new(operator_bin())
            .env("KUBECONFIG", kubeconfig)
            .arg("wait")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("run `cargo build --bins` first")?;
        let (tx, lines) = mpsc::unbounded_channel();
        forward(child.stdout.take(), tx.clone());
        forward(child.stderr.take(), tx);
        Ok(Waiter {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits until the process prints a line containing `needle`.
    async fn until_line(&mut self, needle: &str) -> Result<()> {
        let found = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
                if self.seen.last().is_some_and(|l| l.contains(needle)) {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(wait::TIMEOUT, found).await {
            Ok(true) => Ok(()),
            _ => Err(anyhow!("no line with {needle:?}; output: {:#?}", self.seen)),
        }
    }

    /// Waits for the process to exit; returns its exit code and everything it printed.
    async fn exit(mut self) -> Result<(Option<i32>, String)> {
        let status = tokio::time::timeout(wait::TIMEOUT, self.child.wait())
            .await
            .map_err(|_| anyhow!("wait did not exit; output so far: {:#?}", self.seen))??;
        // The pipes close with the process, so this ends.
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        Ok((status.code(), self.seen.join("\n")))
    }
}

fn forward(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    tx: mpsc::UnboundedSender<String>,
) {
    if let Some(pipe) = pipe {
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
}

/// Applies a one-secret bundle into `ns` and, unless `ready` is false, marks its child Ready as
/// ESO would; otherwise leaves it at SecretsNotReady.
async fn bundle_in(env: &Env, name: &str, ns: &str, ready: bool) -> Result<()> {
    env.apply_bundle(&simple_bundle(name, ns, &[name])).await?;
    let es = eso::external_secrets(&env.client, ns, EsoVersion::V1);
    let lp = ListParams::default().labels(&format!("secrets.ameide.io/bundle={name}"));
    wait::until_count(&es, &lp, 1).await?;
    wait::bundle_reason(&env.bundles(), name, "SecretsNotReady").await?;
    if ready {
        eso::set_ready(&es, name, "True", "SecretSynced", "secret synced").await?;
        wait::bundle_reason(&env.bundles(), name, "Ready").await?;
    }
    Ok(())
}

#[tokio::test]
async fn wait_for_a_named_bundle_returns_once_it_appears_and_turns_ready() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("ameide").await?;
    let kubeconfig = env.cp.kubeconfig_path()?;
    let mut waiter = Waiter::start(&kubeconfig, &["data-plane", "--timeout", "2m"])?;
    waiter.until_line("data-plane (NotFound)").await?;

    bundle_in(&env, "data-plane", "ameide", false).await?;
    waiter.until_line("data-plane (SecretsNotReady)").await?;
    assert!(
        waiter.child.try_wait()?.is_none(),
        "still waiting while not Ready"
    );

    let es = eso::external_secrets(&env.client, "ameide", EsoVersion::V1);
    eso::set_ready(&es, "data-plane", "True", "SecretSynced", "secret synced").await?;
    let (code, out) = waiter.exit().await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(|l| l == "done: 1 Ready (data-plane)"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn wait_all_times_out_naming_each_blocking_bundle_and_its_reason() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("ameide").await?;
    bundle_in(&env, "platform", "ameide", true).await?;
    bundle_in(&env, "data-plane", "ameide", false).await?;

    let kubeconfig = env.cp.kubeconfig_path()?;
    let waiter = Waiter::start(&kubeconfig, &["--all", "--timeout", "3s"])?;
    let (code, out) = waiter.exit().await?;
    assert_eq!(code, Some(1), "{out}");
    let blocking: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("timed out after 3s; blocking:"))
        .skip(1)
        .collect();
    assert_eq!(blocking.len(), 1, "{out}");
    assert!(
        blocking[0]
            .trim()
            .starts_with("data-plane: SecretsNotReady: "),
        "{out}"
    );

    // A named bundle that is Ready is done at once, whatever else is not.
    let (code, out) = Waiter::start(&kubeconfig, &["platform"])?.exit().await?;
    assert_eq!(code, Some(0), "{out}");

    // Usage errors are clap's exit code 2.
    let (code, out) = Waiter::start(&kubeconfig, &[])?.exit().await?;
    assert_eq!(code, Some(2), "{out}");
    Ok(())
}

#[tokio::test]
async fn wait_all_counts_bundles_idle_for_a_missing_namespace_unless_required() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("ameide").await?;
    bundle_in(&env, "platform", "ameide", true).await?;
    env.apply_bundle(&simple_bundle("argocd", "argocd", &["argocd-secret"]))
        .await?;
    wait::bundle_message(
        &env.bundles(),
        "argocd",
        "WaitingForNamespace",
        r#"namespace "argocd" does not exist"#,
    )
    .await?;
    // Waits only on the idle bundle: idle too.
    let mut extras = simple_bundle("argocd-extras", "ameide", &["repo-creds"]);
    extras.spec.depends_on = vec!["argocd".into()];
    env.apply_bundle(&extras).await?;
    wait::bundle_reason(&env.bundles(), "argocd-extras", "WaitingForDependency").await?;

    let kubeconfig = env.cp.kubeconfig_path()?;
    let (code, out) = Waiter::start(&kubeconfig, &["--all", "--timeout", "30s"])?
        .exit()
        .await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(r#"counted as done, not Ready: argocd: WaitingForNamespace: namespace "argocd" does not exist"#),
        "{out}"
    );
    assert!(
        out.contains("counted as done, not Ready: argocd-extras: WaitingForDependency: "),
        "{out}"
    );
    assert!(
        out.contains("done: 1 Ready (platform), 2 counted as done while idle"),
        "{out}"
    );

    let (code, out) = Waiter::start(&kubeconfig, &["--all", "--require-all", "--timeout", "3s"])?
        .exit()
        .await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(r#"argocd: WaitingForNamespace: namespace "argocd" does not exist"#),
        "{out}"
    );
    assert!(
        out.contains("argocd-extras: WaitingForDependency: "),
        "{out}"
    );
    Ok(())
}

const WAITER: &str = "system:serviceaccount:ameide:secretbundle-waiter";

#[tokio::test]
async fn consumer_examples_apply_and_read_access_to_bundles_suffices() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("ameide").await?;
    let examples = repo_root().join("examples/consumers");
    let examples = examples.to_string_lossy();
    let out = env.kubectl(&["apply", "--dry-run=server", "-k", &examples])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for object in ["job.batch/db-migrations", "job.batch/secrets-smoke"] {
        assert!(
            text.contains(&format!("{object} created (server dry run)")),
            "{text}"
        );
    }

    // The examples' ServiceAccount and its read-only grant, for real.
    let rbac = repo_root().join("examples/consumers/rbac.yaml");
    let out = env.kubectl(&["apply", "-f", &rbac.to_string_lossy()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (verb, resource, subresource, allowed) in [
        ("watch", "secretbundles.secrets.ameide.io", "", "yes"),
        ("patch", "secretbundles.secrets.ameide.io", "", "no"),
        ("patch", "secretbundles.secrets.ameide.io", "status", "no"),
        ("get", "secrets", "", "no"),
    ] {
        let sub = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, "-A", "--as", WAITER];
        if !subresource.is_empty() {
            args.push(&sub);
        }
        let out = env.kubectl(&args)?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, allowed, "can-i {verb} {resource} {subresource}");
    }

    // Sufficient: wait, authenticated as that ServiceAccount, sees the bundle turn Ready.
    let token =
        identity::service_account_token(&env.client, "ameide", "secretbundle-waiter").await?;
    let kubeconfig = env.cp.token_kubeconfig_path("waiter", &token)?;
    let mut waiter = Waiter::start(&kubeconfig, &["data-plane", "--timeout", "2m"])?;
    waiter.until_line("data-plane (NotFound)").await?;
    bundle_in(&env, "data-plane", "ameide", true).await?;
    let (code, out) = waiter.exit().await?;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = Waiter::start(&kubeconfig, &["--all"])?.exit().await?;
    assert_eq!(code, Some(0), "{out}");

    // Without the grant it cannot even list: a setup error, exit code 2.
    let sa_api = Api::<ServiceAccount>::namespaced(env.client.clone(), "ameide");
    let nobody: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}}))?;
    sa_api.create(&PostParams::default(), &nobody).await?;
    let token = sa_api
        .create_token_request("nobody", &PostParams::default(), &TokenRequest::default())
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token")?;
    let kubeconfig = env.cp.token_kubeconfig_path("nobody", &token)?;
    let (code, out) = Waiter::start(&kubeconfig, &["--all"])?.exit().await?;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(r#"cannot list resource "secretbundles""#),
        "{out}"
    );
    Ok(())
}
