//! Budgets: what a caller, and each of its agent sessions, may still spend.
//!
//! Five kinds, each optional, per caller and per session (the callers file's
//! `[budget]` and `[session_budget]`, with `[defaults]`): `calls` (the
//! agent's step count), `fuel`, `wall` (guest wall time), `output` (bytes of
//! JSON returned) and `per_minute` (calls in the current clock minute).
//!
//! A call is **reserved** before it runs and **settled** after it:
//!
//! - reserve: refused (`budget_exceeded`) when a budget has nothing left;
//!   otherwise one call is counted and, of fuel, wall time and output, what
//!   the call may use at most: its policy's limit, lowered to what remains of
//!   each budget (so the call itself is capped and a budget is never
//!   overshot, however many calls run at once);
//! - settle: the reservation is replaced by what the call really used.
//!
//! Both are one atomic update of every counter involved, so 64 parallel calls
//! against a budget of 10 calls run exactly 10.
//!
//! Counters sit behind [`CounterStore`]: sled under the data directory by
//! default ([`SledCounters`], so spending survives a restart), in memory
//! without one. A networked store shared by several nodes implements the same
//! three methods.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admit::Identity;
use crate::call::{Ending, Outcome};
use crate::callers::Budget;

/// What one caller or session has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// Calls admitted.
    pub calls: u64,
    /// Fuel used by calls that ended.
    pub fuel: u64,
    /// Guest wall time of calls that ended, microseconds.
    pub wall_us: u64,
    /// Output bytes of calls that ended.
    pub output: u64,
    /// Fuel reserved by calls running now.
    #[serde(default)]
    pub reserved_fuel: u64,
    /// Wall time reserved by calls running now, microseconds.
    #[serde(default)]
    pub reserved_wall_us: u64,
    /// Output bytes reserved by calls running now.
    #[serde(default)]
    pub reserved_output: u64,
    /// The clock minute (Unix seconds / 60) `minute_calls` counts in.
    pub minute: u64,
    /// Calls admitted in that minute.
    pub minute_calls: u64,
}

impl Spent {
    /// These counters without the reservations of running calls. Only
    /// this process's calls hold reservations, so they are never stored:
    /// after a crash, a call that was running is not charged (as the last
    /// [`SledCounters::WRITE_EVERY`] of spending may be forgotten), and
    /// its reservation does not hold the budget against later calls.
    fn unreserved(self) -> Spent {
        Spent {
            reserved_fuel: 0,
            reserved_wall_us: 0,
            reserved_output: 0,
            ..self
        }
    }
}

/// The budget counter store failed.
#[derive(Debug, thiserror::Error)]
#[error("the budget store at {path} failed: {message}")]
pub struct StoreError {
    /// Where the store is (`(memory)` for the in-memory one).
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Where counters live. Implementations make [`CounterStore::update`]
/// atomic with respect to every other update of the same keys.
pub trait CounterStore: Send + Sync {
    /// Reads the counters of `keys` (zero for a key never seen), lets
    /// `change` edit them, and writes them back if it returns `true`.
    fn update(
        &self,
        keys: &[String],
        change: &mut dyn FnMut(&mut [Spent]) -> bool,
    ) -> Result<(), StoreError>;
    /// The counters of `key`.
    fn get(&self, key: &str) -> Result<Spent, StoreError>;
    /// Forgets every key starting with `prefix`; returns how many.
    fn reset(&self, prefix: &str) -> Result<usize, StoreError>;
}

/// Counters in sled, durable across restarts. The counters in force are
/// kept in memory (sled locks its directory for one process, so this process
/// is their only writer); changed ones are written to sled by a background
/// thread every [`SledCounters::WRITE_EVERY`] and when the store is dropped.
/// A crash can forget the last moments of spending, never more than that.
pub struct SledCounters {
    inner: Arc<SledInner>,
    /// The writer thread, stopped and joined when the store is dropped (so
    /// the directory's lock is released by then).
    writer: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

struct SledInner {
    path: PathBuf,
    db: sled::Db,
    /// The counters read or changed so far, and the keys changed since the
    /// last write to sled.
    state: Mutex<(HashMap<String, Spent>, HashSet<String>)>,
}

/// Counters held in memory past which a write to sled drops them all from
/// memory (but those holding reservations); they are read back from sled
/// when next needed. About 100 bytes each.
const MAX_CACHED: usize = 4096;

impl SledCounters {
    /// How often changed counters are written to sled (and sled flushed).
    pub const WRITE_EVERY: Duration = Duration::from_millis(200);

    /// Opens (or creates) the store in `dir`. sled locks the directory for
    /// one process.
    pub fn open(dir: &Path) -> Result<SledCounters, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            // One small record per caller and session: sled's 1 GiB default
            // cache would only let memory grow.
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| StoreError {
                path: dir.display().to_string(),
                message: if e.to_string().contains("could not acquire lock") {
                    "another Fabric process (a running `fabric serve`) holds it; \
                     stop that process, or run this command against its data directory later"
                        .to_string()
                } else {
                    e.to_string()
                },
            })?;
        let inner = Arc::new(SledInner {
            path: dir.to_path_buf(),
            db,
            state: Mutex::new((HashMap::new(), HashSet::new())),
        });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (writing, stopping) = (inner.clone(), stop.clone());
        let writer = std::thread::Builder::new()
            .name("fabric-budgets".into())
            .spawn(move || {
                while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::park_timeout(SledCounters::WRITE_EVERY);
                    writing.write_changed();
                }
            })
            .map_err(|e| StoreError {
                path: dir.display().to_string(),
                message: format!("cannot start its writer thread: {e}"),
            })?;
        Ok(SledCounters {
            inner,
            writer: Some(writer),
            stop,
        })
    }
}

impl SledInner {
    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn read(&self, key: &str) -> Result<Spent, StoreError> {
        match self.db.get(key).map_err(|e| self.fail(e))? {
            None => Ok(Spent::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Spent::unreserved)
                .map_err(|e| self.fail(format!("the counters of {key:?} are corrupt: {e}"))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Spent>, HashSet<String>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the counters changed since the last time, then flushes sled.
    fn write_changed(&self) {
        let batch = {
            let mut state = self.lock();
            let (map, dirty) = &mut *state;
            if dirty.is_empty() {
                return;
            }
            let mut batch = sled::Batch::default();
            let written: Vec<String> = dirty.drain().collect();
            for key in &written {
                if let Some(v) = map.get(key) {
                    match serde_json::to_vec(&v.unreserved()) {
                        Ok(bytes) => batch.insert(key.as_bytes(), bytes),
                        Err(e) => tracing::error!("encoding budget counters failed: {e}"),
                    }
                }
            }
            // Applied under the lock, so writes reach sled in order.
            let applied = self.db.apply_batch(batch);
            if applied.is_err() {
                // Written with the next batch.
                dirty.extend(written);
            } else if map.len() > MAX_CACHED {
                // Every counter is in sled now: keep only those that
                // running calls hold reservations on (never stored), so
                // that a caller with a session per request does not grow
                // the process.
                map.retain(|_, v| *v != v.unreserved());
            }
            applied
        };
        if let Err(e) = batch.and_then(|()| self.db.flush().map(drop)) {
            tracing::error!(
                "writing the budget store at {} failed: {e}",
                self.path.display()
            );
        }
    }
}

impl CounterStore for SledCounters {
    fn update(
        &self,
        keys: &[String],
        change: &mut dyn FnMut(&mut [Spent]) -> bool,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let (map, dirty) = &mut *state;
        let mut values = Vec::with_capacity(keys.len());
        for k in keys {
            let v = match map.get(k) {
                Some(v) => *v,
                None => inner.read(k)?,
            };
            values.push(v);
        }
        if change(&mut values) {
            for (k, v) in keys.iter().zip(values) {
                map.insert(k.clone(), v);
                dirty.insert(k.clone());
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Spent, StoreError> {
        let state = self.inner.lock();
        match state.0.get(key) {
            Some(v) => Ok(*v),
            None => self.inner.read(key),
        }
    }

    fn reset(&self, prefix: &str) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let (map, dirty) = &mut *state;
        map.retain(|k, _| !k.starts_with(prefix));
        dirty.retain(|k| !k.starts_with(prefix));
        let mut n = 0;
        for item in inner.db.scan_prefix(prefix) {
            let (key, _) = item.map_err(|e| inner.fail(e))?;
            inner.db.remove(key).map_err(|e| inner.fail(e))?;
            n += 1;
        }
        inner.db.flush().map_err(|e| inner.fail(e))?;
        Ok(n)
    }
}

impl Drop for SledCounters {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
        self.inner.write_changed();
    }
}

/// A [`SledCounters`] opened when a caller with a budget first needs it: a
/// process that only the local operator calls (a one-shot `fabric call`)
/// never opens it, and sled's start-up (several milliseconds, a thread, a
/// lock on the directory) stays off its path. A store that cannot be opened
/// fails the budgeted call with the reason, and the next one tries again.
pub struct LazySledCounters {
    dir: PathBuf,
    store: std::sync::OnceLock<SledCounters>,
    /// Held while opening, so that one caller opens it.
    opening: Mutex<()>,
}

impl LazySledCounters {
    /// The store in `dir`, not opened yet.
    pub fn new(dir: &Path) -> LazySledCounters {
        LazySledCounters {
            dir: dir.to_path_buf(),
            store: std::sync::OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    fn store(&self) -> Result<&SledCounters, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let _opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = SledCounters::open(&self.dir)?;
        Ok(self.store.get_or_init(|| store))
    }
}

impl CounterStore for LazySledCounters {
    fn update(
        &self,
        keys: &[String],
        change: &mut dyn FnMut(&mut [Spent]) -> bool,
    ) -> Result<(), StoreError> {
        self.store()?.update(keys, change)
    }

    fn get(&self, key: &str) -> Result<Spent, StoreError> {
        self.store()?.get(key)
    }

    fn reset(&self, prefix: &str) -> Result<usize, StoreError> {
        self.store()?.reset(prefix)
    }
}

/// Counters in memory, for a Fabric without a data directory.
#[derive(Default)]
pub struct MemoryCounters {
    map: Mutex<HashMap<String, Spent>>,
}

impl CounterStore for MemoryCounters {
    fn update(
        &self,
        keys: &[String],
        change: &mut dyn FnMut(&mut [Spent]) -> bool,
    ) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut values: Vec<Spent> = keys
            .iter()
            .map(|k| map.get(k).copied().unwrap_or_default())
            .collect();
        if change(&mut values) {
            for (k, v) in keys.iter().zip(values) {
                map.insert(k.clone(), v);
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Spent, StoreError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(key).copied().unwrap_or_default())
    }

    fn reset(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|k, _| !k.starts_with(prefix));
        Ok(before - map.len())
    }
}

/// The store key of a caller's own counters. Caller names hold no `/`, so
/// no key is a prefix of another's.
pub fn caller_key(caller: &str) -> String {
    format!("caller/{caller}/")
}

/// The store key of one session of a caller. The session id is written
/// after its length, so no key is a prefix of another's and a reset by key
/// is exact.
pub fn session_key(caller: &str, session: &str) -> String {
    format!("session/{caller}/{}:{session}", session.len())
}

/// The prefix of every session key of a caller.
pub fn sessions_prefix(caller: &str) -> String {
    format!("session/{caller}/")
}

/// What a call may use, or did use: fuel, guest wall time, output bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) fuel: u64,
    pub(crate) wall_us: u64,
    pub(crate) output: u64,
}

/// A call's claim on its budgets, to settle when it is done.
#[derive(Debug)]
pub(crate) struct Reservation {
    keys: Vec<String>,
    caller: String,
    /// What the call may use: its policy's limits, lowered to what remains.
    pub(crate) granted: Usage,
}

/// The budget stage: reserves and settles, and watches for anomalies.
pub(crate) struct Budgets {
    store: Box<dyn CounterStore>,
    anomalies: Anomalies,
}

impl Budgets {
    pub(crate) fn new(store: Box<dyn CounterStore>, anomaly: AnomalyRule) -> Budgets {
        Budgets {
            store,
            anomalies: Anomalies::new(anomaly),
        }
    }

    /// The counters of `key`.
    pub(crate) fn spent(&self, key: &str) -> Result<Spent, StoreError> {
        self.store.get(key)
    }

    /// Alerts raised so far, by caller.
    pub(crate) fn anomalies(&self) -> Vec<(String, u64)> {
        self.anomalies.counts()
    }

    /// Reserves one call of `who` (in `session`) asking for at most `ask`,
    /// or refuses it naming the budget. Sessions are counted only for
    /// callers with a session budget.
    pub(crate) fn reserve(
        &self,
        who: &Identity,
        session: Option<&str>,
        ask: Usage,
        now: SystemTime,
    ) -> Result<Reservation, Box<Ending>> {
        let limits = &who.limits;
        let mut keys = vec![caller_key(&who.name)];
        let mut budgets = vec![(limits.budget, "caller")];
        if let Some(s) = session.filter(|_| limits.session_budget != Budget::default()) {
            keys.push(session_key(&who.name, s));
            budgets.push((limits.session_budget, "session"));
        }
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let minute = unix / 60;
        let mut granted = ask;
        let mut refusal: Option<Exceeded> = None;
        let updated = self.store.update(&keys, &mut |spent| {
            granted = ask;
            for (s, (budget, scope)) in spent.iter_mut().zip(&budgets) {
                if s.minute != minute {
                    s.minute = minute;
                    s.minute_calls = 0;
                }
                if let Err(mut e) = check(budget, s, &mut granted, unix) {
                    e.scope = scope;
                    refusal = Some(e);
                    return false;
                }
            }
            for s in spent.iter_mut() {
                s.calls += 1;
                s.minute_calls += 1;
                s.reserved_fuel = s.reserved_fuel.saturating_add(granted.fuel);
                s.reserved_wall_us = s.reserved_wall_us.saturating_add(granted.wall_us);
                s.reserved_output = s.reserved_output.saturating_add(granted.output);
            }
            true
        });
        if let Err(e) = updated {
            return Err(Box::new(Ending::host_fault(format!(
                "{e}; calls are refused until it works again (budgets fail closed)"
            ))));
        }
        if let Some(e) = refusal {
            return Err(Box::new(e.ending(&who.name, session)));
        }
        Ok(Reservation {
            keys,
            caller: who.name.clone(),
            granted,
        })
    }

    /// Replaces `reservation` with what the call really used (at most what
    /// was granted: a budget is never overshot).
    pub(crate) fn settle(&self, reservation: Reservation, used: Usage, now: SystemTime) {
        let r = &reservation;
        let g = r.granted;
        let updated = self.store.update(&r.keys, &mut |spent| {
            for s in spent.iter_mut() {
                s.reserved_fuel = s.reserved_fuel.saturating_sub(g.fuel);
                s.reserved_wall_us = s.reserved_wall_us.saturating_sub(g.wall_us);
                s.reserved_output = s.reserved_output.saturating_sub(g.output);
                s.fuel = s.fuel.saturating_add(used.fuel.min(g.fuel));
                s.wall_us = s.wall_us.saturating_add(used.wall_us.min(g.wall_us));
                s.output = s.output.saturating_add(used.output.min(g.output));
            }
            true
        });
        if let Err(e) = updated {
            // The reservation stays counted: the caller is charged the
            // most the call could have used, never less.
            tracing::error!("settling a call's budget failed: {e}");
        }
        self.anomalies.observe(&r.caller, used.fuel, now);
    }
}

/// How long a caller is told to wait (`Retry-After`) before asking a
/// budget that never resets by itself again: only an operator's `fabric
/// caller reset` frees it, so a client backs off for an hour instead of
/// retrying at once (every 429 carries `Retry-After`, as the contract says).
pub const SPENT_RETRY: Duration = Duration::from_secs(3600);

/// A budget with nothing left.
struct Exceeded {
    budget: &'static str,
    scope: &'static str,
    limit: u64,
    used: u64,
    /// Seconds until it resets; `None`: it never does.
    resets_in: Option<u64>,
    /// What is left is reserved by calls running now.
    reserved: bool,
}

impl Exceeded {
    fn ending(&self, caller: &str, session: Option<&str>) -> Ending {
        let whose = match (self.scope, session) {
            ("session", Some(s)) => format!("session {s:?} of caller {caller:?}"),
            _ => format!("caller {caller:?}"),
        };
        let (limit, used) = match self.budget {
            "wall" => (
                format!("{:?}", Duration::from_micros(self.limit)),
                format!("{:?}", Duration::from_micros(self.used)),
            ),
            "output" => (
                format!("{} bytes", self.limit),
                format!("{} bytes", self.used),
            ),
            _ => (self.limit.to_string(), self.used.to_string()),
        };
        let when = match self.resets_in {
            _ if self.reserved => format!(
                "the rest is reserved by calls running now; retry in {} s, when they have ended",
                self.resets_in.unwrap_or(1)
            ),
            Some(s) => format!("it resets in {s} s"),
            None => format!("it never resets by itself (fabric caller reset {caller})"),
        };
        let mut detail = json!({
            "budget": self.budget,
            "scope": self.scope,
            "limit": self.limit,
            "used": self.used,
            "resets_in_s": if self.reserved { None } else { self.resets_in },
            "reserved": self.reserved,
        });
        if let Value::Object(map) = &mut detail {
            let retry = self.resets_in.unwrap_or(SPENT_RETRY.as_secs());
            map.insert("retry_after_s".into(), json!(retry));
        }
        let verb = if self.reserved {
            "has no more room in"
        } else {
            "has spent"
        };
        Ending::failed(
            Outcome::BudgetExceeded,
            format!(
                "{whose} {verb} its {} budget: limit {limit}, used {used}; {when}",
                self.budget
            ),
            detail,
        )
    }
}

/// Checks one budget against what was spent, lowering `granted` to what
/// remains of it.
fn check(budget: &Budget, s: &Spent, granted: &mut Usage, unix: u64) -> Result<(), Exceeded> {
    let exceeded = |budget, limit, used, resets_in| Exceeded {
        budget,
        scope: "caller",
        limit,
        used,
        resets_in,
        reserved: false,
    };
    if let Some(limit) = budget.calls {
        if s.calls >= limit {
            return Err(exceeded("calls", limit, s.calls, None));
        }
    }
    if let Some(limit) = budget.per_minute {
        if s.minute_calls >= limit {
            return Err(exceeded(
                "per_minute",
                limit,
                s.minute_calls,
                Some(60 - unix % 60),
            ));
        }
    }
    let lower = |name, limit: Option<u64>, used: u64, reserved: u64, want: &mut u64| {
        if let Some(limit) = limit {
            if used >= limit {
                return Err(exceeded(name, limit, used, None));
            }
            let left = limit - used;
            if left <= reserved {
                return Err(Exceeded {
                    reserved: true,
                    ..exceeded(name, limit, used, Some(RESERVED_RETRY_S))
                });
            }
            *want = (*want).min(left - reserved);
        }
        Ok(())
    };
    lower(
        "fuel",
        budget.fuel,
        s.fuel,
        s.reserved_fuel,
        &mut granted.fuel,
    )?;
    let wall = budget.wall.map(|w| w.as_micros() as u64);
    lower(
        "wall",
        wall,
        s.wall_us,
        s.reserved_wall_us,
        &mut granted.wall_us,
    )?;
    lower(
        "output",
        budget.output,
        s.output,
        s.reserved_output,
        &mut granted.output,
    )?;
    Ok(())
}

/// When the rest of a budget is reserved by calls running now, how long to
/// wait before trying again: calls take milliseconds to seconds.
const RESERVED_RETRY_S: u64 = 1;

/// When a caller's last minute is an anomaly: its calls (or fuel) exceed
/// `multiple` times its average over the minutes before, and at least the
/// floor, so a quiet caller's first burst is not an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyRule {
    /// How many times the caller's own average.
    pub multiple: f64,
    /// Calls in a minute below which nothing is an anomaly.
    pub min_calls: u64,
    /// Fuel in a minute below which nothing is an anomaly.
    pub min_fuel: u64,
    /// Minutes of history the average is taken over.
    pub history: usize,
}

impl Default for AnomalyRule {
    fn default() -> AnomalyRule {
        AnomalyRule {
            multiple: 10.0,
            min_calls: 600,
            min_fuel: 100_000_000_000,
            history: 15,
        }
    }
}

/// Per-caller minute counters and the alerts raised.
struct Anomalies {
    rule: AnomalyRule,
    callers: Mutex<HashMap<String, Rate>>,
}

#[derive(Default)]
struct Rate {
    minute: u64,
    calls: u64,
    fuel: u64,
    /// Completed minutes, oldest first: (calls, fuel).
    history: VecDeque<(u64, u64)>,
    alerted: bool,
    alerts: u64,
}

impl Anomalies {
    fn new(rule: AnomalyRule) -> Anomalies {
        Anomalies {
            rule,
            callers: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> Vec<(String, u64)> {
        let callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = callers
            .iter()
            .map(|(name, r)| (name.clone(), r.alerts))
            .collect();
        out.sort();
        out
    }

    /// Counts one call; returns whether it raised an alert.
    fn observe(&self, caller: &str, fuel: u64, now: SystemTime) -> bool {
        let minute = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 60;
        let rule = self.rule;
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let r = callers.entry(caller.to_string()).or_default();
        if r.minute != minute {
            if r.minute != 0 {
                // The finished minute, then a zero for each quiet one after.
                let quiet = minute.saturating_sub(r.minute + 1).min(rule.history as u64);
                r.history.push_back((r.calls, r.fuel));
                for _ in 0..quiet {
                    r.history.push_back((0, 0));
                }
                while r.history.len() > rule.history {
                    r.history.pop_front();
                }
            }
            *r = Rate {
                minute,
                history: std::mem::take(&mut r.history),
                alerts: r.alerts,
                ..Rate::default()
            };
        }
        r.calls += 1;
        r.fuel = r.fuel.saturating_add(fuel);
        if r.alerted || r.history.is_empty() {
            return false;
        }
        let n = r.history.len() as f64;
        let avg_calls = r.history.iter().map(|h| h.0 as f64).sum::<f64>() / n;
        let avg_fuel = r.history.iter().map(|h| h.1 as f64).sum::<f64>() / n;
        let calls_high = r.calls >= rule.min_calls && r.calls as f64 > rule.multiple * avg_calls;
        let fuel_high = r.fuel >= rule.min_fuel && r.fuel as f64 > rule.multiple * avg_fuel;
        if !(calls_high || fuel_high) {
            return false;
        }
        r.alerted = true;
        r.alerts += 1;
        tracing::warn!(
            caller,
            calls = r.calls,
            fuel = r.fuel,
            avg_calls,
            avg_fuel,
            multiple = rule.multiple,
            "budget anomaly: the caller's use this minute is over {}x its average of the last {} minutes",
            rule.multiple,
            r.history.len()
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::Scope;
    use crate::callers::Limits;

    fn who(budget: Budget, session_budget: Budget) -> Identity {
        Identity {
            name: "ci".into(),
            scope: Scope::all(),
            limits: Limits {
                max_in_flight: None,
                budget,
                session_budget,
            },
        }
    }

    fn ask() -> Usage {
        Usage {
            fuel: 1000,
            wall_us: 1_000_000,
            output: 100,
        }
    }

    fn outcome(r: &Result<Reservation, Box<Ending>>) -> Option<(String, Value)> {
        r.as_ref().err().map(|e| {
            let err = e.error().cloned().unwrap_or_else(|| unreachable!());
            (err.message, err.detail)
        })
    }

    #[test]
    fn calls_are_counted_and_refused_with_the_budget_named() {
        let b = Budgets::new(Box::<MemoryCounters>::default(), AnomalyRule::default());
        let who = who(
            Budget {
                calls: Some(2),
                ..Budget::default()
            },
            Budget::default(),
        );
        let now = SystemTime::now();
        for _ in 0..2 {
            let r = b.reserve(&who, None, ask(), now).unwrap();
            b.settle(r, Usage::default(), now);
        }
        let refused = b.reserve(&who, None, ask(), now);
        let (message, detail) = outcome(&refused).unwrap();
        assert!(
            message.contains("calls budget: limit 2, used 2"),
            "{message}"
        );
        assert!(message.contains("never resets"), "{message}");
        assert_eq!(detail["budget"], "calls");
        assert_eq!(detail["resets_in_s"], Value::Null);
        assert_eq!(detail["retry_after_s"], SPENT_RETRY.as_secs());
        assert_eq!(b.spent(&caller_key("ci")).unwrap().calls, 2);
    }

    #[test]
    fn fuel_is_capped_to_what_remains_and_settled_to_what_was_used() {
        let b = Budgets::new(Box::<MemoryCounters>::default(), AnomalyRule::default());
        let who = who(
            Budget {
                fuel: Some(1500),
                ..Budget::default()
            },
            Budget::default(),
        );
        let now = SystemTime::now();
        let first = b.reserve(&who, None, ask(), now).unwrap();
        assert_eq!(first.granted.fuel, 1000);
        // While it runs, the next may have only what is left.
        let second = b.reserve(&who, None, ask(), now).unwrap();
        assert_eq!(second.granted.fuel, 500);
        let (message, detail) = outcome(&b.reserve(&who, None, ask(), now)).unwrap();
        assert!(
            message.contains("reserved by calls running now"),
            "{message}"
        );
        assert_eq!(detail["retry_after_s"], 1);
        assert_eq!(detail["reserved"], true);
        b.settle(
            first,
            Usage {
                fuel: 100,
                ..Usage::default()
            },
            now,
        );
        b.settle(second, Usage::default(), now);
        assert_eq!(b.spent(&caller_key("ci")).unwrap().fuel, 100);
        assert_eq!(
            b.reserve(&who, None, ask(), now).unwrap().granted.fuel,
            1000
        );
    }

    #[test]
    fn sessions_count_separately_and_per_minute_resets() {
        let b = Budgets::new(Box::<MemoryCounters>::default(), AnomalyRule::default());
        let who = who(
            Budget::default(),
            Budget {
                per_minute: Some(1),
                ..Budget::default()
            },
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 1000 + 15);
        assert!(b.reserve(&who, Some("a"), ask(), t0).is_ok());
        let (message, detail) = outcome(&b.reserve(&who, Some("a"), ask(), t0)).unwrap();
        assert!(
            message.contains("session \"a\" of caller \"ci\""),
            "{message}"
        );
        assert_eq!(detail["retry_after_s"], 45);
        assert!(b.reserve(&who, Some("b"), ask(), t0).is_ok());
        // No session: the caller only, which has no budget.
        assert!(b.reserve(&who, None, ask(), t0).is_ok());
        let t1 = t0 + Duration::from_secs(45);
        assert!(b.reserve(&who, Some("a"), ask(), t1).is_ok());
        assert_eq!(b.spent(&session_key("ci", "a")).unwrap().calls, 2);
        assert_eq!(b.store.reset(&sessions_prefix("ci")).unwrap(), 2);
    }

    /// A directory for a sled store of a test's own.
    fn store_dir() -> PathBuf {
        std::env::temp_dir().join(format!("fabric-budget-{}", rand::random::<u64>()))
    }

    /// The budget stage over `store`.
    fn over(store: SledCounters) -> Budgets {
        Budgets::new(Box::new(store), AnomalyRule::default())
    }

    /// Opens the store in `dir` again. sled's background work may hold the
    /// previous handle's file (and its lock) a moment after it was dropped.
    fn reopen(dir: &Path) -> SledCounters {
        let started = std::time::Instant::now();
        loop {
            match SledCounters::open(dir) {
                Ok(store) => return store,
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    assert!(e.message.contains("another Fabric process"), "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn sled_counters_survive_reopening() {
        let dir = store_dir();
        let who = who(
            Budget {
                calls: Some(1),
                ..Budget::default()
            },
            Budget::default(),
        );
        let now = SystemTime::now();
        {
            let b = over(SledCounters::open(&dir).unwrap());
            let r = b.reserve(&who, None, ask(), now).unwrap();
            b.settle(r, Usage::default(), now);
        }
        let b = over(reopen(&dir));
        assert!(outcome(&b.reserve(&who, None, ask(), now)).is_some());
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reservation_held_when_the_process_died_does_not_outlive_it() {
        let dir = store_dir();
        let who = who(
            Budget {
                wall: Some(Duration::from_secs(1)),
                ..Budget::default()
            },
            Budget::default(),
        );
        let now = SystemTime::now();
        {
            let b = over(SledCounters::open(&dir).unwrap());
            // A call holds the whole wall budget and never settles: the
            // process stops while it runs (the store is written on drop).
            let _held = b.reserve(&who, None, ask(), now).unwrap();
            assert!(outcome(&b.reserve(&who, None, ask(), now)).is_some());
        }
        let b = over(reopen(&dir));
        let spent = b.spent(&caller_key("ci")).unwrap();
        assert_eq!((spent.calls, spent.reserved_wall_us), (1, 0), "{spent:?}");
        assert!(b.reserve(&who, None, ask(), now).is_ok());
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn counters_written_to_sled_leave_memory_but_not_reservations() {
        let dir = store_dir();
        let store = SledCounters::open(&dir).unwrap();
        let keys: Vec<String> = (0..MAX_CACHED + 100).map(|i| format!("s{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            store
                .update(std::slice::from_ref(key), &mut |v| {
                    v[0].calls = i as u64 + 1;
                    v[0].reserved_fuel = u64::from(i == 7);
                    true
                })
                .unwrap();
        }
        store.inner.write_changed();
        let cached: Vec<String> = store.inner.lock().0.keys().cloned().collect();
        assert_eq!(cached, ["s7"], "only the reserved one stays");
        assert_eq!(store.get("s7").unwrap().reserved_fuel, 1);
        for (i, key) in keys.iter().enumerate().step_by(97) {
            assert_eq!(store.get(key).unwrap().calls, i as u64 + 1, "{key}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lazy_store_opens_on_first_use_and_reports_why_it_cannot() {
        let dir = store_dir();
        let lazy = LazySledCounters::new(&dir);
        assert!(!dir.exists(), "nothing is opened before a budget is asked");
        lazy.update(&["c".to_string()], &mut |v| {
            v[0].calls += 1;
            true
        })
        .unwrap();
        assert!(dir.exists());
        assert_eq!(lazy.get("c").unwrap().calls, 1);
        // The store holds sled's lock: a second one cannot open it, and
        // says so on each use rather than at start, until the lock is free.
        let other = LazySledCounters::new(&dir);
        let e = other.get("c").unwrap_err();
        assert!(e.message.contains("another Fabric process"), "{e}");
        assert!(other.reset("c").is_err());
        drop(lazy);
        assert_eq!(
            other.get("c").unwrap().calls,
            1,
            "opened once the lock was free"
        );
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn anomalies_need_history_the_floor_and_the_multiple() {
        let rule = AnomalyRule {
            multiple: 5.0,
            min_calls: 20,
            min_fuel: u64::MAX,
            history: 3,
        };
        let a = Anomalies::new(rule);
        let at = |minute: u64, second: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
        };
        // A first burst, however large, has no history to compare with.
        assert!(!(0..100).any(|_| a.observe("ci", 0, at(10, 0))));
        // Steady: 10 a minute for three minutes (average now 40: 100,10,10).
        for m in 11..=13 {
            assert!(!(0..10).any(|_| a.observe("ci", 0, at(m, 0))));
        }
        // 10,10,10 is the history now; 49 calls stay under 5x; the 51st is over.
        let hits: Vec<bool> = (0..60).map(|_| a.observe("ci", 0, at(14, 0))).collect();
        assert_eq!(hits.iter().filter(|h| **h).count(), 1);
        assert!(hits[50] && !hits[49]);
        assert_eq!(a.counts(), vec![("ci".to_string(), 1)]);
        // A quiet caller under the floor never alarms.
        let b = Anomalies::new(rule);
        b.observe("q", 0, at(1, 0));
        assert!(!(0..19).any(|_| b.observe("q", 0, at(2, 0))));
    }
}
