//! `flexgate keygen`: an RSA key and a self-signed certificate for signing.

use super::{bounded, failed, usage, Failure};
use flexgate::keygen::{KeygenError, KeygenOptions, KEY_BITS, MAX_DAYS};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// RSA key size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
    bits: u32,
    /// Certificate validity in days (1 to 3650).
    #[arg(long, default_value_t = 1095, value_parser = parse_days)]
    days: u32,
    #[arg(long, default_value = "flexgate SAML signing")]
    common_name: String,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
    /// Write the next key pair (idp-key-next.pem, idp-cert-next.pem) for a rollover.
    #[arg(long)]
    next: bool,
    /// Make the key inside a PKCS#11 token (an RFC 7512 URI naming the token, the key's label and
    /// the module); only the certificate is written.
    #[arg(long, value_name = "URI")]
    pkcs11: Option<String>,
}

fn parse_bits(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(b) if KEY_BITS.contains(&b) => Ok(b),
        _ => Err("must be 2048, 3072 or 4096".into()),
    }
}

fn parse_days(s: &str) -> Result<u32, String> {
    let fix = "write e.g. --days 1095 (three years)";
    bounded(s, 1..=u64::from(MAX_DAYS), "days", fix)
}

/// `keygen --pkcs11 URI`: the key stays in the token; only the certificate is written.
fn run_pkcs11(uri: &str, opts: &KeygenOptions) -> Result<(), Failure> {
    let parsed = flexgate::pkcs11::Pkcs11Uri::parse(uri)
        .map_err(|e| usage(anyhow::anyhow!("--pkcs11 {e}")))?;
    let (cert, replaced) = flexgate::keygen::run_pkcs11(&parsed, opts).map_err(|e| match e {
        KeygenError::Io(..) | KeygenError::Openssl(_) => failed(e),
        other => usage(other),
    })?;
    if replaced > 0 {
        println!(
            "replaced {replaced} object(s) with {} in the token",
            parsed.key_name()
        );
    }
    println!(
        "made an RSA-{} key in the token (sensitive, not extractable): {parsed}\nwrote {}",
        opts.bits,
        cert.display()
    );
    let role = if opts.next {
        "idp.next_cert"
    } else {
        "[idp] cert"
    };
    println!("next: set {role} = \"{}\" and the key to the same pkcs11: URI (PIN from the environment or pin-source), then follow the README (Flex Console, key rollover)", cert.display());
    Ok(())
}

/// Writes the pair and says where to put it; existing files are a usage error without `--force`.
pub fn run(args: Args) -> Result<(), Failure> {
    let next = args.next;
    let opts = KeygenOptions {
        out: args.out,
        bits: args.bits,
        days: args.days,
        common_name: args.common_name,
        force: args.force,
        next,
    };
    if let Some(uri) = &args.pkcs11 {
        return run_pkcs11(uri, &opts);
    }
    let (key, cert) = flexgate::keygen::run(&opts).map_err(|e| match e {
        KeygenError::Bits(_) | KeygenError::Days(_) | KeygenError::Exists(_) => usage(e),
        other => failed(other),
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
