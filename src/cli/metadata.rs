//! `flexgate metadata`: print the IdP metadata XML.

use super::{load_config, usage, Failure};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (else $FLEXGATE_CONFIG, else ./flexgate.toml)
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Prints the metadata with the signing certificate (and the next one, during a rollover).
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = load_config(args.config.as_deref()).map_err(usage)?;
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
