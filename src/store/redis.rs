//! The Redis store: what several flexgate instances share. Every entry has a TTL; `take` is
//! `GETDEL` (atomic single use), `first_use` is `SET NX PX`, `swap` a Lua script (`GET`,
//! compare, `SET PX`: atomic, one key, so it works on Cluster too), `time_ms` is `TIME`. The connection is made lazily and
//! re-made after failures (redis's `ConnectionManager` reconnects by itself once it exists), so
//! flexgate starts — and `/readyz` says why it is not ready — while Redis is away.
//!
//! Three deployments, by URL:
//! - `redis://[:password@]host:port[/db]`, `rediss://…` (TLS): one server (or a managed endpoint);
//! - `redis+sentinel://[:password@]sentinel1:26379,sentinel2:26379/SERVICE[/db]`: Sentinel finds the
//!   master; after a failure the next command asks Sentinel again (failover is followed);
//! - `redis+cluster://[:password@]node1:6379,node2:6379,…`: Redis Cluster (each entry is one key,
//!   so every command goes to one slot);
//! - `rediss+sentinel://…`, `rediss+cluster://…`: the same over TLS to every node and Sentinel.
//!
//! TLS certificates are verified against the system trust store; `SSL_CERT_FILE` adds a private
//! CA (OpenSSL reads it), and the redis crate's `#insecure` URL suffix turns verification off
//! for single-server URLs (do not, outside a lab).

use super::{Space, Store, StoreError};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use std::time::Duration;

enum Backend {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Sentinel(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// `swap`: KEYS[1] the key; ARGV: 1 if a value is expected (0: absent), the expected value,
/// the new value, the TTL in ms.
const SWAP_SCRIPT: &str = r"local held = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and not held) or (ARGV[1] == '1' and held == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0";

/// A Redis-backed [`Store`].
pub struct RedisStore {
    backend: Backend,
    conn: tokio::sync::Mutex<Option<Conn>>,
    timeout: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    let e = e.to_string();
    let hint = if e.contains("certificate verify failed") {
        " (fix: the Redis server's certificate must chain to a trusted CA and name the host in the URL; for a private CA start flexgate with SSL_CERT_FILE=/path/to/ca.pem)"
    } else {
        ""
    };
    StoreError::Unavailable(format!("Redis: {e}{hint}"))
}

/// `[:password@]h1:p1,h2:p2[/path]` → (password, hosts, path)
fn split_multi(rest: &str) -> Result<(Option<String>, Vec<String>, String), StoreError> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let password = auth
        .map(|a| a.split_once(':').map(|(_, p)| p).unwrap_or(a))
        .filter(|p| !p.is_empty())
        .map(|p| {
            url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        });
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if hosts.is_empty() {
        return Err(unavailable("the URL names no host"));
    }
    Ok((password, hosts, path.to_string()))
}

/// Checks the form of a store URL without building a client or connecting: the scheme is one
/// of the six above, a one-server URL parses, a Sentinel or Cluster URL names hosts that parse
/// (and a Sentinel URL its service). The error says what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match scheme {
        "redis" | "rediss" => url::Url::parse(url)
            .map(drop)
            .map_err(|e| format!("is not a URL ({e})")),
        "redis+sentinel" | "rediss+sentinel" | "redis+cluster" | "rediss+cluster" => {
            let malformed = || {
                "cannot be used (hosts or the Sentinel service name are missing or malformed)"
                    .to_string()
            };
            let (_, hosts, path) = split_multi(rest).map_err(|_| malformed())?;
            let bad_host = hosts
                .iter()
                .any(|h| url::Url::parse(&format!("redis://{h}")).is_err());
            let no_service = scheme.ends_with("sentinel") && path.split('/').all(str::is_empty);
            if bad_host || no_service {
                return Err(malformed());
            }
            Ok(())
        }
        other => Err(format!("uses the scheme {other:?}")),
    }
}

impl RedisStore {
    /// `url`: see the module documentation.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let (url_scheme, rest) = url.split_once("://").unwrap_or((url, ""));
        // `rediss+…`: TLS to every node (and to the Sentinels), verified against the system
        // trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` add a private CA).
        let tls = url_scheme.starts_with("rediss+");
        let scheme = if tls { "rediss" } else { "redis" };
        let backend = if matches!(url_scheme, "redis+sentinel" | "rediss+sentinel") {
            let (password, hosts, path) = split_multi(rest)?;
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let service = parts
                .next()
                .ok_or_else(|| unavailable("a Sentinel URL needs the service name: redis+sentinel://host:26379/mymaster"))?
                .to_string();
            let db: i64 = parts.next().map(|d| d.parse().unwrap_or(0)).unwrap_or(0);
            let sentinels: Vec<String> = hosts.iter().map(|h| format!("{scheme}://{h}")).collect();
            let mut info = redis::RedisConnectionInfo::default().set_db(db);
            if let Some(p) = password {
                info = info.set_password(p);
            }
            let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(info);
            if tls {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            let client = redis::sentinel::SentinelClient::build(
                sentinels,
                service,
                Some(node),
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(unavailable)?;
            Backend::Sentinel(tokio::sync::Mutex::new(client))
        } else if matches!(url_scheme, "redis+cluster" | "rediss+cluster") {
            let (password, hosts, _) = split_multi(rest)?;
            let nodes: Vec<String> = hosts.iter().map(|h| format!("{scheme}://{h}")).collect();
            let mut b = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(p) = password {
                b = b.password(p);
            }
            Backend::Cluster(b.build().map_err(unavailable)?)
        } else {
            Backend::Single(redis::Client::open(url).map_err(unavailable)?)
        };
        Ok(RedisStore {
            backend,
            conn: tokio::sync::Mutex::new(None),
            timeout,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, space: Space, key: &str) -> String {
        format!("{}:{}:{}", self.prefix, space.prefix(), key)
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match &self.backend {
            Backend::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map_err(unavailable)?,
                ))
            }
            Backend::Sentinel(client) => {
                let mut client = client.lock().await;
                Ok(Conn::Sentinel(
                    client.get_async_connection().await.map_err(unavailable)?,
                ))
            }
            Backend::Cluster(client) => Ok(Conn::Cluster(
                client.get_async_connection().await.map_err(unavailable)?,
            )),
        }
    }

    async fn connection(&self) -> Result<Conn, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout * 2, self.connect())
            .await
            .map_err(|_| unavailable("connecting timed out"))??;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection, so the next command connects (and asks Sentinel) again.
    async fn reset(&self) {
        if !matches!(self.backend, Backend::Single(_)) {
            *self.conn.lock().await = None;
        }
    }

    /// `fut` within the command timeout; a failure forgets the connection.
    async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => unavailable(e),
            Err(_) => unavailable("the command timed out"),
        };
        self.reset().await;
        Err(result)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let c = self.connection().await?;
        let fut = async {
            match c {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Sentinel(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        };
        self.within(fut).await
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        let c = self.connection().await?;
        let fut = async {
            match c {
                Conn::Single(mut c) => pipe.query_async::<T>(&mut c).await,
                Conn::Sentinel(mut c) => pipe.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async::<T>(&mut c).await,
            }
        };
        self.within(fut).await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(space, key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.run::<()>(cmd).await
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(space, key));
        self.run::<Option<Vec<u8>>>(cmd).await
    }

    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(space, key));
        self.run::<Option<Vec<u8>>>(cmd).await
    }

    async fn first_use(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(space, key))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let r: Option<String> = self.run(cmd).await?;
        Ok(r.is_some())
    }

    async fn swap(
        &self,
        space: Space,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SWAP_SCRIPT)
            .arg(1)
            .arg(self.key(space, key))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(ttl.as_millis().max(1) as u64);
        let done: i64 = self.run(cmd).await?;
        Ok(done == 1)
    }

    async fn time_ms(&self) -> Result<u64, StoreError> {
        let (secs, micros): (u64, u64) = self.run(redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.run(redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("PING answered {pong:?}")))
        }
    }

    async fn push_list(
        &self,
        space: Space,
        key: &str,
        item: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        // One key, one MULTI/EXEC: atomic, one round trip (and one slot in a cluster).
        let k = self.key(space, key);
        let max = max.max(1) as isize;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(&k, item)
            .ignore()
            .lrange(&k, max, -1)
            .ltrim(&k, 0, max - 1)
            .ignore()
            .pexpire(&k, ttl.as_millis().max(1) as i64)
            .ignore();
        let (dropped,): (Vec<String>,) = self.run_pipe(pipe).await?;
        Ok(dropped)
    }

    async fn list(&self, space: Space, key: &str) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.key(space, key)).arg(0).arg(-1);
        self.run::<Vec<String>>(cmd).await
    }
}
