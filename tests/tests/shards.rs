//! Sharding beyond one replica: two deployments of the real binary on one control plane split
//! the bundles with `--watch-label-selector`, each electing its own leader on its own Lease.
//! The apiserver's audit log shows who read and wrote what: each shard lists and watches only
//! its own bundles and children in full (the other shards' by metadata or by what a dependent
//! needs), writes only its bundles and their children, and a relabelled bundle moves to the
//! other shard, which relabels its children and changes nothing else. ESO's controller is not
//! running here.

use std::collections::BTreeSet;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt as _, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::controlplane::{ControlPlane, Options, read_audit_log};
use secretbundle_tests::process::Operator;
use secretbundle_tests::{apply_crds, eso, simple_bundle, wait};
use serde_json::{Value, json};

const SHARD_LABEL: &str = "sharding.secrets.ameide.io/key";

/// A ServiceAccount allowed everything, so the audit log names each shard.
async fn identity(client: &Client, name: &str) -> anyhow::Result<String> {
    let pp = PostParams::default();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "default");
    sas.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    let crb = json!({"metadata": {"name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}});
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &serde_json::from_value(crb)?)
        .await?;
    sas.create_token_request(name, &pp, &TokenRequest::default())
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token")
}

/// Requests from `since` bytes into the audit log: (user, verb, resource, name, requestURI,
/// response code).
fn requests(cp: &ControlPlane, since: u64) -> anyhow::Result<Vec<[String; 6]>> {
    let text = read_audit_log(&cp.audit_log(), since)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line)?;
        let s = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if !seen.insert(s("/auditID")) {
            continue;
        }
        let user = s("/user/username");
        let user = user.rsplit(':').next().unwrap_or_default().to_string();
        out.push([
            user,
            s("/verb"),
            s("/objectRef/resource"),
            s("/objectRef/name"),
            s("/requestURI"),
            e.pointer("/responseStatus/code")
                .map(Value::to_string)
                .unwrap_or_default(),
        ]);
    }
    Ok(out)
}

/// Writes (not get/list/watch) from `since` bytes into the audit log: (user, resource, name).
/// A write answered 404 wrote nothing: a reconcile woken before the operator's cache saw a
/// deletion may still try to remove the finalizer of a bundle that is gone.
fn writes(cp: &ControlPlane, since: u64) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(requests(cp, since)?
        .into_iter()
        .filter(|[_, verb, .., code]| {
            !matches!(verb.as_str(), "get" | "list" | "watch") && code != "404"
        })
        .map(|[user, _, resource, name, ..]| (user, resource, name))
        .collect())
}

/// The label selector of a list or watch, decoded.
fn selector(uri: &str) -> String {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let raw = query
        .split('&')
        .find_map(|p| p.strip_prefix("labelSelector="))
        .unwrap_or_default();
    let mut out = String::new();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap_or(b'?')));
            }
            b'+' => out.push(' '),
            b => out.push(char::from(b)),
        }
    }
    out
}

fn sharded(name: &str, shard: &str, secrets: &[&str]) -> SecretBundle {
    let mut b = simple_bundle(name, "apps", secrets);
    b.labels_mut().insert(SHARD_LABEL.into(), shard.into());
    b
}

#[tokio::test]
async fn two_shards_split_bundles_by_label_and_a_relabelled_bundle_moves_cleanly()
-> anyhow::Result<()> {
    let cp = ControlPlane::start_with(Options::audited()).await?;
    let client = cp.client().await?;
    apply_crds(&client, vec![SecretBundle::crd()]).await?;
    apply_crds(&client, eso::crds("v2.9.0")?).await?;
    eso::ready_cluster_store(&client, EsoVersion::V1, eso::TEST_STORE).await?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}}))?,
        )
        .await?;
    let mut shards = Vec::new();
    for shard in ["a", "b"] {
        let name = format!("shard-{shard}");
        let kubeconfig = cp.token_kubeconfig_path(&name, &identity(&client, &name).await?)?;
        shards.push(Operator::start(
            &kubeconfig,
            &cp.dir().join(format!("{name}.log")),
            &[
                "--leader-election",
                &format!("--lease-name=secretbundle-{name}"),
                &format!("--watch-label-selector={SHARD_LABEL}={shard}"),
            ],
        )?);
    }
    let bundles = Api::<SecretBundle>::all(client.clone());
    let pp = PatchParams::apply("secretbundle-tests").force();
    for b in [
        sharded("alpha", "a", &["alpha-db"]),
        sharded("beta", "b", &["beta-db"]),
    ] {
        bundles.patch(&b.name_any(), &pp, &Patch::Apply(&b)).await?;
    }
    for name in ["alpha", "beta"] {
        wait::bundle_reason(&bundles, name, "SecretsNotReady").await?;
    }
    let es = eso::external_secrets(&client, "apps", EsoVersion::V1);
    let alpha_db = es.get("alpha-db").await?;
    assert_eq!(
        alpha_db.labels().get(SHARD_LABEL).map(String::as_str),
        Some("a")
    );

    // Each shard read its own bundles and children in full, the others' by metadata (children)
    // or through the other shards' selector (bundles): never everything in full.
    let bundle_label = "secrets.ameide.io/bundle";
    let mut own_children_watched = BTreeSet::new();
    for [user, verb, resource, _, uri, _] in requests(&cp, 0)? {
        let Some(shard) = user.strip_prefix("shard-") else {
            continue;
        };
        if !matches!(verb.as_str(), "list" | "watch") {
            continue;
        }
        let sel = selector(&uri);
        let (mine, others) = (
            format!("{SHARD_LABEL}={shard}"),
            format!("{SHARD_LABEL}!={shard}"),
        );
        if resource == "externalsecrets" && sel == format!("{bundle_label},{mine}") {
            own_children_watched.insert(user.clone());
        }
        match resource.as_str() {
            "secretbundles" => assert!(sel == mine || sel == others, "{user}: {uri}"),
            "externalsecrets" => assert!(
                sel == format!("{bundle_label},{mine}")
                    || sel == format!("!{bundle_label}")
                    || sel == format!("{bundle_label},{others}"),
                "{user}: {uri}"
            ),
            _ => {}
        }
    }
    assert_eq!(own_children_watched.len(), 2, "{own_children_watched:?}");

    // Each shard wrote its own bundles, their children and its own Lease, nothing else.
    let owner = |name: &str| match name {
        "alpha" | "alpha-db" | "secretbundle-shard-a" => Some("shard-a"),
        "beta" | "beta-db" | "secretbundle-shard-b" => Some("shard-b"),
        _ => None, // events; a create's audit entry may carry no name
    };
    for (user, resource, name) in writes(&cp, 0)? {
        if let Some(owner) = owner(&name)
            && user.starts_with("shard-")
        {
            assert_eq!(user, owner, "{user} wrote {resource}/{name}");
        }
    }
    let leases = Api::<Lease>::namespaced(client.clone(), "default");
    for shard in ["shard-a", "shard-b"] {
        let lease = leases.get(&format!("secretbundle-{shard}")).await?;
        assert!(
            lease.spec.and_then(|s| s.holder_identity).is_some(),
            "{shard} leads its Lease"
        );
    }

    // Across shards: a's bundle waits for b's as a dependency (what a keeps of beta says it is
    // not Ready), and may not take b's child (what a keeps of beta-db says whose it is).
    let mut gamma = sharded("gamma", "a", &["gamma-db"]);
    gamma.spec.depends_on = vec!["beta".into()];
    let delta = sharded("delta", "a", &["beta-db"]);
    for b in [&gamma, &delta] {
        bundles.patch(&b.name_any(), &pp, &Patch::Apply(b)).await?;
    }
    wait::bundle_message(
        &bundles,
        "gamma",
        "DependencyProgressing",
        "beta (SecretsNotReady)",
    )
    .await?;
    wait::bundle_message(&bundles, "delta", "Conflict", "managed by bundle beta").await?;
    for name in ["gamma", "delta"] {
        bundles.delete(name, &Default::default()).await?;
        wait::until_deleted(&bundles, name).await?;
    }

    // alpha moves to shard b: b takes it over and relabels its child, a lets go.
    let mark = std::fs::metadata(cp.audit_log())?.len();
    let relabel = json!({"metadata": {"labels": {SHARD_LABEL: "b"}}});
    bundles
        .patch("alpha", &PatchParams::default(), &Patch::Merge(&relabel))
        .await?;
    let series = r#"secretbundle_bundles{reason="SecretsNotReady"}"#;
    shards[1].await_metric(series, 2.0).await?;
    let deadline = tokio::time::Instant::now() + wait::TIMEOUT;
    while shards[0].metric(series) != 0.0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "shard a still counts alpha"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // ...and from now on answers for it: a new secret is applied by b alone.
    let moved = sharded("alpha", "b", &["alpha-db", "alpha-cache"]);
    bundles.patch("alpha", &pp, &Patch::Apply(&moved)).await?;
    wait::bundle_message(&bundles, "alpha", "SecretsNotReady", "0/2").await?;
    wait::until_count(&es, &ListParams::default(), 3).await?;

    // gamma and delta were gone before the mark, but the apiserver logs a request after
    // answering it: shard a's finalizer removal that deleted one may be logged after the watch
    // saw it go. Any later write to them was answered 404 and is not in `writes`.
    let after: Vec<_> = writes(&cp, mark)?
        .into_iter()
        .filter(|(_, _, name)| !matches!(name.as_str(), "gamma" | "delta"))
        .collect();
    assert!(
        // Renewing its own Lease is all shard a may still write.
        after
            .iter()
            .all(|(user, resource, _)| user != "shard-a" || resource == "leases"),
        "shard a wrote after alpha left it: {after:?}"
    );
    assert!(
        after.iter().any(|(user, resource, name)| user == "shard-b"
            && resource == "externalsecrets"
            && name == "alpha-cache"),
        "shard b applied the new secret: {after:?}"
    );
    let relabelled = es.get("alpha-db").await?;
    assert_eq!(
        relabelled.labels().get(SHARD_LABEL).map(String::as_str),
        Some("b"),
        "the child moved with its bundle"
    );
    assert_eq!(
        (relabelled.metadata.generation, &relabelled.data["spec"]),
        (alpha_db.metadata.generation, &alpha_db.data["spec"]),
        "only the child's labels changed"
    );
    Ok(())
}
