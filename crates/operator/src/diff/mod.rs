//! `diff`: what applying bundle files would change in the cluster now. Each bundle is validated
//! by the apiserver (dry-run), gated and rendered as the controller does, and each child is
//! dry-run applied with the operator's field manager; the answers are diffed against the live
//! objects.

mod bundle;
mod format;
mod input;
mod plan;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use kube::{Api, Client};
use secretbundle_api::SecretBundle;

#[derive(clap::Parser)]
#[command(after_help = AFTER_HELP)]
pub struct DiffArgs {
    /// Bundle manifests (YAML; several documents allowed; repeat -f for several files; `-` reads
    /// stdin, e.g. from `kustomize build`). Documents of other kinds are skipped.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

const AFTER_HELP: &str = "\
For each bundle, the ExternalSecrets exactly as the operator would apply them now (same rendering, \
same gates) are dry-run applied with the operator's field manager and compared with the live \
objects; differences are printed as unified diffs, with the children that would be created and \
those that would be pruned. A bundle that would not apply now says why, in the reason words of \
its status (e.g. WaitingForNamespace), instead of diffing. The bundle's spec is taken from the \
file whole, as a GitOps tool applying it leaves it; its labels and annotations are the live ones \
with the file's on top. Nothing is written: every request is a GET, a LIST or a dry run.

Exit status:
  0  no difference (bundles that wait for something absent or progressing count as none)
  1  differences
  2  error: an unreadable file, an invalid bundle (the API server's own validation message), a \
bundle that would fail (a failing gate such as EsoUpgradeRequired or DependencyCycle, a Conflict, \
an apply the API server rejects), or the cluster could not be asked

RBAC for a CI job (examples/ci/diff-rbac.yaml), cluster-wide:
  secretbundles.secrets.ameide.io                 get, list, patch, create
  externalsecrets.external-secrets.io             list, patch, create
  clustersecretstores.external-secrets.io         get
  secretstores.external-secrets.io                get
  namespaces                                      get
  customresourcedefinitions.apiextensions.k8s.io  get
patch and create are only ever sent as dry runs (server-side apply of an object that does not \
exist yet needs create), but RBAC cannot limit them to dry runs: grant this role only to \
identities you would trust to apply bundles.";

/// Runs the diff; the exit status is the verdict (see [`AFTER_HELP`]).
pub async fn diff(args: DiffArgs) -> ExitCode {
    match run(&args).await {
        Ok(verdict) => ExitCode::from(verdict as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(Verdict::Error as u8)
        }
    }
}

/// The outcome of a whole run, ordered by severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    #[default]
    Same = 0,
    Differs = 1,
    Error = 2,
}

async fn run(args: &DiffArgs) -> anyhow::Result<Verdict> {
    // Every file is read before the cluster is asked anything: a bad input changes nothing.
    let documents = input::read_all(&args.files)?;
    let (bundles, skipped) = input::bundles(documents)?;
    for s in skipped {
        eprintln!("note: skipping {s}: diff compares SecretBundles only");
    }
    let client = Client::try_default().await.context("loading kubeconfig")?;
    let live = Api::<SecretBundle>::all(client.clone())
        .list(&Default::default())
        .await
        .context("listing SecretBundles")?
        .items;
    let store = plan::bundle_store(live);
    let mut verdict = Verdict::Same;
    for doc in &bundles {
        let outcome = match bundle::as_applied(&client, doc).await? {
            Ok(bundle) => plan::plan(&client, &store, &bundle).await?,
            Err(message) => plan::Outcome::Invalid {
                bundle: doc.name.clone(),
                message,
            },
        };
        let report = format::outcome(&outcome);
        print!("{}", report.out);
        eprint!("{}", report.err);
        verdict = verdict.max(report.verdict);
    }
    Ok(verdict)
}
