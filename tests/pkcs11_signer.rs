//! The PKCS#11 signer in-process, against a real SoftHSM2 token: the same bytes as the PEM key,
//! and recovery when the login is lost or the token refuses for a while.
//!
//! A PKCS#11 module reads its configuration and scans its tokens once per process
//! (C_Initialize), so this file is one test with one token directory and one token.

mod common;

use common::{flexgate_bin, softhsm_conf};
use flexgate::pkcs11::{token, Pkcs11Uri, TokenKey};
use flexgate::saml::sign::{SignError, Signer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const MODULE: &str = common::SOFTHSM_MODULE;
const PIN: &str = "4711-pin";

struct Shared {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = softhsm_conf(dir.path());
        // Before the module is loaded in this process (first TokenKey::open).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Shared { _dir: dir, conf }
    })
}

fn tool(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .env("SOFTHSM2_CONF", &shared().conf)
        .output()
        .expect("run tool");
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token `label` holding the PEM key `flexgate keygen` wrote into `pem_dir`, imported as `imp`.
fn token_with_imported_key(label: &str, pem_dir: &Path) -> Pkcs11Uri {
    shared();
    tool(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "so-1",
            "--pin",
            PIN,
        ],
    );
    let out = Command::new(flexgate_bin())
        .args(["keygen", "--out"])
        .arg(pem_dir)
        .output()
        .expect("keygen");
    assert!(out.status.success());
    let key = pem_dir.join("idp-key.pem");
    tool(
        "softhsm2-util",
        &[
            "--import",
            key.to_str().expect("utf-8"),
            "--token",
            label,
            "--label",
            "imp",
            "--id",
            "01",
            "--pin",
            PIN,
        ],
    );
    Pkcs11Uri::parse(&format!(
        "pkcs11:token={label};object=imp?module-path={MODULE}&pin-value={PIN}"
    ))
    .expect("uri")
}

fn signers(uri: &Pkcs11Uri, pem_dir: &Path) -> (Signer, Signer, Arc<TokenKey>) {
    let cert = openssl::x509::X509::from_pem(&std::fs::read(pem_dir.join("idp-cert.pem")).unwrap())
        .unwrap();
    let pem = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(pem_dir.join("idp-key.pem")).unwrap(),
    )
    .unwrap();
    let key = Arc::new(TokenKey::open(uri.clone(), 2, false).expect("open the token key"));
    let by_token = Signer::with_token(key.clone(), &cert).expect("token signer");
    (Signer::new(pem, &cert).expect("pem signer"), by_token, key)
}

const ELEMENT: &str = "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r1\"></samlp:Response>";

#[test]
fn signing_recovers_after_the_login_is_lost_and_after_the_token_refused() {
    let pem_dir = tempfile::tempdir().expect("tempdir");
    let uri = token_with_imported_key("recover", pem_dir.path());
    let (pem, by_token, key) = signers(&uri, pem_dir.path());
    let expected = pem.signature_element("_r1", ELEMENT).expect("pem");
    assert_eq!(
        by_token.signature_element("_r1", ELEMENT).expect("token"),
        expected
    );

    // Another handle logs the application out of the token: every pooled session loses its login
    // (CKR_USER_NOT_LOGGED_IN on the next C_Sign), and flexgate logs in again by itself.
    let (_ctx, _slot, other) = token::open(&uri, true).expect("second session");
    other.logout().expect("logout");
    assert_eq!(
        by_token
            .signature_element("_r1", ELEMENT)
            .expect("after logout"),
        expected
    );
    assert_eq!(key.health(), Ok(()));

    // The PIN is changed and the login lost: signing fails (a 503 page for the login), and
    // /readyz says why …
    let new_pin = cryptoki::types::AuthPin::from("changed-pin".to_string());
    let old_pin = cryptoki::types::AuthPin::from(PIN.to_string());
    let (_ctx, _slot, admin) = token::open(&uri, true).expect("admin session");
    admin.set_pin(&old_pin, &new_pin).expect("set pin");
    admin.logout().expect("logout");
    match by_token.signature_element("_r1", ELEMENT) {
        Err(SignError::Token(e)) => assert!(e.to_string().contains("refused the PIN"), "{e}"),
        other => panic!("expected a token error, got {other:?}"),
    }
    let health = key.health().expect_err("not ready");
    assert!(health.contains("refused the PIN"), "{health}");
    // … and that PIN is not given to the token again, not even once it is right again (issue 18,
    // item 4): only a reload (a new TokenKey) or the back-off tries it.
    admin
        .login(cryptoki::session::UserType::User, Some(&new_pin))
        .expect("login");
    admin.set_pin(&new_pin, &old_pin).expect("set pin back");
    admin.logout().expect("logout");
    drop(admin);
    match by_token.signature_element("_r1", ELEMENT) {
        Err(SignError::Token(e)) => assert!(e.to_string().contains("SIGHUP"), "{e}"),
        other => panic!("expected the held PIN, got {other:?}"),
    }
    let (_, reloaded, _) = signers(&uri, pem_dir.path());
    assert_eq!(
        reloaded
            .signature_element("_r1", ELEMENT)
            .expect("recovered after a reload"),
        expected
    );
}
