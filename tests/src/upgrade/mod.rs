//! The upgrade from the last release: it converges a fleet of bundles with real ESO and
//! OpenBao, then is replaced by this build (with Helm or with plain manifests), and the audit
//! log shows what the new operator wrote. `make upgrade-test` runs it at full size.

pub mod audit;
pub mod converge;
pub mod install;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle};
use secretbundle_controller::applied::APPLIED_HASH_ANNOTATION;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde::Serialize;
use serde_json::json;

use crate::controlplane::{ControlPlane, Options};
use crate::fleet::Fleet;
use crate::stack::{OpenBao, create_vault_store, install_eso_v0_16, start_eso};
pub use install::Mode;
use install::{Running, install, pod, upgrade};

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: Mode,
    pub bundles: usize,
    pub children: usize,
    pub namespaces: usize,
}

/// What happened, for bench/results/upgrade.json.
#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    /// Seconds per phase.
    pub seconds: BTreeMap<&'static str, f64>,
    /// Children whose applied hash was in the old release's format before the upgrade.
    pub children_with_old_hash: usize,
    /// From the audit log, from the upgrade on: writes by who, on what.
    pub writes_after_upgrade: audit::Tally,
    /// The same, in the bundles' target namespaces only.
    pub writes_in_targets: audit::Tally,
    pub new_operator_child_writes: u64,
    pub secret_writes_in_targets: u64,
    /// The new operator's own count of children it applied (its metric).
    pub new_operator_children_applied: f64,
    /// Objects whose resourceVersion (children: also generation) changed over the upgrade.
    pub children_changed: usize,
    pub children_respecced: usize,
    pub secrets_changed: usize,
    /// Bundles seen not Ready for their generation at any moment after the upgrade began.
    pub bundles_seen_unready: Vec<String>,
    /// Bundles read back with the new CRD and this build's types, and rows `kubectl get` lists.
    pub bundles_read_back: usize,
    pub kubectl_rows: usize,
}

impl Report {
    /// The promises: nothing rewritten, everything still Ready and readable.
    pub fn check(&self) -> Result<()> {
        let n = self.plan.bundles;
        ensure!(
            self.new_operator_child_writes == 0,
            "the new operator wrote children"
        );
        ensure!(
            self.new_operator_children_applied == 0.0,
            "the new operator applied children"
        );
        ensure!(self.secret_writes_in_targets == 0, "Secrets were rewritten");
        ensure!(
            self.children_changed == 0 && self.children_respecced == 0 && self.secrets_changed == 0,
            "objects changed over the upgrade"
        );
        ensure!(self.bundles_seen_unready.is_empty(), "bundles went unready");
        ensure!(
            self.bundles_read_back == n && self.kubectl_rows == n,
            "bundles lost"
        );
        ensure!(
            self.children_with_old_hash == n * self.plan.children,
            "not every child carried the old release's hash: the test did not test the switch"
        );
        Ok(())
    }
}

const OLD: &str = "old-operator";
const NEW: &str = "new-operator";

/// Runs one upgrade: `old` is a release directory from hack/release.sh, `new_src` this
/// checkout, `new_bin` this build's binary.
pub async fn run(plan: Plan, old: &Path, new_src: &Path, new_bin: &Path) -> Result<Report> {
    let mut seconds = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |what: &'static str, seconds: &mut BTreeMap<&'static str, f64>| {
        seconds.insert(what, clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    let cp = ControlPlane::start_with(Options::audited()).await?;
    let admin = cp.client().await?;
    let kc = cp.kubeconfig_path()?;
    install(plan.mode, &old.join("src"), &kc)?;
    install_eso_v0_16(&admin).await?;
    // After both CRDs, so the garbage collector knows bundles and ExternalSecrets at once.
    cp.start_controller_manager()?;
    let bao = OpenBao::start(cp.dir()).await?;
    create_vault_store(&admin, &bao).await?;
    let _eso = start_eso(&kc, cp.dir())?;
    let namespaces: Vec<String> = (0..plan.namespaces)
        .map(|i| format!("apps-{i:02}"))
        .collect();
    let refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let fleet = Fleet::new("b", plan.bundles, plan.children, &refs);
    for ns in &namespaces {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(admin.clone())
            .create(&Default::default(), &o)
            .await?;
    }
    fleet.seed(&bao)?;
    lap("setup", &mut seconds);

    let old_pod = pod(&admin, "secretbundle-operator-old").await?;
    let mut old_op = Running::start(
        &cp,
        &admin,
        &old.join("bin/dev/secretbundle-operator"),
        &old_pod,
        "operator-old",
    )
    .await?;
    apply_all(&admin, &fleet.bundles).await?;
    let bundles: Api<SecretBundle> = Api::all(admin.clone());
    let within = Duration::from_secs(60 + 2 * plan.bundles as u64);
    converge::until_all(
        bundles.clone(),
        plan.bundles,
        within,
        "bundles Ready",
        converge::bundle_ready,
    )
    .await?;
    let children: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    );
    let total = plan.bundles * plan.children;
    converge::until_all(
        children.clone(),
        total,
        within,
        "children synced",
        converge::child_synced,
    )
    .await?;
    lap("old_converged", &mut seconds);

    let before = Snapshot::take(&admin, &namespaces).await?;
    let since = audit::now(&cp.audit_log())?;
    let (watching, unready) = converge::watch_unready(bundles.clone());

    upgrade(plan.mode, new_src, &kc)?;
    let new_pod = pod(&admin, "secretbundle-operator-new").await?;
    // A rolling update: the new pod starts, waits for the Lease, the old one stops and frees it.
    let new_op = Running::start(&cp, &admin, new_bin, &new_pod, "operator-new").await?;
    old_op.proc.terminate()?;
    lap("upgrade_applied", &mut seconds);
    await_settled(&new_op, plan.bundles, within).await?;
    lap("new_settled", &mut seconds);
    watching.abort();

    let after = Snapshot::take(&admin, &namespaces).await?;
    let names = BTreeMap::from([
        (old_op.credential.clone(), OLD.to_string()),
        (new_op.credential.clone(), NEW.to_string()),
    ]);
    let writes = audit::tally(&cp.audit_log(), &since, &[], &names)?;
    let in_targets = audit::tally(&cp.audit_log(), &since, &namespaces, &names)?;
    let read_back = bundles.list(&ListParams::default()).await?.items.len();
    let out = crate::kubectl_with(&kc, &["get", "secretbundles", "--no-headers"])?;
    ensure!(
        out.status.success(),
        "kubectl get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8_lossy(&out.stdout).lines().count();
    let unready = unready
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Report {
        seconds,
        children_with_old_hash: before.old_hashes,
        new_operator_child_writes: writes.to_resource(NEW, "externalsecrets"),
        secret_writes_in_targets: in_targets.total("secrets"),
        new_operator_children_applied: new_op
            .metric("secretbundle_children_applied_total")
            .unwrap_or(f64::NAN),
        children_changed: changed(&before.children, &after.children),
        children_respecced: changed(&before.generations, &after.generations),
        secrets_changed: changed(&before.secrets, &after.secrets),
        bundles_seen_unready: unready.iter().cloned().collect(),
        bundles_read_back: read_back,
        kubectl_rows: rows,
        writes_after_upgrade: writes,
        writes_in_targets: in_targets,
        plan,
    })
}

/// Applies the bundles as a user's GitOps tool would, a few at a time.
async fn apply_all(client: &Client, bundles: &[SecretBundle]) -> Result<()> {
    let api: Api<SecretBundle> = Api::all(client.clone());
    let pp = PatchParams::apply("secretbundle-tests").force();
    stream::iter(bundles)
        .map(|b| {
            let (api, pp) = (&api, &pp);
            async move { api.patch(&b.name_any(), pp, &Patch::Apply(b)).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The new operator holds the Lease and has reconciled every bundle to Ready (its gauge).
async fn await_settled(op: &Running, bundles: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    // Metrics have no watch: read them until they say so, with a deadline.
    while op.metric(r#"secretbundle_bundles{reason="Ready"}"#) != Some(bundles as f64) {
        ensure!(
            Instant::now() < deadline,
            "the new operator did not report {bundles} Ready bundles within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

type Versions = BTreeMap<(String, String), String>;

/// Children and Secrets by resourceVersion, children also by generation.
struct Snapshot {
    children: Versions,
    generations: Versions,
    secrets: Versions,
    old_hashes: usize,
}

impl Snapshot {
    async fn take(client: &Client, namespaces: &[String]) -> Result<Self> {
        let (mut children, mut generations, mut secrets) =
            (Versions::new(), Versions::new(), Versions::new());
        let mut old_hashes = 0;
        let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
        let lp = ListParams::default().labels(BUNDLE_LABEL);
        for ns in namespaces {
            for o in Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
                .list(&lp)
                .await?
            {
                let k = (ns.clone(), o.name_any());
                let hash = o.annotations().get(APPLIED_HASH_ANNOTATION);
                old_hashes += usize::from(
                    hash.is_some_and(|h| secretbundle_controller::applied::hash::is_legacy(h)),
                );
                generations.insert(k.clone(), format!("{:?}", o.metadata.generation));
                children.insert(k, o.resource_version().context("no resourceVersion")?);
            }
            for s in Api::<Secret>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?
            {
                secrets.insert(
                    (ns.clone(), s.name_any()),
                    s.resource_version().context("no resourceVersion")?,
                );
            }
        }
        Ok(Snapshot {
            children,
            generations,
            secrets,
            old_hashes,
        })
    }
}

/// Keys whose value differs or that appeared or disappeared.
fn changed(before: &Versions, after: &Versions) -> usize {
    let gone = before.keys().filter(|k| !after.contains_key(*k)).count();
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .count()
        + gone
}
