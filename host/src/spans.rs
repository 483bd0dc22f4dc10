//! The queue that batches finished spans to the exporter.
//!
//! A call's spans are written as protobuf bytes when the call ends
//! ([`crate::otlp::write_span`], from the facts the call has at hand, with
//! nothing copied into span objects first) and appended to one queue under
//! one lock; a thread of the queue's own takes them off in batches and hands
//! them to the OTLP exporter. Nothing but the writing and the append is on a
//! call's path.
//!
//! Why not the SDK's tracer and `BatchSpanProcessor`: measured with
//! `cargo bench --bench serve -- spans` (callgrind), a traced REST call cost
//! about 34 000 instructions there: 20 000 on the call's thread building seven
//! SDK spans (attribute vectors grown one push at a time, each span's data
//! moved into the processor's channel, out of it and into a batch), the rest
//! on the processor's thread, converting and freeing them. Spans written once
//! from borrowed facts cost a fraction of that (the benchmark's figures are
//! in the README).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::otlp::OtlpExporter;

/// How spans are batched (the OpenTelemetry batch processor's settings,
/// `OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans queued at most; more are dropped (and counted), never waited
    /// for.
    pub max_queue: usize,
    /// Spans sent in one export at most; a queue this long is sent at once.
    pub max_batch: usize,
    /// How long a span waits at most before it is sent.
    pub delay: Duration,
}

impl Default for BatchConfig {
    /// A queue of 65 536 spans, sent every second in batches of 512 (a busy
    /// server makes about seven spans a call: the SDK's default queue of
    /// 2 048 would drop spans within a second of load).
    fn default() -> BatchConfig {
        BatchConfig {
            max_queue: 65_536,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// Longest a flush or shutdown waits for the exporting thread.
const FLUSH_WAIT: Duration = Duration::from_secs(30);

/// Finished spans waiting for export, and the thread that exports them.
#[derive(Debug)]
pub struct SpanQueue {
    shared: Arc<Shared>,
    config: BatchConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the exporting thread.
    wake: Condvar,
    /// Wakes those waiting for a flush.
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queued: Queued,
    /// Flushes asked for and done (a counter each: a flush waits for the
    /// export that started after it asked).
    flushes_asked: u64,
    flushes_done: u64,
    shutdown: bool,
    /// Spans handed to the exporter, and spans dropped on a full queue.
    exported: u64,
    dropped: u64,
}

impl SpanQueue {
    /// Starts the exporting thread. With no exporter, batches are taken and
    /// dropped (what spans cost without a collector's work, for benchmarks).
    pub fn start(
        exporter: Option<OtlpExporter>,
        config: BatchConfig,
    ) -> std::io::Result<SpanQueue> {
        let config = BatchConfig {
            max_queue: config.max_queue.max(1),
            max_batch: config.max_batch.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("fabric-spans".into())
            .spawn({
                let shared = shared.clone();
                move || export_loop(&shared, exporter.as_ref(), config)
            })?;
        Ok(SpanQueue {
            shared,
            config,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `n` finished spans, as [`crate::otlp::write_span`] wrote them
    /// (all or none: a full queue drops them and counts them, never waits).
    pub fn push(&self, spans: &[u8], n: usize) {
        let mut state = self.shared.lock();
        if state.shutdown || state.queued.spans + n > self.config.max_queue {
            let first = state.dropped == 0;
            state.dropped += n as u64;
            drop(state);
            if first {
                tracing::warn!(
                    queue = self.config.max_queue,
                    "the span queue is full: spans are dropped (raise OTEL_BSP_MAX_QUEUE_SIZE, or check the collector)"
                );
            }
            return;
        }
        let before = state.queued.spans;
        state.queued.push(spans, n);
        if before < self.config.max_batch && state.queued.spans >= self.config.max_batch {
            self.shared.wake.notify_one();
        }
    }

    /// Exports every span queued so far, and waits (at most 30 s) until it
    /// has been sent.
    pub fn force_flush(&self) {
        let mut state = self.shared.lock();
        if state.shutdown {
            return;
        }
        state.flushes_asked += 1;
        let asked = state.flushes_asked;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + FLUSH_WAIT;
        while state.flushes_done < asked {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = match self.shared.done.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Exports what is queued and stops the thread; later spans are dropped.
    pub fn shutdown(&self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Spans handed to the exporter so far.
    pub fn exported(&self) -> u64 {
        self.shared.lock().exported
    }

    /// Spans dropped so far, on a full queue or after shutdown.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

impl Drop for SpanQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Spans written and waiting: their bytes, and where each push ended (so a
/// batch is cut between spans).
#[derive(Debug, Default)]
struct Queued {
    bytes: Vec<u8>,
    /// Each push's end in `bytes`, and its number of spans.
    pushes: Vec<(usize, usize)>,
    spans: usize,
}

impl Queued {
    fn push(&mut self, spans: &[u8], n: usize) {
        self.bytes.extend_from_slice(spans);
        self.pushes.push((self.bytes.len(), n));
        self.spans += n;
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.pushes.clear();
        self.spans = 0;
    }

    /// The queued spans in batches of at most `max` spans (a push bigger
    /// than that is a batch of its own).
    fn batches(&self, max: usize) -> impl Iterator<Item = (&[u8], usize)> + '_ {
        let mut pushes = self.pushes.iter().peekable();
        let mut from = 0;
        std::iter::from_fn(move || {
            let (mut end, mut n) = *pushes.next()?;
            while let Some(&&(next_end, next_n)) = pushes.peek() {
                if n + next_n > max {
                    break;
                }
                (end, n) = (next_end, n + next_n);
                pushes.next();
            }
            let batch = (&self.bytes[from..end], n);
            from = end;
            Some(batch)
        })
    }
}

/// The exporting thread: waits for a full batch, a flush, shutdown or the
/// delay, then sends everything queued, a batch at a time.
fn export_loop(shared: &Shared, exporter: Option<&OtlpExporter>, config: BatchConfig) {
    // Swapped with the queue each round, so neither is grown again.
    let mut taken = Queued::default();
    loop {
        let mut state = shared.lock();
        let deadline = Instant::now() + config.delay;
        while state.queued.spans < config.max_batch
            && state.flushes_asked == state.flushes_done
            && !state.shutdown
        {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match shared.wake.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        std::mem::swap(&mut state.queued, &mut taken);
        let (asked, stop) = (state.flushes_asked, state.shutdown);
        drop(state);
        for (batch, _) in taken.batches(config.max_batch) {
            if let Some(exporter) = exporter {
                // A failure is logged by the exporter; the batch is gone.
                let _ = exporter.export(batch);
            }
        }
        let sent = taken.spans as u64;
        taken.clear();
        let mut state = shared.lock();
        state.exported += sent;
        state.flushes_done = asked;
        shared.done.notify_all();
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` made-up spans of 10 bytes each.
    fn spans(n: usize) -> Vec<u8> {
        vec![7; 10 * n]
    }

    #[test]
    fn a_flush_sends_what_is_queued_and_a_full_queue_drops_whole_pushes() {
        let queue = SpanQueue::start(
            None,
            BatchConfig {
                max_queue: 10,
                max_batch: 4,
                delay: Duration::from_secs(3600),
            },
        )
        .unwrap();
        queue.push(&spans(3), 3);
        assert_eq!(queue.exported(), 0, "3 < a batch, an hour's delay: kept");
        queue.force_flush();
        assert_eq!(queue.exported(), 3);
        // A full batch goes without a flush.
        queue.push(&spans(4), 4);
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.exported() < 7 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(queue.exported(), 7);
        // Eleven do not fit in a queue of ten: all dropped, none split.
        queue.push(&spans(11), 11);
        assert_eq!(queue.dropped(), 11);
        queue.push(&spans(2), 2);
        queue.shutdown();
        assert_eq!(queue.exported(), 9, "shutdown sends what is queued");
        queue.push(&spans(2), 2);
        assert_eq!(queue.dropped(), 13, "after shutdown spans are dropped");
    }

    #[test]
    fn batches_are_cut_between_pushes_and_hold_at_most_the_batch_size() {
        let mut q = Queued::default();
        for (i, n) in [3usize, 2, 1, 6, 1].into_iter().enumerate() {
            q.push(&vec![i as u8; n], n);
        }
        let batches: Vec<(Vec<u8>, usize)> = q.batches(4).map(|(b, n)| (b.to_vec(), n)).collect();
        assert_eq!(
            batches,
            vec![
                (vec![0, 0, 0], 3),
                (vec![1, 1, 2], 3),
                (vec![3; 6], 6),
                (vec![4], 1),
            ]
        );
        q.clear();
        assert_eq!(q.batches(4).count(), 0);
    }
}
