//! The log writer: request threads append a formatted line to a buffer and go on; one background
//! thread writes the buffer to stderr in batches.
//!
//! Why not `tracing_appender::non_blocking`: it hands each line to its thread through a channel,
//! so every log line woke that thread (a futex wake and two context switches) and cost one
//! `write(2)`. Under load that was ≈ 5 % of a login's CPU for its two lines (issue 21,
//! BENCHMARKS.md). Here a line wakes the writer only when the buffer was empty; the writer then
//! waits [`BATCH_DELAY`] for more lines and writes them with one call. So at most
//! 1 / [`BATCH_DELAY`] wake-ups a second however busy the server is, none when idle, and a line
//! reaches stderr at most [`BATCH_DELAY`] after it was logged (sooner when the buffer fills).
//!
//! Nothing is dropped: when [`MAX_PENDING`] bytes wait (stderr stalled), a logging thread waits
//! for the writer, as `tracing_appender`'s lossless mode did. The [`Guard`] writes what is left
//! when the command ends.

use parking_lot::{Condvar, Mutex};
use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer collects lines after the first one of a batch.
pub const BATCH_DELAY: Duration = Duration::from_millis(25);
/// Bytes waiting beyond which a logging thread waits for the writer (backpressure, never loss).
pub const MAX_PENDING: usize = 4 << 20;
/// A buffer that grew past this during a burst is given back to the allocator once written.
const KEEP_CAPACITY: usize = 256 << 10;

struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a first line, a full buffer or the end.
    wake: Condvar,
    /// Logging threads wait here while the buffer is full.
    drained: Condvar,
    max_pending: usize,
}

/// The `MakeWriter` given to `tracing_subscriber`; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Ends the writer thread when dropped, after it has written every line.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer that batches lines into `out` on a background thread named `log-writer`.
pub fn batch_writer<W: Write + Send + 'static>(out: W) -> std::io::Result<(BatchWriter, Guard)> {
    batch_writer_with(out, BATCH_DELAY, MAX_PENDING)
}

fn batch_writer_with<W: Write + Send + 'static>(
    mut out: W,
    delay: Duration,
    max_pending: usize,
) -> std::io::Result<(BatchWriter, Guard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: Vec::new(),
            closed: false,
        }),
        wake: Condvar::new(),
        drained: Condvar::new(),
        max_pending,
    });
    let s = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                let mut st = s.state.lock();
                while st.buf.is_empty() && !st.closed {
                    s.wake.wait(&mut st);
                }
                if st.buf.is_empty() {
                    return; // closed and nothing left
                }
                // Collect more lines, unless the buffer is full or the command is ending.
                let _ = s.wake.wait_while_for(
                    &mut st,
                    |st| !st.closed && st.buf.len() < s.max_pending,
                    delay,
                );
                std::mem::swap(&mut st.buf, &mut spare);
                drop(st);
                s.drained.notify_all();
                // A failed write has nowhere to be reported; the next batch tries again.
                let _ = out.write_all(&spare).and_then(|()| out.flush());
                spare.clear();
                if spare.capacity() > KEEP_CAPACITY {
                    spare = Vec::new();
                }
            }
        })?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let s = &*self.shared;
        let mut st = s.state.lock();
        while st.buf.len() >= s.max_pending && !st.closed {
            s.wake.notify_one();
            s.drained.wait(&mut st);
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(data);
        let full = st.buf.len() >= s.max_pending;
        drop(st);
        if was_empty || full {
            s.wake.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // the writer thread flushes each batch
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.drained.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Records each `write_all` batch it is given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(i: usize) -> Vec<u8> {
        format!("line {i:05}\n").into_bytes()
    }

    #[test]
    fn every_line_arrives_in_order_and_lines_logged_together_share_a_write() {
        let rec = Recorder::default();
        let (w, guard) =
            batch_writer_with(rec.clone(), Duration::from_millis(200), 1 << 20).unwrap();
        let mut handle = w.clone();
        for i in 0..1000 {
            handle.write_all(&line(i)).unwrap();
        }
        drop(guard);
        let writes = rec.0.lock().clone();
        let all: Vec<u8> = writes.concat();
        let want: Vec<u8> = (0..1000).flat_map(line).collect();
        assert_eq!(all, want);
        // 1,000 lines logged within the delay: a handful of writes, not one per line.
        assert!(writes.len() <= 3, "{} writes for 1,000 lines", writes.len());
    }

    #[test]
    fn a_line_reaches_the_output_without_waiting_for_the_end() {
        let rec = Recorder::default();
        let (mut w, _guard) =
            batch_writer_with(rec.clone(), Duration::from_millis(5), 1 << 20).unwrap();
        w.write_all(b"hello\n").unwrap();
        let start = Instant::now();
        while rec.0.lock().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the line never arrived"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rec.0.lock().concat(), b"hello\n");
    }

    /// Blocks every write until the test opens the gate.
    struct Gated(Arc<(Mutex<bool>, Condvar)>, Recorder);

    impl Write for Gated {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut o = open.lock();
            while !*o {
                cv.wait(&mut o);
            }
            self.1.write(data)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_holds_loggers_back_instead_of_dropping_or_growing_without_bound() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let rec = Recorder::default();
        let (w, guard) = batch_writer_with(
            Gated(gate.clone(), rec.clone()),
            Duration::from_millis(1),
            1000,
        )
        .unwrap();
        let logged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (w2, n2) = (w.clone(), logged.clone());
        let logger = std::thread::spawn(move || {
            let mut w2 = w2;
            for i in 0..500 {
                w2.write_all(&line(i)).unwrap(); // 11 bytes a line
                n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // The writer holds one batch (≤ 1,000 bytes plus a line) while blocked, the buffer
        // another: the logger stops well before its 500 lines.
        std::thread::sleep(Duration::from_millis(300));
        let stuck_at = logged.load(std::sync::atomic::Ordering::SeqCst);
        assert!(stuck_at < 250, "the logger went on to line {stuck_at}");
        assert!(w.shared.state.lock().buf.len() < 1000 + 11);
        *gate.0.lock() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        drop(guard);
        let want: Vec<u8> = (0..500).flat_map(line).collect();
        assert_eq!(rec.0.lock().concat(), want);
    }
}
