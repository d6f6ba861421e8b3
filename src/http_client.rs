//! The one outgoing HTTP client shape, for the upstream OP and the Auth0 Management API.

use std::time::Duration;

/// A reqwest client with `timeout` per request and per connect, no redirects followed, and idle
/// connections dropped after 4 s: before common server keep-alive limits (node: 5 s), so a request
/// never races the server closing the connection it was about to reuse.
pub fn build(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(4))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flexgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An error and its causes on one line: reqwest's own message alone says only "error sending
/// request", the cause says why (refused, DNS, TLS).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}
