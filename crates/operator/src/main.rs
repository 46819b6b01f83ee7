//! `secretbundle-operator`: run the controller, print the CRD, render or explain a bundle.

mod cli;
mod explain;
mod http;
mod leader;
mod run;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match cli::Cli::parse().command {
        cli::Command::Run(args) => run::run(args).await,
        cli::Command::Crd => cli::print_crd(),
        cli::Command::Render(args) => cli::render(args),
        cli::Command::Explain(args) => explain::explain(args).await,
    }
}
