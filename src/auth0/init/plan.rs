//! What `flexgate init` would change in the tenant, computed from what is there (pure: no I/O).
//! Every object is found by name, so a second run over a complete tenant plans nothing.

use serde_json::{json, Value};

/// The trigger the roles Action runs on, and its version (Auth0's current post-login API).
pub const TRIGGER: &str = "post-login";
pub const TRIGGER_VERSION: &str = "v3";
/// The Node runtime the Action is created with (Auth0 Actions: node18 and node22; node22 is current).
pub const RUNTIME: &str = "node22";
/// flexgate's OIDC client sends its secret either way (`upstream.token_auth_method`).
pub const SECRET_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];
const GRANT: &str = "authorization_code";

/// What one object needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create,
    /// The differences, as people read them.
    Update(Vec<String>),
    Unchanged,
}

impl Change {
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update(_) => "update",
            Change::Unchanged => "unchanged",
        }
    }
    pub fn is_change(&self) -> bool {
        !matches!(self, Change::Unchanged)
    }
}

/// The application as the tenant has it (`GET /api/v2/clients`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppState {
    pub client_id: String,
    pub app_type: Option<String>,
    pub callbacks: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    /// `false` when the application still follows Auth0's legacy (pre-OIDC) flows.
    pub oidc_conformant: Option<bool>,
}

impl AppState {
    pub fn from_json(v: &Value) -> AppState {
        AppState {
            client_id: str_of(v, "client_id"),
            app_type: v
                .get("app_type")
                .and_then(Value::as_str)
                .map(str::to_string),
            callbacks: strings(v.get("callbacks")),
            grant_types: strings(v.get("grant_types")),
            token_endpoint_auth_method: v
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
                .map(str::to_string),
            oidc_conformant: v.get("oidc_conformant").and_then(Value::as_bool),
        }
    }
}

/// The post-login Action as the tenant has it (`GET /api/v2/actions/actions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionState {
    pub id: String,
    pub code: String,
    pub runtime: String,
    /// The code of the deployed version, if any.
    pub deployed_code: Option<String>,
    pub all_changes_deployed: bool,
}

impl ActionState {
    pub fn from_json(v: &Value) -> ActionState {
        ActionState {
            id: str_of(v, "id"),
            code: str_of(v, "code"),
            runtime: str_of(v, "runtime"),
            deployed_code: v
                .pointer("/deployed_version/code")
                .and_then(Value::as_str)
                .map(str::to_string),
            all_changes_deployed: v
                .get("all_changes_deployed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// One binding of the post-login trigger, in flow order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub action_id: String,
    pub action_name: String,
    pub display_name: String,
}

impl Binding {
    pub fn from_json(v: &Value) -> Binding {
        let action_name = v
            .pointer("/action/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Binding {
            action_id: v
                .pointer("/action/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            display_name: v
                .get("display_name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| action_name.clone()),
            action_name,
        }
    }

    /// The entry `PATCH …/bindings` takes to keep this binding.
    pub fn as_ref_json(&self) -> Value {
        json!({"ref": {"type": "action_id", "value": self.action_id}, "display_name": self.display_name})
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The application step: the change and the body of the call that makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPlan {
    pub change: Change,
    /// `POST /api/v2/clients` body, or `PATCH /api/v2/clients/{id}` body; `None` when unchanged.
    pub body: Option<Value>,
}

/// The application named `name` with `callback` among its callbacks (others kept), the
/// authorization-code grant (others kept) and a client-secret token method (basic or post kept).
pub fn plan_app(name: &str, callback: &str, current: Option<&AppState>) -> AppPlan {
    let Some(cur) = current else {
        return AppPlan {
            change: Change::Create,
            body: Some(json!({
                "name": name,
                "app_type": "regular_web",
                "callbacks": [callback],
                "grant_types": [GRANT],
                "token_endpoint_auth_method": SECRET_METHODS[0],
                "oidc_conformant": true,
                "description": "flexgate: SAML for Twilio Flex (created by `flexgate init`)",
            })),
        };
    };
    let mut diffs = Vec::new();
    let mut body = serde_json::Map::new();
    if !cur.callbacks.iter().any(|c| c == callback) {
        let mut cbs = cur.callbacks.clone();
        cbs.push(callback.to_string());
        diffs.push(format!(
            "callbacks: add {callback} (keeping {} other(s))",
            cur.callbacks.len()
        ));
        body.insert("callbacks".into(), json!(cbs));
    }
    if !cur.grant_types.iter().any(|g| g == GRANT) {
        let mut gs = cur.grant_types.clone();
        gs.push(GRANT.to_string());
        diffs.push(format!("grant_types: add {GRANT}"));
        body.insert("grant_types".into(), json!(gs));
    }
    let method = cur.token_endpoint_auth_method.as_deref();
    if !method.is_some_and(|m| SECRET_METHODS.contains(&m)) {
        diffs.push(format!(
            "token_endpoint_auth_method: {} -> {}",
            method.unwrap_or("(none)"),
            SECRET_METHODS[0]
        ));
        body.insert(
            "token_endpoint_auth_method".into(),
            json!(SECRET_METHODS[0]),
        );
    }
    // A legacy (not OIDC-conformant) application gets ID tokens without the namespaced claim
    // rules and with legacy scopes; flexgate needs the OIDC-conformant pipeline.
    if cur.oidc_conformant == Some(false) {
        diffs.push("oidc_conformant: false -> true (OIDC-conformant flows)".into());
        body.insert("oidc_conformant".into(), json!(true));
    }
    if diffs.is_empty() {
        AppPlan {
            change: Change::Unchanged,
            body: None,
        }
    } else {
        AppPlan {
            change: Change::Update(diffs),
            body: Some(Value::Object(body)),
        }
    }
}

/// The token method the application will have once the plan is applied.
pub fn planned_auth_method(current: Option<&AppState>) -> &'static str {
    current
        .and_then(|c| c.token_endpoint_auth_method.as_deref())
        .and_then(|m| SECRET_METHODS.iter().find(|s| **s == m).copied())
        .unwrap_or(SECRET_METHODS[0])
}

/// The Action step.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionPlan {
    pub change: Change,
    /// `POST /api/v2/actions/actions` or `PATCH …/{id}` body; `None` when only a deploy is due.
    pub body: Option<Value>,
    /// Deploy once built.
    pub deploy: bool,
}

/// The Action named `name` running `code`, deployed as it is.
pub fn plan_action(name: &str, code: &str, current: Option<&ActionState>) -> ActionPlan {
    let Some(cur) = current else {
        return ActionPlan {
            change: Change::Create,
            body: Some(json!({
                "name": name,
                "supported_triggers": [{"id": TRIGGER, "version": TRIGGER_VERSION}],
                "code": code,
                "runtime": RUNTIME,
                "dependencies": [],
            })),
            deploy: true,
        };
    };
    let mut diffs = Vec::new();
    let mut body = serde_json::Map::new();
    if cur.code != code {
        diffs
            .push("code: differs from flexgate's (edited in the dashboard?); replaced".to_string());
        body.insert("code".into(), json!(code));
    }
    if cur.runtime != RUNTIME {
        diffs.push(format!("runtime: {} -> {RUNTIME}", cur.runtime));
        body.insert("runtime".into(), json!(RUNTIME));
    }
    let deployed_ok =
        diffs.is_empty() && cur.all_changes_deployed && cur.deployed_code.as_deref() == Some(code);
    if deployed_ok {
        return ActionPlan {
            change: Change::Unchanged,
            body: None,
            deploy: false,
        };
    }
    if diffs.is_empty() {
        diffs.push(match &cur.deployed_code {
            None => "not deployed; deploy".to_string(),
            Some(_) => "the deployed version differs from the saved code; deploy".to_string(),
        });
    } else {
        diffs.push("deploy the new version".to_string());
    }
    ActionPlan {
        change: Change::Update(diffs),
        body: (!body.is_empty()).then_some(Value::Object(body)),
        deploy: true,
    }
}

/// The Login-flow step: the whole new binding list (`None` when unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct BindingPlan {
    pub change: Change,
    pub bindings: Option<Vec<Value>>,
}

/// Binds the Action (`action_id`, unknown until it is created) after every existing binding,
/// which are kept in their order. Already bound (by id, or by name) → unchanged.
pub fn plan_binding(
    existing: &[Binding],
    action_name: &str,
    action_id: Option<&str>,
) -> BindingPlan {
    let bound = existing
        .iter()
        .any(|b| action_id.is_some_and(|id| b.action_id == id) || b.action_name == action_name);
    if bound {
        return BindingPlan {
            change: Change::Unchanged,
            bindings: None,
        };
    }
    let kept: Vec<&str> = existing.iter().map(|b| b.display_name.as_str()).collect();
    let diff = if kept.is_empty() {
        format!("bind {action_name:?} into the Login flow (no other Action is bound)")
    } else {
        format!(
            "bind {action_name:?} into the Login flow after the {} Action(s) already there, kept in order: {}",
            kept.len(),
            kept.join(", ")
        )
    };
    let mut list: Vec<Value> = existing.iter().map(Binding::as_ref_json).collect();
    list.push(json!({
        "ref": {"type": "action_id", "value": action_id.unwrap_or_default()},
        "display_name": action_name,
    }));
    BindingPlan {
        change: Change::Update(vec![diff]),
        bindings: Some(list),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CB: &str = "https://sso.example.com/oidc/callback";

    fn app(callbacks: &[&str], grants: &[&str], method: Option<&str>) -> AppState {
        AppState {
            client_id: "c1".into(),
            app_type: Some("regular_web".into()),
            callbacks: callbacks.iter().map(|s| s.to_string()).collect(),
            grant_types: grants.iter().map(|s| s.to_string()).collect(),
            token_endpoint_auth_method: method.map(str::to_string),
            oidc_conformant: Some(true),
        }
    }

    #[test]
    fn an_app_in_place_is_unchanged_whichever_secret_method_it_uses() {
        for m in SECRET_METHODS {
            let a = app(&["https://x/cb", CB], &["implicit", GRANT], Some(m));
            assert_eq!(plan_app("flexgate", CB, Some(&a)).change, Change::Unchanged);
            assert_eq!(planned_auth_method(Some(&a)), m);
        }
    }

    #[test]
    fn app_drift_is_repaired_keeping_what_else_is_there() {
        let a = app(&["https://x/cb"], &["implicit"], Some("none"));
        let p = plan_app("flexgate", CB, Some(&a));
        let Change::Update(diffs) = &p.change else {
            panic!("{p:?}")
        };
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert_eq!(
            p.body,
            Some(
                json!({"callbacks": ["https://x/cb", CB], "grant_types": ["implicit", GRANT],
                        "token_endpoint_auth_method": "client_secret_basic"})
            )
        );
        assert_eq!(planned_auth_method(Some(&a)), "client_secret_basic");
    }

    #[test]
    fn a_legacy_application_is_made_oidc_conformant() {
        let mut a = app(&[CB], &[GRANT], Some("client_secret_post"));
        a.oidc_conformant = Some(false);
        let p = plan_app("flexgate", CB, Some(&a));
        assert!(
            matches!(&p.change, Change::Update(d) if d.len() == 1 && d[0].starts_with("oidc_conformant")),
            "{p:?}"
        );
        assert_eq!(p.body, Some(json!({"oidc_conformant": true})));
        // Not reported by the tenant: left alone.
        a.oidc_conformant = None;
        assert_eq!(plan_app("flexgate", CB, Some(&a)).change, Change::Unchanged);
    }

    fn action(code: &str, deployed: Option<&str>, all: bool) -> ActionState {
        ActionState {
            id: "a1".into(),
            code: code.into(),
            runtime: RUNTIME.into(),
            deployed_code: deployed.map(str::to_string),
            all_changes_deployed: all,
        }
    }

    #[test]
    fn action_plans() {
        let p = plan_action("n", "ours", Some(&action("ours", Some("ours"), true)));
        assert_eq!((p.change, p.deploy), (Change::Unchanged, false));
        let p = plan_action("n", "ours", Some(&action("edited", Some("ours"), false)));
        assert!(p.deploy && matches!(p.change, Change::Update(_)));
        assert_eq!(p.body, Some(json!({"code": "ours"})));
        let p = plan_action("n", "ours", Some(&action("ours", None, false)));
        assert!(p.deploy && p.body.is_none(), "{p:?}");
        let p = plan_action("n", "ours", None);
        assert_eq!((p.change, p.deploy), (Change::Create, true));
    }

    fn b(id: &str, name: &str) -> Binding {
        Binding {
            action_id: id.into(),
            action_name: name.into(),
            display_name: format!("{name} (shown)"),
        }
    }

    #[test]
    fn binding_goes_last_and_keeps_the_others_in_order() {
        let existing = [b("x", "first"), b("y", "second")];
        let p = plan_binding(&existing, "ours", Some("z"));
        assert_eq!(
            p.bindings,
            Some(vec![
                json!({"ref": {"type": "action_id", "value": "x"}, "display_name": "first (shown)"}),
                json!({"ref": {"type": "action_id", "value": "y"}, "display_name": "second (shown)"}),
                json!({"ref": {"type": "action_id", "value": "z"}, "display_name": "ours"}),
            ])
        );
        let bound = [b("z", "ours"), b("x", "first")];
        assert_eq!(
            plan_binding(&bound, "ours", Some("z")).change,
            Change::Unchanged
        );
    }
}
