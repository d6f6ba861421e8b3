//! CPU work on input others send (parsing and checking AuthnRequests, verifying Responses) runs
//! here: on tokio's blocking pool, never on the reactor threads, and at most one job per core at
//! a time. The bound keeps a flood from growing the blocking pool to hundreds of threads that
//! would compete with the reactor for the CPU; queued jobs wait on a fair semaphore, so a login
//! waits behind the jobs already queued and no longer.
//!
//! The bound holds whatever the callers do:
//! - a job's slot (its semaphore permit) is moved into the job itself, so a caller that goes away
//!   (the client disconnected, the request deadline cut it) does not free the slot while the job
//!   still runs on its thread;
//! - at most [`QUEUE_PER_CORE`] × cores callers wait for a slot; one more is refused at once
//!   ([`JobError::Busy`], a 503 page), so a flood cannot pile up unbounded waiting requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Callers that may wait for a slot, per core. At 1–5 ms per AuthnRequest, a full queue drains
/// in well under a second, far inside `server.request_timeout_secs`.
pub const QUEUE_PER_CORE: usize = 64;

/// Why a job did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the CPU work queue is full ({0} requests already waiting); the request was refused at once — try again shortly")]
    Busy(usize),
    #[error("a CPU job failed: {0}")]
    Failed(String),
}

/// A bounded set of CPU slots with a bounded queue in front of it.
pub struct Pool {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place in the queue, given back when the caller gets its slot or goes away.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// `slots` jobs at a time; at most `max_waiting` callers waiting for one.
    pub fn new(slots: usize, max_waiting: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Slots not taken by a running job.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Callers waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Runs `f` on the blocking pool once a slot is free; [`JobError::Busy`] at once when the
    /// queue is full. The slot is released when `f` returns, even if the caller is gone.
    pub async fn run<T, F>(&self, f: F) -> Result<T, JobError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f()
        })
        .await
        .map_err(|e| JobError::Failed(e.to_string()))
    }

    /// A free slot now, or a place in the queue and then a slot.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, JobError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _queued = self.enqueue()?;
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| JobError::Failed(e.to_string()))
    }

    fn enqueue(&self) -> Result<Queued<'_>, JobError> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(&self.waiting);
        if before >= self.max_waiting {
            return Err(JobError::Busy(before));
        }
        Ok(queued)
    }
}

/// The process's pool: one slot per core, [`QUEUE_PER_CORE`] waiting callers per core.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cores, cores * QUEUE_PER_CORE)
    })
}

/// Runs `f` on the process's pool (see [`Pool::run`]).
pub async fn run<T, F>(f: F) -> Result<T, JobError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    pool().run(f).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Polls `fut` once: `Some` if it finished without waiting.
    fn now_or_never<F: std::future::Future>(fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        match fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    /// A job that says when it started and runs until released.
    fn held_job() -> (impl FnOnce() -> u32, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let job = move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv();
            1
        };
        (job, started, release)
    }

    async fn wait_started(started: mpsc::Receiver<()>) {
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_callers_slot_stays_taken_until_its_job_ends() {
        let pool = Arc::new(Pool::new(1, 4));
        let (job, started, release) = held_job();
        let p = pool.clone();
        let caller = tokio::spawn(async move { p.run(job).await });
        wait_started(started).await;
        // The client goes away (or the request deadline cuts it): the caller is dropped.
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert_eq!(
            pool.free_slots(),
            0,
            "the job still runs: its slot is taken"
        );
        // Another caller queues behind it rather than running beside it.
        let p = pool.clone();
        let next = tokio::spawn(async move { p.run(|| 2).await });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!next.is_finished());
        release.send(()).unwrap();
        assert_eq!(next.await.unwrap().unwrap(), 2);
        assert_eq!(pool.free_slots(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_queue_bound_callers_are_refused_at_once() {
        let pool = Arc::new(Pool::new(1, 3));
        let (job, started, release) = held_job();
        let p = pool.clone();
        let running = tokio::spawn(async move { p.run(job).await });
        wait_started(started).await;
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let p = pool.clone();
                tokio::spawn(async move { p.run(move || i).await })
            })
            .collect();
        while pool.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        // The flood beyond the bound: each answered on its first poll, without waiting.
        for _ in 0..50 {
            match now_or_never(pool.run(|| 0)) {
                Some(Err(JobError::Busy(3))) => {}
                other => panic!("expected Busy at once, got {other:?}"),
            }
        }
        assert_eq!(pool.waiting(), 3, "refused callers hold no place");
        // A waiter that goes away gives its place back …
        let mut queued = queued;
        let gone = queued.pop().unwrap();
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        assert_eq!(pool.waiting(), 2);
        // … and the others run once the slot frees.
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), 1);
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await.unwrap().unwrap(), i);
        }
        assert_eq!(pool.waiting(), 0);
        assert_eq!(pool.free_slots(), 1);
    }
}
