//! `flexgate check`: the deployment doctor.

use super::{load_config, print_json, runtime, usage, Failure};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (else $FLEXGATE_CONFIG, else ./flexgate.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Validates config and keys (exit 2 if they cannot be used), runs the checks and prints the
/// report; exit 1 if any check failed.
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = load_config(args.config.as_deref()).map_err(usage)?;
    flexgate::config::keys::load(&cfg).map_err(usage)?;
    let report = runtime()?.block_on(flexgate::check::run(&cfg));
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", flexgate::check::render_text(&report));
    }
    if report.failed() {
        return Err(Failure {
            code: 1,
            err: anyhow::anyhow!("some checks failed (see above)"),
        });
    }
    Ok(())
}
