//! The migration from Helm-made ExternalSecrets to bundles, end to end with real Helm, ESO,
//! OpenBao and the garbage collector: the seven Layer 15 releases are installed, imported with
//! `secretbundle-operator import`, adopted by bundles, and then removed the way that keeps their
//! objects (`helm.sh/resource-policy: keep` stored by a `helm upgrade`, then `helm uninstall`).
//! Proven from the API server: no ExternalSecret or Secret is replaced, no Secret is deleted or
//! has its data changed (every version a watch sees, every write the audit log records), the
//! bundles are Ready, nothing of Helm's field manager is left, and `diff` finds nothing to do.
//! A transcription that drops one field is caught by the same check.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::eso::main_managers;
use secretbundle_tests::migration::{
    Helm, Key, MoveReport, RELEASES, Recorder, SecretWrite, Version, audit_offset, chart,
    check_move, pipe, release, run_with_stdin, secret_writes,
};
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::stack::{OpenBao, Stack};
use secretbundle_tests::wait;
use serde::Deserialize as _;
use serde_json::json;

/// What OpenBao holds for the seven services (the keys the seed's ExternalSecrets read).
fn fill_vault(bao: &OpenBao) -> Result<()> {
    let creds = [
        ("url", "postgresql://db.invalid/x"),
        ("username", "svc"),
        ("password", "p@ss:word/1"),
    ];
    bao.put(
        "platform/db",
        &[
            ("host", "db.invalid"),
            ("port", "5432"),
            ("database", "platform"),
            ("username", "platform"),
            ("password", "p@ss:word/1"),
        ],
    )?;
    bao.put("platform/ghcr", &[("username", "bot"), ("token", "ghp_x")])?;
    bao.put(
        "argocd/admin",
        &[("password", "$2a$10$hash"), ("passwordMtime", "2025-01-01")],
    )?;
    bao.put(
        "argocd/repo-creds",
        &[
            ("type", "git"),
            ("url", "https://git.invalid"),
            ("username", "git"),
            ("password", "pat"),
        ],
    )?;
    bao.put("cert-manager/azure-dns", &[("client-secret", "azure")])?;
    bao.put(
        "k8s-dashboard/oauth",
        &[
            ("client-id", "id"),
            ("client-secret", "secret"),
            ("cookie-secret", "cookie"),
        ],
    )?;
    bao.put("neo4j/auth", &[("password", "neo")])?;
    for (path, a, b) in [
        ("observability/grafana", "admin-user", "admin-password"),
        (
            "observability/loki-s3",
            "access-key-id",
            "secret-access-key",
        ),
        (
            "observability/tempo-s3",
            "access-key-id",
            "secret-access-key",
        ),
        ("observability/minio", "root-user", "root-password"),
    ] {
        bao.put(path, &[(a, "demo-a"), (b, "demo-b")])?;
    }
    for db in [
        "graph-db",
        "transformation-db",
        "threads-db",
        "agents-runtime-db",
    ] {
        bao.put(&format!("data-plane/{db}"), &creds)?;
    }
    Ok(())
}

fn es_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    )
}

fn es_ready(es: Option<&DynamicObject>) -> bool {
    es.and_then(|es| es.data.pointer("/status/conditions")?.as_array().cloned())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Every ExternalSecret of the seven releases, by namespace and name, with its UID.
async fn external_secrets(client: &Client) -> Result<BTreeMap<Key, String>> {
    let mut all = BTreeMap::new();
    for ns in namespaces() {
        for es in es_api(client, &ns).list(&ListParams::default()).await? {
            all.insert((ns.clone(), es.name_any()), es.uid().unwrap_or_default());
        }
    }
    Ok(all)
}

fn namespaces() -> BTreeSet<String> {
    RELEASES.iter().map(|(_, ns)| ns.to_string()).collect()
}

/// `helm get manifest <release> | secretbundle-operator import -f - --name <service>`.
fn import(helm: &Helm, service: &str, ns: &str) -> Result<String> {
    let manifest = helm.run(&["get", "manifest", &release(service), "-n", ns])?;
    let out = run_with_stdin(
        &operator_bin(),
        &["import", "-f", "-", "--name", service],
        &manifest,
    )?;
    ensure!(
        out.status.success(),
        "import of {}: {}",
        release(service),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn bundles_of(yaml: &str) -> Result<Vec<SecretBundle>> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            Ok(serde_yaml::from_value(serde_yaml::Value::deserialize(
                doc,
            )?)?)
        })
        .filter(|b: &Result<SecretBundle>| b.as_ref().map_or(true, |b| !b.name_any().is_empty()))
        .collect()
}

/// `secretbundle-operator diff -f -` of `yaml` against the cluster: exit code and output.
fn diff_from_stdin(s: &Stack, yaml: &str) -> Result<(Option<i32>, String)> {
    let out = pipe(
        Command::new(operator_bin())
            .env("KUBECONFIG", s.env.cp.kubeconfig_path()?)
            .args(["diff", "-f", "-"]),
        yaml,
    )
    .context("run `cargo build --bins` first")?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code(), text.into_owned()))
}

/// `kubectl apply --server-side -f`, as a user applies reviewed bundles.
fn apply(s: &Stack, yaml: &str) -> Result<()> {
    let (ok, out) = s.env.kubectl_apply_server_side(yaml)?;
    ensure!(ok, "kubectl apply: {out}");
    Ok(())
}

async fn all_ready(s: &Stack, names: &[String]) -> Result<()> {
    for name in names {
        wait::bundle_reason(&s.env.bundles(), name, "Ready").await?;
    }
    Ok(())
}

/// The current version of every Secret the releases' ExternalSecrets write.
async fn secrets(client: &Client, keys: &BTreeSet<Key>) -> Result<BTreeMap<Key, Version>> {
    let mut all = BTreeMap::new();
    for (ns, name) in keys {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .with_context(|| format!("Secret {ns}/{name}"))?;
        all.insert((ns.clone(), name.clone()), Version::of(&s, false));
    }
    Ok(all)
}

fn print_writes(writes: &[SecretWrite]) {
    let mut by: BTreeMap<(String, String, String, i64), usize> = BTreeMap::new();
    for w in writes {
        *by.entry((w.user.clone(), w.agent.clone(), w.verb.clone(), w.code))
            .or_default() += 1;
    }
    eprintln!("writes to the releases' Secrets during the move (audit log):");
    for ((user, agent, verb, code), n) in &by {
        eprintln!("  {n:>3} {verb} by {user} ({agent}), HTTP {code}");
    }
    for w in writes {
        eprintln!("      {} {}/{} by {}", w.verb, w.namespace, w.name, w.agent);
    }
}

fn print_rewrites(report: &MoveReport) {
    eprintln!("Secrets written again with byte-identical data:");
    for ((ns, name), n) in &report.identical_rewrites {
        eprintln!("  {ns}/{name}: {n} new version(s), data unchanged");
    }
}

#[tokio::test]
async fn seven_helm_releases_move_into_bundles_without_touching_a_secret() -> Result<()> {
    let t0 = Instant::now();
    let s = Stack::start().await?;
    let client = s.env.client.clone();
    let helm = Helm::new(&s.env.cp)?;
    fill_vault(&s.bao)?;
    for ns in namespaces() {
        s.env.create_namespace(&ns).await?;
    }
    // Argo CD creates argocd-secret itself; its ExternalSecret merges the admin password in.
    Api::<Secret>::namespaced(client.clone(), "argocd")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "argocd-secret"},
                "stringData": {"server.secretkey": "argo-own-key"}
            }))?,
        )
        .await?;

    // Layer 15 as it runs today: one release per service.
    let started = Instant::now();
    for (service, ns) in RELEASES {
        let values = chart().join(format!("values/{service}.yaml"));
        helm.run(&[
            "install",
            &release(service),
            &chart().to_string_lossy(),
            "-n",
            ns,
            "-f",
            &values.to_string_lossy(),
        ])?;
    }
    let before_es = external_secrets(&client).await?;
    ensure!(before_es.len() == 15, "{before_es:?}");
    for (ns, name) in before_es.keys() {
        wait::until(&es_api(&client, ns), name, "ESO Ready", es_ready).await?;
    }
    let install_time = started.elapsed();
    let keys: BTreeSet<Key> = before_es.keys().cloned().collect();
    let baseline = secrets(&client, &keys).await?;

    let mut recorder = Recorder::start(&client, namespaces());
    recorder.catch_up(&client, &keys).await?;
    let offset = audit_offset(&s.env.cp)?;
    let moved = Instant::now();

    // 1. Make Helm keep its objects: the policy must be in the stored release (uninstall reads
    // that, not the live object), so it takes an upgrade.
    for (service, ns) in RELEASES {
        helm.run(&[
            "upgrade",
            &release(service),
            &chart().to_string_lossy(),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "keep=true",
        ])?;
        let manifest = helm.run(&["get", "manifest", &release(service), "-n", ns])?;
        ensure!(
            manifest.contains("helm.sh/resource-policy: keep"),
            "{manifest}"
        );
    }
    // 2. Import each release from its stored manifest; 3. apply the bundles.
    let mut imported = BTreeMap::new();
    for (service, ns) in RELEASES {
        let yaml = import(&helm, service, ns)?;
        apply(&s, &yaml)?;
        imported.insert(service, yaml);
    }
    let names: Vec<String> = RELEASES.iter().map(|(s, _)| s.to_string()).collect();
    all_ready(&s, &names).await?;
    let adopt_time = moved.elapsed();
    // 4. Remove the releases: Helm keeps what the policy marks.
    let removed = Instant::now();
    for (service, ns) in RELEASES {
        let out = helm.run(&["uninstall", &release(service), "-n", ns])?;
        ensure!(
            out.contains("These resources were kept due to the resource policy"),
            "{out}"
        );
    }
    ensure!(helm.run(&["list", "-A", "-q"])?.trim().is_empty());
    all_ready(&s, &names).await?;
    let uninstall_time = removed.elapsed();

    // The evidence, from the API server.
    let after_es = external_secrets(&client).await?;
    assert_eq!(after_es, before_es, "every ExternalSecret keeps its UID");
    recorder.catch_up(&client, &keys).await?;
    let after = secrets(&client, &keys).await?;
    for (key, v) in &after {
        assert_eq!(v.uid, baseline[key].uid, "{key:?} keeps its UID");
        assert_eq!(v.data, baseline[key].data, "{key:?} keeps its data");
    }
    let report = check_move(&baseline, &recorder.seen());
    print_rewrites(&report);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    // Helm's own release records are Secrets too (sh.helm.release.v1.*): counted apart.
    let (writes, records): (Vec<_>, Vec<_>) = secret_writes(&s.env.cp, offset, &namespaces())?
        .into_iter()
        .partition(|w| keys.contains(&(w.namespace.clone(), w.name.clone())));
    print_writes(&writes);
    eprintln!("writes to Helm's release records: {}", records.len());
    assert!(
        records
            .iter()
            .all(|w| w.name.starts_with("sh.helm.release.v1.")),
        "writes to Secrets no release owns: {records:#?}"
    );
    assert!(
        writes.iter().all(|w| !w.verb.starts_with("delete")),
        "a Secret was deleted: {writes:#?}"
    );
    let mut helm_left = Vec::new();
    let mut manager_sets: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (ns, name) in after_es.keys() {
        let es = es_api(&client, ns).get(name).await?;
        let m = main_managers(&es);
        *manager_sets.entry(m.clone()).or_default() += 1;
        if m.iter().any(|m| m == "helm") {
            helm_left.push(format!(
                "{ns}/{name}: {m:?} {:?} {:?}",
                es.labels(),
                es.annotations()
            ));
        }
    }
    eprintln!(
        "managers of the ExternalSecrets (not their status) after the move: {manager_sets:?}"
    );
    // Adoption handed each spec over: Helm's Update entry (labels, annotations, spec) is gone.
    assert!(
        helm_left.is_empty(),
        "Helm's field manager left on {} ExternalSecret(s): {helm_left:#?}",
        helm_left.len()
    );
    // 5. Review after the move: the bundles as committed have nothing left to change.
    let all: Vec<&str> = imported.values().map(String::as_str).collect();
    let after_move = diff_from_stdin(&s, &all.join("\n---\n"))?;
    eprintln!("diff after the move: {after_move:?}");
    ensure!(
        after_move.0 == Some(0),
        "diff after the move: {after_move:?}"
    );
    eprintln!(
        "timings: 7 installs and 15 Secrets synced {install_time:?}; keep, import, apply and Ready \
         {adopt_time:?}; uninstall {uninstall_time:?}; whole test {:?}",
        t0.elapsed()
    );

    // The negative control: a hand transcription of vault-secrets-observability that lost one
    // data entry is caught by the same check.
    let mut lossy = bundles_of(&imported["observability"])?;
    let grafana = lossy[0]
        .spec
        .secrets
        .iter_mut()
        .find(|x| x.name == "grafana-admin")
        .context("grafana-admin")?;
    grafana.data.retain(|d| d.secret_key != "admin-password");
    apply(&s, &serde_yaml::to_string(&lossy[0])?)?;
    let secrets_api = Api::<Secret>::namespaced(client.clone(), "monitoring");
    wait::until(
        &secrets_api,
        "grafana-admin",
        "ESO syncs the lossy transcription",
        |sec: Option<&Secret>| {
            sec.and_then(|x| x.data.as_ref())
                .is_some_and(|d| !d.contains_key("admin-password"))
        },
    )
    .await?;
    recorder.catch_up(&client, &keys).await?;
    let caught = check_move(&baseline, &recorder.seen());
    assert_eq!(
        caught.violations,
        ["Secret monitoring/grafana-admin data changed: removed admin-password"],
        "the check catches a dropped field"
    );
    Ok(())
}
