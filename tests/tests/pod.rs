//! The chart's pod run as a cluster would run it, minus the kubelet (tests/src/pod.rs): the
//! image and the chart pushed to a local OCI registry, the chart installed from there with
//! `helm install oci://…` (the image reference pointing at the same registry), the Deployment
//! turned into Pods by the real Deployment and ReplicaSet controllers, and each Pod's container
//! started from the image it names, exactly as its spec says. The operator then works with the
//! chart's ServiceAccount and RBAC alone; ESO is not running, so the tests write ExternalSecret
//! status as ESO would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::controlplane::{ControlPlane, Options};
use secretbundle_tests::identity::{self, Write};
use secretbundle_tests::oci::{IMAGE_REPO, Registry, output};
use secretbundle_tests::pod::{self, ImageConfig, PodRun};
use secretbundle_tests::{apply_crds, eso, simple_bundle, wait};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NS: &str = "secretbundle-system";
const RELEASE: &str = "secretbundle-operator";
/// The chart's ServiceAccount, as the apiserver names the pods' requests.
const USER: &str = "system:serviceaccount:secretbundle-system:secretbundle-operator";
/// leaderElection.leaseName's default.
const LEASE: &str = "secretbundle-operator";

/// The chart installed from the registry, and the Pods the ReplicaSet controller made of it.
struct Installed {
    cp: ControlPlane,
    admin: Client,
    registry: Registry,
    chart: String,
    pods: Vec<Pod>,
    image: ImageConfig,
    rootfs: PathBuf,
    _dir: TempDir,
}

impl Installed {
    /// Pushes image and chart, installs the chart with `replicas`, and waits for its Pods.
    async fn start(replicas: u32) -> Result<Self> {
        let registry = Registry::start().await?;
        registry.push_image(VERSION)?;
        let chart = registry.push_chart()?;
        let cp = ControlPlane::start_with(Options::audited()).await?;
        let admin = cp.client().await?;
        // Straight from the registry, as users install it; the chart's crds/ come with it.
        output(
            registry
                .helm()
                .args(["install", RELEASE, &chart, "--create-namespace"])
                .args(chart_args(&registry, replicas))
                .arg("--kubeconfig")
                .arg(cp.kubeconfig_path()?),
        )?;
        apply_crds(&admin, eso::crds("v2.9.0")?).await?;
        eso::ready_cluster_store(&admin, EsoVersion::V1, eso::TEST_STORE).await?;
        // After the CRDs, so the garbage collector knows them; the two controllers make the
        // Deployment's Pods (which nothing schedules: they stay Pending, and PodRun runs them).
        cp.start_controller_manager_with(&["deployment-controller", "replicaset-controller"])?;
        let pods = await_pods(&admin, replicas as usize).await?;
        let reference = container(&pods[0])?
            .image
            .clone()
            .context("container image")?;
        let dir = tempfile::tempdir()?;
        let image = registry.image_config(&reference)?;
        let rootfs = registry.export_rootfs(&reference, dir.path())?;
        Ok(Installed {
            cp,
            admin,
            registry,
            chart,
            pods,
            image,
            rootfs,
            _dir: dir,
        })
    }

    async fn run(&self, pod: &Pod) -> Result<PodRun> {
        let podnet = Path::new(env!("CARGO_BIN_EXE_podnet"));
        PodRun::start(
            &self.cp,
            &self.admin,
            pod,
            &self.image,
            &self.rootfs,
            podnet,
        )
        .await
    }

    /// `helm template` of the same chart and values, with `extra` set.
    fn template(&self, extra: &str) -> Result<Vec<Value>> {
        let rendered = output(
            self.registry
                .helm()
                .args(["template", RELEASE, &self.chart])
                .args(chart_args(&self.registry, 1))
                .args(["--set", extra]),
        )?;
        serde_yaml::Deserializer::from_str(&rendered)
            .map(|d| Value::deserialize(d).context("rendered YAML"))
            .filter(|v| !v.as_ref().is_ok_and(Value::is_null))
            .collect()
    }

    fn writes(&self) -> Result<Vec<Write>> {
        identity::audit_writes_of(&self.cp.audit_log(), USER)
    }

    /// [`Installed::writes`] once `done` holds for them (or at the deadline, for the caller's
    /// assert to show): the apiserver logs a request after answering it, so a change a watch
    /// has seen may not be in the log yet.
    async fn writes_until(&self, done: impl Fn(&[Write]) -> bool) -> Result<Vec<Write>> {
        let deadline = Instant::now() + wait::TIMEOUT;
        loop {
            let writes = self.writes()?;
            if done(&writes) || Instant::now() > deadline {
                return Ok(writes);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Applies a one-secret bundle for namespace `ns` (created), waits for its ExternalSecret,
    /// marks that Ready as ESO would, and waits for the bundle's status to say Ready.
    async fn reconciled(&self, bundle: &str, ns: &str) -> Result<()> {
        let crds = Api::<CustomResourceDefinition>::all(self.admin.clone());
        wait::crd_established(&crds, "secretbundles.secrets.ameide.io").await?;
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(self.admin.clone())
            .create(&Default::default(), &namespace)
            .await?;
        let b = simple_bundle(bundle, ns, &["db"]);
        let bundles = Api::<SecretBundle>::all(self.admin.clone());
        bundles.create(&Default::default(), &b).await?;
        let es = eso::external_secrets(&self.admin, ns, EsoVersion::V1);
        wait::until(&es, "db", "applied", |o: Option<&DynamicObject>| {
            o.is_some()
        })
        .await?;
        eso::set_ready(&es, "db", "True", "SecretSynced", "").await?;
        wait::bundle_reason(&bundles, bundle, "Ready").await?;
        Ok(())
    }
}

/// The values: the image from the local registry (its tag the chart's appVersion).
fn chart_args(registry: &Registry, replicas: u32) -> Vec<String> {
    [
        "--version",
        VERSION,
        "--plain-http",
        "--namespace",
        NS,
        "--set",
        &format!("image.repository={}/{IMAGE_REPO}", registry.addr),
        "--set",
        &format!("replicas={replicas}"),
    ]
    .map(String::from)
    .to_vec()
}

/// Waits until the Deployment's ReplicaSet has made `count` Pods; returns them by name.
async fn await_pods(admin: &Client, count: usize) -> Result<Vec<Pod>> {
    let ar = ApiResource::erase::<Pod>(&());
    let dynamic = Api::<DynamicObject>::namespaced_with(admin.clone(), NS, &ar);
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
    wait::until_count(&dynamic, &lp, count).await?;
    let mut pods = Api::<Pod>::namespaced(admin.clone(), NS)
        .list(&lp)
        .await?
        .items;
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

fn container(pod: &Pod) -> Result<&Container> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("pod has no container")
}

/// Waits until the Lease names one of `holders`; returns the holder.
async fn lease_holder(admin: &Client, holders: &[&str]) -> Result<String> {
    let leases = Api::<Lease>::namespaced(admin.clone(), NS);
    let lease = wait::until(
        &leases,
        LEASE,
        &format!("held by one of {holders:?}"),
        |l: Option<&Lease>| holder(l).is_some_and(|h| holders.contains(&h)),
    )
    .await?;
    Ok(holder(Some(&lease)).unwrap_or_default().to_string())
}

fn holder(lease: Option<&Lease>) -> Option<&str> {
    lease?.spec.as_ref()?.holder_identity.as_deref()
}

/// Probes the container as its spec declares, until ready; asserts liveness too.
async fn probed(run: &mut PodRun, c: &Container) -> Result<()> {
    let (port, path) = pod::http_probe(c, c.readiness_probe.as_ref())?;
    assert_eq!((port, path.as_str()), (8080, "/readyz"));
    let body = run.await_ok(port, &path).await?;
    eprintln!("{}: readiness GET :{port}{path} -> 200 {body:?}", run.name);
    let (port, path) = pod::http_probe(c, c.liveness_probe.as_ref())?;
    assert_eq!((port, path.as_str()), (8080, "/healthz"));
    let answer = run.get(port, &path).await;
    eprintln!("{}: liveness GET :{port}{path} -> {answer:?}", run.name);
    assert_eq!(answer, Some((200, "ok".into())), "{}", run.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_pod_reconciles_with_the_chart_rbac_confined_as_declared() -> Result<()> {
    let t0 = Instant::now();
    let installed = Installed::start(1).await?;
    let pod = &installed.pods[0];
    let c = container(pod)?;
    let mut run = installed.run(pod).await?;
    eprintln!("installed and started in {:?}", t0.elapsed());
    probed(&mut run, c).await?;
    assert_eq!(
        lease_holder(&installed.admin, &[&run.name]).await?,
        run.name
    );

    let t1 = Instant::now();
    installed
        .reconciled("payments", "apps")
        .await
        .with_context(|| format!("{} log:\n{}", run.name, run.log()))?;
    eprintln!("bundle reconciled in {:?}", t1.elapsed());
    // The pod did it, with the chart's identity and nothing more.
    let expected = [
        ("patch", "externalsecrets", "apps", "db"),
        ("patch", "secretbundles/status", "", "payments"),
        ("create", "leases", NS, LEASE),
    ];
    let find = |writes: &[Write], (verb, resource, ns, name): (&str, &str, &str, &str)| {
        writes.iter().position(|w| {
            (&*w.verb, &*w.resource, &*w.namespace, &*w.name) == (verb, resource, ns, name)
        })
    };
    let writes = installed
        .writes_until(|ws| expected.iter().all(|e| find(ws, *e).is_some()))
        .await?;
    for e in expected {
        let i = find(&writes, e).with_context(|| format!("no {e:?} by {USER}: {writes:#?}"))?;
        assert_eq!(writes[i].pod.as_deref(), Some(run.name.as_str()), "{e:?}");
    }
    let violations = identity::audit_violations_of(&installed.cp.audit_log(), USER)?;
    assert!(violations.is_empty(), "{violations:#?}");

    // The Service and the ServiceMonitor reach /metrics by the container port's name.
    let service = Api::<Service>::namespaced(installed.admin.clone(), NS)
        .get(RELEASE)
        .await?;
    let spec = service.spec.clone().unwrap_or_default();
    let labels = pod.labels();
    for (k, v) in spec.selector.iter().flatten() {
        assert_eq!(labels.get(k), Some(v), "Service selects {k}={v}");
    }
    let ports = spec.ports.unwrap_or_default();
    let monitor = installed
        .template("serviceMonitor.enabled=true")?
        .into_iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .context("no ServiceMonitor rendered")?;
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("ServiceMonitor selector")?
    {
        assert_eq!(
            service.labels().get(k).map(String::as_str),
            v.as_str(),
            "{k}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port_name = endpoint["port"].as_str().context("ServiceMonitor port")?;
    let service_port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .with_context(|| format!("Service has no port named {port_name}"))?;
    let target = service_port.target_port.clone().context("targetPort")?;
    let metrics_port = pod::port_of(c, &target)?;
    let path = endpoint["path"].as_str().unwrap_or("/metrics");
    let (code, body) = run
        .get(metrics_port, path)
        .await
        .context("no answer from /metrics")?;
    eprintln!(
        "ServiceMonitor port {port_name} -> Service targetPort {target:?} -> container port {metrics_port}: GET {path} -> {code}"
    );
    assert_eq!(code, 200);
    assert!(body.contains("secretbundle_"), "{body}");

    // Confined as the securityContext says.
    let confinement = run.confinement()?;
    for (k, v) in &confinement {
        eprintln!("{}: {k}: {v}", run.name);
    }
    let get = |k: &str| confinement.get(k).map(String::as_str);
    assert_eq!(get("Uid"), Some("65532 65532 65532 65532"));
    assert_eq!(get("Gid"), Some("65532 65532 65532 65532"));
    assert_eq!(get("Groups"), Some("65532"));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(get(set), Some("0000000000000000"), "{set}");
    }
    assert_eq!(get("NoNewPrivs"), Some("1"));
    let ro = |point: &str| {
        get(&format!("mount {point}")).is_some_and(|o| o.split(',').any(|f| f == "ro"))
    };
    assert!(ro("/"), "{confinement:#?}");
    assert!(ro("/var/run/secrets/kubernetes.io/serviceaccount"));
    assert!(run.exited().is_none(), "{}", run.log());
    eprintln!("done in {:?}", t0.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() -> Result<()> {
    let t0 = Instant::now();
    let installed = Installed::start(2).await?;
    let mut runs = Vec::new();
    for pod in &installed.pods {
        runs.push(installed.run(pod).await?);
    }
    for (run, pod) in runs.iter_mut().zip(&installed.pods) {
        probed(run, container(pod)?).await?;
    }
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leader = lease_holder(&installed.admin, &names).await?;
    eprintln!(
        "{names:?}: {leader} holds the Lease after {:?}",
        t0.elapsed()
    );
    installed.reconciled("before", "apps").await?;
    let writers = |writes: &[Write]| -> Vec<Option<String>> {
        let mut pods: Vec<_> = writes.iter().map(|w| w.pod.clone()).collect();
        pods.dedup();
        pods
    };
    assert_eq!(
        writers(&installed.writes()?),
        [Some(leader.clone())],
        "only the holder writes"
    );

    let li = names.iter().position(|n| *n == leader).context("leader")?;
    let standby = names[1 - li].to_string();
    runs[li].kill();
    let t1 = Instant::now();
    assert_eq!(lease_holder(&installed.admin, &[&standby]).await?, standby);
    eprintln!(
        "{leader} killed; {standby} took the Lease after {:?}",
        t1.elapsed()
    );
    let c = container(&installed.pods[1 - li])?;
    let (port, path) = pod::http_probe(c, c.readiness_probe.as_ref())?;
    runs[1 - li].await_ok(port, &path).await?;
    installed.reconciled("after", "apps2").await?;
    let after_bundle = |w: &Write| w.namespace == "apps2" || w.name == "after";
    let after: Vec<Write> = installed
        .writes_until(|ws| {
            ws.iter()
                .any(|w| after_bundle(w) && w.resource == "secretbundles/status")
        })
        .await?
        .into_iter()
        .filter(after_bundle)
        .collect();
    assert!(
        after.iter().any(|w| w.resource == "externalsecrets"),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .all(|w| w.pod.as_deref() == Some(standby.as_str())),
        "{after:#?}"
    );
    let violations = identity::audit_violations_of(&installed.cp.audit_log(), USER)?;
    assert!(violations.is_empty(), "{violations:#?}");
    eprintln!("done in {:?}", t0.elapsed());
    Ok(())
}
