//! `flexgate demo`: the proxy, a development issuer and a Flex stand-in on one port.

use super::{init_tracing, runtime, usage, Failure};
use flexgate::config::DEFAULT_LOG_LEVEL;

#[derive(clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port on 127.0.0.1 of the admin listener (/metrics, the detailed /readyz); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    admin_port: u16,
}

/// Runs the demo until Ctrl-C; a port that cannot be bound is a usage error.
pub fn run(args: Args) -> Result<(), Failure> {
    let _log = init_tracing(false, DEFAULT_LOG_LEVEL);
    runtime()?
        .block_on(flexgate::demo::run(args.port, args.admin_port))
        .map_err(|e| usage(anyhow::anyhow!(e)))
}
