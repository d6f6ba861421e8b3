//! The Google token endpoint + Cloud Identity stand-in (`tests/peers/google_ci.mjs`) and
//! throwaway service-account JSON keys for it.

use super::free_port;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const CLIENT_EMAIL: &str = "flexgate-groups@flexgate-test.iam.gserviceaccount.com";

/// A service-account key as Google hands it out, written to a file.
pub struct SaKey {
    /// The JSON key file.
    pub path: PathBuf,
    /// Its bytes.
    pub json: Vec<u8>,
    /// The public half (PEM, SubjectPublicKeyInfo), what Google keeps to check the JWT.
    pub public_pem: String,
}

/// Generates an RSA-2048 key and writes a service-account JSON key for `client_email` into
/// `dir/name`; `token_uri` goes into the key as Google's files carry it.
/// Two service-account keys for [`CLIENT_EMAIL`] at Google's token URL, `sa.json` and
/// `other.json`: the one a stand-in trusts and one it does not.
pub fn trusted_and_other_keys(dir: &Path) -> (SaKey, SaKey) {
    let key = |name| {
        service_account_key(
            dir,
            name,
            CLIENT_EMAIL,
            "https://oauth2.googleapis.com/token",
        )
    };
    (key("sa.json"), key("other.json"))
}

pub fn service_account_key(dir: &Path, name: &str, client_email: &str, token_uri: &str) -> SaKey {
    let rsa = Rsa::generate(2048).expect("rsa keygen");
    let pkey = PKey::from_rsa(rsa).expect("pkey");
    let private_pem = String::from_utf8(pkey.private_key_to_pem_pkcs8().expect("pkcs8")).unwrap();
    let public_pem = String::from_utf8(pkey.public_key_to_pem().expect("spki")).unwrap();
    let key = json!({
        "type": "service_account",
        "project_id": "flexgate-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_pem,
        "client_email": client_email,
        "client_id": "103456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/flexgate-groups%40flexgate-test.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    });
    let json = serde_json::to_vec_pretty(&key).expect("json");
    let path = dir.join(name);
    std::fs::write(&path, &json).expect("write key");
    SaKey {
        path,
        json,
        public_pem,
    }
}

/// The running stand-in. Killed on drop.
pub struct GoogleCi {
    pub url: String,
    peer: super::NodePeer,
}

impl GoogleCi {
    /// Starts the stand-in with `cfg` (keys in `google_ci.mjs`); `port` is set here.
    pub fn start(mut cfg: Value) -> GoogleCi {
        cfg["port"] = json!(free_port());
        let peer = super::NodePeer::start("google_ci.mjs", &cfg, "the Google stand-in", true);
        GoogleCi {
            url: peer.url.clone(),
            peer,
        }
    }

    /// Its token endpoint (the JWT's `aud`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    pub async fn stats(&self) -> Value {
        self.peer.stats().await
    }
}
