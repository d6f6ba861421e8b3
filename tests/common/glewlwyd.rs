//! A second, independent OpenID provider: Debian's `glewlwyd` (2.7), started per test on
//! loopback with its own config file and SQLite database in a temp dir.
//!
//! Set-up, all through glewlwyd's own documented surfaces: the database is made from the SQLite
//! schema the package ships (dbconfig-common's install script); the OIDC plugin instance (RS256
//! with a fresh RSA key, PKCE allowed, `name` and `email` claims always, the roles claim from the
//! user property `roles`) and the user backend's `roles` property are written into it before
//! start; users and the confidential client (client_secret_basic) are created through the admin
//! REST API (`/api/user/`, `/api/client/`), signed in as the built-in `admin`.
//!
//! Its login page is a JavaScript app over the REST API `/api/auth/`; [`sign_in`] does what that
//! app does (password, grant, back to the authorization endpoint with `g_continue`), with the
//! browser's cookie jar.
#![allow(dead_code)]

use super::{free_port, ROLES_CLAIM};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The glewlwyd binary of the Debian package.
pub fn binary() -> PathBuf {
    let p = PathBuf::from("/usr/bin/glewlwyd");
    assert!(
        p.exists(),
        "glewlwyd is missing ({}); run scripts/install-test-deps",
        p.display()
    );
    p
}

/// The SQLite schema shipped by the package (dbconfig-common's install script).
pub const SCHEMA: &str = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3";
/// The built-in administrator the schema creates.
const ADMIN: (&str, &str) = ("admin", "password");

/// Each test user's password at glewlwyd.
pub fn password(login: &str) -> String {
    format!("pw-{login}-Zq81")
}

/// A test user at glewlwyd.
pub struct User {
    pub login: &'static str,
    pub name: &'static str,
    pub email: &'static str,
    /// The user property `roles`, which the OIDC plugin puts into the roles claim.
    pub roles: &'static [&'static str],
}

/// The test users (all may grant the `openid` scope).
pub const USERS: [User; 2] = [
    User {
        login: "agent1",
        name: "Ada Agent",
        email: "agent1@example.com",
        roles: &["agent"],
    },
    User {
        login: "sup1",
        name: "Sam Supervisor",
        email: "sup1@example.com",
        roles: &["supervisor", "wfo.team_leader"],
    },
];

/// A running glewlwyd. Dropping it stops the process (its log is printed when a test panics).
pub struct Glewlwyd {
    /// The OIDC plugin's issuer, `http://127.0.0.1:PORT/api/oidc`.
    pub issuer: String,
    pub base: String,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Glewlwyd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- glewlwyd log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rsa_key_pair() -> (String, String) {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    let private = String::from_utf8(rsa.private_key_to_pem().expect("key PEM")).expect("PEM");
    let public = String::from_utf8(rsa.public_key_to_pem().expect("public PEM")).expect("PEM");
    (private, public)
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The database: the package's schema plus the OIDC plugin instance and a `roles` user property.
fn make_database(db: &Path, issuer: &str) {
    let schema = std::fs::read_to_string(SCHEMA)
        .unwrap_or_else(|e| panic!("{SCHEMA}: {e}; run scripts/install-test-deps (glewlwyd)"));
    let (key, cert) = rsa_key_pair();
    let plugin = json!({
        "iss": issuer,
        "jwt-type": "rsa",
        "jwt-key-size": "256",
        "key": key,
        "cert": cert,
        "access-token-duration": 3600,
        "refresh-token-duration": 1209600,
        "code-duration": 600,
        "refresh-token-rolling": false,
        "allow-non-oidc": false,
        "auth-type-code-enabled": true,
        "auth-type-token-enabled": false,
        "auth-type-none-enabled": false,
        "auth-type-password-enabled": false,
        "auth-type-client-enabled": false,
        "auth-type-refresh-enabled": true,
        "subject-type": "public",
        "jwks-show": true,
        "pkce-allowed": true,
        "pkce-method-plain-allowed": false,
        "name-claim": "mandatory",
        "email-claim": "mandatory",
        "scope-claim": "no",
        "claims": [{"name": ROLES_CLAIM, "user-property": "roles", "type": "string",
                    "mandatory": true, "on-demand": false}],
        "scope": []
    });
    let user_module = json!({
        "use-glewlwyd-connection": true,
        "data-format": {
            "picture": {"multiple": false, "read": true, "write": true, "profile-read": true, "profile-write": true},
            "reset-credentials-code": {"multiple": false, "read": true, "write": true, "profile-read": false, "profile-write": false},
            "user-code": {"multiple": false, "read": true, "write": true, "profile-read": true, "profile-write": true},
            "roles": {"multiple": true, "read": true, "write": true, "profile-read": true, "profile-write": false}
        }
    });
    let extra = format!(
        "INSERT INTO g_plugin_module_instance (gpmi_module, gpmi_name, gpmi_display_name, gpmi_parameters) \
         VALUES ('oidc', 'oidc', 'OpenID Connect', {});\n\
         UPDATE g_user_module_instance SET gumi_parameters = {} WHERE gumi_name = 'database';\n\
         UPDATE g_scope SET gs_password_required = 1 WHERE gs_name = 'openid';\n",
        sql_str(&plugin.to_string()),
        sql_str(&user_module.to_string()),
    );
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sqlite3 (Debian package sqlite3; run scripts/install-test-deps)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(schema.as_bytes()).expect("write schema");
        stdin.write_all(extra.as_bytes()).expect("write set-up");
    }
    let out = child.wait_with_output().expect("sqlite3");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 failed on the glewlwyd schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Glewlwyd {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("glewlwyd.log")).unwrap_or_default()
    }

    /// Starts glewlwyd on a free loopback port with the test users and one confidential client
    /// (`client_id`, `secret`, client_secret_basic, `redirect_uri`).
    pub async fn start(redirect_uri: &str, client_id: &str, secret: &str) -> Glewlwyd {
        Self::start_with(redirect_uri, client_id, secret, &["code", "refresh_token"]).await
    }

    /// Like `start`, with the client's `authorization_type` list (without `code`, glewlwyd
    /// refuses the client at its authorization endpoint: `error=unauthorized_client`).
    pub async fn start_with(
        redirect_uri: &str,
        client_id: &str,
        secret: &str,
        authorization_types: &[&str],
    ) -> Glewlwyd {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}/api/oidc");
        let db = dir.path().join("glewlwyd.db");
        make_database(&db, &issuer);
        // glewlwyd 2.7 refuses to start ("secure connection is active but certificate is not
        // valid") unless the TLS file settings are present, even with use_secure_connection off.
        let conf = format!(
            r#"port={port}
bind_address="127.0.0.1"
external_url="{base}"
login_url="login.html"
static_files_path="/usr/share/glewlwyd/webapp/"
api_prefix="api"
allow_origin="*"
log_mode="console"
log_level="INFO"
cookie_secure=0
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
use_secure_connection=false
secure_connection_key_file="{dir}/unused.key"
secure_connection_pem_file="{dir}/unused.pem"
hash_algorithm="SHA512"
database =
{{
  type = "sqlite3"
  path = "{db}"
}};
"#,
            dir = dir.path().display(),
            db = db.display(),
        );
        let conf_path = dir.path().join("glewlwyd.conf");
        std::fs::write(&conf_path, conf).expect("write glewlwyd.conf");
        let log = std::fs::File::create(dir.path().join("glewlwyd.log")).expect("log");
        let child = Command::new(bin)
            .arg("--config-file")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start glewlwyd");
        let mut g = Glewlwyd {
            issuer,
            base,
            child,
            dir,
        };
        g.wait_ready().await;
        g.provision(redirect_uri, client_id, secret, authorization_types)
            .await;
        g
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "glewlwyd exited ({status}) during start-up:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("glewlwyd did not answer {url}:\n{}", self.log_text());
    }

    /// Users and the client, through the admin API.
    async fn provision(
        &self,
        redirect_uri: &str,
        client_id: &str,
        secret: &str,
        authorization_types: &[&str],
    ) {
        let admin = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client");
        let api = format!("{}/api", self.base);
        let r = admin
            .post(format!("{api}/auth/"))
            .json(&json!({"username": ADMIN.0, "password": ADMIN.1}))
            .send()
            .await
            .expect("admin sign-in");
        assert_eq!(r.status(), 200, "glewlwyd admin sign-in");
        let post = |path: &str, body: Value| {
            let req = admin.post(format!("{api}/{path}")).json(&body);
            async move {
                let r = req.send().await.expect("glewlwyd admin API");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert_eq!(status, 200, "glewlwyd admin API {body}: {text}");
            }
        };
        for u in &USERS {
            post(
                "user/",
                json!({"username": u.login, "name": u.name, "email": u.email,
                       "password": password(u.login), "scope": ["openid"], "enabled": true,
                       "roles": u.roles}),
            )
            .await;
        }
        post(
            "client/",
            json!({"client_id": client_id, "name": client_id, "confidential": true, "enabled": true,
                   "password": secret, "redirect_uri": [redirect_uri],
                   "authorization_type": authorization_types,
                   "token_endpoint_auth_method": ["client_secret_basic"], "scope": []}),
        )
        .await;
    }
}

/// What glewlwyd's login page does once the browser lands on `login.html?…&callback_url=…`:
/// signs `login` in with its password (`POST /api/auth/`), grants the client the scopes glewlwyd
/// knows among those asked (`GET`/`PUT /api/auth/grant/{client_id}`), and goes back to the
/// authorization endpoint with `g_continue`. Returns the last response: glewlwyd's redirect to the
/// client, or the API's refusal.
pub async fn sign_in(
    client: &reqwest::Client,
    login_page: &url::Url,
    login: &str,
) -> reqwest::Response {
    let param = |name: &str| {
        login_page
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (client_id, scope, callback) = (param("client_id"), param("scope"), param("callback_url"));
    let api = login_page.join("/api/").expect("API URL");
    let r = client
        .post(api.join("auth/").expect("URL"))
        .json(&json!({"username": login, "password": password(login)}))
        .send()
        .await
        .expect("glewlwyd sign-in");
    if r.status() != 200 {
        return r;
    }
    let mut grant_url = api.join("auth/grant/").expect("URL");
    grant_url
        .path_segments_mut()
        .expect("URL")
        .push(&client_id)
        .push(&scope);
    let known: Value = client
        .get(grant_url)
        .send()
        .await
        .expect("glewlwyd grant list")
        .json()
        .await
        .expect("grant list JSON");
    let granted: Vec<&str> = known["scope"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    // A user with none of the scopes has nothing to grant; the authorization endpoint refuses.
    if !granted.is_empty() {
        let mut put_url = api.join("auth/grant/").expect("URL");
        put_url.path_segments_mut().expect("URL").push(&client_id);
        let r = client
            .put(put_url)
            .json(&json!({"scope": granted.join(" ")}))
            .send()
            .await
            .expect("glewlwyd grant");
        if r.status() != 200 {
            return r;
        }
    }
    let sep = if callback.contains('?') { '&' } else { '?' };
    client
        .get(format!("{callback}{sep}g_continue"))
        .send()
        .await
        .expect("back to the authorization endpoint")
}

/// Whether `url` is glewlwyd's login page (the JS app's entry point).
pub fn is_login_page(url: &url::Url) -> bool {
    url.path().ends_with("/login.html") && url.query_pairs().any(|(k, _)| k == "callback_url")
}
