//! `flexgate probe URL`: one GET with a short timeout, for container health checks (the image
//! has no shell and no curl). Exit 0 on a 2xx answer, 1 on anything else, 2 on bad usage.

use super::{bounded, usage, Failure};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The URL to GET, http or https (e.g. http://127.0.0.1:8080/healthz)
    #[arg(value_parser = http_url)]
    url: url::Url,
    /// Seconds to wait for the whole answer (1-60)
    #[arg(long, default_value = "3", value_parser = timeout_secs)]
    timeout: u64,
}

fn http_url(s: &str) -> Result<url::Url, String> {
    let u =
        url::Url::parse(s).map_err(|e| format!("{e}; write e.g. http://127.0.0.1:8080/healthz"))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        other => Err(format!(
            "the scheme is {other}, not http or https; write e.g. http://127.0.0.1:8080/healthz"
        )),
    }
}

fn timeout_secs(s: &str) -> Result<u64, String> {
    bounded(s, 1..=60, "seconds", "write e.g. --timeout 3")
}

/// GETs the URL once; prints the status (or why there was none) and succeeds on 2xx only.
pub fn run(args: Args) -> Result<(), Failure> {
    let client = flexgate::http_client::build(Duration::from_secs(args.timeout)).map_err(usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    // The request's timer belongs to the runtime: the request is made inside it.
    let answer = rt.block_on(async { client.get(args.url.clone()).send().await });
    match answer {
        Ok(resp) if resp.status().is_success() => {
            println!("{} {}", args.url, resp.status());
            Ok(())
        }
        Ok(resp) => Err(anyhow::anyhow!("{} answered {}", args.url, resp.status()).into()),
        Err(e) => Err(anyhow::anyhow!(
            "no answer from {} within {} s ({}); is flexgate listening there?",
            args.url,
            args.timeout,
            flexgate::http_client::error_chain(&e)
        )
        .into()),
    }
}
