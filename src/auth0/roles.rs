//! `flexgate roles`: agents' Flex roles in Auth0, one at a time or from a CSV file
//! (`email,roles`, roles separated by `;`; an empty roles cell removes every Flex role). Role
//! values are checked before any call; each row of an import ends in exactly one [`Outcome`],
//! so nothing is half-applied without being said.
//!
//! The export is safe to open in a spreadsheet: a cell that would start a formula gets a
//! leading `'` ([`spreadsheet_safe`]), which the import removes again ([`unquote`]).

use super::client::{Auth0Error, Client};
use super::users::{self, User};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("role values Flex does not know: {}; use admin, supervisor, agent, wfo.* or flex.* roles (or list them in [[sp]] extra_roles)", .0.join(", "))]
    UnknownRoles(Vec<String>),
    #[error("{path}: {reason}")]
    Csv { path: String, reason: String },
}

/// The role values among `roles` that Flex does not know (nor `extra`).
pub fn unknown_roles<'a>(
    roles: impl IntoIterator<Item = &'a String>,
    extra: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in roles {
        let known = crate::flex::FLEX_ROLES.contains(&r.as_str()) || extra.contains(r);
        if !known && !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// One line of an import file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub email: String,
    pub roles: Vec<String>,
}

/// Spreadsheet programs take a cell starting with one of these as a formula (CSV injection).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Would [`unquote`] remove a leading `'` from `cell`?
fn quoted(cell: &str) -> bool {
    cell.strip_prefix('\'')
        .is_some_and(|rest| rest.starts_with(FORMULA_START) || rest.starts_with('\''))
}

/// `cell` as a spreadsheet shows it as text: one starting with `=`, `+`, `-`, `@`, a tab or a
/// CR gets a leading `'` (and so does one [`unquote`] would otherwise change, so that
/// `unquote(spreadsheet_safe(x)) == x` for every `x`).
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_START) || quoted(cell) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// What [`spreadsheet_safe`] wrote, back: a leading `'` before a formula character or another
/// `'` is removed; anything else is kept as it is.
pub fn unquote(cell: &str) -> &str {
    if quoted(cell) {
        &cell[1..]
    } else {
        cell
    }
}

/// `a;b ; c` → `[a, b, c]`
pub fn split(cell: &str) -> Vec<String> {
    crate::flex::split_roles(cell.split(';').map(str::to_string).collect())
}

/// Reads `email,roles` rows; every role value is checked here, before any call.
pub fn read_csv(
    path: &str,
    data: impl std::io::Read,
    extra: &[String],
) -> Result<Vec<Row>, RolesError> {
    let bad = |reason: String| RolesError::Csv {
        path: path.to_string(),
        reason,
    };
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(data);
    let headers = r.headers().map_err(|e| bad(e.to_string()))?.clone();
    if headers.len() != 2 || &headers[0] != "email" || &headers[1] != "roles" {
        return Err(bad(format!(
            "the header must be `email,roles` (found `{}`)",
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut rows: Vec<Row> = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let email = unquote(&rec[0]).to_string();
        if !email.contains('@') {
            return Err(bad(format!(
                "line {line}: {email:?} is not an email address"
            )));
        }
        let roles = split(unquote(&rec[1]));
        if let Some(prev) = rows
            .iter()
            .find(|p| p.email.eq_ignore_ascii_case(&email) && p.roles != roles)
        {
            return Err(bad(format!(
                "line {line}: {email} is already on line {} with other roles",
                prev.line
            )));
        }
        rows.push(Row { line, email, roles });
    }
    let unknown = unknown_roles(rows.iter().flat_map(|r| r.roles.iter()), extra);
    if !unknown.is_empty() {
        return Err(RolesError::UnknownRoles(unknown));
    }
    Ok(rows)
}

/// What became of one email.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The roles were written (or, in a dry run, would be).
    Set {
        from: Vec<String>,
        /// The accounts as Auth0 now has them (none in a dry run).
        written: Vec<User>,
    },
    Unchanged,
    UnknownUser,
    Failed(String),
    /// Not tried: an earlier error showed no call can succeed (credentials, scope).
    NotTried,
}

/// An error after which every further call fails the same way.
pub fn is_fatal(e: &Auth0Error) -> bool {
    matches!(
        e,
        Auth0Error::Credentials { .. }
            | Auth0Error::Unauthorized { .. }
            | Auth0Error::Forbidden { .. }
            | Auth0Error::NoCredentials
    )
}

/// Sets the roles of every account with this email (several connections may share it).
pub async fn set(
    c: &Client,
    email: &str,
    roles: &[String],
    dry_run: bool,
) -> Result<Outcome, Auth0Error> {
    let accounts = users::by_email(c, email).await?;
    if accounts.is_empty() {
        return Ok(Outcome::UnknownUser);
    }
    let mut from = None;
    let mut written = Vec::new();
    for u in &accounts {
        if u.roles() != roles {
            from.get_or_insert_with(|| u.roles());
            if !dry_run {
                written.push(users::set_roles(c, u, roles).await?);
            }
        }
    }
    Ok(match from {
        Some(from) => Outcome::Set { from, written },
        None => Outcome::Unchanged,
    })
}

/// Per-outcome counts of an import.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub set: u64,
    pub unchanged: u64,
    pub unknown_user: u64,
    pub failed: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Set { .. } => self.set += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::UnknownUser => self.unknown_user += 1,
            Outcome::Failed(_) | Outcome::NotTried => self.failed += 1,
        }
    }
}

/// Applies every row, `parallel` at a time (the client paces them to the tenant's limit);
/// `done` sees each row's outcome as it ends. After a fatal error, the rows not started are
/// [`Outcome::NotTried`].
pub async fn import(
    c: Arc<Client>,
    rows: Vec<Row>,
    dry_run: bool,
    parallel: usize,
    done: &mut dyn FnMut(&Row, &Outcome),
) -> Summary {
    let fatal = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for row in rows {
        let (c, fatal, gate) = (c.clone(), fatal.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            if fatal.load(std::sync::atomic::Ordering::Relaxed) {
                return (row, Outcome::NotTried);
            }
            let outcome = match set(&c, &row.email, &row.roles, dry_run).await {
                Ok(o) => o,
                Err(e) => {
                    if is_fatal(&e) {
                        fatal.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Outcome::Failed(e.to_string())
                }
            };
            (row, outcome)
        });
    }
    let mut summary = Summary::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((row, outcome)) = joined {
            summary.add(&outcome);
            done(&row, &outcome);
        }
    }
    summary
}

/// Writes users as `email,roles` CSV (roles joined by `;`), sorted by email, every cell
/// [`spreadsheet_safe`]; users without an email cannot be imported back and are left out
/// (their count is returned).
pub fn write_csv(out: impl std::io::Write, mut all: Vec<User>) -> Result<u64, csv::Error> {
    all.sort_by(|a, b| a.email.cmp(&b.email).then(a.user_id.cmp(&b.user_id)));
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["email", "roles"])?;
    let mut skipped = 0;
    for u in &all {
        match &u.email {
            Some(e) => w.write_record([
                spreadsheet_safe(e).as_ref(),
                spreadsheet_safe(&u.roles().join(";")).as_ref(),
            ])?,
            None => skipped += 1,
        }
    }
    w.flush()?;
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_is_checked_whole_before_any_call() {
        let ok = "email,roles\na@x.com,agent\nb@x.com, supervisor ; wfo.team_leader\n";
        let rows = read_csv("f.csv", ok.as_bytes(), &[]).unwrap();
        assert_eq!(rows[1].roles, vec!["supervisor", "wfo.team_leader"]);
        assert_eq!(rows[1].line, 3);
        let bad = "email,roles\na@x.com,agent\nb@x.com,owner;agent;boss\n";
        match read_csv("f.csv", bad.as_bytes(), &[]) {
            Err(RolesError::UnknownRoles(r)) => assert_eq!(r, vec!["owner", "boss"]),
            other => panic!("{other:?}"),
        }
        assert!(read_csv("f.csv", bad.as_bytes(), &["owner".into(), "boss".into()]).is_ok());
        let header = read_csv("f.csv", "mail,role\na@x,agent\n".as_bytes(), &[]).unwrap_err();
        assert!(header.to_string().contains("`email,roles`"), "{header}");
        let twice = read_csv(
            "f.csv",
            "email,roles\na@x,agent\nA@x,admin\n".as_bytes(),
            &[],
        )
        .unwrap_err();
        assert!(twice.to_string().contains("line 3"), "{twice}");
        assert!(read_csv("f.csv", "email,roles\nnot-an-email,agent\n".as_bytes(), &[]).is_err());
    }

    #[test]
    fn export_writes_the_import_format() {
        let u = |id: &str, email: Option<&str>, roles: serde_json::Value| User {
            user_id: id.into(),
            email: email.map(str::to_string),
            app_metadata: serde_json::json!({"flex": {"roles": roles}}),
        };
        let mut out = Vec::new();
        let skipped = write_csv(
            &mut out,
            vec![
                u("2", Some("b@x"), serde_json::json!(["agent", "admin"])),
                u("1", Some("a@x"), serde_json::json!("agent")),
                u("3", None, serde_json::json!(["agent"])),
            ],
        )
        .unwrap();
        assert_eq!(skipped, 1);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "email,roles\na@x,agent\nb@x,agent;admin\n");
        assert_eq!(read_csv("x", text.as_bytes(), &[]).unwrap().len(), 2);
    }

    #[test]
    fn export_cells_never_start_a_formula_and_import_reads_them_back() {
        let u = |email: &str, roles: serde_json::Value| User {
            user_id: email.into(),
            email: Some(email.into()),
            app_metadata: serde_json::json!({"flex": {"roles": roles}}),
        };
        let hostile = [
            "=HYPERLINK(\"http://x\")@x.com",
            "+1@x.com",
            "-2@x.com",
            "@sum@x.com",
            "\tt@x.com",
            "\rr@x.com",
            "'=q@x.com",
            "''q@x.com",
            "'plain@x.com",
        ];
        let mut users: Vec<User> = hostile
            .iter()
            .map(|e| u(e, serde_json::json!(["agent"])))
            .collect();
        users.push(u("roles@x.com", serde_json::json!(["-evil", "agent"])));
        let mut out = Vec::new();
        write_csv(&mut out, users).unwrap();
        let mut r = csv::ReaderBuilder::new().from_reader(out.as_slice());
        for rec in r.records() {
            let rec = rec.unwrap();
            for cell in rec.iter() {
                assert!(
                    !cell.starts_with(FORMULA_START),
                    "{cell:?} starts a formula"
                );
            }
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"'=HYPERLINK("), "{text}");
        assert!(text.contains("'-evil;agent"), "{text}");
        assert!(
            text.contains("\n'plain@x.com,agent\n"),
            "a plain quote is kept: {text}"
        );
        // Round trip: the import reads exactly what was exported.
        let rows = read_csv("x", text.as_bytes(), &["-evil".into()]).unwrap();
        let mut emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
        emails.sort();
        let mut want: Vec<&str> = hostile.to_vec();
        want.push("roles@x.com");
        want.sort();
        // The reader trims whitespace around cells, so tab and CR survive only behind the quote.
        assert_eq!(emails, want);
        let evil = rows.iter().find(|r| r.email == "roles@x.com").unwrap();
        assert_eq!(evil.roles, vec!["-evil", "agent"]);
    }

    #[test]
    fn an_empty_roles_cell_means_no_role() {
        let rows = read_csv("f.csv", "email,roles\na@x.com,\n".as_bytes(), &[]).unwrap();
        assert_eq!(rows[0].roles, Vec::<String>::new());
    }
}
