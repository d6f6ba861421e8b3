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
    /// QA: verify a SAMLResponse (XML, base64, a form body or a saved HTML page) and print its attributes.
    Verify {
        /// The only certificate trusted for the signature (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The SP entity id that must be the Audience (e.g. urn:flex:JQ…).
        #[arg(long)]
        audience: Option<String>,
        /// The ACS URL, compared whole (query string included) with Destination and Recipient.
        #[arg(long)]
        recipient: Option<String>,
        /// The IdP entity id the Issuer must equal.
        #[arg(long)]
        issuer: Option<String>,
        /// The AuthnRequest ID the Response must answer.
        #[arg(long, conflicts_with = "idp_initiated")]
        in_response_to: Option<String>,
        /// The Response must carry no InResponseTo (IdP-initiated login).
        #[arg(long)]
        idp_initiated: bool,
        /// Compare with a fixture's .expect.toml (fixtures/README.md) and show the differences.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Check the time window at this instant (RFC 3339), e.g. for an old capture.
        #[arg(long)]
        now: Option<String>,
        /// Clock skew allowed on the time window, in seconds.
        #[arg(long, default_value_t = 0)]
        skew: i64,
        /// Which signature(s) must be present: response, assertion or both (default: either).
        #[arg(long)]
        require: Option<String>,
        /// Accept RSA-SHA1 / SHA-1 (refused by default).
        #[arg(long)]
        allow_sha1: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The file to read, or - for standard input.
        #[arg(default_value = "-")]
        input: String,
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

/// Logs go to stderr through a background writer, so request threads never wait on the
/// terminal or the journal; the guard flushes them at exit.
fn init_tracing(json: bool, level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEXGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
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
            let _log = init_tracing(false, "info");
            let rt = runtime()?;
            rt.block_on(flexgate::demo::run(port))
                .map_err(|e| usage(anyhow::anyhow!(e)))
        }
        Command::Serve { config } => {
            let cfg = load_config(config.as_deref()).map_err(usage)?;
            let _log = init_tracing(cfg.log.json, &cfg.log.level);
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
        Command::Verify {
            cert,
            audience,
            recipient,
            issuer,
            in_response_to,
            idp_initiated,
            expect,
            now,
            skew,
            require,
            allow_sha1,
            json,
            input,
        } => {
            let cert_pem = std::fs::read(&cert)
                .with_context(|| format!("cannot read --cert {}", cert.display()))
                .map_err(usage)?;
            let expect = match expect {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read --expect {}", p.display()))
                        .map_err(usage)?;
                    let e = flexgate::qa::Expect::parse(&text).map_err(|e| {
                        usage(anyhow::anyhow!(
                            "{}: {e}\n  fix: see fixtures/README.md for the format",
                            p.display()
                        ))
                    })?;
                    Some((p.display().to_string(), e))
                }
                None => None,
            };
            let now = match now {
                Some(n) => Some(
                    chrono::DateTime::parse_from_rfc3339(&n)
                        .map_err(|e| usage(anyhow::anyhow!("--now {n:?} is not RFC 3339 ({e}); write e.g. 2026-01-15T10:00:00Z")))?
                        .with_timezone(&chrono::Utc),
                ),
                None => None,
            };
            let require = match require.as_deref() {
                None => None,
                Some("response") => Some(flexgate::qa::Signed::Response),
                Some("assertion") => Some(flexgate::qa::Signed::Assertion),
                Some("both") => Some(flexgate::qa::Signed::Both),
                Some(o) => {
                    return Err(usage(anyhow::anyhow!(
                        "--require {o:?}: use response, assertion or both"
                    )))
                }
            };
            let text = if input == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("cannot read standard input")
                    .map_err(usage)?;
                s
            } else {
                std::fs::read_to_string(&input)
                    .with_context(|| format!("cannot read {input}"))
                    .map_err(usage)?
            };
            let req = flexgate::qa::VerifyRequest {
                cert_pem,
                cert_name: cert.display().to_string(),
                audience,
                recipient,
                issuer,
                in_response_to,
                idp_initiated,
                expect,
                now,
                skew_secs: skew,
                require,
                allow_sha1,
            };
            let report = flexgate::qa::verify(&text, &req).map_err(usage)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| Failure::from(anyhow::Error::new(e)))?
                );
            } else {
                print!("{}", flexgate::qa::render(&report));
            }
            if report.valid {
                Ok(())
            } else {
                // The report already says why.
                Err(Failure {
                    code: 1,
                    err: anyhow::anyhow!(""),
                })
            }
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
            let msg = format!("{:#}", f.err);
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            ExitCode::from(f.code)
        }
    }
}
