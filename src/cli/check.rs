//! `flexgate check`: the deployment doctor.

use super::{print_json, runtime, usage, ConfigPath, Failure};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigPath,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Validates config and keys (exit 2 if they cannot be used), runs the checks and prints the
/// report; exit 1 if any check failed.
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = args.config.load()?;
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
