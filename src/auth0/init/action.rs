//! The post-login Action `flexgate init` deploys (and `flexgate check` prints for a dashboard
//! set-up): it puts the user's `app_metadata.flex.roles` into flexgate's namespaced ID-token
//! claim, for flexgate's application only. The tenant's other applications run the same Login
//! flow; without the check every one of them would receive the Flex roles.

/// The Action's code for the claim `claim` and flexgate's application `client_id`, both baked in
/// as JSON string literals (so no value can break out of the JavaScript).
pub fn code(claim: &str, client_id: &str) -> String {
    let js = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "exports.onExecutePostLogin = async (event, api) => {{\n  // Flex roles go to flexgate's application only.\n  if ((event.client || {{}}).client_id !== {client}) return;\n  const flex = (event.user.app_metadata || {{}}).flex || {{}};\n  api.idToken.setCustomClaim({claim}, flex.roles || []);\n}};",
        client = js(client_id),
        claim = js(claim),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_id_and_claim_are_javascript_string_literals() {
        let c = code("https://sso.example.com/flex_roles", "abc\"; evil(); \"");
        assert!(c.contains(r#"!== "abc\"; evil(); \"") return;"#), "{c}");
        assert!(
            c.contains(r#"setCustomClaim("https://sso.example.com/flex_roles""#),
            "{c}"
        );
    }
}
