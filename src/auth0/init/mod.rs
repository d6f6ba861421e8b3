//! `flexgate init`: the Auth0 side of a deployment in one command, through the Management API —
//! a Regular Web Application with flexgate's callback, a post-login Action that puts
//! `app_metadata.flex.roles` into a namespaced ID-token claim (deployed, and bound into the Login
//! flow after the Actions already there), then `flexgate.toml`, `flexgate.env` and the signing
//! key pair. Objects are found by name: a second run changes nothing, and repairs drift.

pub mod action;
pub mod api;
mod apply;
pub mod files;
pub mod plan;
pub mod tenant;

use files::{FileChange, ENV, SECRET_VAR};
use plan::{ActionPlan, ActionState, AppPlan, AppState, Binding, BindingPlan, Change};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The Management API calls `init` makes: JSON in, JSON out, paths under the tenant's base URL.
#[async_trait::async_trait]
pub trait MgmtApi: Send + Sync {
    async fn get(&self, path: &str) -> Result<Value, InitError>;
    async fn post(&self, path: &str, body: &Value) -> Result<Value, InitError>;
    async fn patch(&self, path: &str, body: &Value) -> Result<Value, InitError>;
    /// The scopes the credentials carry, when they can be known ahead of the calls.
    async fn granted_scopes(&self) -> Result<Option<Vec<String>>, InitError>;
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Credentials(String),
    #[error("the Management API credentials lack the scope(s) {scopes} ({message}); grant them to the Machine-to-Machine application under APIs → Auth0 Management API → Machine to Machine Applications (the README lists every scope `flexgate init` needs)")]
    Scope { scopes: String, message: String },
    #[error("{0}")]
    Api(String),
    /// Someone else changed the tenant while `init` ran (exit 1: look, then run again).
    #[error("{0}")]
    Conflict(String),
    #[error("the Action {name:?} did not build ({status}); open it in the dashboard (Actions → Library) to see why, then run `flexgate init` again")]
    Build { name: String, status: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Keygen(crate::keygen::KeygenError),
    #[error("the configuration `flexgate init` would write is not valid: {0}")]
    Config(crate::config::ConfigError),
}

impl InitError {
    /// 2 for bad usage, credentials, scopes or configuration; 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::Usage(_)
            | InitError::Credentials(_)
            | InitError::Scope { .. }
            | InitError::Config(_) => 2,
            InitError::Keygen(crate::keygen::KeygenError::Exists(_)) => 2,
            _ => 1,
        }
    }
}

/// The command line of `flexgate init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub domain: String,
    pub public_url: String,
    pub flex_connection: String,
    pub region: String,
    pub app_name: String,
    pub out: PathBuf,
    pub dry_run: bool,
    pub force: bool,
}

/// What `init` wants the tenant and the folder to hold, derived from the options.
#[derive(Debug, Clone)]
pub struct Desired {
    pub domain: String,
    pub public_url: String,
    pub callback: String,
    pub claim: String,
    pub action_name: String,
}

/// The tenant domain as Auth0 shows it (`example.us.auth0.com`); a pasted URL is accepted.
pub fn tenant_domain(d: &str) -> Result<String, InitError> {
    let d = d.trim();
    let d = d
        .strip_prefix("https://")
        .unwrap_or(d)
        .trim_end_matches('/');
    let ok = !d.is_empty()
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(d.to_ascii_lowercase())
    } else {
        Err(InitError::Usage(format!(
            "--auth0-domain {d:?} is not a tenant domain; pass it as Auth0 shows it under Settings, e.g. example.us.auth0.com"
        )))
    }
}

impl Desired {
    /// The Action's code for flexgate's application `client_id`.
    pub fn action_code(&self, client_id: &str) -> String {
        action::code(&self.claim, client_id)
    }

    /// Validates the options by rendering the config they lead to (with a placeholder client id)
    /// through the config loader, so every mistake is named as `flexgate check` names it.
    pub fn new(o: &InitOptions) -> Result<Desired, InitError> {
        let domain = tenant_domain(&o.domain)?;
        let probe = files::config_text(&files::ConfigValues {
            domain: &domain,
            public_url: o.public_url.trim_end_matches('/'),
            client_id: "placeholder",
            token_auth_method: plan::SECRET_METHODS[0],
            flex_connection: &o.flex_connection,
            region: &o.region,
            roles_claim: "https://placeholder/flex_roles",
        });
        let cfg = crate::config::Config::from_toml(&probe, &o.out.join(files::CONFIG), |k| {
            (k == SECRET_VAR).then(|| "placeholder".to_string())
        })
        .map_err(InitError::Config)?;
        let origin = url::Url::parse(&cfg.server.public_url)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| InitError::Usage(format!("--public-url: {e}")))?;
        let claim = format!("{origin}/flex_roles");
        if o.app_name.trim().is_empty() {
            return Err(InitError::Usage("--app-name must not be empty".into()));
        }
        Ok(Desired {
            domain,
            public_url: cfg.server.public_url.clone(),
            callback: cfg.callback_url(),
            claim,
            action_name: format!("{}-flex-roles", o.app_name.trim()),
        })
    }
}

/// What the tenant holds now.
#[derive(Debug, Clone)]
pub struct Current {
    pub app: Option<AppState>,
    /// `Some(Ok)` when read; `Some(Err)` when the token may not read it (read:client_keys).
    pub secret: Option<Result<String, String>>,
    pub action: Option<ActionState>,
    pub bindings: Vec<Binding>,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: AppPlan,
    pub action: ActionPlan,
    pub binding: BindingPlan,
    pub config: FileChange,
    pub env: FileChange,
    pub keys: bool,
    /// Why `env` could not be compared, if it could not.
    pub env_note: Option<String>,
    /// The mode of an existing `flexgate.env` that is not 0600 (fixed when it is kept).
    pub env_mode: Option<u32>,
}

impl Plan {
    /// The mode of a kept `flexgate.env` to fix (a rewritten one is written 0600 anyway).
    pub fn env_mode_fix(&self) -> Option<u32> {
        self.env_mode.filter(|_| self.env == FileChange::Unchanged)
    }
}

impl Plan {
    pub fn changes(&self) -> usize {
        [
            self.app.change.is_change(),
            self.action.change.is_change(),
            self.binding.change.is_change(),
            self.config != FileChange::Unchanged,
            self.env != FileChange::Unchanged,
            self.env_mode_fix().is_some(),
            self.keys,
        ]
        .iter()
        .filter(|c| **c)
        .count()
    }
}

/// Reads what the tenant holds (GET calls only).
pub async fn read(
    api: &dyn MgmtApi,
    d: &Desired,
    app_name: &str,
    env_path: &Path,
) -> Result<Current, InitError> {
    let app = tenant::find_app(api, app_name).await?;
    let secret = match &app {
        // The secret is needed to write flexgate.env, or to compare it with one that exists.
        Some(a) => match tenant::client_secret(api, &a.client_id).await {
            Ok(s) => Some(Ok(s)),
            Err(InitError::Scope { scopes, .. }) if env_path.exists() => Some(Err(scopes)),
            Err(e) => return Err(e),
        },
        None => None,
    };
    let action = tenant::find_action(api, &d.action_name).await?;
    let bindings = tenant::bindings(api).await?;
    Ok(Current {
        app,
        secret,
        action,
        bindings,
    })
}

/// The config text for the application `client_id` using token method `method`.
pub(super) fn config_for(d: &Desired, o: &InitOptions, client_id: &str, method: &str) -> String {
    files::config_text(&files::ConfigValues {
        domain: &d.domain,
        public_url: &d.public_url,
        client_id,
        token_auth_method: method,
        flex_connection: &o.flex_connection,
        region: &o.region,
        roles_claim: &d.claim,
    })
}

/// Decides every step (no I/O but reading the output folder).
pub fn make_plan(d: &Desired, o: &InitOptions, cur: &Current) -> Result<Plan, InitError> {
    let app = plan::plan_app(&o.app_name, &d.callback, cur.app.as_ref());
    // Before the application exists its client id is not known: no code there can be flexgate's,
    // and the one deployed is written with the id the application is created with.
    let client_id = cur.app.as_ref().map_or("", |a| a.client_id.as_str());
    let code = d.action_code(client_id);
    let action = plan::plan_action(&d.action_name, &code, cur.action.as_ref());
    let action_id = cur.action.as_ref().map(|a| a.id.as_str());
    let binding = plan::plan_binding(&cur.bindings, &d.action_name, action_id);
    let method = plan::planned_auth_method(cur.app.as_ref());
    let want_config = cur
        .app
        .as_ref()
        .map(|a| config_for(d, o, &a.client_id, method));
    let config = files::file_change(&o.out.join(files::CONFIG), want_config.as_deref())?;
    let env_path = o.out.join(ENV);
    let (env, env_note) = match &cur.secret {
        Some(Ok(s)) => (files::env_change(&env_path, s)?, None),
        Some(Err(scopes)) => (
            FileChange::Unchanged,
            Some(format!("kept, not compared: the token lacks {scopes}")),
        ),
        None => (files::file_change(&env_path, None)?, None),
    };
    Ok(Plan {
        app,
        action,
        binding,
        config,
        env,
        keys: files::keys_needed(&o.out)?,
        env_note,
        env_mode: files::env_mode_to_fix(&env_path)?,
    })
}

fn step(out: &mut dyn Write, change: &Change, what: &str) {
    let _ = writeln!(out, "  {:<10} {what}", change.verb());
    if let Change::Update(diffs) = change {
        for d in diffs {
            let _ = writeln!(out, "               - {d}");
        }
    }
}

/// The plan as people read it.
pub fn render_plan(out: &mut dyn Write, p: &Plan, d: &Desired, o: &InitOptions) {
    let _ = writeln!(out, "plan for tenant {}:", d.domain);
    step(
        out,
        &p.app.change,
        &format!("application {:?} (Regular Web Application)", o.app_name),
    );
    if p.app.change == Change::Create {
        let _ = writeln!(out, "               - callback {}", d.callback);
    }
    step(
        out,
        &p.action.change,
        &format!(
            "post-login Action {:?} (claim {}, runtime {})",
            d.action_name,
            d.claim,
            plan::RUNTIME
        ),
    );
    step(out, &p.binding.change, "Login flow binding");
    let file = |out: &mut dyn Write, c: &FileChange, path: PathBuf, note: Option<&str>| {
        let mut notes: Vec<&str> = note.into_iter().collect();
        if *c == FileChange::Replace && !o.force {
            notes.push("exists with other contents: pass --force to replace it");
        }
        let extra = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let _ = writeln!(out, "  {:<10} {}{extra}", c.verb(), path.display());
    };
    file(out, &p.config, o.out.join(files::CONFIG), None);
    match p.env_mode_fix() {
        Some(m) => {
            let note = p
                .env_note
                .as_deref()
                .map(|n| format!("{n}; "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<10} {} ({note}mode {m:04o} -> 0600: it holds the client secret)",
                "chmod",
                o.out.join(ENV).display()
            );
        }
        None => file(
            out,
            &p.env,
            o.out.join(ENV),
            p.env_note.as_deref().or(Some("mode 0600")),
        ),
    }
    let keys = if p.keys {
        FileChange::Create
    } else {
        FileChange::Unchanged
    };
    file(
        out,
        &keys,
        o.out.join("certs/idp-key.pem"),
        Some("mode 0600, with certs/idp-cert.pem, by keygen"),
    );
}

/// The scopes the plan's write calls need (the reads have already succeeded).
pub fn required_scopes(p: &Plan) -> Vec<&'static str> {
    let mut need = Vec::new();
    match p.app.change {
        Change::Create => need.push("create:clients"),
        Change::Update(_) => need.push("update:clients"),
        Change::Unchanged => {}
    }
    // Creating and deploying an Action take create:actions; editing it and the bindings update:actions.
    if p.action.change == Change::Create || p.action.deploy {
        need.push("create:actions");
    }
    if matches!(p.action.change, Change::Update(_)) && p.action.body.is_some()
        || p.binding.change.is_change()
    {
        need.push("update:actions");
    }
    need
}

/// Stops before the first write when the credentials visibly lack a scope the plan needs.
async fn check_scopes(api: &dyn MgmtApi, p: &Plan) -> Result<(), InitError> {
    let Some(granted) = api.granted_scopes().await? else {
        return Ok(());
    };
    let missing: Vec<&str> = required_scopes(p)
        .into_iter()
        .filter(|s| !granted.iter().any(|g| g == s))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(InitError::Scope {
        scopes: missing.join(", "),
        message: "the token's scopes do not cover this plan; nothing was changed".into(),
    })
}

/// Prints what to paste into Flex Console, from the files as they now are (as `check` does).
fn print_flex_console(o: &InitOptions, out: &mut dyn Write) -> Result<(), InitError> {
    let path = o.out.join(files::CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| InitError::Io(path.clone(), e))?;
    let env = std::fs::read_to_string(o.out.join(ENV)).unwrap_or_default();
    let secret = files::env_secret(&env);
    let cfg = crate::config::Config::from_toml(&text, &path, |k| {
        if k == SECRET_VAR {
            secret.clone()
        } else {
            std::env::var(k).ok()
        }
    })
    .map_err(InitError::Config)?;
    let cert = crate::config::keys::load(&cfg)
        .map(|k| k.cert.pem.clone())
        .unwrap_or_default();
    let console = crate::flex_console::flex_console(&cfg);
    let _ = write!(
        out,
        "{}",
        crate::flex_console::render_flex_console(&console, &cert)
    );
    let _ = writeln!(
        out,
        "\nnext: load {} into flexgate's environment, then `flexgate check --config {}`",
        o.out.join(ENV).display(),
        path.display()
    );
    Ok(())
}

/// Runs `init`: reads, plans, prints the plan, and (unless `dry_run`) applies it.
pub async fn run(
    api: &dyn MgmtApi,
    o: &InitOptions,
    out: &mut dyn Write,
) -> Result<Plan, InitError> {
    let d = Desired::new(o)?;
    let cur = read(api, &d, &o.app_name, &o.out.join(ENV)).await?;
    let p = make_plan(&d, o, &cur)?;
    render_plan(out, &p, &d, o);
    apply::check_files(&p, o)?;
    check_scopes(api, &p).await?;
    if o.dry_run {
        let _ = writeln!(out, "dry run: nothing was changed");
        return Ok(p);
    }
    if p.changes() == 0 {
        let _ = writeln!(
            out,
            "nothing to change: the tenant and {} are as flexgate needs them",
            o.out.display()
        );
    }
    let method = plan::planned_auth_method(cur.app.as_ref());
    if p.changes() > 0 {
        let (client_id, secret) = apply::apply_app(api, &p.app, &cur, out).await?;
        let action_id = apply::apply_action(api, &p.action, &d, &client_id, &cur, out).await?;
        apply::apply_binding(api, &d, &action_id, &cur.bindings, out).await?;
        let applied = apply::Applied {
            client_id,
            secret,
            method,
        };
        apply::apply_files(&p, &d, o, &applied, out)?;
        let _ = writeln!(out, "done: {} change(s)", p.changes());
    }
    print_flex_console(o, out)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(app: Change, action: plan::ActionPlan, binding: Change) -> Plan {
        Plan {
            app: AppPlan {
                change: app,
                body: None,
            },
            action,
            binding: BindingPlan {
                change: binding,
                bindings: None,
            },
            config: FileChange::Create,
            env: FileChange::Create,
            keys: true,
            env_note: None,
            env_mode: None,
        }
    }

    #[test]
    fn scopes_follow_the_plan() {
        let deploy_only = plan::ActionPlan {
            change: Change::Update(vec![]),
            body: None,
            deploy: true,
        };
        let same = plan::ActionPlan {
            change: Change::Unchanged,
            body: None,
            deploy: false,
        };
        let edited = plan::ActionPlan {
            change: Change::Update(vec![]),
            body: Some(Value::Null),
            deploy: true,
        };
        assert_eq!(
            required_scopes(&plan(Change::Unchanged, same.clone(), Change::Unchanged)),
            Vec::<&str>::new()
        );
        assert_eq!(
            required_scopes(&plan(Change::Create, deploy_only, Change::Unchanged)),
            ["create:clients", "create:actions"]
        );
        assert_eq!(
            required_scopes(&plan(Change::Update(vec![]), edited, Change::Unchanged)),
            ["update:clients", "create:actions", "update:actions"]
        );
        assert_eq!(
            required_scopes(&plan(Change::Unchanged, same, Change::Update(vec![]))),
            ["update:actions"]
        );
    }

    #[test]
    fn tenant_domains_as_pasted() {
        for ok in [
            "example.us.auth0.com",
            "https://Example.us.auth0.com/",
            " a-b.eu.auth0.com",
        ] {
            assert!(tenant_domain(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            tenant_domain("https://Example.us.auth0.com/")
                .ok()
                .as_deref(),
            Some("example.us.auth0.com")
        );
        for bad in [
            "",
            "https://",
            "example.com/path",
            "http://x.auth0.com",
            "a b",
        ] {
            let e = tenant_domain(bad).expect_err(bad);
            assert_eq!(e.exit_code(), 2);
        }
    }
}
