//! Users and their Flex roles in Auth0: `app_metadata.flex.roles`.
//!
//! Auth0 merges `app_metadata` at its top level only (a PATCH replaces each key it names), so a
//! write of the roles sends the whole `flex` object: the one read, with `roles` replaced.
//! Every user with a Flex role is listed by users search (at most 1,000 results), or beyond that
//! by a users-export job (gzip NDJSON), streamed: downloaded, unzipped and parsed a chunk at a
//! time, keeping only the users with a Flex role, within [`EXPORT_LIMITS`].

use super::client::{segment, Auth0Error, Client, PresignedUrl};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::io::{BufRead, Read};
use std::time::Duration;

/// The fields flexgate reads of a user.
pub const FIELDS: &str = "user_id,email,app_metadata";
/// The users search query for "has a Flex role".
pub const HAS_ROLES: &str = "_exists_:app_metadata.flex.roles";
/// Users search reaches this many results at most (Auth0 docs, "User Search Query Syntax").
pub const SEARCH_LIMIT: u64 = 1000;
const PER_PAGE: u64 = 100;

/// What one users export may hold, each named in the error when exceeded.
#[derive(Debug, Clone)]
pub struct ExportLimits {
    /// The download (gzip).
    pub max_download: u64,
    /// The NDJSON once unzipped (a gzip bomb stops here).
    pub max_unzipped: u64,
    /// One line (one user).
    pub max_line: usize,
    /// Users with a Flex role kept.
    pub max_users: usize,
}

/// The limits of every users export read.
pub const EXPORT_LIMITS: ExportLimits = ExportLimits {
    max_download: 256 * 1024 * 1024,
    max_unzipped: 2 * 1024 * 1024 * 1024,
    max_line: 1024 * 1024,
    max_users: 200_000,
};

/// Chunks of the download in flight between the download and the parser.
const CHUNKS_IN_FLIGHT: usize = 4;

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
/// completed, then stream the gzip NDJSON, keeping the lines with roles.
pub async fn export_with_roles(c: &Client) -> Result<Vec<User>, Auth0Error> {
    let location = finished_export(c).await?;
    read_export(c, &location, &EXPORT_LIMITS).await
}

/// Creates a users-export job and waits until it is done; its pre-signed download URL.
async fn finished_export(c: &Client) -> Result<PresignedUrl, Auth0Error> {
    let body = json!({
        "format": "json",
        "fields": [{"name": "user_id"}, {"name": "email"}, {"name": "app_metadata"}],
    });
    let mut job: Job = c.post("/api/v2/jobs/users-exports", &body).await?;
    let mut delay = Duration::from_millis(250);
    loop {
        match (job.status.as_str(), job.location.take()) {
            ("completed", Some(l)) => return Ok(PresignedUrl::new(l)),
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
    }
}

/// Downloads the export at `location` while a blocking task unzips and parses it (CPU work, off
/// the reactor): at most a few chunks and the users with roles are held at once.
pub async fn read_export(
    c: &Client,
    location: &PresignedUrl,
    limits: &ExportLimits,
) -> Result<Vec<User>, Auth0Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let lim = limits.clone();
    let parser = tokio::task::spawn_blocking(move || parse_export(ChunkReader::new(rx), &lim));
    let downloaded = c.download(location, limits.max_download, &tx).await;
    drop(tx);
    let parsed = parser
        .await
        .unwrap_or_else(|e| Err(format!("the export parser stopped: {e}")));
    // A failed download explains the cut stream the parser saw.
    downloaded?;
    parsed.map_err(|reason| Auth0Error::Garbage {
        url: location.shown(),
        reason,
    })
}

/// A blocking `Read` over the chunks the download sends (for the parser's blocking task).
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(c) => (self.chunk, self.at) = (c, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// gzip NDJSON → the users that have a Flex role, read incrementally within `lim`.
pub fn parse_export(gz: impl Read, lim: &ExportLimits) -> Result<Vec<User>, String> {
    let text = flate2::read::MultiGzDecoder::new(gz).take(lim.max_unzipped);
    let mut reader = std::io::BufReader::new(text);
    let unzipped_cap = || {
        format!(
            "the users export unzips to more than {} bytes, flexgate's cap",
            lim.max_unzipped
        )
    };
    let mut users = Vec::new();
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        let got = (&mut reader)
            .take(lim.max_line as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("not gzip text: {e}"))?;
        if got == 0 {
            break;
        }
        if line.len() > lim.max_line {
            return Err(format!(
                "line {n} of the users export is over {} bytes, flexgate's cap on one user",
                lim.max_line
            ));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let u: User = match serde_json::from_slice(&line) {
            Ok(u) => u,
            // A line cut by the unzipped cap is the cap's error.
            Err(_) if reader.get_ref().limit() == 0 => return Err(unzipped_cap()),
            Err(e) => return Err(format!("line {n}: {e}")),
        };
        if u.app_metadata.pointer("/flex/roles").is_some() {
            if users.len() >= lim.max_users {
                return Err(format!(
                    "the users export has more than {} users with a Flex role, flexgate's cap on one roles snapshot",
                    lim.max_users
                ));
            }
            users.push(u);
        }
    }
    if reader.get_ref().limit() == 0 {
        return Err(unzipped_cap());
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
        let users = parse_export(&e.finish().unwrap()[..], &EXPORT_LIMITS).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].roles(), vec!["agent"]);
        assert!(parse_export(&b"not gzip"[..], &EXPORT_LIMITS).is_err());
    }

    fn gz(lines: &[String]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for l in lines {
            e.write_all(l.as_bytes()).unwrap();
            e.write_all(b"\n").unwrap();
        }
        e.finish().unwrap()
    }

    fn agents(n: usize, pad: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                json!({"user_id": format!("auth0|{i}"), "email": format!("a{i}@x"),
                       "app_metadata": {"flex": {"roles": ["agent"], "pad": "p".repeat(pad)}}})
                .to_string()
            })
            .collect()
    }

    #[test]
    fn an_export_beyond_a_cap_is_refused_naming_it() {
        let lim = ExportLimits {
            max_download: 1 << 20,
            max_unzipped: 10_000,
            max_line: 500,
            max_users: 3,
        };
        // Users without a role do not count; those with one do.
        let mut lines = agents(3, 0);
        lines.push(json!({"user_id": "auth0|none"}).to_string());
        assert_eq!(parse_export(&gz(&lines)[..], &lim).unwrap().len(), 3);
        let e = parse_export(&gz(&agents(4, 0))[..], &lim).unwrap_err();
        assert!(e.contains("more than 3 users with a Flex role"), "{e}");
        let e = parse_export(&gz(&agents(1, 600))[..], &lim).unwrap_err();
        assert!(
            e.contains("line 1 of the users export is over 500 bytes"),
            "{e}"
        );
        // A gzip bomb: many small lines without roles, far past the unzipped cap.
        let bomb: Vec<String> = (0..2_000)
            .map(|i| format!("{{\"user_id\":\"{i}\"}}"))
            .collect();
        let e = parse_export(&gz(&bomb)[..], &lim).unwrap_err();
        assert!(e.contains("unzips to more than 10000 bytes"), "{e}");
        // A cut download is an error, not a short list.
        let whole = gz(&agents(3, 0));
        assert!(parse_export(&whole[..whole.len() - 10], &lim).is_err());
    }
}
