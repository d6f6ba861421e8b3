//! `flexgate serve`: run the proxy.

use super::{failed, init_tracing, runtime, usage, ConfigPath, Failure};
use flexgate::serve::ServeError;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigPath,
}

/// Loads the config and serves until SIGTERM/SIGINT. A bad config is a usage error.
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = args.config.load()?;
    let _log = init_tracing(cfg.log.json, &cfg.log.level);
    runtime()?
        .block_on(flexgate::serve::run(cfg))
        .map_err(|e| match e {
            ServeError::Config(c) => usage(c),
            other => failed(other),
        })
}
