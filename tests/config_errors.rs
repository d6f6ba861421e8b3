//! Configuration errors (SPEC.md: "A config error names the key and the fix and stops start-up";
//! "flexgate never starts without a usable signing key"): each bad config gives a `ConfigError`
//! whose message names the key and says what to do. Also: the Flex presets derive exactly the
//! URLs of the contract, and `config::keys::load` fails closed on bad key material.

use flexgate::config::{keys, Config, ConfigError, SpKind};
use flexgate::saml::sign::SignMode;
use std::path::{Path, PathBuf};

const JQ: &str = "JQ0123456789abcdef0123456789abcdef";
const AC: &str = "AC0123456789abcdef0123456789abcdef";

const SERVER: &str = "[server]\npublic_url = \"https://sso.example.com\"\n";
const IDP: &str = "[idp]\nkey = \"certs/idp-key.pem\"\ncert = \"certs/idp-cert.pem\"\n";
const UPSTREAM: &str = "[upstream]\nissuer = \"https://example.us.auth0.com/\"\nclient_id = \"abc123\"\nclient_secret = \"${FLEXGATE_CLIENT_SECRET}\"\n";

fn sp_enhanced() -> String {
    format!("[[sp]]\nname = \"flex\"\nkind = \"flex-enhanced\"\nflex_connection = \"{JQ}\"\n")
}

fn env(k: &str) -> Option<String> {
    (k == "FLEXGATE_CLIENT_SECRET").then(|| "s3cret".to_string())
}

fn path() -> &'static Path {
    Path::new("/etc/flexgate/flexgate.toml")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, path(), env)
}

fn good() -> String {
    format!("{SERVER}{IDP}{UPSTREAM}{}", sp_enhanced())
}

/// Asserts the config is refused, and that the message names the file, the key and a fix
/// containing `fix`. Returns the message.
fn refused(text: &str, key: &str, fix: &str) -> String {
    let err = match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("/etc/flexgate/flexgate.toml"),
        "no file in: {msg}"
    );
    assert!(msg.contains(key), "{key:?} not named in: {msg}");
    let (_, fix_part) = msg
        .split_once("fix: ")
        .unwrap_or_else(|| panic!("no `fix:` in: {msg}"));
    assert!(fix_part.contains(fix), "fix does not say {fix:?}: {msg}");
    msg
}

fn invalid_key(text: &str) -> String {
    match load(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

#[test]
fn the_base_config_is_valid() {
    let c = load(&good()).unwrap();
    assert_eq!(c.server.public_url, "https://sso.example.com");
    assert_eq!(c.idp.entity_id, "https://sso.example.com/saml/metadata");
    assert_eq!(c.sso_url(), "https://sso.example.com/saml/sso");
    assert_eq!(c.callback_url(), "https://sso.example.com/oidc/callback");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.upstream.client_secret.expose(), "s3cret");
    assert_eq!(c.upstream.scopes, vec!["openid", "profile", "email"]);
    // Relative key paths start at the config file's folder.
    assert_eq!(c.idp.key, PathBuf::from("/etc/flexgate/certs/idp-key.pem"));
    let names: Vec<&str> = c.sps[0]
        .attributes
        .iter()
        .map(|a| a.saml_name.as_str())
        .collect();
    assert_eq!(names, vec!["email", "full_name", "image_url", "roles"]);
}

// ------------------------------------------------------------------ [server]

#[test]
fn missing_public_url() {
    let text = good().replace("public_url = \"https://sso.example.com\"\n", "");
    let msg = refused(&text, "public_url", "configuration reference");
    assert!(
        matches!(load(&text), Err(ConfigError::Syntax { .. })),
        "{msg}"
    );
}

#[test]
fn http_public_url_on_a_non_loopback_host() {
    let text = good().replace("https://sso.example.com", "http://sso.example.com");
    refused(&text, "server.public_url", "https URL");
    // Loopback http is fine (demo, tests).
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let text = good().replace("https://sso.example.com", ok);
        assert!(load(&text).is_ok(), "{ok}");
    }
    // Not loopback even though it looks like it.
    let text = good().replace("https://sso.example.com", "http://localhost.evil.example");
    refused(&text, "server.public_url", "https URL");
    let text = good().replace("https://sso.example.com", "https://sso.example.com/?x=1");
    refused(
        &text,
        "server.public_url",
        "remove everything after the path",
    );
}

#[test]
fn bad_listen() {
    for bad in ["8080", "0.0.0.0", "sso.example.com:8080", "127.0.0.1:99999"] {
        let text = good().replace("[server]\n", &format!("[server]\nlisten = \"{bad}\"\n"));
        let msg = refused(&text, "server.listen", "127.0.0.1:8080");
        assert!(msg.contains(bad), "{msg}");
    }
}

#[test]
fn admin_listen_is_off_by_default_and_checked() {
    assert_eq!(load(&good()).unwrap().server.admin_listen, None);
    let with = |v: &str| good().replace("[server]\n", &format!("[server]\n{v}\n"));
    let cfg = load(&with("admin_listen = \"127.0.0.1:9090\"")).unwrap();
    assert_eq!(
        cfg.server.admin_listen,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let msg = refused(
        &with("admin_listen = \"9090\""),
        "server.admin_listen",
        "127.0.0.1:9090",
    );
    assert!(msg.contains("9090"), "{msg}");
    refused(
        &with("listen = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:8080\""),
        "server.admin_listen",
        "its own port",
    );
}

// ------------------------------------------------------------------ [[sp]] presets and shapes

#[test]
fn jq_of_the_wrong_shape() {
    for bad in [
        "JQ0123",
        "JQ0123456789ABCDEF0123456789ABCDEF",
        "AC0123456789abcdef0123456789abcdef",
        "JQ0123456789abcdef0123456789abcdeg",
        "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef",
    ] {
        let text = good().replace(JQ, bad);
        refused(&text, "sp[0].flex_connection", "login/callback?connection=JQ");
    }
    let text = good().replace(&format!("flex_connection = \"{JQ}\"\n"), "");
    refused(&text, "sp[0].flex_connection", "Flex Console");
}

#[test]
fn ac_of_the_wrong_shape() {
    let legacy = |ac: &str| {
        format!(
            "{SERVER}{IDP}{UPSTREAM}[[sp]]\nname = \"flex\"\nkind = \"flex-legacy\"\naccount_sid = \"{ac}\"\n"
        )
    };
    for bad in [
        "AC123",
        JQ,
        "AC0123456789ABCDEF0123456789ABCDEF",
        "ac0123456789abcdef0123456789abcdef",
    ] {
        refused(&legacy(bad), "sp[0].account_sid", "Twilio Console");
    }
    let text = format!("{SERVER}{IDP}{UPSTREAM}[[sp]]\nname = \"flex\"\nkind = \"flex-legacy\"\n");
    refused(&text, "sp[0].account_sid", "Account SID");
}

#[test]
fn bad_region() {
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nregion = \"us-east-1\"\n",
    );
    refused(&text, "sp[0].region", "\"ie1\"");
}

#[test]
fn generic_without_entity_id_or_acs_url() {
    let base = format!("{SERVER}{IDP}{UPSTREAM}[[sp]]\nname = \"app\"\nkind = \"generic\"\n");
    refused(
        &format!("{base}acs_url = \"https://app.example.com/acs\"\n"),
        "sp[0].entity_id",
        "entity id",
    );
    refused(
        &format!("{base}entity_id = \"https://app.example.com\"\n"),
        "sp[0].acs_url",
        "Assertion Consumer Service URL",
    );
    let ok = format!(
        "{base}entity_id = \"https://app.example.com\"\nacs_url = \"https://app.example.com/acs\"\n"
    );
    let c = load(&ok).unwrap();
    assert_eq!(c.sps[0].kind, SpKind::Generic);
    // A generic SP needs no roles mapping.
    let ok = format!("{ok}[sp.attributes]\nemail = \"email\"\n");
    assert!(load(&ok).is_ok());
    // http ACS on a public host is refused.
    let bad = format!(
        "{base}entity_id = \"https://app.example.com\"\nacs_url = \"http://app.example.com/acs\"\n"
    );
    refused(&bad, "sp[0].acs_url", "https ACS URL");
}

#[test]
fn duplicate_entity_ids() {
    let text = format!(
        "{}{}",
        good(),
        sp_enhanced().replace("name = \"flex\"", "name = \"flex2\"")
    );
    let msg = refused(&text, "sp[1]", "its own entity id");
    assert!(msg.contains(&format!("urn:flex:{JQ}")), "{msg}");
    assert!(msg.contains("\"flex\""), "names the other [[sp]]: {msg}");
}

#[test]
fn duplicate_names() {
    let text = format!(
        "{}[[sp]]\nname = \"flex\"\nkind = \"flex-legacy\"\naccount_sid = \"{AC}\"\n",
        good()
    );
    refused(&text, "sp[1].name", "its own name");
}

#[test]
fn bad_sp_name() {
    let text = good().replace("name = \"flex\"", "name = \"flex prod/1\"");
    refused(&text, "sp[0].name", "/saml/init/{name}");
}

#[test]
fn unknown_kind() {
    let text = good().replace("kind = \"flex-enhanced\"", "kind = \"flex\"");
    refused(
        &text,
        "sp[0].kind",
        "\"flex-enhanced\", \"flex-legacy\" or \"generic\"",
    );
}

#[test]
fn unknown_sign_mode() {
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nsign = \"everything\"\n",
    );
    refused(&text, "sp[0].sign", "\"response\"");
}

#[test]
fn unknown_field_typo() {
    let text = good().replace("flex_connection", "flex_conection");
    let msg = refused(&text, "flex_conection", "configuration reference");
    assert!(matches!(load(&text), Err(ConfigError::Syntax { .. })));
    assert!(msg.contains("unknown field"), "{msg}");
    let text = good().replace("[upstream]\n", "[upstream]\nclient_secrets = \"x\"\n");
    refused(&text, "client_secrets", "configuration reference");
    let text = format!("{}[limits]\nmax_relaystate_bytes = 10\n", good());
    refused(&text, "max_relaystate_bytes", "configuration reference");
}

#[test]
fn unset_environment_variable() {
    let text = good();
    let err = Config::from_toml(&text, path(), |_| None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("upstream.client_secret"), "{msg}");
    assert!(msg.contains("FLEXGATE_CLIENT_SECRET"), "{msg}");
    assert!(msg.contains("fix: export FLEXGATE_CLIENT_SECRET="), "{msg}");
    // An unclosed ${ and a bad name are config errors too.
    let text = good().replace("${FLEXGATE_CLIENT_SECRET}", "${FLEXGATE_CLIENT_SECRET");
    refused(&text, "upstream.client_secret", "${NAME}");
    let text = good().replace("${FLEXGATE_CLIENT_SECRET}", "${1BAD-NAME}");
    refused(&text, "upstream.client_secret", "letters, digits and _");
    // Expanded everywhere, with the key's path in the message.
    let text = good().replace("https://sso.example.com", "${PUBLIC_URL}");
    refused(&text, "server.public_url", "export PUBLIC_URL=");
}

#[test]
fn empty_client_secret() {
    let text = good().replace("${FLEXGATE_CLIENT_SECRET}", "");
    refused(&text, "upstream.client_secret", "FLEXGATE_CLIENT_SECRET");
}

#[test]
fn scopes_without_openid() {
    let text = good().replace(
        "[upstream]\n",
        "[upstream]\nscopes = [\"profile\", \"email\"]\n",
    );
    refused(&text, "upstream.scopes", "add \"openid\"");
    let text = good().replace(
        "[upstream]\n",
        "[upstream]\nscopes = [\"openid\", \"profile email\"]\n",
    );
    refused(&text, "upstream.scopes", "one scope per string");
}

#[test]
fn upstream_http_on_a_non_loopback_host() {
    let text = good().replace(
        "https://example.us.auth0.com/",
        "http://example.us.auth0.com/",
    );
    let msg = refused(&text, "upstream.issuer", "discovery document");
    assert!(msg.contains("http"), "{msg}");
    for ok in [
        "http://127.0.0.1:4000/",
        "http://localhost:4000",
        "http://[::1]:4000/",
    ] {
        let text = good().replace("https://example.us.auth0.com/", ok);
        assert!(load(&text).is_ok(), "{ok}");
    }
    let text = good().replace(
        "https://example.us.auth0.com/",
        "ftp://example.us.auth0.com/",
    );
    refused(&text, "upstream.issuer", "discovery document");
}

#[test]
fn missing_roles_mapping_on_a_flex_sp() {
    let text = format!(
        "{}[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\n",
        good()
    );
    let msg = refused(&text, "sp[0].attributes", "add roles = ");
    assert!(msg.contains("`roles`"), "{msg}");
    let text = format!(
        "{}[sp.attributes]\nemail = \"email\"\nroles = \"app_metadata.flex.roles\"\n",
        good()
    );
    refused(&text, "sp[0].attributes", "add full_name = ");
    let text = format!(
        "{}[sp.attributes]\nfull_name = \"name\"\nroles = \"r\"\n",
        good()
    );
    refused(&text, "sp[0].attributes", "add email = \"email\"");
    let text = format!("{}[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\nroles = \"r\"\n\"https://x/roles\" = \"r\"\n", good());
    refused(&text, "sp[0].attributes.https://x/roles", "bare names");
}

#[test]
fn out_of_range_durations() {
    let text = good().replace("[idp]\n", "[idp]\nassertion_lifetime_secs = 86400\n");
    refused(&text, "idp.assertion_lifetime_secs", "between 30 and 3600");
    let text = good().replace("[upstream]\n", "[upstream]\ntimeout_secs = 0\n");
    refused(&text, "upstream.timeout_secs", "between 1 and 120");
    let text = good().replace("[server]\n", "[server]\nheader_timeout_secs = 0\n");
    refused(&text, "server.header_timeout_secs", "between 1 and 300");
    // A refused HSM PIN is never retried sooner than every 5 minutes.
    let text = good().replace("[idp]\n", "[idp]\npin_retry_secs = 60\n");
    refused(&text, "idp.pin_retry_secs", "between 300 and 86400");
    let text = format!("{}[mfa]\nreauth_window_secs = 61\n", good());
    refused(&text, "mfa.reauth_window_secs", "between 0 and 60");
}

#[test]
fn role_map_unknown_roles_are_collected_with_the_other_mistakes() {
    let text = good().replace("[server]\n", "[server]\nlisten = \"nowhere\"\n")
        + "[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\n[sp.role_map]\n\"Flex Agents\" = [\"agent\"]\n\"Flex Bosses\" = [\"boss\", \"supervisor\"]\n\"Nobody\" = []\n";
    let errors = match load(&text) {
        Err(ConfigError::Several(errors)) => errors,
        other => panic!("expected every problem, got {other:?}"),
    };
    let keys: Vec<String> = errors
        .iter()
        .map(|e| match e {
            ConfigError::Invalid { key, .. } => key.clone(),
            other => panic!("not keyed: {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "sp[0].role_map.\"Flex Bosses\"",
            "sp[0].role_map.\"Nobody\""
        ]
    );
    let msg = load(&text).unwrap_err().to_string();
    assert!(
        msg.contains("\"boss\"") && msg.contains("extra_roles"),
        "{msg}"
    );
}

#[test]
fn role_map_reads_the_groups_claim_and_replaces_the_roles_requirement() {
    // No `roles` mapping needed with a role map; groups default to the `groups` claim.
    let text = good()
        + "[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\n[sp.role_map]\n\"Flex Agents\" = [\"agent\"]\n\"00000000-aaaa\" = [\"supervisor\", \"wfo.team_leader\"]\n";
    let cfg = load(&text).unwrap();
    let rm = cfg.sps[0].role_map.clone().expect("a role map");
    // The issuer is an Auth0 tenant: the auth0 preset reads groups from `groups`.
    assert_eq!(rm.claims, ["groups"]);
    assert_eq!(rm.entries.len(), 2);
    // A named groups claim; it is the map's input, not a SAML attribute.
    let text = good()
        + "[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\ngroups = \"realm_access.roles\"\n[sp.role_map]\n\"flex-agent\" = [\"agent\"]\n";
    let cfg = load(&text).unwrap();
    assert_eq!(
        cfg.sps[0].role_map.as_ref().unwrap().claims,
        ["realm_access.roles"]
    );
    assert!(cfg.sps[0]
        .attributes
        .iter()
        .all(|a| a.saml_name != "groups"));
    // Without a role map nothing changes: roles is still required, no role map.
    let text = good() + "[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\n";
    refused(&text, "sp[0].attributes", "add roles = ");
    assert!(load(&good()).unwrap().sps[0].role_map.is_none());
    // extra_roles are accepted in the map.
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nextra_roles = [\"wfm\"]\n",
    ) + "[sp.role_map]\nPlanners = [\"wfm\"]\n";
    assert!(load(&text).is_ok(), "{:?}", load(&text).err());
}

#[test]
fn reauth_window_defaults_to_a_few_seconds() {
    let cfg = load(&good()).unwrap();
    assert_eq!(cfg.mfa.reauth_window, std::time::Duration::from_secs(5));
    let cfg = load(&format!("{}[mfa]\nreauth_window_secs = 0\n", good())).unwrap();
    assert_eq!(cfg.mfa.reauth_window, std::time::Duration::ZERO);
}

#[test]
fn no_sp_at_all() {
    let text = format!("{SERVER}{IDP}{UPSTREAM}");
    refused(&text, "sp", "add an [[sp]]");
}

#[test]
fn every_invalid_error_is_keyed() {
    // Spot-check the structured form too (what `flexgate check` prints).
    assert_eq!(
        invalid_key(&good().replace("kind = \"flex-enhanced\"", "kind = \"x\"")),
        "sp[0].kind"
    );
    assert_eq!(
        invalid_key(&good().replace("https://sso.example.com", "ftp://sso.example.com")),
        "server.public_url"
    );
}

// ------------------------------------------------------------------ presets

#[test]
fn enhanced_preset_defaults_to_us1() {
    let c = load(&good()).unwrap();
    let sp = &c.sps[0];
    assert_eq!(sp.kind, SpKind::FlexEnhanced);
    assert_eq!(sp.entity_id, format!("urn:flex:{JQ}"));
    assert_eq!(
        sp.acs_url,
        format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}")
    );
    assert_eq!(sp.sign, SignMode::Response);
    assert_eq!(
        c.sp_by_entity_id(&format!("urn:flex:{JQ}")).unwrap().name,
        "flex"
    );
}

#[test]
fn enhanced_preset_with_region_ie1() {
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nregion = \"ie1\"\n",
    );
    let c = load(&text).unwrap();
    assert_eq!(
        c.sps[0].acs_url,
        format!("https://login.flex.ie1.twilio.com/login/callback?connection={JQ}")
    );
    assert_eq!(c.sps[0].entity_id, format!("urn:flex:{JQ}"));
}

#[test]
fn legacy_preset() {
    let text = format!(
        "{SERVER}{IDP}{UPSTREAM}[[sp]]\nname = \"flex\"\nkind = \"flex-legacy\"\naccount_sid = \"{AC}\"\nsign = \"assertion\"\n"
    );
    let c = load(&text).unwrap();
    let sp = &c.sps[0];
    assert_eq!(sp.kind, SpKind::FlexLegacy);
    assert_eq!(
        sp.acs_url,
        format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2")
    );
    assert_eq!(
        sp.entity_id,
        format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata")
    );
    assert_eq!(sp.sign, SignMode::Assertion);
}

#[test]
fn explicit_entity_id_and_acs_override_a_preset() {
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nentity_id = \"urn:custom\"\nacs_url = \"https://login.flex.us1.twilio.com/custom\"\n",
    );
    let c = load(&text).unwrap();
    assert_eq!(c.sps[0].entity_id, "urn:custom");
    assert_eq!(c.sps[0].acs_url, "https://login.flex.us1.twilio.com/custom");
}

// ------------------------------------------------------------------ keys::load

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct KeyDir {
    dir: tempfile::TempDir,
}

impl KeyDir {
    /// A temp folder with copies of the test key (mode 0600) and cert.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kd = KeyDir { dir };
        kd.put(
            "idp-key.pem",
            &std::fs::read(repo().join("certs/test-idp-key.pem")).unwrap(),
            0o600,
        );
        kd.put(
            "idp-cert.pem",
            &std::fs::read(repo().join("certs/test-idp-cert.pem")).unwrap(),
            0o644,
        );
        kd
    }

    fn put(&self, name: &str, data: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn config(&self, idp_extra: &str) -> Config {
        let text = format!(
            "{SERVER}[idp]\nkey = \"idp-key.pem\"\ncert = \"idp-cert.pem\"\n{idp_extra}{UPSTREAM}{}",
            sp_enhanced()
        );
        Config::from_toml(&text, &self.dir.path().join("flexgate.toml"), env).unwrap()
    }

    fn load(&self, idp_extra: &str) -> Result<keys::KeyMaterial, ConfigError> {
        keys::load(&self.config(idp_extra))
    }
}

fn key_refused(r: Result<keys::KeyMaterial, ConfigError>, key: &str, fix: &str) -> String {
    let err = match r {
        Ok(_) => panic!("key material accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`{key}`")),
        "{key} not named in: {msg}"
    );
    let (_, fix_part) = msg.split_once("fix: ").expect("a fix");
    assert!(fix_part.contains(fix), "fix does not say {fix:?}: {msg}");
    msg
}

#[test]
fn good_key_material_loads() {
    let kd = KeyDir::new();
    let km = kd.load("").unwrap();
    assert!(
        km.cert.subject.contains("flexgate test IdP"),
        "{}",
        km.cert.subject
    );
    assert!(km.next_cert.is_none());
    assert_eq!(km.cert.sha256_fingerprint.len(), 32 * 3 - 1);
    let debug = format!("{km:?}");
    assert!(
        !debug.contains("PRIVATE KEY"),
        "Debug must not print the key"
    );
}

#[test]
fn missing_key_file() {
    let kd = KeyDir::new();
    std::fs::remove_file(kd.dir.path().join("idp-key.pem")).unwrap();
    key_refused(kd.load(""), "idp.key", "path");
}

#[test]
fn missing_cert_file() {
    let kd = KeyDir::new();
    std::fs::remove_file(kd.dir.path().join("idp-cert.pem")).unwrap();
    key_refused(kd.load(""), "idp.cert", "flexgate keygen");
}

#[test]
fn key_not_pem() {
    let kd = KeyDir::new();
    kd.put("idp-key.pem", b"this is not a key\n", 0o600);
    key_refused(kd.load(""), "idp.key", "flexgate keygen");
    // A certificate where the key should be.
    kd.put(
        "idp-key.pem",
        &std::fs::read(repo().join("certs/test-idp-cert.pem")).unwrap(),
        0o600,
    );
    key_refused(kd.load(""), "idp.key", "flexgate keygen");
}

#[test]
fn cert_not_pem() {
    let kd = KeyDir::new();
    kd.put(
        "idp-cert.pem",
        &std::fs::read(repo().join("certs/test-idp-key.pem")).unwrap(),
        0o644,
    );
    key_refused(kd.load(""), "idp.cert", "BEGIN CERTIFICATE");
}

#[test]
fn cert_not_matching_key() {
    let kd = KeyDir::new();
    kd.put(
        "idp-cert.pem",
        &std::fs::read(repo().join("certs/test-other-cert.pem")).unwrap(),
        0o644,
    );
    key_refused(kd.load(""), "idp.cert", "generated together with the key");
}

#[test]
fn key_readable_by_others_is_refused_unless_allowed() {
    let kd = KeyDir::new();
    kd.put(
        "idp-key.pem",
        &std::fs::read(repo().join("certs/test-idp-key.pem")).unwrap(),
        0o644,
    );
    let msg = key_refused(kd.load(""), "idp.key", "chmod 600");
    assert!(msg.contains("644"), "{msg}");
    assert!(kd.load("allow_insecure_key_permissions = true\n").is_ok());
    kd.put(
        "idp-key.pem",
        &std::fs::read(repo().join("certs/test-idp-key.pem")).unwrap(),
        0o640,
    );
    key_refused(kd.load(""), "idp.key", "chmod 600");
    kd.put(
        "idp-key.pem",
        &std::fs::read(repo().join("certs/test-idp-key.pem")).unwrap(),
        0o400,
    );
    assert!(kd.load("").is_ok());
}

#[test]
fn a_1024_bit_key_is_refused() {
    let kd = KeyDir::new();
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
    kd.put(
        "idp-key.pem",
        &key.private_key_to_pem_pkcs8().unwrap(),
        0o600,
    );
    let msg = key_refused(kd.load(""), "idp.key", "--bits 2048");
    assert!(msg.contains("2048 bits"), "{msg}");
}

#[test]
fn a_non_rsa_key_is_refused() {
    let kd = KeyDir::new();
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    kd.put(
        "idp-key.pem",
        &key.private_key_to_pem_pkcs8().unwrap(),
        0o600,
    );
    key_refused(kd.load(""), "idp.key", "flexgate keygen");
}

#[test]
fn next_cert_is_loaded_or_refused() {
    let kd = KeyDir::new();
    kd.put(
        "next.pem",
        &std::fs::read(repo().join("certs/test-other-cert.pem")).unwrap(),
        0o644,
    );
    let km = kd.load("next_cert = \"next.pem\"\n").unwrap();
    assert!(km.next_cert.unwrap().subject.contains("other key"));
    key_refused(
        kd.load("next_cert = \"missing.pem\"\n"),
        "idp.next_cert",
        "flexgate keygen",
    );
}

#[test]
fn region_with_non_ascii_is_an_error_not_a_panic() {
    // 3 bytes, but "é" straddles the byte-2 boundary `validate_sp` slices at.
    let text = good().replace(
        "kind = \"flex-enhanced\"\n",
        "kind = \"flex-enhanced\"\nregion = \"aé\"\n",
    );
    refused(&text, "sp[0].region", "\"ie1\"");
}

#[test]
fn store_urls() {
    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@redis.internal:6380",
        "redis+sentinel://s1:26379,s2:26379/mymaster",
        "rediss+sentinel://:pw@s1:26379/mymaster/2",
        "redis+cluster://n1:6379,n2:6379",
        "rediss+cluster://:pw@n1:6379,n2:6379",
    ] {
        let text = format!("{}\n[store]\nurl = \"{url}\"\n", good());
        assert!(load(&text).is_ok(), "{url}: {:?}", load(&text).err());
    }
    let text = format!("{}\n[store]\nurl = \"memcached://x:11211\"\n", good());
    refused(&text, "store.url", "rediss+cluster://");
    let text = format!(
        "{}\n[store]\nurl = \"rediss+sentinel://s1:26379\"\n",
        good()
    );
    refused(&text, "store.url", "redis+sentinel://host:26379/SERVICE");
}

// ------------------------------------------------------------ every mistake, and absurd numbers

#[test]
fn three_mistakes_in_three_sections_are_all_reported() {
    let text = good()
        .replace("[server]\n", "[server]\nlisten = \"nowhere\"\n")
        .replace(
            "[upstream]\n",
            "[upstream]\ntoken_auth_method = \"private_key_jwt\"\n",
        )
        .replace(
            "kind = \"flex-enhanced\"\n",
            "kind = \"flex-enhanced\"\nmfa = \"sometimes\"\n",
        );
    let errors = match load(&text) {
        Err(ConfigError::Several(errors)) => errors,
        other => panic!("expected every problem, got {other:?}"),
    };
    let keys: Vec<String> = errors
        .iter()
        .map(|e| match e {
            ConfigError::Invalid { key, .. } => key.clone(),
            other => panic!("not keyed: {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        ["server.listen", "upstream.token_auth_method", "sp[0].mfa"],
        "in the file's order"
    );
    let msg = load(&text).unwrap_err().to_string();
    for fix in [
        "\"127.0.0.1:8080\"",
        "\"client_secret_basic\" or \"client_secret_post\"",
        "\"never\", \"always\"",
    ] {
        assert!(msg.contains(fix), "{fix:?} missing: {msg}");
    }
    assert_eq!(
        msg.matches("/etc/flexgate/flexgate.toml").count(),
        3,
        "{msg}"
    );
}

#[test]
fn several_mistakes_in_one_section_and_in_several_sps_are_all_reported() {
    let text = good().replace(
        "[server]\n",
        "[server]\nshutdown_grace_secs = 9999\nrequest_timeout_secs = 1\n",
    )
        + "[[sp]]\nname = \"flex prod\"\nkind = \"flex-legacy\"\naccount_sid = \"AC123\"\n";
    let msg = load(&text).unwrap_err().to_string();
    for key in [
        "server.shutdown_grace_secs",
        "server.request_timeout_secs",
        "sp[1].name",
        "sp[1].account_sid",
    ] {
        assert!(msg.contains(key), "{key} missing: {msg}");
    }
}

/// Absurd numbers in every `*_secs` / `*_ms` family: an error naming the key and its range,
/// never a panic or a silent overflow.
#[test]
fn absurd_numbers_name_the_key_and_its_range() {
    let huge = "99999999999999999";
    let cases = [
        (
            "[server]\n",
            "login_timeout_secs",
            "server.login_timeout_secs",
            "30 and 3600 seconds",
        ),
        (
            "[server]\n",
            "shutdown_grace_secs",
            "server.shutdown_grace_secs",
            "0 and 300 seconds",
        ),
        (
            "[server]\n",
            "request_timeout_secs",
            "server.request_timeout_secs",
            "5 and 300 seconds",
        ),
        (
            "[server]\n",
            "header_timeout_secs",
            "server.header_timeout_secs",
            "1 and 300 seconds",
        ),
        (
            "[idp]\n",
            "assertion_lifetime_secs",
            "idp.assertion_lifetime_secs",
            "30 and 3600 seconds",
        ),
        (
            "[idp]\n",
            "clock_skew_secs",
            "idp.clock_skew_secs",
            "0 and 600 seconds",
        ),
        (
            "[idp]\n",
            "request_max_age_secs",
            "idp.request_max_age_secs",
            "30 and 3600 seconds",
        ),
        (
            "[upstream]\n",
            "timeout_secs",
            "upstream.timeout_secs",
            "1 and 120 seconds",
        ),
    ];
    for (section, name, key, range) in cases {
        let text = good().replace(section, &format!("{section}{name} = {huge}\n"));
        refused(&text, key, range);
    }
    let text = format!(
        "{}[store]\nurl = \"redis://127.0.0.1:6379\"\ntimeout_ms = {huge}\n",
        good()
    );
    refused(&text, "store.timeout_ms", "50 and 30000 milliseconds");
    let text = format!(
        "{}[upstream.management]\nclient_id = \"m\"\nclient_secret = \"s\"\ncache_secs = {huge}\n",
        good()
    );
    refused(
        &text,
        "upstream.management.cache_secs",
        "0 and 3600 seconds",
    );
    let management = |line: &str| {
        format!(
            "{}[upstream.management]\nclient_id = \"m\"\nclient_secret = \"s\"\n{line}",
            good()
        )
    };
    for v in ["1", "4", "86401", huge] {
        refused(
            &management(&format!("prefetch_secs = {v}\n")),
            "upstream.management.prefetch_secs",
            "between 5 and 86400 seconds, or 0",
        );
    }
    let prefetch = |line: &str| {
        load(&management(line))
            .unwrap()
            .upstream
            .management
            .unwrap()
            .prefetch
    };
    for (v, want) in [("0", None), ("5", Some(5)), ("86400", Some(86_400))] {
        let got = prefetch(&format!("prefetch_secs = {v}\n"));
        assert_eq!(got, want.map(std::time::Duration::from_secs), "{v}");
    }
    assert_eq!(
        prefetch(""),
        Some(std::time::Duration::from_secs(300)),
        "on by default"
    );
    // Negative, and beyond what TOML integers hold: refused by the parser, naming the key.
    for v in ["-1", "99999999999999999999999"] {
        let text = good().replace("[idp]\n", &format!("[idp]\nclock_skew_secs = {v}\n"));
        let msg = refused(&text, "clock_skew_secs", "configuration reference");
        assert!(
            matches!(load(&text), Err(ConfigError::Syntax { .. })),
            "{msg}"
        );
    }
}

#[test]
fn store_url_is_checked_without_a_client() {
    for (url, problem) in [
        ("redis+sentinel://s1:26379", "Sentinel service name"),
        ("redis+cluster://", "missing or malformed"),
        ("redis+cluster://n1:99999", "missing or malformed"),
        ("redis://[::1", "is not a URL"),
        ("memcached://x:11211", "uses the scheme \"memcached\""),
    ] {
        let text = format!("{}\n[store]\nurl = \"{url}\"\n", good());
        let msg = refused(&text, "store.url", "redis+sentinel://host:26379/SERVICE");
        assert!(msg.contains(problem), "{url}: {msg}");
    }
}

/// `good()` with another issuer (and `extra` added to `[upstream]`).
fn with_issuer(issuer: &str, extra: &str) -> String {
    good().replace(
        "issuer = \"https://example.us.auth0.com/\"\n",
        &format!("issuer = \"{issuer}\"\n{extra}"),
    )
}

const ROLE_MAP: &str = "[sp.role_map]\n\"Flex Agents\" = [\"agent\"]\n";

#[test]
fn the_provider_preset_follows_the_issuer_and_says_why() {
    let cases = [
        ("https://example.us.auth0.com/", "auth0"),
        ("https://acme.okta.com/oauth2/default", "okta"),
        (
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            "entra",
        ),
        ("https://sso.example.com/realms/flex", "keycloak"),
        ("https://login.example.com/", "generic"),
    ];
    for (issuer, want) in cases {
        let cfg =
            load(&(with_issuer(issuer, "") + ROLE_MAP)).unwrap_or_else(|e| panic!("{issuer}: {e}"));
        assert_eq!(cfg.upstream.provider.name, want, "{issuer}");
        assert!(!cfg.upstream.provider_reason.is_empty());
    }
    let cfg = load(&with_issuer(
        "https://login.example.com/",
        "provider = \"okta\"\n",
    ))
    .map(|c| c.upstream.provider);
    // Okta sends no Flex roles of its own: without a role map the config says what to add.
    assert!(cfg.is_err());
    let cfg =
        load(&(with_issuer("https://login.example.com/", "provider = \"okta\"\n") + ROLE_MAP))
            .unwrap();
    assert_eq!(cfg.upstream.provider.name, "okta");
    assert!(cfg.upstream.provider_reason.contains("[upstream] provider"));
    refused(
        &with_issuer("https://login.example.com/", "provider = \"ping\"\n"),
        "upstream.provider",
        "\"okta\"",
    );
    // An Auth0 custom domain with [upstream.management] is Auth0.
    let text = with_issuer("https://login.acme.com/", "")
        + "[upstream.management]\nurl = \"https://acme.us.auth0.com\"\nclient_id = \"m\"\nclient_secret = \"s\"\n";
    let cfg = load(&text).unwrap();
    assert_eq!(cfg.upstream.provider.name, "auth0");
    assert!(cfg
        .upstream
        .provider_reason
        .contains("[upstream.management]"));
}

#[test]
fn presets_set_the_default_claims_and_groups() {
    let okta = load(&(with_issuer("https://acme.okta.com/oauth2/default", "") + ROLE_MAP)).unwrap();
    let names: Vec<(&str, &str)> = okta.sps[0]
        .attributes
        .iter()
        .map(|a| (a.saml_name.as_str(), a.claim.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("email", "email"),
            ("full_name", "name"),
            ("image_url", "picture")
        ]
    );
    assert_eq!(okta.sps[0].role_map.as_ref().unwrap().claims, ["groups"]);
    let kc = load(&(with_issuer("https://sso.example.com/realms/flex", "") + ROLE_MAP)).unwrap();
    assert_eq!(
        kc.sps[0].role_map.as_ref().unwrap().claims,
        [
            "realm_access.roles",
            "resource_access.abc123.roles",
            "groups"
        ]
    );
    let entra =
        load(&(with_issuer("https://login.microsoftonline.com/t/v2.0", "") + ROLE_MAP)).unwrap();
    assert_eq!(
        entra.sps[0].role_map.as_ref().unwrap().claims,
        ["roles", "groups"]
    );
    assert!(entra.sps[0]
        .attributes
        .iter()
        .all(|a| a.saml_name != "image_url"));
    let graph = entra
        .upstream
        .graph
        .clone()
        .expect("Graph settings for Entra");
    assert_eq!(graph.graph_url, "https://graph.microsoft.com");
    assert_eq!(
        graph.token_url,
        "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    );
    // Entra on another host (a test stand-in) must name the token endpoint.
    refused(
        &(with_issuer("https://login.example.com/", "provider = \"entra\"\n") + ROLE_MAP),
        "upstream.graph_token_url",
        "oauth2/v2.0/token",
    );
    let cfg = load(&(with_issuer("https://login.example.com/", "provider = \"entra\"\ngraph_url = \"http://127.0.0.1:9/\"\ngraph_token_url = \"http://127.0.0.1:9/token\"\n") + ROLE_MAP)).unwrap();
    let g = cfg.upstream.graph.unwrap();
    assert_eq!(
        (g.graph_url.as_str(), g.token_url.as_str()),
        ("http://127.0.0.1:9", "http://127.0.0.1:9/token")
    );
    // Without a role map, a preset with no roles convention names the fix.
    let msg = refused(
        &with_issuer("https://sso.example.com/realms/flex", ""),
        "sp[0].role_map",
        "[sp.role_map]",
    );
    assert!(msg.contains("Keycloak"), "{msg}");
    // Auth0 keeps app_metadata.flex.roles.
    let auth0 = load(&good()).unwrap();
    assert!(auth0.sps[0]
        .attributes
        .iter()
        .any(|a| a.saml_name == "roles" && a.claim == "app_metadata.flex.roles"));
}

#[test]
fn provider_specific_keys_are_refused_elsewhere() {
    refused(
        &(with_issuer(
            "https://acme.okta.com/",
            "connection = \"Username-Password-Authentication\"\n",
        ) + ROLE_MAP),
        "upstream.connection",
        "remove it",
    );
    refused(
        &(with_issuer(
            "https://acme.okta.com/",
            "hosted_domain = \"example.com\"\n",
        ) + ROLE_MAP),
        "upstream.hosted_domain",
        "provider = \"google\"",
    );
    refused(
        &(good().replace(
            "client_id = \"abc123\"\n",
            "client_id = \"abc123\"\ngraph_url = \"https://graph.microsoft.com\"\n",
        )),
        "upstream.graph_url",
        "provider = \"entra\"",
    );
    refused(
        &(with_issuer(
            "https://sso.example.com/realms/flex",
            "cloud_identity_url = \"https://cloudidentity.googleapis.com\"\n",
        ) + ROLE_MAP),
        "upstream.cloud_identity_url",
        "provider = \"google\"",
    );
    let text = with_issuer("https://acme.okta.com/", "")
        + ROLE_MAP
        + "[upstream.management]\nclient_id = \"m\"\nclient_secret = \"s\"\n";
    refused(&text, "upstream.management", "remove [upstream.management]");
}

#[test]
fn google_needs_its_hosted_domain_and_a_key_for_groups() {
    let google = "https://accounts.google.com";
    let msg = refused(
        &with_issuer(google, ""),
        "upstream.hosted_domain",
        "hosted_domain = \"example.com\"",
    );
    assert!(msg.contains("anyone with a Google account"), "{msg}");
    refused(
        &with_issuer(google, "hosted_domain = \"not a domain\"\n"),
        "upstream.hosted_domain",
        "example.com",
    );
    // A role map needs the Cloud Identity lookup.
    let msg = refused(
        &(with_issuer(google, "hosted_domain = \"Example.com\"\n") + ROLE_MAP),
        "upstream.google_service_account_key",
        "Groups Reader",
    );
    assert!(msg.contains("carry no groups"), "{msg}");
    refused(
        &(with_issuer(google, "hosted_domain = \"example.com\"\ngoogle_service_account_key = \"/nonexistent/sa.json\"\n") + ROLE_MAP),
        "upstream.google_service_account_key",
        "JSON key",
    );
    let dir = std::env::temp_dir().join(format!("flexgate-sa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("sa.json");
    std::fs::write(&key, "{}").unwrap();
    let cfg = load(
        &(with_issuer(
            google,
            &format!(
                "hosted_domain = \"Example.com\"\ngoogle_service_account_key = \"{}\"\n",
                key.display()
            ),
        ) + ROLE_MAP),
    )
    .unwrap();
    assert_eq!(cfg.upstream.hosted_domain.as_deref(), Some("example.com"));
    let g = cfg.upstream.google.clone().unwrap();
    assert_eq!(g.cloud_identity_url, "https://cloudidentity.googleapis.com");
    assert_eq!(g.service_account_key, key);
    std::fs::remove_dir_all(&dir).ok();
}
