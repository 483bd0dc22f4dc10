//! Circuit breakers, one per tool: a tool that keeps failing (traps,
//! timeouts, fuel exhaustion) is stopped at the door instead of burning a
//! slot, fuel and the caller's time on every call.
//!
//! ```text
//! closed ──N consecutive failures within the window──► open
//! open ──cool-down passed, one trial call let through──► half-open
//! half-open ──trial succeeds──► closed      half-open ──trial fails──► open
//! ```
//!
//! Any other ending (ok, a tool error, a rejected output) is a success: the
//! tool ran and answered. Calls that never ran (refused, invalid arguments)
//! do not count either way. State is per process, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::call::{Ending, Outcome};
use crate::policy::BreakerPolicy;

/// One tool's breaker state, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CircuitState {
    /// The tool.
    pub tool: String,
    /// `open` or `half_open`.
    pub state: &'static str,
    /// Seconds until a trial call is let through (0 when half-open).
    pub retry_after_s: u64,
    /// The outcomes of the failures that opened it (their messages are
    /// logged, not shown: they may echo another caller's arguments).
    pub failures: Vec<String>,
}

#[derive(Debug)]
enum State {
    Closed {
        /// Consecutive failures and when the first of them ended.
        failures: Vec<String>,
        since: Option<Instant>,
    },
    Open {
        until: Instant,
        failures: Vec<String>,
    },
    HalfOpen {
        /// The one trial call is running.
        trial: bool,
        failures: Vec<String>,
    },
}

impl Default for State {
    fn default() -> State {
        State::Closed {
            failures: Vec::new(),
            since: None,
        }
    }
}

/// The breakers of every tool.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    tools: Mutex<HashMap<String, State>>,
}

/// Whether the call was the half-open trial, to report with its ending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    trial: bool,
}

/// Longest failure message kept per failure.
const MAX_FAILURE: usize = 200;

impl Breakers {
    /// Lets a call of `tool` through, or refuses it with `circuit_open`.
    pub(crate) fn admit(&self, tool: &str, policy: &BreakerPolicy) -> Result<Ticket, Box<Ending>> {
        if policy.failures == 0 {
            return Ok(Ticket { trial: false });
        }
        let mut tools = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = tools.get_mut(tool) else {
            return Ok(Ticket { trial: false });
        };
        let now = Instant::now();
        match state {
            State::Closed { .. } => Ok(Ticket { trial: false }),
            State::Open { until, failures } if now >= *until => {
                let failures = std::mem::take(failures);
                *state = State::HalfOpen {
                    trial: true,
                    failures,
                };
                Ok(Ticket { trial: true })
            }
            State::Open { until, failures } => {
                let wait = until.saturating_duration_since(now);
                Err(refuse(tool, failures, wait))
            }
            State::HalfOpen { trial, failures } => {
                if *trial {
                    Err(refuse(tool, failures, Duration::from_secs(1)))
                } else {
                    *trial = true;
                    Ok(Ticket { trial: true })
                }
            }
        }
    }

    /// Gives back a ticket whose call did not run to a verdict on the tool
    /// (refused after the breaker, cancelled, or stopped by its caller's
    /// budget or a host fault): a half-open trial is let through again.
    pub(crate) fn release(&self, tool: &str, ticket: Ticket) {
        if !ticket.trial {
            return;
        }
        let mut tools = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(State::HalfOpen { trial, .. }) = tools.get_mut(tool) {
            *trial = false;
        }
    }

    /// Records how a call that ran ended.
    pub(crate) fn record(
        &self,
        tool: &str,
        policy: &BreakerPolicy,
        ticket: Ticket,
        outcome: Outcome,
        message: Option<&str>,
    ) {
        if policy.failures == 0 {
            return;
        }
        let failed = matches!(
            outcome,
            Outcome::Trap | Outcome::Timeout | Outcome::FuelExhausted
        );
        let mut tools = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        if !failed && !tools.contains_key(tool) {
            return;
        }
        let now = Instant::now();
        let state = tools.entry(tool.to_string()).or_default();
        if failed {
            let m = crate::call::cap(message.unwrap_or_default(), MAX_FAILURE);
            tracing::info!(
                tool,
                outcome = outcome.as_str(),
                "breaker counts a failure: {m}"
            );
        }
        let what = || outcome.as_str().to_string();
        match state {
            State::HalfOpen { failures, .. } if ticket.trial => {
                if failed {
                    let mut failures = std::mem::take(failures);
                    failures.push(what());
                    let keep = failures.len().saturating_sub(policy.failures as usize);
                    failures.drain(..keep);
                    tracing::warn!(tool, "circuit re-opened: the trial call failed");
                    *state = State::Open {
                        until: now + policy.cooldown,
                        failures,
                    };
                } else {
                    tracing::info!(tool, "circuit closed: the trial call succeeded");
                    *state = State::default();
                }
            }
            State::Closed { failures, since } => {
                if !failed {
                    *state = State::default();
                    return;
                }
                if since.is_none_or(|s| now.duration_since(s) > policy.window) {
                    failures.clear();
                    *since = Some(now);
                }
                failures.push(what());
                if failures.len() >= policy.failures as usize {
                    tracing::warn!(
                        tool,
                        failures = failures.len(),
                        "circuit opened after consecutive failures"
                    );
                    *state = State::Open {
                        until: now + policy.cooldown,
                        failures: std::mem::take(failures),
                    };
                }
            }
            // A call let in before the circuit opened: it does not move it.
            State::Open { .. } | State::HalfOpen { .. } => {}
        }
    }

    /// Circuits not closed, sorted by tool.
    pub(crate) fn open(&self) -> Vec<CircuitState> {
        let tools = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut out: Vec<CircuitState> = tools
            .iter()
            .filter_map(|(tool, s)| match s {
                State::Closed { .. } => None,
                State::Open { until, failures } => Some(CircuitState {
                    tool: tool.clone(),
                    state: "open",
                    retry_after_s: seconds(until.saturating_duration_since(now)),
                    failures: failures.clone(),
                }),
                State::HalfOpen { failures, .. } => Some(CircuitState {
                    tool: tool.clone(),
                    state: "half_open",
                    retry_after_s: 0,
                    failures: failures.clone(),
                }),
            })
            .collect();
        out.sort_by(|a, b| a.tool.cmp(&b.tool));
        out
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

fn refuse(tool: &str, failures: &[String], wait: Duration) -> Box<Ending> {
    let shown = crate::call::cap(tool, crate::call::MAX_NAME);
    let retry = seconds(wait);
    Box::new(Ending::failed(
        Outcome::CircuitOpen,
        format!(
            "tool {shown:?} is failing and its circuit is open after {} consecutive failures \
             (last: {}); a trial call is let through in {retry} s",
            failures.len(),
            failures.last().map_or("none", String::as_str)
        ),
        json!({"failures": failures, "retry_after_s": retry}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_then_half_opens_then_closes() {
        let policy = BreakerPolicy {
            failures: 2,
            window: Duration::from_secs(60),
            cooldown: Duration::from_millis(300),
        };
        let b = Breakers::default();
        let t = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, t, Outcome::Trap, Some("boom"));
        // A success in between resets the count: failures must be consecutive.
        let t = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, t, Outcome::Ok, None);
        for _ in 0..2 {
            let t = b.admit("x.f", &policy).unwrap();
            b.record("x.f", &policy, t, Outcome::Timeout, Some("slow"));
        }
        let refused = b.admit("x.f", &policy).unwrap_err();
        assert_eq!(refused.outcome(), Outcome::CircuitOpen);
        assert_eq!(b.open()[0].state, "open");
        assert_eq!(b.open()[0].failures, vec!["timeout", "timeout"]);
        std::thread::sleep(Duration::from_millis(350));
        let trial = b.admit("x.f", &policy).unwrap();
        // Only one trial at a time; a trial that never ran is let through again.
        assert!(b.admit("x.f", &policy).is_err());
        b.release("x.f", trial);
        let trial = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, trial, Outcome::FuelExhausted, None);
        assert!(b.admit("x.f", &policy).is_err());
        std::thread::sleep(Duration::from_millis(350));
        let trial = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, trial, Outcome::ToolError, None);
        assert!(b.open().is_empty());
        assert!(b.admit("x.f", &policy).is_ok());
        // Other tools were never affected.
        assert!(b.admit("y.g", &policy).is_ok());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let policy = BreakerPolicy {
            failures: 2,
            window: Duration::from_millis(20),
            cooldown: Duration::from_secs(60),
        };
        let b = Breakers::default();
        let t = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, t, Outcome::Trap, None);
        std::thread::sleep(Duration::from_millis(30));
        let t = b.admit("x.f", &policy).unwrap();
        b.record("x.f", &policy, t, Outcome::Trap, None);
        assert!(b.admit("x.f", &policy).is_ok());
    }
}
