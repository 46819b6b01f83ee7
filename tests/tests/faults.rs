//! Faults, on the real control plane with the real ESO controller and OpenBao, and the operator
//! binary as its own process: the kube-apiserver down for 30 s, watches expired by etcd
//! compaction (`410 Gone`), SIGKILL between applying children and writing status, and hand
//! edits of children. After each: every bundle Ready with exactly its children and the right
//! values, and unmanaged ExternalSecrets and Secrets (bystanders) untouched.
//! Each test prints its recovery time (`--nocapture` shows it).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::{ResourceExt, core::Status};
use secretbundle_api::BUNDLE_LABEL;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::controlplane::Options;
use secretbundle_tests::fleet::{BYSTANDER, Bystanders, Fleet};
use secretbundle_tests::process::Operator;
use secretbundle_tests::proxy::Proxy;
use secretbundle_tests::stack::Stack;
use secretbundle_tests::{eso, wait};
use serde_json::json;

const ALLOWED: &[&str] = &[BYSTANDER];

/// A stack (in-process operator stopped) with the fleet seeded in OpenBao, its namespaces
/// created and bystanders in each.
async fn scene(options: Options, fleet: &Fleet) -> anyhow::Result<(Stack, Bystanders)> {
    let mut s = Stack::start_with(options).await?;
    s.env.stop_operator();
    fleet.seed(&s.bao)?;
    let namespaces: Vec<String> = fleet.namespaces().into_iter().collect();
    for ns in &namespaces {
        s.env.create_namespace(ns).await?;
    }
    let refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let bystanders = Bystanders::create(&s.env.client, &s.bao, &refs).await?;
    Ok((s, bystanders))
}

/// The operator binary, logging to `<name>.log` in the control plane's directory.
fn operator(
    s: &Stack,
    kubeconfig: Option<&Path>,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Operator> {
    let kubeconfig = match kubeconfig {
        Some(k) => k.to_path_buf(),
        None => s.env.cp.kubeconfig_path()?,
    };
    Operator::start(
        &kubeconfig,
        &s.env.cp.dir().join(format!("{name}.log")),
        extra,
    )
}

/// Waits until the operator's /readyz answers `code` with a body containing `needle`.
async fn await_readyz(op: &Operator, code: u16, needle: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + wait::TIMEOUT;
    loop {
        let got = op.get("/readyz");
        if let Some((c, body)) = &got
            && *c == code
            && body.contains(needle)
        {
            return Ok(body.clone());
        }
        if Instant::now() > deadline {
            bail!("/readyz never answered {code} {needle:?}; last: {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log(s: &Stack, name: &str) -> String {
    std::fs::read_to_string(s.env.cp.dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits until the operator's log `name` contains `needle`.
async fn await_log(s: &Stack, name: &str, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait::TIMEOUT;
    while !log(s, name).contains(needle) {
        if Instant::now() > deadline {
            bail!("{name}.log never said {needle:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn all_es(s: &Stack) -> Api<DynamicObject> {
    Api::all_with(
        s.env.client.clone(),
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    )
}

#[tokio::test]
async fn apiserver_down_for_30s_mid_reconcile_then_back_on_the_same_port() -> anyhow::Result<()> {
    let fleet = Fleet::new("out", 30, 2, &["outage-a", "outage-b", "outage-c"]);
    let (mut s, bystanders) = scene(Options::default(), &fleet).await?;
    let op = operator(&s, None, "operator", &[])?;
    await_readyz(&op, 200, "ok").await?;
    fleet.apply(&s.env).await?;

    // Stopped while the operator is in the middle of the fleet: some children applied, not all.
    let total = 60;
    let lp = ListParams::default().labels(BUNDLE_LABEL);
    wait::until_count(&all_es(&s), &lp, total / 4).await?;
    s.env.cp.stop_apiserver();
    let body = await_readyz(&op, 503, "kube-apiserver unreachable").await?;
    eprintln!("operator /readyz during the outage: 503 {body}");
    tokio::time::sleep(Duration::from_secs(30)).await; // the outage itself
    s.env.cp.restart_apiserver().await?;
    let back = Instant::now();

    wait::until_count(&all_es(&s), &lp, total).await?;
    let applied = back.elapsed();
    // ESO retries what failed during the outage with its own per-object backoff, which has
    // grown to a minute or more by then (95 s in one run): give it time.
    fleet.await_ready(&s.env, Duration::from_secs(240)).await?;
    let ready = back.elapsed();
    let body = await_readyz(&op, 200, "ok").await?;
    eprintln!("operator /readyz after: 200 {body}");
    fleet.check(&s.env.client, ALLOWED).await?;
    bystanders.assert_untouched(&s.env.client).await?;
    let log = log(&s, "operator");
    for line in [
        "kube-apiserver unreachable",
        "kube-apiserver reachable again",
    ] {
        ensure!(log.contains(line), "operator log lacks {line:?}");
    }
    eprintln!(
        "RECOVERY apiserver down 30 s ({} bundles, {total} children): every child applied {applied:?} \
         and every bundle Ready {ready:?} after the apiserver was back",
        fleet.bundles.len()
    );
    Ok(())
}

/// A watch from `rv` on namespaces, as the operator's would resume: `410 Gone` once compacted.
async fn watch_gone(s: &Stack, rv: &str) -> anyhow::Result<Option<Status>> {
    let api = Api::<Namespace>::all(s.env.client.clone());
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), rv)
        .await?
        .boxed();
    while let Some(ev) = stream.try_next().await? {
        match ev {
            WatchEvent::Error(e) => return Ok(Some(*e)),
            WatchEvent::Bookmark(_) => {}
            _ => return Ok(None),
        }
    }
    Ok(None)
}

#[tokio::test]
async fn watches_expired_by_compaction_while_cut_off_still_see_every_change() -> anyhow::Result<()>
{
    // gone00 grows a secret, gone01 loses its child by hand, gone02 (Orphan) is deleted, and
    // late's namespace appears: all while the operator is cut off and etcd compacts them away.
    let mut fleet = Fleet::new("gone", 3, 1, &["gone-a"]);
    let late = Fleet::new("late", 1, 1, &["gone-late"]);
    // Watches straight from etcd: a resumed watch from a compacted revision gets 410 Gone.
    let options = Options {
        no_watch_cache: true,
        ..Options::default()
    };
    let (s, bystanders) = scene(options, &fleet).await?;
    late.seed(&s.bao)?;
    let proxy = Proxy::start(s.env.cp.port())?;
    let kubeconfig = s.env.cp.kubeconfig_via("proxied", &proxy.url())?;
    let op = operator(&s, Some(&kubeconfig), "operator", &[])?;
    fleet.apply(&s.env).await?;
    late.apply(&s.env).await?;
    fleet.await_ready(&s.env, wait::TIMEOUT).await?;
    wait::bundle_reason(&s.env.bundles(), "late00", "WaitingForNamespace").await?;
    let before = Api::<Namespace>::all(s.env.client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("no list resourceVersion")?;

    proxy.cut();
    let body = await_readyz(&op, 503, "kube-apiserver unreachable").await?;
    eprintln!("operator /readyz while cut off: 503 {body}");
    s.env.create_namespace("gone-late").await?;
    let mut grown = fleet.bundles[0].clone();
    let mut extra = grown.spec.secrets[0].clone();
    extra.name = "gone00-s1".into();
    extra.data[0].remote_ref.property = Some("s1".into());
    grown.spec.secrets.push(extra);
    s.bao.put(
        "fleet/gone00",
        &[
            ("s0", &Fleet::value("gone00", "gone00-s0")),
            ("s1", &Fleet::value("gone00", "gone00-s1")),
        ],
    )?;
    s.env.apply_bundle(&grown).await?;
    fleet.bundles[0] = grown;
    eso::external_secrets(&s.env.client, "gone-a", EsoVersion::V1)
        .delete("gone01-s0", &Default::default())
        .await?;
    s.env
        .bundles()
        .delete("gone02", &Default::default())
        .await?;
    let orphaned = fleet.bundles.remove(2);
    let revision = s.env.cp.compact_etcd()?;
    let gone = watch_gone(&s, &before).await?;
    ensure!(
        gone.as_ref().is_some_and(|e| e.code == 410),
        "a watch from {before} after compacting to {revision} should end in 410 Gone: {gone:?}"
    );
    eprintln!(
        "etcd compacted to {revision}; a watch from {before} now gets: {}",
        gone.map(|g| g.message).unwrap_or_default()
    );

    proxy.heal();
    let healed = Instant::now();
    fleet.await_ready(&s.env, wait::TIMEOUT).await?;
    late.await_ready(&s.env, wait::TIMEOUT).await?;
    wait::until_deleted(&s.env.bundles(), &orphaned.name_any()).await?;
    let recovered = healed.elapsed();
    await_readyz(&op, 200, "ok").await?;
    // gone02's child was released, not deleted: it stays, unlabelled.
    fleet
        .check(&s.env.client, &[BYSTANDER, "gone02-s0"])
        .await?;
    late.check(&s.env.client, ALLOWED).await?;
    bystanders.assert_untouched(&s.env.client).await?;
    let log = log(&s, "operator");
    ensure!(
        log.contains("too old"),
        "the operator's log shows no expired watch"
    );
    eprintln!(
        "RECOVERY watches expired (410) while cut off: all four changes acted on {recovered:?} after reconnecting"
    );
    Ok(())
}

/// Denies every write of SecretBundle status, so an operator can apply children but never
/// record them: a kill at any moment after the first child lands is in the window.
async fn pause_status_writes(s: &Stack, bundle: &str) -> anyhow::Result<()> {
    let pp = PatchParams::apply("faults");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "pause-status"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["secrets.ameide.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["secretbundles/status"]}]},
            "validations": [{"expression": "false", "message": PAUSED}]
        }
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "pause-status"},
        "spec": {"policyName": "pause-status", "validationActions": ["Deny"]}
    });
    Api::<ValidatingAdmissionPolicy>::all(s.env.client.clone())
        .patch("pause-status", &pp, &Patch::Apply(&policy))
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(s.env.client.clone())
        .patch("pause-status", &pp, &Patch::Apply(&binding))
        .await?;
    // Policies load asynchronously: probe with dry-run status writes until one is denied.
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let probe = Patch::Merge(json!({"status": {"readySecrets": 0}}));
    let deadline = Instant::now() + wait::TIMEOUT;
    loop {
        match s.env.bundles().patch_status(bundle, &dry, &probe).await {
            Err(kube::Error::Api(e)) if e.message.contains(PAUSED) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) if Instant::now() > deadline => bail!("status writes never denied"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

const PAUSED: &str = "status writes paused by the fault test";

async fn resume_status_writes(s: &Stack) -> anyhow::Result<()> {
    Api::<ValidatingAdmissionPolicyBinding>::all(s.env.client.clone())
        .delete("pause-status", &Default::default())
        .await?;
    Api::<ValidatingAdmissionPolicy>::all(s.env.client.clone())
        .delete("pause-status", &Default::default())
        .await?;
    Ok(())
}

/// An object as a comparable value: no identity, times, versions or owner UIDs, and the bundle's
/// and namespace's names replaced, so two bundles with the same spec compare equal.
fn comparable(
    obj: &impl serde::Serialize,
    bundle: &str,
    ns: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(obj)?;
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "namespace",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.remove(secretbundle_controller::applied::APPLIED_HASH_ANNOTATION);
        }
        for o in m
            .get_mut("ownerReferences")
            .and_then(|o| o.as_array_mut())
            .into_iter()
            .flatten()
        {
            o.as_object_mut().map(|o| o.remove("uid"));
        }
    }
    // ESO's status carries times, and a hash of the object (names included) after the generation.
    if let Some(st) = v.get_mut("status").and_then(|s| s.as_object_mut()) {
        st.remove("refreshTime");
        if let Some(synced) = st.get_mut("syncedResourceVersion") {
            let generation = synced
                .as_str()
                .and_then(|s| s.split('-').next())
                .unwrap_or("");
            *synced = generation.into();
        }
        for c in st
            .get_mut("conditions")
            .and_then(|c| c.as_array_mut())
            .into_iter()
            .flatten()
        {
            c.as_object_mut().map(|c| c.remove("lastTransitionTime"));
        }
    }
    let text = serde_json::to_string(&v)?
        .replace(bundle, "BUNDLE")
        .replace(&format!("\"{ns}\""), "\"NAMESPACE\"");
    Ok(serde_json::from_str(&text)?)
}

/// The bundle and its children, comparable across bundles.
async fn state(s: &Stack, bundle: &str, ns: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let b = s.env.bundles().get(bundle).await?;
    let mut out = vec![comparable(&b, bundle, ns)?];
    let lp = ListParams::default().labels(&format!("{BUNDLE_LABEL}={bundle}"));
    for c in eso::external_secrets(&s.env.client, ns, EsoVersion::V1)
        .list(&lp)
        .await?
        .items
    {
        out.push(comparable(&c, bundle, ns)?);
    }
    Ok(out)
}

#[tokio::test]
async fn sigkill_between_applying_children_and_writing_status_ends_as_an_uninterrupted_run()
-> anyhow::Result<()> {
    let fleet = Fleet::new("kill", 1, 12, &["killed"]);
    let twin = Fleet::new("calm", 1, 12, &["calm"]);
    let (s, bystanders) = scene(Options::default(), &fleet).await?;
    twin.seed(&s.bao)?;
    s.env.create_namespace("calm").await?;
    fleet.apply(&s.env).await?;
    pause_status_writes(&s, "kill00").await?;
    let es = eso::external_secrets(&s.env.client, "killed", EsoVersion::V1);
    let lp = ListParams::default().labels(BUNDLE_LABEL);

    // First kill: mid-apply. One request a second, so children land one by one.
    let mut a = operator(&s, None, "operator-a", &["--qps=1", "--burst=1"])?;
    wait::until_count(&es, &lp, 4).await?;
    a.proc.kill();
    let after_a = es.list(&lp).await?.items.len();
    ensure!(after_a < 12, "killed after all children were applied");
    ensure!(
        s.env.bundles().get("kill00").await?.status.is_none(),
        "status written"
    );

    // Second kill: every child applied, the status write refused and not yet retried.
    let mut b = operator(&s, None, "operator-b", &[])?;
    wait::until_count(&es, &lp, 12).await?;
    await_log(&s, "operator-b", PAUSED).await?;
    b.proc.kill();
    ensure!(
        s.env.bundles().get("kill00").await?.status.is_none(),
        "status written"
    );

    resume_status_writes(&s).await?;
    let restarted = Instant::now();
    let _c = operator(&s, None, "operator-c", &[])?;
    fleet.await_ready(&s.env, wait::TIMEOUT).await?;
    let recovered = restarted.elapsed();
    // The same bundle, never interrupted, in another namespace.
    twin.apply(&s.env).await?;
    twin.await_ready(&s.env, wait::TIMEOUT).await?;
    fleet.check(&s.env.client, ALLOWED).await?;
    twin.check(&s.env.client, ALLOWED).await?;
    let (killed, calm) = (
        state(&s, "kill00", "killed").await?,
        state(&s, "calm00", "calm").await?,
    );
    ensure!(killed.len() == 13, "{} objects", killed.len());
    for (k, c) in killed.iter().zip(&calm) {
        let diff = differences(k, c, "");
        ensure!(
            diff.is_empty(),
            "killed and uninterrupted differ: {diff:#?}"
        );
    }
    bystanders.assert_untouched(&s.env.client).await?;
    eprintln!(
        "RECOVERY SIGKILL mid-apply ({after_a}/12 children) and after apply before status (12/12): \
         Ready {recovered:?} after the restart, equal to an uninterrupted run"
    );
    Ok(())
}

/// Paths where two JSON values differ, with both values.
fn differences(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Vec<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let (p, q) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    differences(p, q, &format!("{at}.{k}"))
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (p, q))| differences(p, q, &format!("{at}[{i}]")))
            .collect(),
        _ if a == b => vec![],
        _ => vec![format!("{at}: {a} != {b}")],
    }
}

/// Applies one hand edit with kubectl and waits until `restored` holds for the child again;
/// returns how long that took.
async fn edit_and_await(
    s: &Stack,
    child: &str,
    edit: &[&str],
    restored: impl Fn(&DynamicObject) -> bool,
) -> anyhow::Result<Duration> {
    let before = eso::external_secrets(&s.env.client, "edited", EsoVersion::V1)
        .get(child)
        .await?;
    let out = s.env.kubectl(&[&["-n", "edited"], edit].concat())?;
    ensure!(
        out.status.success(),
        "kubectl {edit:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edited = Instant::now();
    let es = eso::external_secrets(&s.env.client, "edited", EsoVersion::V1);
    let uid = before.uid();
    let rv = before.resource_version();
    wait::until(&es, child, "restored", |o: Option<&DynamicObject>| {
        // A later version than the one before the edit (or a new object), restored.
        o.is_some_and(|o| (o.uid() != uid || o.resource_version() != rv) && restored(o))
    })
    .await?;
    Ok(edited.elapsed())
}

fn labelled_for(bundle: &'static str) -> impl Fn(&DynamicObject) -> bool {
    move |o| {
        o.labels().get(BUNDLE_LABEL).map(String::as_str) == Some(bundle)
            && o.labels().contains_key(secretbundle_api::MANAGED_BY_LABEL)
    }
}

#[tokio::test]
async fn hand_edits_of_children_are_undone_without_duplicates() -> anyhow::Result<()> {
    // hand00 deletes its children with it (they carry its ownerReference); hand02 orphans them.
    let fleet = Fleet::new("hand", 3, 4, &["edited"]);
    let (s, bystanders) = scene(Options::default(), &fleet).await?;
    let _op = operator(&s, None, "operator", &[])?;
    fleet.apply(&s.env).await?;
    fleet.await_ready(&s.env, wait::TIMEOUT).await?;
    let uid = s.env.bundles().get("hand00").await?.uid();
    let owned = move |o: &DynamicObject| {
        o.owner_references()
            .iter()
            .map(|r| Some(&r.uid))
            .eq([uid.as_ref()])
    };
    let interval = |o: &DynamicObject| o.data["spec"]["refreshInterval"] == "1h";
    let merge = |p: &'static str| ["patch", "externalsecret", "--type=merge", "-p", p];
    let unlabel = [
        "label",
        "externalsecret",
        BUNDLE_LABEL_REMOVE,
        MANAGED_BY_REMOVE,
    ];

    let mut times = Vec::new();
    for (what, child, edit, check) in [
        (
            "spec edited",
            "hand00-s0",
            merge(r#"{"spec":{"refreshInterval":"5m"}}"#).to_vec(),
            Box::new(interval) as Box<dyn Fn(&DynamicObject) -> bool>,
        ),
        (
            "labels removed",
            "hand00-s1",
            unlabel.to_vec(),
            Box::new(labelled_for("hand00")),
        ),
        (
            "deleted",
            "hand00-s2",
            DELETE.to_vec(),
            Box::new(labelled_for("hand00")),
        ),
        (
            "ownerReference removed",
            "hand00-s3",
            vec![
                "patch",
                "externalsecret",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
            ],
            Box::new(owned),
        ),
        (
            "spec edited (Orphan)",
            "hand02-s0",
            merge(r#"{"spec":{"refreshInterval":"5m"}}"#).to_vec(),
            Box::new(interval),
        ),
        (
            "labels removed (Orphan)",
            "hand02-s1",
            unlabel.to_vec(),
            Box::new(labelled_for("hand02")),
        ),
        (
            "deleted (Orphan)",
            "hand02-s2",
            DELETE.to_vec(),
            Box::new(labelled_for("hand02")),
        ),
    ] {
        let edit: Vec<&str> = match edit.first() {
            Some(&"label") => [&edit[..2], &[child], &edit[2..]].concat(),
            _ => [&edit[..], &[child]].concat(),
        };
        let took = edit_and_await(&s, child, &edit, check).await?;
        times.push(format!("{what}: {took:?}"));
    }
    fleet.await_ready(&s.env, wait::TIMEOUT).await?;
    fleet.check(&s.env.client, ALLOWED).await?;
    bystanders.assert_untouched(&s.env.client).await?;
    eprintln!("RECOVERY hand edits, restored after: {}", times.join("; "));
    Ok(())
}

/// Deletes a child and waits for the garbage collector to remove its Secret first. With a plain
/// delete, a child recreated within milliseconds can meet ESO while the old Secret (owned by the
/// deleted child) still exists: ESO reports the new child synced, then the garbage collector
/// removes that Secret, and ESO only notices at its next refresh. That race is between ESO and
/// the garbage collector, whoever recreates the ExternalSecret.
const DELETE: [&str; 3] = ["delete", "--cascade=foreground", "externalsecret"];
const BUNDLE_LABEL_REMOVE: &str = "secrets.ameide.io/bundle-";
const MANAGED_BY_REMOVE: &str = "app.kubernetes.io/managed-by-";
