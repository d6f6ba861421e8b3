//! Users and their Flex roles in Auth0: `app_metadata.flex.roles`.
//!
//! Auth0 merges `app_metadata` at its top level only (a PATCH replaces each key it names), so a
//! write of the roles sends the whole `flex` object: the one read, with `roles` replaced.
//! Every user with a Flex role is listed by users search (at most 1,000 results), or beyond that
//! by a users-export job (gzip NDJSON).

use super::client::{segment, Auth0Error, Client};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::time::Duration;

/// The fields flexgate reads of a user.
pub const FIELDS: &str = "user_id,email,app_metadata";
/// The users search query for "has a Flex role".
pub const HAS_ROLES: &str = "_exists_:app_metadata.flex.roles";
/// Users search reaches this many results at most (Auth0 docs, "User Search Query Syntax").
pub const SEARCH_LIMIT: u64 = 1000;
const PER_PAGE: u64 = 100;
/// The largest users export read (gzip).
const MAX_EXPORT: usize = 256 * 1024 * 1024;

/// One Auth0 user as far as roles go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "empty_object")]
    pub app_metadata: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl User {
    /// `app_metadata.flex.roles` (strings only; a comma-separated string is split).
    pub fn roles(&self) -> Vec<String> {
        match self.app_metadata.pointer("/flex/roles") {
            Some(v) => crate::flex::split_roles(crate::flex::values(v)),
            None => Vec::new(),
        }
    }

    /// The `app_metadata` PATCH body that sets the roles and keeps every other key of `flex`.
    /// No roles removes the `roles` key (the user then leaves the search for users with roles).
    pub fn roles_patch(&self, roles: &[String]) -> Value {
        let mut flex = match self.app_metadata.get("flex") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if roles.is_empty() {
            flex.remove("roles");
        } else {
            flex.insert("roles".into(), json!(roles));
        }
        json!({ "app_metadata": { "flex": flex } })
    }
}

/// Every account with this email (Auth0 may hold several, one per connection).
pub async fn by_email(c: &Client, email: &str) -> Result<Vec<User>, Auth0Error> {
    c.get(
        "/api/v2/users-by-email",
        &[
            ("email", email),
            ("fields", FIELDS),
            ("include_fields", "true"),
        ],
    )
    .await
}

/// Sets the user's Flex roles, keeping the rest of `app_metadata` and of `app_metadata.flex`.
pub async fn set_roles(c: &Client, user: &User, roles: &[String]) -> Result<User, Auth0Error> {
    let path = format!("/api/v2/users/{}", segment(&user.user_id));
    c.patch(&path, &user.roles_patch(roles)).await
}

#[derive(Deserialize)]
struct SearchPage {
    total: u64,
    users: Vec<User>,
}

/// How many users have a Flex role (one users search call, `read:users`).
pub async fn count_with_roles(c: &Client) -> Result<u64, Auth0Error> {
    let got: SearchPage = c
        .get(
            "/api/v2/users",
            &[
                ("q", HAS_ROLES),
                ("search_engine", "v3"),
                ("fields", "user_id"),
                ("include_fields", "true"),
                ("include_totals", "true"),
                ("page", "0"),
                ("per_page", "1"),
            ],
        )
        .await?;
    Ok(got.total)
}

/// Every user with a Flex role: users search, or a users-export job when there are more than
/// search can page through. `progress` is told (done, total) as pages arrive.
pub async fn all_with_roles(
    c: &Client,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<User>, Auth0Error> {
    let mut users = Vec::new();
    let mut page = 0u64;
    loop {
        let p = page.to_string();
        let per = PER_PAGE.to_string();
        let got: SearchPage = c
            .get(
                "/api/v2/users",
                &[
                    ("q", HAS_ROLES),
                    ("search_engine", "v3"),
                    ("fields", FIELDS),
                    ("include_fields", "true"),
                    ("include_totals", "true"),
                    ("page", &p),
                    ("per_page", &per),
                ],
            )
            .await?;
        if got.total >= SEARCH_LIMIT {
            tracing::info!(
                total = got.total,
                "over 1,000 users with a Flex role: reading them through a users-export job"
            );
            return export_with_roles(c).await;
        }
        let n = got.users.len() as u64;
        users.extend(got.users);
        progress(users.len() as u64, got.total);
        page += 1;
        if n < PER_PAGE || users.len() as u64 >= got.total {
            return Ok(users);
        }
    }
}

#[derive(Deserialize)]
struct Job {
    id: String,
    status: String,
    #[serde(default)]
    location: Option<String>,
}

/// Every user with a Flex role, from a users-export job (`read:users`): create, poll until
/// completed, download the gzip NDJSON, keep the lines with roles.
pub async fn export_with_roles(c: &Client) -> Result<Vec<User>, Auth0Error> {
    let body = json!({
        "format": "json",
        "fields": [{"name": "user_id"}, {"name": "email"}, {"name": "app_metadata"}],
    });
    let mut job: Job = c.post("/api/v2/jobs/users-exports", &body).await?;
    let mut delay = Duration::from_millis(250);
    let location = loop {
        match (job.status.as_str(), job.location.take()) {
            ("completed", Some(l)) => break l,
            ("failed", _) => {
                return Err(Auth0Error::Status {
                    url: format!("/api/v2/jobs/{}", job.id),
                    status: 200,
                    message: "the users-export job failed".into(),
                })
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        job = c
            .get(&format!("/api/v2/jobs/{}", segment(&job.id)), &[])
            .await?;
    };
    let gz = c.download(&location, MAX_EXPORT).await?;
    // Unzipping and parsing every user is CPU work: off the async reactor.
    let parsed = tokio::task::spawn_blocking(move || parse_export(&gz))
        .await
        .unwrap_or_else(|e| Err(format!("the export parser stopped: {e}")));
    parsed.map_err(|reason| Auth0Error::Garbage {
        url: location,
        reason,
    })
}

/// gzip NDJSON → the users that have a Flex role.
pub fn parse_export(gz: &[u8]) -> Result<Vec<User>, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .take(MAX_EXPORT as u64 * 8)
        .read_to_string(&mut text)
        .map_err(|e| format!("not gzip text: {e}"))?;
    let mut users = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let u: User = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if u.app_metadata.pointer("/flex/roles").is_some() {
            users.push(u);
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_patch_keeps_the_other_flex_keys() {
        let u = User {
            user_id: "auth0|1".into(),
            email: None,
            app_metadata: json!({"flex": {"roles": ["agent"], "team": "blue"}, "plan": "gold"}),
        };
        assert_eq!(u.roles(), vec!["agent"]);
        let p = u.roles_patch(&["supervisor".into(), "wfo.team_leader".into()]);
        // Only `flex` is sent (Auth0 keeps `plan`); inside it, `team` is kept.
        assert_eq!(
            p,
            json!({"app_metadata": {"flex": {"roles": ["supervisor", "wfo.team_leader"], "team": "blue"}}})
        );
        // No roles: the key goes (the user leaves the search for users with a role).
        assert_eq!(
            u.roles_patch(&[]),
            json!({"app_metadata": {"flex": {"team": "blue"}}})
        );
    }

    #[test]
    fn an_export_is_read_as_users_with_roles() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"{\"user_id\":\"a\",\"email\":\"a@x\",\"app_metadata\":{\"flex\":{\"roles\":[\"agent\"]}}}\n{\"user_id\":\"b\"}\n\n")
            .unwrap();
        let users = parse_export(&e.finish().unwrap()).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].roles(), vec!["agent"]);
        assert!(parse_export(b"not gzip").is_err());
    }
}
