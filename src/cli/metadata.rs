//! `flexgate metadata`: print the IdP metadata XML.

use super::{usage, ConfigPath, Failure};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigPath,
}

/// Prints the metadata with the signing certificate (and the next one, during a rollover).
pub fn run(args: Args) -> Result<(), Failure> {
    let cfg = args.config.load()?;
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
