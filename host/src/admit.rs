//! The admit stage: whether a call may run at all, decided before anything
//! is resolved, validated or instantiated.
//!
//! In order: is the caller known (`unauthorized`), is the tool in its scope
//! (`forbidden`, asked before the tool is looked up so that a scope does not
//! reveal which tools exist), is there budget left (`budget_exceeded`: the
//! hook where budgets plug in), is a slot free (`overloaded`). A refusal is
//! an [`Ending`] like any other and is audited through the same path, for
//! every front end.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::call::{cap, Call, Ending, Outcome, MAX_NAME};

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
}

impl Caller {
    /// A named caller with this scope.
    pub fn named(name: impl Into<String>, scope: Scope) -> Caller {
        Caller::Named(Arc::new(Identity {
            name: name.into(),
            scope,
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

/// A call that was let in: holds its slot until dropped.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
}

/// The admission policy every call passes: identity, scope, budgets, slots.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Admission {
    /// At most `max_in_flight` calls run at once.
    pub(crate) fn new(max_in_flight: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Admits `call` or says why not.
    pub(crate) fn admit(&self, call: &Call) -> Result<Admitted, Box<Ending>> {
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
        // Budgets (per caller and per session) are checked here, before
        // anything runs, and settled after the call with what it used.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            refuse(
                Outcome::Overloaded,
                format!(
                    "{} calls are already running, the most this host admits at once; retry shortly",
                    self.max_in_flight
                ),
                overloaded_detail(),
            )
        })?;
        Ok(Admitted { _slot: slot })
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
    fn callers() {
        let named = Caller::named("ci", Scope::new(["text.*"]));
        assert_eq!(named.name(), Some("ci"));
        assert!(named.may_call("text.echo"));
        assert!(!named.may_call("fs.grep"));
        assert!(Caller::Local.may_call("fs.grep"));
        assert!(!Caller::Unauthenticated("no token".into()).may_call("text.echo"));
    }
}
