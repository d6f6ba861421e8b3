//! Applying a plan: the tenant's objects in dependency order (application, Action built then
//! deployed, binding), then the files.

use super::files::{self, FileChange, ENV};
use super::plan::{self, ActionPlan, AppPlan, Change};
use super::{config_for, tenant, Current, Desired, InitError, InitOptions, MgmtApi, Plan};
use crate::auth0::client::segment;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Refuses to replace files without `--force`, before anything is changed.
pub(super) fn check_files(p: &Plan, o: &InitOptions) -> Result<(), InitError> {
    let mut clash = Vec::new();
    if p.config == FileChange::Replace {
        clash.push(o.out.join(files::CONFIG));
    }
    if p.env == FileChange::Replace {
        clash.push(o.out.join(ENV));
    }
    if clash.is_empty() || o.force {
        return Ok(());
    }
    let names: Vec<String> = clash.iter().map(|c| c.display().to_string()).collect();
    Err(InitError::Usage(format!(
        "{} exist(s) with other contents than `flexgate init` would write; nothing was changed. Pass --force to replace them, or --out another folder",
        names.join(" and ")
    )))
}

const BUILD_LIMIT: Duration = Duration::from_secs(120);

/// Creates or updates the application; returns its client id and (when known) secret.
pub(super) async fn apply_app(
    api: &dyn MgmtApi,
    p: &AppPlan,
    cur: &Current,
    out: &mut dyn Write,
) -> Result<(String, Option<String>), InitError> {
    let known = cur.secret.as_ref().and_then(|s| s.as_ref().ok()).cloned();
    match (&p.change, &p.body, &cur.app) {
        (Change::Create, Some(body), _) => {
            let v = api.post("/api/v2/clients", body).await?;
            let id = v
                .get("client_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let secret = v.get("client_secret").and_then(Value::as_str);
            if id.is_empty() || secret.is_none() {
                return Err(InitError::Api(
                    "the tenant created the application but did not return its client id and secret; see Applications in the dashboard".into(),
                ));
            }
            let _ = writeln!(out, "created application (client id {id})");
            Ok((id.to_string(), secret.map(str::to_string)))
        }
        (Change::Update(diffs), Some(body), Some(app)) => {
            let path = format!("/api/v2/clients/{}", segment(&app.client_id));
            api.patch(&path, body).await?;
            let _ = writeln!(out, "updated application: {}", diffs.join("; "));
            Ok((app.client_id.clone(), known))
        }
        (_, _, Some(app)) => Ok((app.client_id.clone(), known)),
        _ => Err(InitError::Api("no application to update".into())),
    }
}

/// Creates or updates the Action (its code for the application `client_id`), waits for its
/// build, deploys it; returns its id.
pub(super) async fn apply_action(
    api: &dyn MgmtApi,
    p: &ActionPlan,
    d: &Desired,
    client_id: &str,
    cur: &Current,
    out: &mut dyn Write,
) -> Result<String, InitError> {
    // The plan's code may predate the application (created just now): write it for its id.
    let body = p.body.clone().map(|mut b| {
        if let Some(code) = b.get_mut("code") {
            *code = Value::String(d.action_code(client_id));
        }
        b
    });
    let id = match (&body, &cur.action) {
        (Some(body), None) => {
            let v = api.post("/api/v2/actions/actions", body).await?;
            let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
            if id.is_empty() {
                return Err(InitError::Api(
                    "the tenant created the Action but returned no id".into(),
                ));
            }
            let _ = writeln!(out, "created Action {:?}", d.action_name);
            id.to_string()
        }
        (Some(body), Some(a)) => {
            api.patch(&format!("/api/v2/actions/actions/{}", segment(&a.id)), body)
                .await?;
            let _ = writeln!(out, "updated Action {:?}", d.action_name);
            a.id.clone()
        }
        (None, Some(a)) => a.id.clone(),
        (None, None) => return Err(InitError::Api("no Action to deploy".into())),
    };
    if p.deploy {
        tenant::wait_built(api, &id, &d.action_name, BUILD_LIMIT).await?;
        let n = tenant::deploy(api, &id).await?;
        let version = n.map(|n| format!(" (version {n})")).unwrap_or_default();
        let _ = writeln!(out, "deployed Action {:?}{version}", d.action_name);
    }
    Ok(id)
}

/// Binds the Action after the bindings `init` read and showed in its plan (`before`). The list
/// is read again just before the change and after it: when someone else changed it meanwhile,
/// the run stops saying so (Auth0 replaces the whole list, and has no conditional update).
pub(super) async fn apply_binding(
    api: &dyn MgmtApi,
    d: &Desired,
    action_id: &str,
    before: &[plan::Binding],
    out: &mut dyn Write,
) -> Result<bool, InitError> {
    let now = tenant::bindings(api).await?;
    let p = plan::plan_binding(&now, &d.action_name, Some(action_id));
    let Some(list) = p.bindings else {
        return Ok(false);
    };
    if ids(&now) != ids(before) {
        return Err(InitError::Conflict(format!(
            "the Login flow changed since `flexgate init` read it (it read {}; it now runs {}): someone else is editing it, so nothing was bound. The Action {:?} is deployed; check Actions → Flows → Login in the dashboard, then run `flexgate init` again",
            names(before),
            names(&now),
            d.action_name
        )));
    }
    let mut expect = ids(&now);
    expect.push(action_id.to_string());
    tenant::set_bindings(api, list, &expect).await?;
    let after = tenant::bindings(api).await?;
    if ids(&after) != expect {
        return Err(InitError::Conflict(format!(
            "the Login flow changed while `flexgate init` bound its Action (it set {} then {}; it now runs {}): someone else is editing it; check Actions → Flows → Login in the dashboard, then run `flexgate init` again",
            names(&now),
            d.action_name,
            names(&after)
        )));
    }
    let _ = writeln!(
        out,
        "bound Action {:?} into the Login flow after {} existing binding(s), kept in order",
        d.action_name,
        now.len()
    );
    Ok(true)
}

fn ids(list: &[plan::Binding]) -> Vec<String> {
    list.iter().map(|b| b.action_id.clone()).collect()
}

fn names(list: &[plan::Binding]) -> String {
    if list.is_empty() {
        return "no Action".into();
    }
    let n: Vec<&str> = list.iter().map(|b| b.display_name.as_str()).collect();
    format!("[{}]", n.join(", "))
}

/// Writes the files the plan calls for (replacing only what `check_files` allowed).
pub(super) fn apply_files(
    p: &Plan,
    d: &Desired,
    o: &InitOptions,
    applied: &Applied,
    out: &mut dyn Write,
) -> Result<(), InitError> {
    if p.keys {
        let (k, c) = files::write_keys(&o.out, &format!("flexgate SAML signing ({})", d.domain))?;
        let _ = writeln!(out, "wrote {} (mode 0600) and {}", k.display(), c.display());
    }
    if p.config != FileChange::Unchanged {
        let path = o.out.join(files::CONFIG);
        let text = config_for(d, o, &applied.client_id, applied.method);
        files::write(&path, &text, 0o644, o.force)?;
        let _ = writeln!(out, "wrote {}", path.display());
    }
    if p.env != FileChange::Unchanged {
        let path = o.out.join(ENV);
        let secret = applied.secret.as_deref().ok_or_else(|| InitError::Scope {
            scopes: "read:client_keys".into(),
            message: format!("the client secret for {} is unknown", path.display()),
        })?;
        files::write(&path, &files::env_text(secret), 0o600, o.force)?;
        let _ = writeln!(out, "wrote {} (mode 0600)", path.display());
    }
    if let Some(m) = p.env_mode_fix() {
        let path = o.out.join(ENV);
        files::fix_mode(&path, 0o600)?;
        let _ = writeln!(
            out,
            "fixed the mode of {}: {m:04o} -> 0600 (it holds the client secret)",
            path.display()
        );
    }
    Ok(())
}

/// What applying the tenant steps produced.
pub(super) struct Applied {
    pub client_id: String,
    pub secret: Option<String>,
    pub method: &'static str,
}
