//! CPU work on input others send (parsing and checking AuthnRequests, verifying Responses) runs
//! here: on tokio's blocking pool, never on the reactor threads, and at most one job per core at
//! a time. The bound keeps a flood from growing the blocking pool to hundreds of threads that
//! would compete with the reactor for the CPU; queued jobs wait on a fair semaphore, so a login
//! waits behind the jobs already queued and no longer.

use std::sync::OnceLock;
use tokio::sync::Semaphore;

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new(cores)
    })
}

/// Why a job did not run to its end.
#[derive(Debug, thiserror::Error)]
#[error("a CPU job failed: {0}")]
pub struct JobFailed(String);

/// Runs `f` on the blocking pool once a permit is free.
pub async fn run<T, F>(f: F) -> Result<T, JobFailed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _permit = permits()
        .acquire()
        .await
        .map_err(|e| JobFailed(e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobFailed(e.to_string()))
}
