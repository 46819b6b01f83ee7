//! Command-line interface and the offline commands (`crd`, `render`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::{CustomResourceExt, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::Reason;
use secretbundle_controller::eso::{
    self, Capabilities, EsoVersion, Release, ServedSchema, features,
};

#[derive(Parser)]
#[command(
    version,
    about = "Delivers ExternalSecrets once their namespace, CRDs, dependencies and store are ready"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the controller against the current kubeconfig or in-cluster config.
    Run(RunArgs),
    /// Print the SecretBundle CustomResourceDefinition as YAML.
    Crd,
    /// Print the ExternalSecrets a bundle file renders to, as the controller applies them.
    Render(RenderArgs),
    /// Show, from the cluster, what a bundle waits for: its gate chain as a tree.
    Explain(ExplainArgs),
    /// Wait until bundles are Ready (exit 0), or print what blocks them at the timeout (exit 1).
    Wait(WaitArgs),
    /// Print existing ExternalSecrets (from the cluster or from manifests) as SecretBundles that
    /// adopt them in place; what a bundle cannot express exactly is refused, by field.
    Import(crate::import::ImportArgs),
    /// Show what applying bundle files would change in the cluster now (exit 1 on a difference).
    Diff(crate::diff::DiffArgs),
}

#[derive(Parser)]
pub struct RunArgs {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Bundles reconciled at the same time (1-1000).
    #[arg(long, env = "CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Elect one active replica through a Lease; the others wait.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "secretbundle-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the Lease; defaults to the pod name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Sustained requests per second to the API server (1-100000).
    #[arg(long, env = "KUBE_QPS", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub qps: u32,
    /// Requests allowed in a burst above --qps (1-100000; at least --qps).
    #[arg(long, env = "KUBE_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub burst: u32,
    /// Reconcile only bundles whose labels match this selector (e.g.
    /// `sharding.secrets.ameide.io/key=shard1`, or `!sharding.secrets.ameide.io/key` for the
    /// default shard), so several deployments split the bundles, each with its own Lease. Each
    /// caches only its own bundles and children; children carry the labels the selector reads.
    #[arg(long, env = "WATCH_LABEL_SELECTOR", value_parser = parse_shard)]
    pub watch_label_selector: Option<secretbundle_controller::shard::Shard>,
    #[command(flatten)]
    pub faults: crate::faults::FaultArgs,
}

fn parse_shard(s: &str) -> Result<secretbundle_controller::shard::Shard, String> {
    secretbundle_controller::shard::Shard::new(s)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    after_help = "What is printed is what the controller applies, the applied-hash \
                  annotation included, with one exception: a bundle with deletionPolicy: Delete \
                  (the default) that has no metadata.uid (one read from git rather than from \
                  `kubectl get secretbundle NAME -o yaml`). The controller also gives each child \
                  an ownerReference to the live bundle's UID, which the hash covers, so for such \
                  a file render prints no ownerReference and a different applied-hash. \
                  `secretbundle-operator diff` shows the children exactly as applied, against the \
                  cluster."
)]
pub struct RenderArgs {
    /// Bundle manifest (YAML; several documents allowed; `-` reads stdin).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// ESO API version (`v1`, `v1beta1`), or ESO release (e.g. `v0.10.7`, `v2.9.0`) to render
    /// for. With a release, a bundle using a field that release cannot express is refused
    /// (EsoUpgradeRequired), as the controller refuses it.
    #[arg(long, default_value = "v1")]
    pub eso_version: String,
    /// The ExternalSecret CRD of a cluster (`kubectl get crd externalsecrets.external-secrets.io
    /// -o yaml`): render in the version it serves and refuse what its schema cannot hold, exactly
    /// as the controller does.
    #[arg(long, conflicts_with = "eso_version", value_name = "FILE")]
    pub eso_crd: Option<PathBuf>,
}

#[derive(Parser)]
pub struct ExplainArgs {
    /// Name of the bundle.
    pub bundle: String,
}

#[derive(Parser)]
#[command(
    group = clap::ArgGroup::new("which").required(true).args(["bundles", "all"]),
    after_help = "Exit status: 0 done; 1 timed out (each blocking bundle printed: name, reason, \
                  message); 2 usage error, or the bundles could not be listed.\n\
                  Needs only get, list and watch on secretbundles."
)]
pub struct WaitArgs {
    /// Bundles that must be Ready (for their current generation).
    pub bundles: Vec<String>,
    /// Every bundle. One that is idle (its namespace is absent, it is suspended, or it waits only
    /// on idle bundles) counts as done.
    #[arg(long, conflicts_with = "bundles")]
    pub all: bool,
    /// With --all: every bundle must be Ready, idle ones too.
    #[arg(long, requires = "all")]
    pub require_all: bool,
    /// Give up after this long (e.g. 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse_duration)]
    pub timeout: std::time::Duration,
}

pub fn print_crd() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&SecretBundle::crd())?);
    Ok(())
}

/// What `render` renders for: an API version, and what the ESO in question can express.
enum Target {
    ApiVersion(EsoVersion),
    Release(Release),
    Crd(ServedSchema),
}

impl Target {
    fn from_args(args: &RenderArgs) -> anyhow::Result<Self> {
        if let Some(path) = &args.eso_crd {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let crd: eso::CrdSummary = serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not a CustomResourceDefinition", path.display()))?;
            let version = eso::preferred_served(&crd)
                .map_err(|p| anyhow::anyhow!("{}: the CRD {p}", path.display()))?;
            let schema = ServedSchema::of(&crd, version).with_context(|| {
                format!("{}: no schema for {}", path.display(), version.as_str())
            })?;
            return Ok(Target::Crd(schema));
        }
        if let Some(v) = EsoVersion::parse(&args.eso_version) {
            return Ok(Target::ApiVersion(v));
        }
        let release = Release::parse(&args.eso_version)
            .context("--eso-version must be v1, v1beta1 or an ESO release such as v0.16.2")?;
        anyhow::ensure!(
            release >= Release::OLDEST_KNOWN,
            "ESO {release} predates the oldest release this operator knows ({})",
            Release::OLDEST_KNOWN
        );
        Ok(Target::Release(release))
    }

    fn version(&self) -> EsoVersion {
        match self {
            Target::ApiVersion(v) => *v,
            Target::Release(r) => r.api_version(),
            Target::Crd(s) => s.version,
        }
    }

    fn capabilities(&self) -> Option<Capabilities<'_>> {
        match self {
            Target::ApiVersion(_) => None,
            Target::Release(r) => Some(Capabilities::Release(*r)),
            Target::Crd(s) => Some(Capabilities::Installed(s)),
        }
    }
}

pub fn render(args: RenderArgs) -> anyhow::Result<()> {
    let target = Target::from_args(&args)?;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let bundle: SecretBundle = serde_yaml::from_value(value)
            .with_context(|| format!("{} is not a valid SecretBundle", args.file.display()))?;
        let children =
            secretbundle_controller::reconcile::apply::desired(&bundle, target.version())
                .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(caps) = target.capabilities() {
            features::check(&children, caps).map_err(|e| {
                anyhow::anyhow!(
                    "SecretBundle {}: {}: {e}",
                    bundle.name_any(),
                    Reason::EsoUpgradeRequired
                )
            })?;
        }
        for child in children {
            out.push(serde_yaml::to_string(&child)?);
        }
    }
    print!("{}", out.join("---\n"));
    Ok(())
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, String> {
        let argv = ["secretbundle-operator", "run"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Run(a) => Ok(a),
            _ => Err("not run".into()),
        }
    }

    /// Every number the operator takes is range-checked, and the error names the flag.
    #[test]
    fn numbers_out_of_range_are_refused_naming_the_flag() {
        for (flag, bad) in [
            ("--concurrency", "0"),
            ("--concurrency", "1001"),
            ("--concurrency", "-1"),
            ("--qps", "0"),
            ("--qps", "100001"),
            ("--burst", "0"),
            ("--burst", "many"),
        ] {
            let arg = format!("{flag}={bad}");
            let err = run_args(&[&arg])
                .err()
                .unwrap_or_else(|| panic!("{flag} {bad} accepted"));
            assert!(
                err.contains(flag) && err.contains(bad),
                "{flag} {bad}: {err}"
            );
        }
        let ok =
            run_args(&["--concurrency", "1", "--qps", "100000", "--burst", "1"]).expect("in range");
        assert_eq!((ok.concurrency, ok.qps, ok.burst), (1, 100_000, 1));
        let defaults = run_args(&[]).expect("defaults");
        assert_eq!(
            (defaults.concurrency, defaults.qps, defaults.burst),
            (4, 50, 100)
        );
    }
}
