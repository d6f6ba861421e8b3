//! A real `redis-server` on 127.0.0.1 for the tests that share state between instances.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A plain-TCP `redis-server`, nothing on disk, stopped when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let bin = PathBuf::from("/usr/bin/redis-server");
        assert!(
            bin.exists(),
            "redis-server is missing; run scripts/install-test-deps"
        );
        let child = Command::new(bin)
            .args(plain_args(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listening options for a plain-TCP server on 127.0.0.1:`port`.
pub fn plain_listen_args(port: u16) -> Vec<String> {
    ["--port", &port.to_string(), "--bind", "127.0.0.1"]
        .map(String::from)
        .to_vec()
}

/// No RDB snapshots, no AOF.
pub fn no_disk() -> Vec<String> {
    ["--save", "", "--appendonly", "no"]
        .map(String::from)
        .to_vec()
}

/// redis-server options for a plain-TCP server on 127.0.0.1:`port`, nothing on disk.
pub fn plain_args(port: u16) -> Vec<String> {
    [plain_listen_args(port), no_disk()].concat()
}
