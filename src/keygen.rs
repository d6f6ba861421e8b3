//! `flexgate keygen`: an RSA key and a self-signed certificate for signing SAML Responses.

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{0} exists; pass --force to overwrite it (the certificate in Flex Console must then be replaced too)")]
    Exists(PathBuf),
    #[error("--bits must be 2048, 3072 or 4096, not {0}")]
    Bits(u32),
    #[error("--days must be between 1 and {max}, not {0}", max = MAX_DAYS)]
    Days(u32),
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key generation failed: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    #[error("{0}\n  fix: {fix}", fix = .0.fix())]
    Pkcs11(#[from] crate::pkcs11::Pkcs11Error),
}

/// The RSA key sizes `keygen` makes.
pub const KEY_BITS: [u32; 3] = [2048, 3072, 4096];
/// The longest certificate validity `keygen` writes, in days (ten years).
pub const MAX_DAYS: u32 = 3650;

/// What `keygen` writes.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    pub out: PathBuf,
    pub bits: u32,
    pub days: u32,
    pub common_name: String,
    pub force: bool,
    /// Write `idp-key-next.pem` / `idp-cert-next.pem` (key rollover).
    pub next: bool,
}

/// Refuses sizes `keygen` does not make.
pub(crate) fn check_sizes(bits: u32, days: u32) -> Result<(), KeygenError> {
    if !KEY_BITS.contains(&bits) {
        return Err(KeygenError::Bits(bits));
    }
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(KeygenError::Days(days));
    }
    Ok(())
}

/// Generates a key pair and a self-signed certificate in memory.
pub fn generate(
    bits: u32,
    days: u32,
    common_name: &str,
) -> Result<(PKey<Private>, X509), KeygenError> {
    check_sizes(bits, days)?;
    let key = PKey::from_rsa(Rsa::generate(bits)?)?;
    let cert = crate::x509::self_signed(&key, &key, days, common_name)?;
    Ok((key, cert))
}

/// Writes `data` to `path` with `mode`: a new file, or (with `force`) replacing one.
///
/// A replacement is written to a new file beside `path` (created exclusively, with `mode` from the
/// start) and renamed over it: a symlink planted at `path` is replaced, never followed (so
/// `--force` cannot be steered into overwriting another file), the mode is the file's own from its
/// first byte, and a crash mid-write leaves the old key, not a truncated one.
pub fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), KeygenError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| KeygenError::Io(p, e)
    };
    if !force {
        return create_new(path, data, mode).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeygenError::Exists(path.to_path_buf())
            } else {
                KeygenError::Io(path.to_path_buf(), e)
            }
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a run that crashed is ours to remove (never followed: remove_file on a
    // symlink removes the link).
    let _ = std::fs::remove_file(&tmp);
    create_new(&tmp, data, mode).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        KeygenError::Io(path.to_path_buf(), e)
    })
}

/// A new file (never an existing one, never through a symlink) with `mode`, `data` written and
/// flushed to disk.
fn create_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        // The umask may have narrowed `mode`; a key file's mode is exactly what was asked.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(data)?;
    f.sync_all()
}

/// Writes `idp-key.pem` (0600) and `idp-cert.pem` (or the `-next` pair) into `out`.
/// Returns the two paths.
pub fn run(o: &KeygenOptions) -> Result<(PathBuf, PathBuf), KeygenError> {
    let suffix = if o.next { "-next" } else { "" };
    let key_path = o.out.join(format!("idp-key{suffix}.pem"));
    let cert_path = o.out.join(format!("idp-cert{suffix}.pem"));
    if !o.force {
        for p in [&key_path, &cert_path] {
            if p.exists() {
                return Err(KeygenError::Exists(p.clone()));
            }
        }
    }
    let (key, cert) = generate(o.bits, o.days, &o.common_name)?;
    std::fs::create_dir_all(&o.out).map_err(|e| KeygenError::Io(o.out.clone(), e))?;
    write_file(&key_path, &key.private_key_to_pem_pkcs8()?, 0o600, o.force)?;
    write_file(&cert_path, &cert.to_pem()?, 0o644, o.force)?;
    Ok((key_path, cert_path))
}

/// `keygen --pkcs11`: the key pair inside the token, only the certificate (0644) written to
/// `out`. Returns the certificate's path and how many old objects `--force` replaced.
pub fn run_pkcs11(
    uri: &crate::pkcs11::Pkcs11Uri,
    o: &KeygenOptions,
) -> Result<(PathBuf, usize), KeygenError> {
    let suffix = if o.next { "-next" } else { "" };
    let cert_path = o.out.join(format!("idp-cert{suffix}.pem"));
    if !o.force && cert_path.exists() {
        return Err(KeygenError::Exists(cert_path));
    }
    check_sizes(o.bits, o.days)?;
    std::fs::create_dir_all(&o.out).map_err(|e| KeygenError::Io(o.out.clone(), e))?;
    let made = crate::pkcs11::keygen::generate(uri, o.bits, o.days, &o.common_name, o.force)?;
    write_file(&cert_path, &made.cert.to_pem()?, 0o644, o.force)?;
    Ok((cert_path, made.replaced))
}
