//! Test-only: `--fault-rate` makes the operator's own client inject API faults (see the
//! `secretbundle-faults` crate), so the test suites can run the real binary against a cluster
//! that fails the way real ones do. Hidden from `--help`; never set it in a deployment.

use clap::Args;
use secretbundle_faults::{Faults, Plan};
use tracing::warn;

#[derive(Args, Clone, Debug)]
pub struct FaultArgs {
    /// Fraction of API requests answered with an injected fault (0 to 1). Test-only.
    #[arg(long, env = "SB_FAULT_RATE", default_value_t = 0.0, value_parser = parse_rate, hide = true)]
    pub fault_rate: f64,
    /// Seed of the injected faults: the same seed replays the same faults. Test-only.
    #[arg(long, env = "SB_FAULT_SEED", default_value_t = 0, hide = true)]
    pub fault_seed: u64,
}

impl FaultArgs {
    /// The layer for the controller's client; it passes everything through at rate 0.
    pub fn layer(&self) -> Faults {
        if self.fault_rate > 0.0 {
            warn!(
                rate = self.fault_rate,
                seed = self.fault_seed,
                "injecting API faults (test-only --fault-rate)"
            );
        }
        Faults::new(Plan::new(self.fault_rate, self.fault_seed))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn the_fault_flags_parse_are_range_checked_and_hidden() {
        let cli = Cli::try_parse_from(["op", "run", "--fault-rate", "0.05", "--fault-seed", "9"])
            .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!((args.faults.fault_rate, args.faults.fault_seed), (0.05, 9));
        for bad in ["1.5", "-0.1", "x"] {
            assert!(
                Cli::try_parse_from(["op", "run", "--fault-rate", bad]).is_err(),
                "{bad}"
            );
        }
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let help = cmd
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        assert!(!help.contains("--fault"), "{help}");
    }
}
