//! The `flexgate` command line: one function per command; errors end here (`anyhow`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use flexgate::config::{Config, ConfigError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "flexgate",
    version,
    about = "A SAML 2.0 identity provider for Twilio Flex, backed by an OpenID Connect provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole flow on one machine: proxy + development OIDC issuer + Flex stand-in. No account needed.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Run the proxy.
    Serve {
        /// Config file (else $FLEXGATE_CONFIG, else ./flexgate.toml)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Generate an RSA key (mode 0600) and a self-signed certificate for signing.
    Keygen {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        #[arg(long, default_value_t = 1095)]
        days: u32,
        #[arg(long, default_value = "flexgate SAML signing")]
        common_name: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Write the next key pair (idp-key-next.pem, idp-cert-next.pem) for a rollover.
        #[arg(long)]
        next: bool,
    },
    /// Validate the config and keys, reach the upstream, print what to paste into Flex Console and Auth0.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the IdP metadata XML.
    Metadata {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    Config::load(&Config::locate(path))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEXGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Exit code 2 for bad usage or configuration, 1 for a failed check.
struct Failure {
    code: u8,
    err: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure { code: 1, err }
    }
}

fn usage(err: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        err: err.into(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::from)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Demo { port } => {
            init_tracing();
            let rt = runtime()?;
            rt.block_on(flexgate::demo::run(port))
                .map_err(|e| usage(anyhow::anyhow!(e)))
        }
        Command::Serve { config } => {
            init_tracing();
            let cfg = load_config(config.as_deref()).map_err(usage)?;
            let rt = runtime()?;
            rt.block_on(flexgate::serve::run(cfg)).map_err(|e| match e {
                flexgate::serve::ServeError::Config(c) => usage(c),
                other => Failure::from(anyhow::Error::new(other)),
            })
        }
        Command::Keygen {
            out,
            bits,
            days,
            common_name,
            force,
            next,
        } => {
            let opts = flexgate::keygen::KeygenOptions {
                out,
                bits,
                days,
                common_name,
                force,
                next,
            };
            let (key, cert) = flexgate::keygen::run(&opts).map_err(|e| match e {
                flexgate::keygen::KeygenError::Bits(_)
                | flexgate::keygen::KeygenError::Days(_)
                | flexgate::keygen::KeygenError::Exists(_) => usage(e),
                other => Failure::from(anyhow::Error::new(other)),
            })?;
            println!(
                "wrote {} (mode 0600)\nwrote {}",
                key.display(),
                cert.display()
            );
            if next {
                println!("next: set idp.next_cert = \"{}\" to publish it in metadata (see the README's key rollover)", cert.display());
            } else {
                println!("next: point [idp] key and cert at these files, then paste the certificate into Flex Console");
            }
            Ok(())
        }
        Command::Check { config, json } => {
            let cfg = load_config(config.as_deref()).map_err(usage)?;
            flexgate::config::keys::load(&cfg).map_err(usage)?;
            let rt = runtime()?;
            let report = rt.block_on(flexgate::check::run(&cfg));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| Failure::from(anyhow::Error::new(e)))?
                );
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
        Command::Metadata { config } => {
            let cfg = load_config(config.as_deref()).map_err(usage)?;
            let keys = flexgate::config::keys::load(&cfg).map_err(usage)?;
            let mut certs = vec![keys.cert.der_b64.clone()];
            if let Some(n) = &keys.next_cert {
                certs.push(n.der_b64.clone());
            }
            print!(
                "{}",
                flexgate::saml::metadata::idp_metadata(&cfg.idp.entity_id, &cfg.sso_url(), &certs)
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.err);
            ExitCode::from(f.code)
        }
    }
}
