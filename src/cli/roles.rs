//! `flexgate roles`: the terminal side of [`flexgate::auth0::roles`]. Exit 0 done, 1 something
//! failed (an unknown user for `get`/`set`, any failed import row), 2 bad usage (unknown role
//! values, a bad CSV, no tenant or credentials).

use super::{init_tracing, runtime, Failure};
use flexgate::auth0::prefetch::{self, SnapshotKey};
use flexgate::auth0::roles::{self, Outcome, RolesError, Row};
use flexgate::auth0::{users, Auth0Error, Client, ClientConfig, Credentials};
use flexgate::config::{Config, StoreConfig};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the tenant is and how to reach it.
#[derive(Debug, clap::Args)]
pub struct Tenant {
    /// The Auth0 tenant's domain, e.g. example.us.auth0.com.
    #[arg(long, global = true)]
    pub auth0_domain: Option<String>,
    /// Send API and token calls here instead of https://{domain} (a proxy, a stand-in).
    #[arg(long, global = true)]
    pub management_url: Option<String>,
    /// Read the tenant (and, unless the AUTH0_MGMT_* variables are set, the credentials) from
    /// [upstream.management] of this config, and extra_roles from its [[sp]] sections; `set`
    /// and `import` also update the roles snapshot in its [store] (Redis).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    tenant: Tenant,
    #[command(subcommand)]
    command: RolesCommand,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let _log = init_tracing(false, "warn");
    runtime()?
        .block_on(run_async(&a.tenant, a.command))
        .map_err(|Exit(code, msg)| Failure {
            code,
            err: anyhow::anyhow!(msg),
        })
}

#[derive(Debug, clap::Subcommand)]
pub enum RolesCommand {
    /// Print the Flex roles of the account(s) with this email.
    Get { email: String },
    /// Set the Flex roles of the account(s) with this email (other app_metadata is kept);
    /// `--none` removes every Flex role.
    Set {
        email: String,
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        roles: Vec<String>,
        /// Remove every Flex role: the person gets Flex's no-role page at the next login.
        #[arg(long)]
        none: bool,
    },
    /// Set the roles of every `email,roles` row of a CSV file (roles separated by `;`).
    Import {
        file: PathBuf,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write every user with a Flex role as `email,roles` CSV (to stdout without FILE).
    Export { file: Option<PathBuf> },
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl From<RolesError> for Exit {
    fn from(e: RolesError) -> Self {
        Exit(2, e.to_string())
    }
}

impl From<Auth0Error> for Exit {
    fn from(e: Auth0Error) -> Self {
        let code = if matches!(e, Auth0Error::NoCredentials | Auth0Error::NoTenant) {
            2
        } else {
            1
        };
        Exit(code, e.to_string())
    }
}

fn load(t: &Tenant) -> Result<Option<Config>, Exit> {
    t.config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| Exit(2, e.to_string()))
}

/// The role values the config adds to Flex's (`[[sp]] extra_roles`).
fn extra_roles(cfg: Option<&Config>) -> Vec<String> {
    cfg.iter()
        .flat_map(|c| c.sps.iter().flat_map(|s| s.extra_roles.clone()))
        .collect()
}

/// The client: tenant from the flags, else `[upstream.management]`; credentials from the
/// environment, else `[upstream.management]`.
fn connect(t: &Tenant, cfg: Option<&Config>) -> Result<Client, Exit> {
    let mgmt = cfg.and_then(|c| c.upstream.management.clone());
    if let (Some(path), None, None, None) = (&t.config, &mgmt, &t.auth0_domain, &t.management_url) {
        return Err(Exit(2, format!("{}: has no [upstream.management]; add it (url, client_id, client_secret) or pass --auth0-domain", path.display())));
    }
    let creds = match (Credentials::from_env(), &mgmt) {
        (Ok(c), _) => c,
        (Err(_), Some(m)) => Credentials::ClientCredentials {
            client_id: m.client_id.clone(),
            client_secret: m.client_secret.clone(),
        },
        (Err(e), None) => return Err(e.into()),
    };
    let url = t
        .management_url
        .clone()
        .or_else(|| mgmt.as_ref().map(|m| m.url.clone()));
    let mut cc = ClientConfig::new(t.auth0_domain.as_deref(), url.as_deref(), creds)?;
    if let (None, Some(m)) = (&t.auth0_domain, &mgmt) {
        // [upstream.management] url is the tenant's canonical domain: it names the audience.
        cc.audience = format!("{}/api/v2/", m.url);
    }
    if let Some(c) = cfg {
        cc.timeout = c.upstream.timeout;
    }
    Ok(Client::new(cc)?)
}

fn roles_of(args: &[String]) -> Vec<String> {
    args.iter().flat_map(|r| roles::split(r)).collect()
}

async fn run_async(t: &Tenant, cmd: RolesCommand) -> Result<(), Exit> {
    let cfg = load(t)?;
    let extra = extra_roles(cfg.as_ref());
    // Role values are checked before anything else: no call with a role Flex would drop.
    let rows = match &cmd {
        RolesCommand::Set { roles, .. } => {
            let unknown = roles::unknown_roles(roles_of(roles).iter(), &extra);
            if !unknown.is_empty() {
                return Err(RolesError::UnknownRoles(unknown).into());
            }
            Vec::new()
        }
        RolesCommand::Import { file, .. } => {
            let f = std::fs::File::open(file)
                .map_err(|e| Exit(2, format!("{}: {e}", file.display())))?;
            roles::read_csv(&file.display().to_string(), f, &extra)?
        }
        _ => Vec::new(),
    };
    let client = connect(t, cfg.as_ref())?;
    let mut written = Vec::new();
    let result = match cmd {
        RolesCommand::Get { email } => get(&client, &email).await,
        RolesCommand::Set { email, roles, .. } => {
            set(&client, &email, &roles_of(&roles), &mut written).await
        }
        RolesCommand::Import { dry_run, .. } => {
            import(Arc::new(client), rows, dry_run, &mut written).await
        }
        RolesCommand::Export { file } => export(&client, file).await,
    };
    if let (Some(cfg), false) = (&cfg, written.is_empty()) {
        share(cfg, &written).await;
    }
    result
}

/// Puts the roles just written into the shared roles snapshot of the config's store, so running
/// instances use them within seconds rather than at their next bulk read. Auth0 holds the roles
/// whatever happens here: a failure is a warning.
async fn share(cfg: &Config, written: &[users::User]) {
    let Some(every) = cfg.upstream.management.as_ref().and_then(|m| m.prefetch) else {
        return;
    };
    let later = format!(
        "running flexgate instances use the new roles after their next bulk read (within prefetch_secs = {} s)",
        every.as_secs()
    );
    if matches!(cfg.store, StoreConfig::Memory) {
        eprintln!("note: [store] is in memory, so this command cannot reach the roles snapshot of a running flexgate; {later}");
        return;
    }
    let outcome = async {
        let m = cfg
            .upstream
            .management
            .as_ref()
            .ok_or("no [upstream.management]")?;
        let store = flexgate::serve::make_store(cfg).map_err(|e| e.to_string())?;
        let key = SnapshotKey::derive(m.client_secret.expose()).map_err(|e| e.to_string())?;
        prefetch::amend(store.as_ref(), &key, prefetch::keep(every), written)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match outcome {
        Ok(_) => eprintln!("the shared roles snapshot was updated: running flexgate instances use the new roles within 15 s"),
        Err(e) => eprintln!("warning: the roles are set in Auth0, but the shared roles snapshot could not be updated ({e}); {later}"),
    }
}

async fn set(
    c: &Client,
    email: &str,
    roles: &[String],
    written: &mut Vec<users::User>,
) -> Result<(), Exit> {
    match roles::set(c, email, roles, false).await? {
        Outcome::UnknownUser => Err(Exit(1, format!("Auth0 has no user with the email {email}"))),
        Outcome::Set { from, written: w } => {
            println!("{email}: {} (was {})", show(roles), show(&from));
            written.extend(w);
            Ok(())
        }
        _ => {
            println!("{email}: {} (unchanged)", show(roles));
            Ok(())
        }
    }
}

fn show(roles: &[String]) -> String {
    if roles.is_empty() {
        "no Flex role".into()
    } else {
        roles.join(", ")
    }
}

async fn get(c: &Client, email: &str) -> Result<(), Exit> {
    let accounts = users::by_email(c, email).await?;
    if accounts.is_empty() {
        return Err(Exit(1, format!("Auth0 has no user with the email {email}")));
    }
    for u in accounts {
        println!(
            "{} ({}): {}",
            u.email.as_deref().unwrap_or(email),
            u.user_id,
            show(&u.roles())
        );
    }
    Ok(())
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_string())
}

async fn import(
    c: Arc<Client>,
    rows: Vec<Row>,
    dry_run: bool,
    written: &mut Vec<users::User>,
) -> Result<(), Exit> {
    let pb = bar(
        rows.len() as u64,
        if dry_run { "checking" } else { "importing" },
    );
    let mut problems = Vec::new();
    let summary = roles::import(c, rows, dry_run, 4, &mut |row, outcome| {
        pb.inc(1);
        match outcome {
            Outcome::UnknownUser => problems.push(format!(
                "line {}: {}: no such user in Auth0",
                row.line, row.email
            )),
            Outcome::Failed(e) => {
                problems.push(format!("line {}: {}: failed: {e}", row.line, row.email))
            }
            Outcome::NotTried => problems.push(format!(
                "line {}: {}: not tried (stopped after an earlier error)",
                row.line, row.email
            )),
            Outcome::Set { written: w, .. } => written.extend(w.iter().cloned()),
            Outcome::Unchanged => {}
        }
    })
    .await;
    pb.finish_and_clear();
    problems.sort_by_key(|p| {
        p.split(':')
            .next()
            .and_then(|l| l.trim_start_matches("line ").parse::<u64>().ok())
    });
    for p in &problems {
        eprintln!("{p}");
    }
    let verb = if dry_run { "would set" } else { "set" };
    println!(
        "{verb} {}, unchanged {}, unknown user {}, failed {}{}",
        summary.set,
        summary.unchanged,
        summary.unknown_user,
        summary.failed,
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    if summary.failed > 0 {
        return Err(Exit(1, format!("{} row(s) failed; the others were applied as listed (re-running the import is safe)", summary.failed)));
    }
    Ok(())
}

async fn export(c: &Client, file: Option<PathBuf>) -> Result<(), Exit> {
    let pb = bar(0, "reading users");
    let all = users::all_with_roles(c, &|done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })
    .await?;
    pb.finish_and_clear();
    let n = all.len();
    let skipped = match &file {
        Some(p) => {
            let f =
                std::fs::File::create(p).map_err(|e| Exit(1, format!("{}: {e}", p.display())))?;
            roles::write_csv(f, all)
        }
        None => roles::write_csv(std::io::stdout().lock(), all),
    }
    .map_err(|e| Exit(1, format!("cannot write the CSV: {e}")))?;
    if skipped > 0 {
        eprintln!("{skipped} user(s) with a Flex role but no email were left out (the CSV is keyed by email)");
    }
    if file.is_some() {
        eprintln!("{} user(s) with a Flex role written", n as u64 - skipped);
    }
    Ok(())
}
