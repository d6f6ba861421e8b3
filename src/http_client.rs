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
