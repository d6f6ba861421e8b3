//! `flexgate trace QUERY`: support's and QA's view of login attempts, from the store the config
//! names (so a login on any instance sharing that Redis is found).

use super::{bounded, print_json, usage, ConfigPath, Failure};
use anyhow::Context;
use flexgate::config::{Config, StoreConfig};
use flexgate::trace::keep::TraceLog;
use flexgate::trace::{text, View};
use openssl::pkey::{PKey, Public};

#[derive(clap::Args)]
pub struct Args {
    /// A reference id (from an error page or a log line), an AuthnRequest ID, a Response ID,
    /// or an email address (that person's most recent attempts).
    query: String,
    #[command(flatten)]
    config: ConfigPath,
    /// Machine-readable output (a JSON array).
    #[arg(long)]
    json: bool,
    /// At most this many attempts (for an email address), 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_limit)]
    limit: usize,
}

fn parse_limit(s: &str) -> Result<usize, String> {
    bounded(s, 1..=1000, "attempts", "write e.g. --limit 20")
}

/// Prints the traces found; exit 1 when nothing matches, 2 when the config cannot be used.
pub fn run(args: Args) -> Result<(), Failure> {
    let config = args.config.load()?;
    if config.store == StoreConfig::Memory {
        return Err(usage(anyhow::anyhow!(
            "{}: [store] is in memory, so traces live inside the serving process\n  fix: look the login up on the admin listener (/admin/logins), or give the instances a shared [store] url (Redis) and pass its config here",
            config.source.display()
        )));
    }
    if !config.trace.enabled {
        eprintln!(
            "note: [trace] enabled = false in {}: new logins are not traced",
            config.source.display()
        );
    }
    let keys = cert_keys(&config);
    let store = flexgate::serve::make_store(&config).map_err(usage)?;
    let log = TraceLog::in_store(&config, store);
    let found = super::runtime()?
        .block_on(log.find(&args.query, args.limit))
        .context("cannot read traces from the store")?;
    if found.is_empty() {
        eprintln!(
            "no trace matches {:?} (traces are kept {} s; failures always, successes at trace.sample = {})",
            args.query,
            config.trace.keep.as_secs(),
            config.trace.sample
        );
        return Err(super::Failure::reported());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let views: Vec<View> = found
        .into_iter()
        .map(|t| View::new(t, &keys, now))
        .collect();
    if args.json {
        return print_json(&views);
    }
    if views.len() > 1 {
        println!("{} attempts, newest first:", views.len());
        for v in &views {
            println!("  {}", text::summary(&v.trace, now));
        }
        println!();
    }
    for v in &views {
        print!("{}", text::render(&v.trace, &v.checks, now));
        println!();
    }
    Ok(())
}

/// The IdP certificates (current and next) the Response checks trust; a missing file means the
/// signature check says "not checked" rather than failing the command.
fn cert_keys(config: &Config) -> Vec<PKey<Public>> {
    [Some(&config.idp.cert), config.idp.next_cert.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|pem| flexgate::config::keys::public_key_from_cert_pem(&pem).ok())
        .collect()
}
