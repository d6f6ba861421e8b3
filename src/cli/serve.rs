//! `flexgate serve`: run the proxy.

use super::{failed, init_tracing, load_config, runtime, usage, Failure};
use flexgate::serve::ServeError;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (else $FLEXGATE_CONFIG, else ./flexgate.toml)
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Loads the config and serves until SIGTERM/SIGINT. A bad config is a usage error.
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = load_config(args.config.as_deref()).map_err(usage)?;
    let _log = init_tracing(cfg.log.json, &cfg.log.level);
    runtime()?
        .block_on(flexgate::serve::run(cfg))
        .map_err(|e| match e {
            ServeError::Config(c) => usage(c),
            other => failed(other),
        })
}
