//! The Microsoft identity platform + Microsoft Graph stand-in (`tests/peers/graph.mjs`).

use super::{free_port, repo};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

/// A running `graph.mjs`. Dropping it stops the process.
pub struct GraphPeer {
    /// `http://127.0.0.1:PORT`: the Graph URL and the token endpoint's host.
    pub url: String,
    /// `{url}/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
}

impl Drop for GraphPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("graph.json");
        std::fs::write(&path, cfg.to_string()).expect("write graph.json");
        let mut child = Command::new("node")
            .arg(repo().join("tests/peers/graph.mjs"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start node (run scripts/install-test-deps)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => l[6..].trim().to_string(),
            other => {
                let _ = child.kill();
                panic!("the Graph stand-in did not start: {other:?}")
            }
        };
        assert_eq!(
            url,
            format!("http://127.0.0.1:{port}"),
            "the Graph stand-in listens elsewhere than asked"
        );
        std::thread::spawn(move || for _ in lines {});
        GraphPeer {
            token_url: format!("{url}/{tenant}/oauth2/v2.0/token"),
            url,
            child,
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// `{"token_requests","graph_requests","throttled","unsupported_query","last_top","last_select"}`.
    pub async fn stats(&self) -> Value {
        ::reqwest::get(format!("{}/__stats", self.url))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}
