//! The IdP's key material, read once at start-up (and on reload): the signing key parsed into a
//! [`Signer`], the certificate(s) ready to publish. flexgate never starts without it.

use super::{Config, ConfigError};
use crate::pkcs11::{Pkcs11Error, Pkcs11Uri, TokenKey};
use crate::saml::sign::{SignError, Signer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the signing key lives: a PEM file, or a key in a PKCS#11 token (an RFC 7512 URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    File(PathBuf),
    Pkcs11(Pkcs11Uri),
}

impl KeyLocation {
    /// `idp.key` as written: a `pkcs11:` URI, else a path (relative to `base`). `expand`
    /// resolves `${VAR}` in each URI attribute once the URI is split (see
    /// [`Pkcs11Uri::parse_expanding`]); a path arrives expanded already.
    pub fn parse(
        s: &str,
        base: &Path,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<KeyLocation, String> {
        if crate::pkcs11::uri::is_pkcs11_uri(s) {
            return Pkcs11Uri::parse_expanding(s, expand)
                .map(KeyLocation::Pkcs11)
                .map_err(|e| format!("is a PKCS#11 URI that cannot be used: {e}"));
        }
        Ok(KeyLocation::File(super::resolve(base, Path::new(s))))
    }

    /// For messages: the path, or the URI with its PIN redacted.
    pub fn display(&self) -> String {
        match self {
            KeyLocation::File(p) => p.display().to_string(),
            KeyLocation::Pkcs11(u) => u.to_string(),
        }
    }
}

impl PartialEq<PathBuf> for KeyLocation {
    fn eq(&self, other: &PathBuf) -> bool {
        matches!(self, KeyLocation::File(p) if p == other)
    }
}

impl PartialEq<&Path> for KeyLocation {
    fn eq(&self, other: &&Path) -> bool {
        matches!(self, KeyLocation::File(p) if p == other)
    }
}

/// A certificate as flexgate publishes it.
#[derive(Debug, Clone)]
pub struct PublishedCert {
    pub pem: String,
    pub der_b64: String,
    /// `notAfter`, as openssl prints it.
    pub not_after: String,
    /// Days until `notAfter` (negative when expired).
    pub days_left: i32,
    pub subject: String,
    pub sha256_fingerprint: String,
}

/// Everything signing and publishing need.
#[derive(Debug)]
pub struct KeyMaterial {
    pub signer: Signer,
    pub cert: PublishedCert,
    pub next_cert: Option<PublishedCert>,
    /// Request-signing keys of the SPs that have `request_cert`, by SP name.
    pub request_keys: std::collections::HashMap<String, PKey<Public>>,
}

fn io_err(key: &str, path: &Path, cfg: &Config, e: std::io::Error, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        path: cfg.source.clone(),
        key: key.into(),
        problem: format!("points to {}, which cannot be read: {e}", path.display()),
        fix: fix.into(),
    }
}

fn invalid(cfg: &Config, key: &str, problem: String, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        path: cfg.source.clone(),
        key: key.into(),
        problem,
        fix: fix.into(),
    }
}

/// Describes a certificate for publishing and for `flexgate check`.
pub fn describe_cert(cert: &X509) -> Result<PublishedCert, openssl::error::ErrorStack> {
    let pem = String::from_utf8_lossy(&cert.to_pem()?).into_owned();
    let der = cert.to_der()?;
    let now = openssl::asn1::Asn1Time::days_from_now(0)?;
    // Whole days left, rounded down: a certificate that expired an hour ago has -1, not 0
    // (`diff` gives days and seconds with the same sign, so -1 h is {days: 0, secs: -3600}).
    let days_left = now
        .diff(cert.not_after())
        .map(|d| if d.secs < 0 { d.days - 1 } else { d.days })
        .unwrap_or(-1);
    let subject = cert
        .subject_name()
        .entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e.data().to_string().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let fp = crate::digest::sha256(&der);
    Ok(PublishedCert {
        pem,
        der_b64: B64.encode(&der),
        not_after: cert.not_after().to_string(),
        days_left,
        subject,
        sha256_fingerprint: fp
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    })
}

fn read_cert(cfg: &Config, key: &str, path: &Path) -> Result<X509, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| io_err(key, path, cfg, e, "run `flexgate keygen --out certs` or fix the path (relative paths start at the config file's folder)"))?;
    X509::from_pem(&pem).map_err(|_| invalid(cfg, key, format!("points to {}, which is not a PEM certificate", path.display()), "point it at the idp-cert.pem written by `flexgate keygen` (-----BEGIN CERTIFICATE-----)"))
}

#[cfg(unix)]
fn check_key_permissions(cfg: &Config, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| io_err("idp.key", path, cfg, e, "fix the path"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !cfg.idp.allow_insecure_key_permissions {
        return Err(invalid(
            cfg,
            "idp.key",
            format!("points to {}, which other users can access (mode {mode:o})", path.display()),
            &format!("run `chmod 600 {}` (or set idp.allow_insecure_key_permissions = true if a secret store manages access)", path.display()),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_cfg: &Config, _path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

fn sign_error(cfg: &Config, key_name: &str, e: SignError) -> ConfigError {
    match e {
        SignError::WeakKey => invalid(
            cfg,
            "idp.key",
            format!("{key_name} is not an RSA key of at least 2048 bits"),
            "generate one with `flexgate keygen --bits 2048` (or 3072/4096)",
        ),
        SignError::KeyCertMismatch => invalid(
            cfg,
            "idp.cert",
            format!(
                "{} does not belong to the key {key_name}",
                cfg.idp.cert.display()
            ),
            "use the certificate generated together with the key (`flexgate keygen` wrote both; for a token key, the idp-cert.pem `flexgate keygen --pkcs11` wrote)",
        ),
        SignError::Openssl(e) => invalid(
            cfg,
            "idp.key",
            format!("cannot be used: {e}"),
            "regenerate it with `flexgate keygen`",
        ),
        SignError::Token(e) => pkcs11_invalid(cfg, &e),
    }
}

/// A token problem as a config error on `idp.key`.
pub fn pkcs11_invalid(cfg: &Config, e: &Pkcs11Error) -> ConfigError {
    invalid(cfg, "idp.key", format!("cannot be used: {e}"), &e.fix())
}

fn pem_signer(cfg: &Config, key_path: &Path) -> Result<(Signer, X509), ConfigError> {
    check_key_permissions(cfg, key_path)?;
    let key_pem = std::fs::read(key_path).map_err(|e| io_err("idp.key", key_path, cfg, e, "run `flexgate keygen --out certs` or fix the path (relative paths start at the config file's folder)"))?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|_| {
        invalid(
            cfg,
            "idp.key",
            format!(
                "points to {}, which is not an unencrypted PEM private key",
                key_path.display()
            ),
            "point it at the idp-key.pem written by `flexgate keygen`",
        )
    })?;
    let cert = read_cert(cfg, "idp.cert", &cfg.idp.cert)?;
    let signer =
        Signer::new(key, &cert).map_err(|e| sign_error(cfg, &key_path.display().to_string(), e))?;
    Ok((signer, cert))
}

fn token_signer(cfg: &Config, uri: &Pkcs11Uri) -> Result<(Signer, X509), ConfigError> {
    let cert = read_cert(cfg, "idp.cert", &cfg.idp.cert)?;
    let key = TokenKey::open(
        uri.clone(),
        cfg.idp.pkcs11_sessions,
        cfg.idp.allow_extractable_key,
    )
    .map_err(|e| pkcs11_invalid(cfg, &e))?
    .with_pin_retry(cfg.idp.pin_retry);
    let signer = Signer::with_token(Arc::new(key), &cert)
        .map_err(|e| sign_error(cfg, &uri.key_name(), e))?;
    Ok((signer, cert))
}

/// Loads and checks the key material named by `[idp]` (blocking: a token key is opened here).
pub fn load(cfg: &Config) -> Result<KeyMaterial, ConfigError> {
    let (signer, cert) = match &cfg.idp.key {
        KeyLocation::File(p) => pem_signer(cfg, p)?,
        KeyLocation::Pkcs11(u) => token_signer(cfg, u)?,
    };
    let published = describe_cert(&cert).map_err(|e| {
        invalid(
            cfg,
            "idp.cert",
            format!("cannot be encoded: {e}"),
            "regenerate it with `flexgate keygen`",
        )
    })?;
    let next_cert = match &cfg.idp.next_cert {
        Some(p) => {
            let c = read_cert(cfg, "idp.next_cert", p)?;
            Some(describe_cert(&c).map_err(|e| {
                invalid(
                    cfg,
                    "idp.next_cert",
                    format!("cannot be encoded: {e}"),
                    "regenerate it with `flexgate keygen --next`",
                )
            })?)
        }
        None => None,
    };
    let mut request_keys = std::collections::HashMap::new();
    for (i, sp) in cfg.sps.iter().enumerate() {
        if let Some(p) = &sp.request_cert {
            let key = format!("sp[{i}].request_cert");
            let cert = read_cert(cfg, &key, p)?;
            let pk = cert.public_key().map_err(|e| {
                invalid(
                    cfg,
                    &key,
                    format!("has no usable public key: {e}"),
                    "use the SP's signing certificate (PEM)",
                )
            })?;
            request_keys.insert(sp.name.clone(), pk);
        }
    }
    Ok(KeyMaterial {
        signer,
        cert: published,
        next_cert,
        request_keys,
    })
}

/// Reads a PEM certificate file into a public key (for `flexgate verify --cert`).
pub fn public_key_from_cert_pem(pem: &[u8]) -> Result<PKey<Public>, openssl::error::ErrorStack> {
    X509::from_pem(pem)?.public_key()
}
