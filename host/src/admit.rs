//! The admit stage: whether a call may run at all, decided before anything
//! is resolved, validated or instantiated.
//!
//! In order: is the caller known (`unauthorized`), is the tool in its scope
//! (`forbidden`, asked before the tool is looked up so that a scope does not
//! reveal which tools exist). Then, once the tool is resolved and its
//! arguments valid: is its circuit closed (`circuit_open`, [`crate::breaker`]),
//! is the caller under its own cap on calls in flight, is a slot free or a
//! place in the bounded queue (`overloaded`), is there budget left
//! (`budget_exceeded`, [`crate::budget`]). A refusal is an [`Ending`] like
//! any other and is audited through the same path, for every front end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::breaker::{Breakers, CircuitState, Ticket};
use crate::budget::{Budgets, Reservation, Usage};
use crate::call::{cap, Call, Ending, Outcome, MAX_NAME};
use crate::callers::Limits;
use crate::policy::Policy;

/// How long a caller refused for lack of capacity should wait before trying
/// again: calls take milliseconds, so a second is generous.
const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

/// Who is calling.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Caller {
    /// The local operator (the CLI): every tool, no budgets.
    Local,
    /// A caller named in the callers file, authenticated by its token.
    Named(Arc<Identity>),
    /// A request without valid credentials; the reason says what was wrong
    /// (no token, a token no caller has). Its calls end `unauthorized`.
    Unauthenticated(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The caller's name, recorded in every audit record of its calls.
    pub name: String,
    /// The tools it may call.
    pub scope: Scope,
    /// Its budgets and cap on calls in flight.
    pub limits: Limits,
}

impl Caller {
    /// A named caller with this scope.
    pub fn named(name: impl Into<String>, scope: Scope) -> Caller {
        Caller::named_with(name, scope, Limits::default())
    }

    /// A named caller with this scope, budgets and cap.
    pub fn named_with(name: impl Into<String>, scope: Scope, limits: Limits) -> Caller {
        Caller::Named(Arc::new(Identity {
            name: name.into(),
            scope,
            limits,
        }))
    }

    /// The name recorded in audit records: `None` for the local operator and
    /// for unauthenticated requests.
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Named(id) => Some(&id.name),
            Caller::Local | Caller::Unauthenticated(_) => None,
        }
    }

    /// Whether this caller may see and call `tool`.
    pub fn may_call(&self, tool: &str) -> bool {
        match self {
            Caller::Local => true,
            Caller::Named(id) => id.scope.allows(tool),
            Caller::Unauthenticated(_) => false,
        }
    }
}

/// Tool names and globs (`fs.*`, `*.get`, `*`) a caller may call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(Vec<String>);

impl Scope {
    /// A scope of these names and globs; `*` matches any run of characters.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Scope {
        Scope(patterns.into_iter().map(Into::into).collect())
    }

    /// Every tool.
    pub fn all() -> Scope {
        Scope::new(["*"])
    }

    /// The patterns, as written.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// Whether some pattern matches `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.0
            .iter()
            .any(|p| glob_match(p.as_bytes(), tool.as_bytes()))
    }
}

/// `*`-only glob matching, greedy with only the last `*` as a backtrack
/// point: at most pattern × text steps, never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A call that was let in: holds its slots until dropped, and its claim on
/// the caller's budgets and its breaker ticket until [`Admission::leave`].
/// Dropped without it (refused later, cancelled, panicked), the ticket is
/// given back and the reservation is charged in full: never less than the
/// call may have used.
pub(crate) struct Admitted<'a> {
    admission: &'a Admission,
    tool: String,
    ticket: Option<Ticket>,
    reservation: Option<Reservation>,
    _slot: Option<OwnedSemaphorePermit>,
    _caller_slot: Option<CallerSlot>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.admission.breakers.release(&self.tool, ticket);
        }
        if let Some(r) = self.reservation.take() {
            let granted = r.granted;
            self.admission.budgets.settle(r, granted, SystemTime::now());
        }
    }
}

impl Admitted<'_> {
    /// What the call may use, when a budget lowered its policy's limits.
    pub(crate) fn granted(&self) -> Option<Usage> {
        self.reservation.as_ref().map(|r| r.granted)
    }
}

/// The admission policy every call passes: identity, scope, then (once the
/// tool is known) its breaker, the caller's cap on calls in flight, a slot
/// (or a place in the bounded queue) and the budgets.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// Calls waiting for a slot, and how many may.
    waiting: AtomicUsize,
    queue: usize,
    /// Each named caller's calls running now, checked against its cap as
    /// the callers file says it now (a changed cap counts the calls that
    /// are running under the old one).
    per_caller: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    breakers: Breakers,
    budgets: Budgets,
}

/// One of a caller's calls running, counted until dropped.
struct CallerSlot(Arc<AtomicUsize>);

impl Drop for CallerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a place in the queue and gives it back when dropped (a call
/// cancelled while waiting leaves the queue too).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// At most `max_in_flight` calls run at once and `queue` more wait;
    /// budgets are counted in `budgets`.
    pub(crate) fn new(max_in_flight: usize, queue: usize, budgets: Budgets) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waiting: AtomicUsize::new(0),
            queue,
            per_caller: Mutex::new(HashMap::new()),
            breakers: Breakers::default(),
            budgets,
        }
    }

    /// Calls running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Calls waiting for a slot now.
    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The budget stage, for reading counters.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Circuits that are not closed.
    pub(crate) fn open_circuits(&self) -> Vec<CircuitState> {
        self.breakers.open()
    }

    /// Whether the caller is known and may call the tool: asked before the
    /// tool is looked up.
    pub(crate) fn check_caller(&self, call: &Call) -> Result<(), Box<Ending>> {
        if let Caller::Unauthenticated(why) = &call.caller {
            return Err(refuse(
                Outcome::Unauthorized,
                format!(
                    "{}: the call carries no valid caller credentials",
                    cap(why, MAX_NAME)
                ),
                json!(null),
            ));
        }
        if !call.caller.may_call(&call.tool) {
            let name = call.caller.name().unwrap_or_default();
            return Err(refuse(
                Outcome::Forbidden,
                format!(
                    "caller {name:?} may not call {:?}: it is outside the caller's scope",
                    cap(&call.tool, MAX_NAME)
                ),
                json!(null),
            ));
        }
        Ok(())
    }

    /// Lets a call of a resolved tool in, or says why not: its circuit is
    /// open, its caller is at its own cap, the host is full (slots and
    /// queue), or a budget is spent. The first refusal wins; nothing is
    /// spent for a refused call.
    pub(crate) async fn enter(
        &self,
        call: &Call,
        policy: &Policy,
    ) -> Result<Admitted<'_>, Box<Ending>> {
        let ticket = self.breakers.admit(&call.tool, &policy.breaker)?;
        // From here a refusal drops `admitted`, which gives the ticket back.
        let mut admitted = Admitted {
            admission: self,
            tool: call.tool.clone(),
            ticket: Some(ticket),
            reservation: None,
            _slot: None,
            _caller_slot: None,
        };
        admitted._caller_slot = match &call.caller {
            Caller::Named(id) => self.caller_slot(id)?,
            Caller::Local | Caller::Unauthenticated(_) => None,
        };
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(refuse(
                        Outcome::Overloaded,
                        format!(
                            "{} calls are running and {} waiting, the most this host admits; retry shortly",
                            self.max_in_flight, self.queue
                        ),
                        overloaded_detail(),
                    ));
                }
                let _waiting = Waiting(&self.waiting);
                self.slots.clone().acquire_owned().await.map_err(|_| {
                    refuse(
                        Outcome::Overloaded,
                        "the host is shutting down".to_string(),
                        overloaded_detail(),
                    )
                })?
            }
        };
        admitted._slot = Some(slot);
        admitted.reservation = match &call.caller {
            Caller::Named(id) => {
                let ask = Usage {
                    fuel: policy.limits.fuel,
                    wall_us: policy.limits.timeout.as_micros() as u64,
                    output: policy.limits.output,
                };
                Some(
                    self.budgets
                        .reserve(id, call.session.as_deref(), ask, SystemTime::now())?,
                )
            }
            Caller::Local | Caller::Unauthenticated(_) => None,
        };
        Ok(admitted)
    }

    /// Settles a call that ran: its budgets with what it used, its breaker
    /// with how it ended. Its slots are released when `admitted` is dropped,
    /// after its audit record is written: the bound on calls in flight
    /// covers the whole call, so a slow disk backs up into the queue and
    /// `overloaded`, not into unbounded waits.
    /// `verdict` is how the call ended as the tool's breaker should count
    /// it, or `None` when the ending says nothing about the tool (its
    /// caller's budget lowered the limit it hit, or the host failed).
    pub(crate) fn leave(
        &self,
        admitted: &mut Admitted<'_>,
        policy: &Policy,
        verdict: Option<(Outcome, Option<&str>)>,
        used: Usage,
    ) {
        if let Some(ticket) = admitted.ticket.take() {
            match verdict {
                Some((outcome, message)) => {
                    self.breakers
                        .record(&admitted.tool, &policy.breaker, ticket, outcome, message)
                }
                None => self.breakers.release(&admitted.tool, ticket),
            }
        }
        if let Some(r) = admitted.reservation.take() {
            self.budgets.settle(r, used, SystemTime::now());
        }
    }

    /// A slot of the caller's own cap, when it has one.
    fn caller_slot(&self, id: &Identity) -> Result<Option<CallerSlot>, Box<Ending>> {
        let Some(cap) = id.limits.max_in_flight else {
            return Ok(None);
        };
        let running = self
            .per_caller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.name.clone())
            .or_default()
            .clone();
        running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap as usize).then_some(n + 1)
            })
            .map(|_| Some(CallerSlot(running.clone())))
            .map_err(|_| {
            refuse(
                Outcome::Overloaded,
                format!(
                    "caller {:?} already has {cap} calls running, its max_in_flight; retry when one ends",
                    id.name
                ),
                overloaded_detail(),
            )
        })
    }
}

/// The detail of an `overloaded` refusal: when to try again.
pub(crate) fn overloaded_detail() -> serde_json::Value {
    json!({"retry_after_s": OVERLOADED_RETRY.as_secs()})
}

fn refuse(outcome: Outcome, message: String, detail: serde_json::Value) -> Box<Ending> {
    Box::new(Ending::failed(outcome, message, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let scope = Scope::new(["fs.*", "text.echo", "*.get"]);
        assert!(scope.allows("fs.grep"));
        assert!(scope.allows("fs."));
        assert!(scope.allows("text.echo"));
        assert!(scope.allows("http.get"));
        assert!(!scope.allows("text.stats"));
        assert!(!scope.allows("fsx.grep"));
        assert!(!scope.allows("http.get2"));
        assert!(Scope::all().allows("anything.at-all"));
        assert!(!Scope::default().allows("text.echo"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        // Bounded on a hostile pattern.
        let long = "a".repeat(100_000);
        assert!(!glob_match("*a*a*a*a*a*b".as_bytes(), long.as_bytes()));
    }

    #[test]
    fn a_changed_cap_counts_the_calls_running_under_the_old_one() {
        let admission = Admission::new(
            64,
            0,
            Budgets::new(
                Box::<crate::budget::MemoryCounters>::default(),
                crate::budget::AnomalyRule::default(),
            ),
        );
        let capped = |cap| Identity {
            name: "ci".into(),
            scope: Scope::all(),
            limits: Limits {
                max_in_flight: Some(cap),
                ..Limits::default()
            },
        };
        let running: Vec<CallerSlot> = (0..2)
            .map(|_| admission.caller_slot(&capped(2)).unwrap().unwrap())
            .collect();
        assert!(admission.caller_slot(&capped(2)).is_err());
        // Raised to 3 while two run: one more, not three more.
        let third = admission.caller_slot(&capped(3)).unwrap();
        assert!(admission.caller_slot(&capped(3)).is_err());
        // Lowered to 1: none until every call running has ended.
        drop(third);
        assert!(admission.caller_slot(&capped(1)).is_err());
        drop(running);
        assert!(admission.caller_slot(&capped(1)).unwrap().is_some());
    }

    #[test]
    fn callers() {
        let named = Caller::named("ci", Scope::new(["text.*"]));
        assert_eq!(named.name(), Some("ci"));
        assert!(named.may_call("text.echo"));
        assert!(!named.may_call("fs.grep"));
        assert!(Caller::Local.may_call("fs.grep"));
        assert!(!Caller::Unauthenticated("no token".into()).may_call("text.echo"));
    }
}
