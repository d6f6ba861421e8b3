//! `flexgate init`: the Auth0 side set up through the Management API, then the files.

use super::{runtime, Failure};
use flexgate::auth0::init::{self, InitError, InitOptions};
use flexgate::auth0::{Client, ClientConfig, Credentials};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The Auth0 tenant domain, e.g. example.us.auth0.com.
    #[arg(long)]
    auth0_domain: String,
    /// How browsers reach flexgate, e.g. https://sso.example.com.
    #[arg(long)]
    public_url: String,
    /// Flex's SSO connection id (JQ…), from the ACS URL Flex Console shows.
    #[arg(long)]
    flex_connection: String,
    /// Flex region (login.flex.{region}.twilio.com).
    #[arg(long, default_value = "us1")]
    region: String,
    /// The Auth0 application's name; the Action is named NAME-flex-roles.
    #[arg(long, default_value = "flexgate")]
    app_name: String,
    /// Where flexgate.toml, flexgate.env and certs/ are written.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Print the plan and change nothing (read calls only, no file).
    #[arg(long)]
    dry_run: bool,
    /// Replace a flexgate.toml / flexgate.env whose contents differ.
    #[arg(long)]
    force: bool,
    /// Send the Management API and token calls here instead of https://{domain}.
    #[arg(long)]
    management_url: Option<String>,
}

fn fail(e: InitError) -> Failure {
    Failure {
        code: e.exit_code(),
        err: anyhow::Error::new(e),
    }
}

/// Credentials from the environment (AUTH0_MGMT_CLIENT_ID/SECRET or AUTH0_MGMT_TOKEN), then
/// plan and apply; the plan and every change are printed as they happen.
pub fn run(a: Args) -> Result<(), Failure> {
    let domain = init::tenant_domain(&a.auth0_domain).map_err(fail)?;
    let creds = Credentials::from_env().map_err(|e| fail(e.into()))?;
    let cfg = ClientConfig::new(Some(&domain), a.management_url.as_deref(), creds)
        .map_err(|e| fail(e.into()))?;
    let client = Client::new(cfg).map_err(|e| fail(e.into()))?;
    let opts = InitOptions {
        domain,
        public_url: a.public_url,
        flex_connection: a.flex_connection,
        region: a.region,
        app_name: a.app_name,
        out: a.out,
        dry_run: a.dry_run,
        force: a.force,
    };
    let rt = runtime()?;
    let mut out = std::io::stdout();
    rt.block_on(init::run(&client, &opts, &mut out))
        .map(|_| ())
        .map_err(fail)
}
