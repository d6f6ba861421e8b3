//! Reading and changing the tenant's application, Action and Login-flow bindings through the
//! Management API (paths and shapes: Auth0 Management API v2 reference; auth0/go-auth0
//! management/actions.go and management/client.go).

use super::plan::{ActionState, AppState, Binding, TRIGGER};
use super::{InitError, MgmtApi};
use crate::auth0::client::segment;
use serde_json::Value;
use std::time::Duration;

/// Auth0's official SDKs ask for 50 a page (auth0.net and auth0-PHP
/// `ListActionTriggerBindingsRequestParameters`: `PerPage = 50`).
const PER_PAGE: usize = 50;
const CLIENT_FIELDS: &str =
    "client_id,name,app_type,callbacks,grant_types,token_endpoint_auth_method,oidc_conformant";

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every item of a paged list (`page`/`per_page`, `total`). `/clients`
/// reports `total` only with `include_totals=true`; the Actions endpoints always do and take no
/// such parameter.
async fn all_pages(api: &dyn MgmtApi, path: &str, key: &str) -> Result<Vec<Value>, InitError> {
    let mut out = Vec::new();
    let totals = if key == "clients" {
        "&include_totals=true"
    } else {
        ""
    };
    for page in 0.. {
        let sep = if path.contains('?') { '&' } else { '?' };
        let v = api
            .get(&format!(
                "{path}{sep}page={page}&per_page={PER_PAGE}{totals}"
            ))
            .await?;
        let items = array(&v, key);
        out.extend(items.iter().cloned());
        // The tenant may cap a page below what was asked: trust `total`, then its `per_page`.
        let total = v.get("total").and_then(Value::as_u64);
        let per = v
            .get("per_page")
            .and_then(Value::as_u64)
            .unwrap_or(PER_PAGE as u64);
        let done = match total {
            Some(t) => out.len() as u64 >= t,
            None => (items.len() as u64) < per,
        };
        if items.is_empty() || done {
            break;
        }
    }
    Ok(out)
}

/// The application named `name`, if any; several with that name is an error.
pub async fn find_app(api: &dyn MgmtApi, name: &str) -> Result<Option<AppState>, InitError> {
    let path = format!("/api/v2/clients?fields={CLIENT_FIELDS}&include_fields=true");
    let clients = all_pages(api, &path, "clients").await?;
    let named: Vec<&Value> = clients
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .collect();
    match named.as_slice() {
        [] => Ok(None),
        [one] => {
            let app = AppState::from_json(one);
            match app.app_type.as_deref() {
                None | Some("regular_web") => Ok(Some(app)),
                Some(other) => Err(InitError::Usage(format!(
                    "the application {name:?} ({}) is a {other} application, not a Regular Web Application; pass --app-name with another name",
                    app.client_id
                ))),
            }
        }
        many => Err(InitError::Usage(format!(
            "{} applications are named {name:?}; rename all but one in the dashboard, or pass --app-name with another name",
            many.len()
        ))),
    }
}

/// The application's client secret (needs the read:client_keys scope).
pub async fn client_secret(api: &dyn MgmtApi, client_id: &str) -> Result<String, InitError> {
    let v = api
        .get(&format!(
            "/api/v2/clients/{}?fields=client_secret&include_fields=true",
            segment(client_id)
        ))
        .await?;
    v.get("client_secret")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| InitError::Scope {
            scopes: "read:client_keys".into(),
            message: "the application's client secret was not returned".into(),
        })
}

/// The post-login Action named `name`, if any.
pub async fn find_action(api: &dyn MgmtApi, name: &str) -> Result<Option<ActionState>, InitError> {
    let path = format!(
        "/api/v2/actions/actions?actionName={}&triggerId={TRIGGER}",
        segment(name)
    );
    let actions = all_pages(api, &path, "actions").await?;
    Ok(actions
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
        .map(ActionState::from_json))
}

/// The post-login bindings, in flow order.
pub async fn bindings(api: &dyn MgmtApi) -> Result<Vec<Binding>, InitError> {
    let path = format!("/api/v2/actions/triggers/{TRIGGER}/bindings");
    Ok(all_pages(api, &path, "bindings")
        .await?
        .iter()
        .map(Binding::from_json)
        .collect())
}

/// Replaces the binding list with `list` and checks that the tenant now runs exactly `expect`
/// (action ids, in order).
pub async fn set_bindings(
    api: &dyn MgmtApi,
    list: Vec<Value>,
    expect: &[String],
) -> Result<(), InitError> {
    let path = format!("/api/v2/actions/triggers/{TRIGGER}/bindings");
    let v = api
        .patch(&path, &serde_json::json!({ "bindings": list }))
        .await?;
    let got: Vec<String> = array(&v, "bindings")
        .iter()
        .map(|b| Binding::from_json(b).action_id)
        .collect();
    if got != expect {
        return Err(InitError::Api(format!(
            "after updating the Login flow the tenant reports the Actions {got:?}, expected {expect:?}; check Actions → Flows → Login in the dashboard"
        )));
    }
    Ok(())
}

/// Waits until the Action's build is done (`built`); deploying earlier fails.
pub async fn wait_built(
    api: &dyn MgmtApi,
    id: &str,
    name: &str,
    limit: Duration,
) -> Result<(), InitError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let v = api
            .get(&format!("/api/v2/actions/actions/{}", segment(id)))
            .await?;
        let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
        match status {
            "built" => return Ok(()),
            "failed" => {
                return Err(InitError::Build {
                    name: name.to_string(),
                    status: status.to_string(),
                })
            }
            _ if start.elapsed() >= limit => {
                return Err(InitError::Build {
                    name: name.to_string(),
                    status: format!("still {status:?} after {} s", limit.as_secs()),
                })
            }
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 3 / 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Deploys the Action; returns the new version's number when the answer carries it.
pub async fn deploy(api: &dyn MgmtApi, id: &str) -> Result<Option<u64>, InitError> {
    let v = api
        .post(
            &format!("/api/v2/actions/actions/{}/deploy", segment(id)),
            &serde_json::json!({}),
        )
        .await?;
    Ok(v.get("number").and_then(Value::as_u64))
}
