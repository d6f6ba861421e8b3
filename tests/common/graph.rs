//! The Microsoft identity platform + Microsoft Graph stand-in (`tests/peers/graph.mjs`).

use super::free_port;
use serde_json::Value;

/// A running `graph.mjs`. Dropping it stops the process.
pub struct GraphPeer {
    /// `http://127.0.0.1:PORT`: the Graph URL and the token endpoint's host.
    pub url: String,
    /// `{url}/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    peer: super::NodePeer,
}

impl GraphPeer {
    /// Starts the stand-in with `cfg` (keys: see the head of `graph.mjs`; `port` is set here
    /// from [`free_port`]) and waits until it listens.
    pub fn start(mut cfg: Value) -> GraphPeer {
        let port = free_port();
        cfg["port"] = Value::from(port);
        let tenant = cfg
            .get("tenant")
            .and_then(Value::as_str)
            .unwrap_or("contoso")
            .to_string();
        let peer = super::NodePeer::start("graph.mjs", &cfg, "the Graph stand-in", true);
        assert_eq!(
            peer.url,
            format!("http://127.0.0.1:{port}"),
            "the Graph stand-in listens elsewhere than asked"
        );
        GraphPeer {
            token_url: format!("{}/{tenant}/oauth2/v2.0/token", peer.url),
            url: peer.url.clone(),
            peer,
        }
    }

    /// `{"token_requests","graph_requests","throttled","unsupported_query","last_top","last_select"}`.
    pub async fn stats(&self) -> Value {
        self.peer.stats().await
    }
}
