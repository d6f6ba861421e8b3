//! The command line: one [`Command`] variant per command, each run by one function in its own
//! file. Adding a command is one variant here and one `run` function in a new file.
//!
//! Every command returns a [`Failure`] that carries its exit code: 2 for bad usage or
//! configuration, 1 for a failed check. `anyhow` is used only in this part of the binary.

mod check;
mod demo;
mod init;
mod keygen;
mod log_writer;
mod metadata;
mod probe;
mod roles;
mod serve;
mod trace;
mod verify;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flexgate::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "flexgate",
    version,
    about = "A SAML 2.0 identity provider for Twilio Flex, backed by an OpenID Connect provider"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole flow on one machine: proxy + development OIDC issuer + Flex stand-in. No account needed.
    Demo(demo::Args),
    /// Run the proxy.
    Serve(serve::Args),
    /// Generate an RSA key (mode 0600) and a self-signed certificate for signing.
    Keygen(keygen::Args),
    /// Validate the config and keys, reach the upstream, print what to paste into Flex Console and Auth0.
    Check(check::Args),
    /// QA: verify a SAMLResponse (XML, base64, a form body or a saved HTML page) and print its attributes.
    Verify(verify::Args),
    /// Print the IdP metadata XML.
    Metadata(metadata::Args),
    /// Set up Auth0 through its Management API (application, roles Action, Login flow) and write
    /// flexgate.toml, flexgate.env and the signing key.
    Init(init::Args),
    /// Agents' Flex roles in Auth0 (app_metadata.flex.roles), through the Management API.
    Roles(roles::Args),
    /// Support and QA: the trace of a login attempt, by reference id, AuthnRequest ID, Response ID or email.
    Trace(trace::Args),
    /// GET a URL once (e.g. /healthz) and exit 0 on a 2xx answer, 1 otherwise: the container HEALTHCHECK.
    Probe(probe::Args),
}

impl Command {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Command::Demo(args) => demo::run(args),
            Command::Serve(args) => serve::run(args),
            Command::Keygen(args) => keygen::run(args),
            Command::Check(args) => check::run(args),
            Command::Verify(args) => verify::run(args),
            Command::Metadata(args) => metadata::run(args),
            Command::Init(args) => init::run(args),
            Command::Roles(args) => roles::run(args),
            Command::Trace(args) => trace::run(args),
            Command::Probe(args) => probe::run(args),
        }
    }
}

/// A command that failed: the exit code and what to print (nothing when the output already
/// said why).
pub struct Failure {
    pub code: u8,
    pub err: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure { code: 1, err }
    }
}

impl Failure {
    /// A failed check or verification whose output already says why (exit 1, nothing more printed).
    pub(crate) fn reported() -> Failure {
        Failure {
            code: 1,
            err: anyhow::anyhow!(""),
        }
    }
}

/// Bad usage or configuration (exit 2).
fn usage(err: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        err: err.into(),
    }
}

/// A runtime failure (exit 1).
fn failed(err: impl std::error::Error + Send + Sync + 'static) -> Failure {
    Failure::from(anyhow::Error::new(err))
}

/// `--config PATH`, for the commands that read the config.
#[derive(clap::Args)]
struct ConfigPath {
    /// Config file (else $FLEXGATE_CONFIG, else ./flexgate.toml)
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigPath {
    /// `--config`, else `$FLEXGATE_CONFIG`, else `./flexgate.toml`, loaded and validated; a
    /// config that cannot be used is a usage error.
    fn load(&self) -> Result<Config, Failure> {
        Config::load(&Config::locate(self.config.as_deref())).map_err(usage)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::from)
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(failed)?;
    println!("{text}");
    Ok(())
}

/// Logs go to stderr through a background writer that batches them ([`log_writer`]), so request
/// threads never wait on the terminal or the journal; the guard writes what is left at exit.
/// `None` when the writer thread cannot be started: logs then go to stderr directly.
fn init_tracing(json: bool, level: &str) -> Option<log_writer::Guard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEXGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(flexgate::config::DEFAULT_LOG_LEVEL)
        });
    let (writer, guard) = match log_writer::batch_writer(std::io::stderr()) {
        Ok((w, g)) => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
            Some(g),
        ),
        Err(_) => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    guard
}

/// The whole number `s` if it lies within `range`; otherwise a message stating the range in
/// `unit` and the `fix`. Value parsers call it; clap prefixes the message with the flag and the
/// value given, and exits 2.
fn bounded<T: TryFrom<u64>>(
    s: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
    fix: &str,
) -> Result<T, String> {
    let outside = || {
        format!(
            "must be a whole number of {unit} from {} to {}; {fix}",
            range.start(),
            range.end()
        )
    };
    match s.trim().parse::<u64>() {
        Ok(v) if range.contains(&v) => T::try_from(v).map_err(|_| outside()),
        _ => Err(outside()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bounded_accepts_the_range_and_names_it_otherwise() {
        let p = |s| bounded::<u8>(s, 1..=10, "days", "write e.g. 5");
        assert_eq!(p("1"), Ok(1));
        assert_eq!(p("10"), Ok(10));
        for bad in ["0", "11", "-1", "x", "99999999999999999999999"] {
            let e = p(bad).expect_err(bad);
            assert!(
                e.contains("from 1 to 10") && e.contains("write e.g. 5"),
                "{e}"
            );
        }
    }
}
