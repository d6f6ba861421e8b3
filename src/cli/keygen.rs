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
