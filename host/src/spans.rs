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

/// Longest a flush waits for the exporting thread.
const FLUSH_WAIT: Duration = Duration::from_secs(30);
/// Longest shutdown waits for the last spans to be sent (the exporter gives
/// up on a collector after its own timeout, 10 s by default, and a round
/// stops at its first failure); past it the thread is left to the process's
/// exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// Shortest wait between rounds: a zero delay would spin.
const MIN_DELAY: Duration = Duration::from_millis(1);

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
    /// Wakes those waiting for a flush or for the thread to stop.
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
    /// The thread has sent its last round and ended.
    stopped: bool,
    /// Spans sent (or, with no exporter, taken), and spans lost: dropped on
    /// a full queue, pushed after shutdown, or in a batch that failed.
    exported: u64,
    dropped: u64,
    /// Whether a full queue has been reported since it last had room.
    full: bool,
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
            delay: config.delay.max(MIN_DELAY),
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
    /// (all or none: spans that would overfill the queue are dropped and
    /// counted, never waited for; an empty queue takes any push).
    pub fn push(&self, spans: &[u8], n: usize) {
        let mut state = self.shared.lock();
        if state.shutdown {
            state.dropped += n as u64;
            return;
        }
        let before = state.queued.spans;
        if before > 0 && before + n > self.config.max_queue {
            state.dropped += n as u64;
            let first = !std::mem::replace(&mut state.full, true);
            drop(state);
            if first {
                tracing::warn!(
                    queue = self.config.max_queue,
                    "the span queue is full: spans are dropped (raise OTEL_BSP_MAX_QUEUE_SIZE, or check the collector)"
                );
            }
            return;
        }
        state.full = false;
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
        drop(self.wait(state, FLUSH_WAIT, |s| s.flushes_done >= asked));
    }

    /// Sends what is queued (waiting at most 15 s) and stops the thread;
    /// later spans are dropped. Spans lost over the queue's life are
    /// reported once, here.
    pub fn shutdown(&self) {
        let mut state = self.shared.lock();
        if !state.shutdown {
            state.shutdown = true;
            self.shared.wake.notify_one();
        }
        let state = self.wait(state, SHUTDOWN_WAIT, |s| s.stopped);
        let (stopped, dropped) = (state.stopped, state.dropped);
        drop(state);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        match thread {
            Some(thread) if stopped => {
                let _ = thread.join();
            }
            Some(_) => tracing::warn!(
                "the last spans were still being sent after {SHUTDOWN_WAIT:?}: left unsent"
            ),
            None => return,
        }
        if dropped > 0 {
            tracing::warn!(dropped, "spans were lost (full queue or failed exports)");
        }
    }

    /// Waits on the `done` condition until `until` holds or `wait` passed.
    fn wait<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        wait: Duration,
        until: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + wait;
        while !until(&state) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.shared.done.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state
    }

    /// Spans sent so far (with no exporter: taken off the queue).
    pub fn exported(&self) -> u64 {
        self.shared.lock().exported
    }

    /// Spans lost so far: on a full queue, after shutdown, or in an export
    /// that failed.
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
        // A round stops at its first failure: the collector is down or
        // slow, and waiting out its timeout for every batch would hold
        // shutdown for minutes. The rest of the round is lost, and counted.
        let (mut sent, mut lost) = (0, 0);
        for (batch, n) in taken.batches(config.max_batch) {
            let ok = lost == 0 && exporter.is_none_or(|e| e.export(batch).is_ok());
            if ok {
                sent += n as u64;
            } else {
                lost += n as u64;
            }
        }
        taken.clear();
        let mut state = shared.lock();
        state.exported += sent;
        state.dropped += lost;
        state.flushes_done = asked;
        state.stopped = stop;
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
        // 3 queued and 8 more do not fit in ten: the 8 are dropped, none
        // split; an empty queue takes even a push bigger than itself.
        queue.push(&spans(3), 3);
        queue.push(&spans(8), 8);
        assert_eq!(queue.dropped(), 8);
        queue.force_flush();
        queue.push(&spans(11), 11);
        assert_eq!(queue.dropped(), 8);
        queue.shutdown();
        assert_eq!(queue.exported(), 21, "shutdown sends what is queued");
        queue.push(&spans(2), 2);
        assert_eq!(queue.dropped(), 10, "after shutdown spans are dropped");
    }

    #[test]
    fn a_collector_that_never_answers_costs_one_timeout_not_one_per_batch() {
        // Accepts connections and reads nothing: every post times out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming().take(4) {
                open.push(stream);
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        let exporter = OtlpExporter::new(&crate::otlp::OtlpConfig {
            endpoint: format!("http://{addr}/v1/traces"),
            headers: vec![],
            timeout: Duration::from_millis(300),
        })
        .unwrap();
        let queue = SpanQueue::start(
            Some(exporter),
            BatchConfig {
                max_queue: 1000,
                max_batch: 2,
                delay: Duration::from_secs(3600),
            },
        )
        .unwrap();
        for _ in 0..10 {
            queue.push(&spans(1), 1);
        }
        let started = Instant::now();
        queue.shutdown();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "five batches of a dead collector took {took:?}"
        );
        assert_eq!((queue.exported(), queue.dropped()), (0, 10));
        drop(held);
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
