//! `import`: existing ExternalSecrets (from the cluster, or from files such as `helm get
//! manifest`) printed as SecretBundles that adopt them in place. The conversion is the
//! controller's (`eso::import`); this module reads the input and prints.

mod input;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use secretbundle_controller::eso::import;

#[derive(Parser)]
#[command(
    after_help = "Exit status: 0 every ExternalSecret imported; 1 some refused: a bundle \
                  cannot express them exactly (each named, with its field, on stderr and in a \
                  comment atop the output; the rest is still printed); 2 bad input (an object \
                  that is not an ExternalSecret, an unreadable file, a namespace that does not \
                  exist, nothing found): nothing printed.\n\
                  From the cluster it needs only get and list on externalsecrets (and, to tell an \
                  absent namespace from an empty one, get on namespaces)."
)]
pub struct ImportArgs {
    /// Read ExternalSecrets from this manifest (YAML, several documents or a List; `-` reads
    /// stdin, e.g. from `helm get manifest`). Repeatable. Other kinds are ignored (noted on
    /// stderr), but a file without any ExternalSecret is an error. Without -f, read the cluster.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Namespace to read from the cluster (required without -f); with -f, the namespace of
    /// objects that name none (`helm get manifest` leaves it out).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only ExternalSecrets whose labels match, e.g. `app.kubernetes.io/instance=vault-secrets-argocd`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Name of the bundle; by default the Helm release (`meta.helm.sh/release-name` annotation
    /// or `app.kubernetes.io/instance` label) its ExternalSecrets share, else their namespace.
    /// With several target namespaces, each bundle is suffixed `-<namespace>`.
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs the command; its own exit codes, as `wait`'s.
pub async fn import(args: ImportArgs) -> ExitCode {
    let objects = match input::read(&args).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let count = objects.len();
    let mut entries = Vec::new();
    for o in objects {
        match import::entry(&o) {
            Ok(e) => entries.push(e),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let imported = import::bundles(entries, args.name.as_deref());
    let (text, refused) = match print(&imported, count) {
        Ok(t) => (t, !imported.refused.is_empty()),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    for (id, n) in &imported.notes {
        eprintln!("note: {id}: {n}");
    }
    for (id, r) in &imported.refused {
        eprintln!("refused: {id}: {r}");
    }
    if std::io::stdout().write_all(text.as_bytes()).is_err() {
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(refused))
}

/// The bundles as YAML, after a comment saying what was left out and why.
fn print(imported: &import::Imported, count: usize) -> anyhow::Result<String> {
    let mut out = format!("# secretbundle-operator import: {count} ExternalSecret(s) read.\n");
    if !imported.refused.is_empty() {
        out.push_str(
            "# Refused, and left out of these bundles (a bundle cannot express them exactly):\n",
        );
        for (id, r) in &imported.refused {
            out.push_str(&format!("#   {id}: {r}\n"));
        }
    }
    if !imported.notes.is_empty() {
        out.push_str("# Notes:\n");
        for (id, n) in &imported.notes {
            out.push_str(&format!("#   {id}: {n}\n"));
        }
    }
    let docs = imported
        .bundles
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    for d in docs {
        out.push_str("---\n");
        out.push_str(&d);
    }
    Ok(out)
}
