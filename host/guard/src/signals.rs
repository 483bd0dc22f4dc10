//! Signals and a score: the parts of an injection detected separately and
//! combined, instead of whole phrases.
//!
//! A rule file's `[[signal]]` tables name the parts of an injection: an
//! addressee (text addressed to an AI reader), an imperative, a task switch
//! or a request for ordinary assistant work, a reference to the user, the
//! conversation or the reader's answer, urgency or secrecy, an out-of-place
//! channel or line (a spreadsheet formula, a comment, a line of prose among
//! a table's rows), code that exfiltrates. Each has a weight; a negative one
//! (a mention, a list of requests, a lone request) lowers every window
//! holding its line. All
//! signal patterns run as one multi-pattern automaton over a string (one
//! linear pass, every match end of every pattern); a *window* is a line
//! together with the line before it (blank lines between them do not
//! count; a fenced code block counts as one line with the line that
//! introduces it), at most [`Thresholds::span`] bytes from
//! its first signal to its last. A window's score is the sum of the weights
//! of the *distinct* signals in it; the string's score is its best window's.
//! The `[score]` thresholds turn the score into an action (reject, redact
//! the window, or flag); a policy may change them (`[guard.score]`). The
//! same pass also reports the [`Shapes`] that the guard's views undo, so a
//! text without them is not looked at again.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input, MatchKind};
use serde::Deserialize;
use std::sync::OnceLock;

use crate::rules::{Action, RulesError};

/// Most signals a rule file may define (a window's signals are a bit mask).
pub const MAX_SIGNALS: usize = 32;

/// Largest weight of a signal, either way: a window's score adds up to
/// [`MAX_SIGNALS`] weights, and this keeps the sum far inside an `i32`
/// (the default signals weigh -3 to 3).
pub const MAX_WEIGHT: i32 = 1_000;

/// Shapes that views of a text undo (see `views`), seen in the same pass
/// as the signals, so a text without them is not looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    /// At least four single letters in a row, each followed by a space, dot
    /// or hyphen (`I g n o r e`).
    pub letter_spaced: bool,
    /// A quote, a comma and a quote close together (`"a", "b"`).
    pub quoted_list: bool,
}

impl Shapes {
    /// Both shapes may be present (nothing was looked for).
    pub const UNKNOWN: Shapes = Shapes {
        letter_spaced: true,
        quoted_list: true,
    };
}

use crate::automata::{Syntax, SHAPE_PATTERNS};
use crate::ceil_boundary;

/// Score thresholds per action (`[score]` in a rule file, `[guard.score]` in
/// a policy), the window's span and the learned detector's weight. A
/// threshold that is absent (or 0) never acts; a weight that is absent (as
/// in a rule file without `model`) or 0 adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A score at least this high rejects the output.
    #[serde(default)]
    pub reject: Option<u32>,
    /// A score at least this high redacts the window.
    #[serde(default)]
    pub redact: Option<u32>,
    /// A score at least this high is reported.
    #[serde(default)]
    pub flag: Option<u32>,
    /// Longest window, in bytes from its first signal to its last.
    #[serde(default)]
    pub span: Option<u32>,
    /// What the learned detector adds to a window's score when its own best
    /// window, reaching its threshold, overlaps that window and holds 24
    /// words or more: a second, independent detector agreeing (`model = 2`
    /// in the default rules, so a flag's 3 and the detector reject). Absent
    /// or 0 adds nothing.
    #[serde(default)]
    pub model: Option<u32>,
}

/// Default [`Thresholds::span`].
pub const DEFAULT_SPAN: usize = 400;
/// Largest [`Thresholds::span`]: windows far longer than a paragraph would
/// add up signals that have nothing to do with each other.
pub const MAX_SPAN: usize = 65_536;

impl Thresholds {
    /// These thresholds, with each one that is set in `over` replaced.
    pub fn overridden_by(self, over: &Thresholds) -> Thresholds {
        Thresholds {
            reject: over.reject.or(self.reject),
            redact: over.redact.or(self.redact),
            flag: over.flag.or(self.flag),
            span: over.span.or(self.span),
            model: over.model.or(self.model),
        }
    }

    /// The action a score calls for, if any (the strongest that applies).
    pub fn action(&self, score: u32) -> Option<Action> {
        let at = |t: Option<u32>| t.is_some_and(|t| t > 0 && score >= t);
        if at(self.reject) {
            Some(Action::Reject)
        } else if at(self.redact) {
            Some(Action::Redact)
        } else if at(self.flag) {
            Some(Action::Flag)
        } else {
            None
        }
    }

    /// Why these thresholds cannot be meant as written: a span of 0 bytes
    /// or past [`MAX_SPAN`], or a weaker action's threshold above a stronger
    /// one's (the stronger action would always win, so the weaker would
    /// never act).
    pub fn check(&self) -> Result<(), String> {
        if let Some(span) = self.span {
            if span == 0 || span as usize > MAX_SPAN {
                return Err(format!(
                    "span = {span} is not allowed: the longest window, in bytes from its first signal to its last, from 1 to {MAX_SPAN} (default {DEFAULT_SPAN})"
                ));
            }
        }
        let on = |t: Option<u32>| t.filter(|&t| t > 0);
        let order = [
            ("flag", on(self.flag)),
            ("redact", on(self.redact)),
            ("reject", on(self.reject)),
        ];
        for (i, (weak, below)) in order.iter().enumerate() {
            for (strong, above) in &order[i + 1..] {
                if let (Some(below), Some(above)) = (below, above) {
                    if below > above {
                        return Err(format!(
                            "{weak} = {below} is above {strong} = {above}, so it would never act: set flag <= redact <= reject (0 turns one off)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn span_bytes(&self) -> usize {
        self.span.map_or(DEFAULT_SPAN, |s| s as usize)
    }
}

/// One signal of a rule file.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Its id (`addressee`, `task-switch`, …).
    pub id: String,
    /// What it detects.
    pub description: String,
    /// What it adds to a window's score; negative for a mark that the text
    /// is about requests rather than making one (a mention, a list of
    /// requests), which lowers every window holding its line.
    pub weight: i32,
}

/// A rule file's signals, compiled.
#[derive(Debug)]
pub struct Signals {
    /// The signals, in file order.
    pub signals: Vec<Signal>,
    /// The default thresholds (`[score]`).
    pub thresholds: Thresholds,
    /// The signals' automaton's patterns: every signal's (in signal order),
    /// then the [`Shapes`]'.
    patterns: Vec<String>,
    /// For each of them, its owner: a signal index (below the number of
    /// signals), then a shape.
    owners: Vec<usize>,
    /// The rule patterns the guard runs beside the signals
    /// ([`crate::RuleSet::all`]), for the rules' automaton.
    rule_patterns: Vec<String>,
    /// The signal and shape patterns in an automaton (lazy DFAs over groups
    /// of them) that reports every match end of every pattern (overlapping:
    /// one match never hides another; a pattern it holds relaxed reports
    /// more, which [`Exact`] confirms), with a pool of caches per DFA for
    /// concurrent calls; compiled on first use (`None` when there is nothing
    /// to look for).
    dfa: OnceLock<Option<Automaton>>,
    /// The rule patterns, likewise, in an automaton of their own, relaxed
    /// ([`crate::automata::relax`]): it names the rule patterns that may
    /// match.
    rules_dfa: OnceLock<Option<Automaton>>,
    /// For each of the signals' automaton's patterns, its exact form when
    /// the automaton holds it relaxed (`None` when relaxing changes
    /// nothing); made on its first match.
    exact: Vec<OnceLock<Option<Exact>>>,
}

/// A signal pattern the automaton holds relaxed ([`crate::automata::relax`]:
/// `[^\n]{0,120}` as `[^\n]*`), as written, to confirm the match ends the
/// automaton reports for it.
///
/// A wide bounded gap is a state for every byte after its start, times the
/// states of every other pattern in its group; three such gaps held 7 of
/// the 9 MB of states that the largest group built on the development
/// part's benign records, and relaxing them all cut the states of the four
/// groups by 44 % (22 MB to 12 MB). Their match ends are few (on those
/// records, relaxed or not, the same 3,044), and each is confirmed by a walk
/// back from it in a lazy DFA that reads backwards, anchored at the end,
/// which stops at the nearest start that matches or where none can. The
/// bytes the walks step through are linear in the text together: when one
/// text's walks for a pattern have read [`WALK_BUDGET`] bytes per byte of
/// the text (of at least 64), the pattern's exact ends in that text are
/// found in one forward pass instead (`a[^\n]*b[^\n]{0,50}c` on `a` then
/// `bc` repeated walks back to the `a` from every `c`). A gap tens of
/// thousands of bytes wide, which only a rule file's own pattern has, still
/// costs what it did before relaxing: building each new state takes a step
/// per start the gap holds.
pub(crate) struct Exact {
    hir: regex_syntax::hir::Hir,
    backward: (std::sync::Arc<DFA>, CachePool),
    /// Made on its first use: few texts need it.
    forward: OnceLock<Option<(std::sync::Arc<DFA>, CachePool)>>,
}

/// Bytes one text's confirming walks for one pattern may read, per byte of
/// the text (counted as at least 64), before its ends are found in one
/// forward pass (see [`Exact`]).
const WALK_BUDGET: usize = 4;

/// What a walk back from a match end found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walked {
    /// The pattern matches text ending there.
    Match,
    /// It does not.
    NoMatch,
    /// The walk read its budget first.
    Over,
}

impl Exact {
    /// The exact form of `pattern` (a signal or shape pattern), or `None`
    /// when relaxing it changes nothing (or, never for a pattern that
    /// parsed, when it does not compile: the relaxed ends then stand).
    pub(crate) fn of(pattern: &str) -> Option<Exact> {
        let hir =
            regex_automata::util::syntax::parse_with(pattern, &Syntax::Signals.config()).ok()?;
        if crate::automata::relax(&hir) == hir {
            return None;
        }
        Some(Exact {
            backward: Exact::compile(&hir, true)?,
            hir,
            forward: OnceLock::new(),
        })
    }

    /// `hir` in a lazy DFA that reads forwards or backwards, over bytes as
    /// the automaton reads (a match may start or end inside a character).
    fn compile(
        hir: &regex_syntax::hir::Hir,
        reverse: bool,
    ) -> Option<(std::sync::Arc<DFA>, CachePool)> {
        let nfa = regex_automata::nfa::thompson::Compiler::new()
            .configure(
                crate::automata::thompson_config()
                    .reverse(reverse)
                    .utf8(false),
            )
            .build_from_hir(hir)
            .ok()?;
        // A gap as wide as a rule file may write needs a cache larger than
        // the least a lazy DFA takes by default.
        pooled(
            nfa,
            DFA::config()
                .match_kind(MatchKind::All)
                .cache_capacity(CACHE_CAPACITY)
                .skip_cache_capacity_check(true),
        )
        .ok()
    }

    /// Walks back from `end` in `text`: whether the pattern matches text
    /// ending there, unless that takes more than `budget` bytes; and the
    /// bytes it read.
    pub(crate) fn walk_back(&self, text: &[u8], end: usize, budget: usize) -> (Walked, usize) {
        let (dfa, caches) = &self.backward;
        let cache = &mut caches.get();
        let input = Input::new(text).range(..end).anchored(Anchored::Yes);
        let Ok(mut sid) = dfa.start_state_reverse(cache, &input) else {
            return (Walked::Match, 0); // never with these settings: the relaxed end stands
        };
        // A state entered on the byte at `at` that is a match is a match
        // starting just after it; the text's start is its own step.
        let mut at = end;
        while at > 0 {
            if end - at >= budget {
                return (Walked::Over, end - at);
            }
            at -= 1;
            match dfa.next_state(cache, sid, text[at]) {
                Ok(next) if next.is_match() => return (Walked::Match, end - at),
                Ok(next) if next.is_dead() => return (Walked::NoMatch, end - at),
                Ok(next) if !next.is_quit() => sid = next,
                // Quit or an error, never with these settings (no quit
                // bytes): the relaxed end stands.
                _ => return (Walked::Match, end - at),
            }
        }
        match dfa.next_eoi_state(cache, sid) {
            Ok(last) if !last.is_match() => (Walked::NoMatch, end),
            _ => (Walked::Match, end),
        }
    }

    /// Every end of the pattern's matches in `text`, in order (one forward
    /// pass, overlapping: any start); every position when the pass cannot
    /// be made (never with these settings: every relaxed end stands).
    pub(crate) fn all_ends(&self, text: &[u8]) -> Vec<usize> {
        self.forward_ends(text)
            .unwrap_or_else(|| (0..=text.len()).collect())
    }

    /// [`Exact::all_ends`], or `None` when the forward DFA fails to build,
    /// start or step (quits).
    fn forward_ends(&self, text: &[u8]) -> Option<Vec<usize>> {
        let forward = self
            .forward
            .get_or_init(|| Exact::compile(&self.hir, false));
        let (dfa, caches) = forward.as_ref()?;
        let cache = &mut caches.get();
        let mut ends = Vec::new();
        let mut sid = dfa.start_state_forward(cache, &Input::new(text)).ok()?;
        for (at, &b) in text.iter().enumerate() {
            sid = dfa
                .next_state(cache, sid, b)
                .ok()
                .filter(|s| !s.is_quit())?;
            if sid.is_match() {
                ends.push(at);
            }
        }
        if dfa.next_eoi_state(cache, sid).ok()?.is_match() {
            ends.push(text.len());
        }
        Some(ends)
    }
}

/// The confirming of relaxed patterns' match ends in one text (see
/// [`Exact`]): for each pattern, the bytes its walks have read, and its
/// exact ends once they read too many.
struct Confirm<'a> {
    signals: &'a Signals,
    text: &'a [u8],
    patterns: Vec<(usize, Option<Vec<usize>>)>,
}

impl<'a> Confirm<'a> {
    fn new(signals: &'a Signals, text: &'a str) -> Confirm<'a> {
        Confirm {
            signals,
            text: text.as_bytes(),
            patterns: Vec::new(),
        }
    }

    /// Whether pattern `p` of the signals' automaton matches text ending at
    /// `end`, where the automaton reported it: always, unless the automaton
    /// holds it relaxed.
    fn confirms(&mut self, p: usize, end: usize) -> bool {
        let signals = self.signals;
        let Some(exact) = signals.exact[p].get_or_init(|| Exact::of(&signals.patterns[p])) else {
            return true;
        };
        if self.patterns.is_empty() {
            self.patterns.resize(signals.patterns.len(), (0, None));
        }
        let budget = WALK_BUDGET * self.text.len().max(64);
        let (walked, ends) = &mut self.patterns[p];
        if ends.is_none() {
            let (found, read) = exact.walk_back(self.text, end, budget.saturating_sub(*walked));
            *walked += read;
            match found {
                Walked::Match => return true,
                Walked::NoMatch => return false,
                Walked::Over => *ends = Some(exact.all_ends(self.text)),
            }
        }
        ends.as_ref().is_some_and(|e| e.binary_search(&end).is_ok())
    }
}

/// Makes a lazy DFA's cache.
type CacheMaker =
    Box<dyn Fn() -> Cache + Send + Sync + std::panic::RefUnwindSafe + std::panic::UnwindSafe>;

/// A pool of a lazy DFA's caches, one per concurrent search.
type CachePool = Pool<Cache, CacheMaker>;

/// One multi-pattern automaton: its patterns in groups, each group a lazy
/// DFA of its own (see [`crate::automata::groups`]), all stepped together
/// over a text.
struct Automaton {
    groups: Vec<Group>,
    /// Patterns named by a run rather than by a group (only in the rules'
    /// automaton, which says which patterns may match: see
    /// [`crate::automata::Run`]), with their index.
    runs: Vec<(usize, crate::automata::Run)>,
}

/// A group's lazy DFA, its caches and which of the automaton's patterns
/// its own pattern ids are.
struct Group {
    dfa: std::sync::Arc<DFA>,
    caches: CachePool,
    patterns: Vec<usize>,
}

/// A group's search through one text: its DFA, cache and state and, for
/// `g`'s group, the last match state whose patterns went to `g`. It holds
/// the DFA and the cache itself, not through the group and the pool's
/// guard: the tight loop reads them for every byte, and each indirection
/// there (the guard's is a branch) costs as much as the step.
struct Walk<'a> {
    dfa: &'a DFA,
    patterns: &'a [usize],
    cache: &'a mut Cache,
    sid: LazyStateID,
    /// The state before the byte the tight loop last looked at.
    before: LazyStateID,
    /// Its matches go to `f` (the automaton's own) or to `g` (the other's).
    ours: bool,
    last: LazyStateID,
    /// Dead, quit or given up: it steps no more.
    ended: bool,
}

impl Automaton {
    /// Appends to `out` which patterns match in `text`, each once, in
    /// pattern order. Most text matches none: a search that stops at the
    /// first match end (the DFA's fast loop) says so before the overlapping
    /// search that finds them all.
    fn which_match(&self, text: &str, out: &mut Vec<usize>) {
        // Each run is looked for once: its finding serves both the question
        // whether anything matches and the answer.
        let runs = self.run_hits(text);
        let input = Input::new(text).earliest(true);
        let any = !runs.is_empty()
            || self.groups.iter().any(|g| {
                matches!(
                    g.dfa.try_search_fwd(&mut g.caches.get(), &input),
                    Ok(Some(_))
                )
            });
        if any {
            self.matching_with(text, &runs, out);
        }
    }

    /// Appends to `out` which patterns match in `text`, each once, in
    /// pattern order (one overlapping pass).
    fn all_matching(&self, text: &str, out: &mut Vec<usize>) {
        let runs = self.run_hits(text);
        self.matching_with(text, &runs, out);
    }

    /// [`Automaton::all_matching`] with the patterns its runs name in
    /// `text` already found (`runs`).
    fn matching_with(&self, text: &str, runs: &[usize], out: &mut Vec<usize>) {
        let patterns =
            self.groups.iter().map(|g| g.patterns.len()).sum::<usize>() + self.runs.len();
        let mut seen = vec![false; patterns];
        self.each_match(text, |p, _| seen[p] = true);
        for &p in runs {
            seen[p] = true;
        }
        out.extend((0..seen.len()).filter(|&p| seen[p]));
    }

    /// The patterns a run names that `text` holds.
    fn run_hits(&self, text: &str) -> Vec<usize> {
        let mut hits = Vec::new();
        self.each_run(text, |p| hits.push(p));
        hits
    }

    /// Calls `f(pattern)` for each pattern a run names that `text` holds.
    fn each_run(&self, text: &str, mut f: impl FnMut(usize)) {
        for (p, run) in &self.runs {
            if run.found_in(text.as_bytes()) {
                f(*p);
            }
        }
    }

    /// Calls `f(pattern, end)` for every match end of every pattern, in
    /// one pass, in order of their ends (the overlapping search of
    /// `regex-automata`, with a tight loop over the transitions that lead to
    /// no match, which is nearly every byte). A group's DFA that gives up
    /// (none does, with these settings: no Unicode word boundaries, no
    /// cache-clear limit) ends that group's matches.
    fn each_match(&self, text: &str, f: impl FnMut(usize, usize)) {
        self.each_match_and(None, text, f, |_| {});
    }

    /// [`Automaton::each_match`], and `g(pattern)` for every match end of
    /// `other` in the same loop: each byte steps every group of both
    /// automata, so the lookups of a byte (each a likely cache miss: the
    /// automata are large) overlap instead of following one another.
    /// Returns false when `other` gave up (it does not, with these
    /// settings), so that its matches may be incomplete.
    fn each_match_and(
        &self,
        other: Option<&Automaton>,
        text: &str,
        mut f: impl FnMut(usize, usize),
        mut g: impl FnMut(usize),
    ) -> bool {
        if let Some(other) = other {
            other.each_run(text, &mut g);
        }
        let bytes = text.as_bytes();
        let input = Input::new(text);
        let theirs = other
            .iter()
            .flat_map(|o| o.groups.iter().map(|g| (g, false)));
        let mut taken: Vec<_> = self
            .groups
            .iter()
            .map(|g| (g, true))
            .chain(theirs)
            .map(|(g, ours)| (g, ours, g.caches.get()))
            .collect();
        let mut walks: Vec<Walk<'_>> = Vec::with_capacity(taken.len());
        for (group, ours, guard) in taken.iter_mut() {
            let (group, ours) = (*group, *ours);
            let cache: &mut Cache = guard;
            match group.dfa.start_state_forward(cache, &input) {
                Ok(sid) => walks.push(Walk {
                    dfa: &group.dfa,
                    patterns: &group.patterns,
                    cache,
                    sid,
                    before: sid,
                    ours,
                    last: LazyStateID::default(),
                    ended: false,
                }),
                Err(_) if ours => {}
                Err(_) => return false,
            }
        }
        let mut complete = true;
        let mut at = 0;
        while at < bytes.len() {
            // The tight loop: no state is new, a match or an end.
            if walks.iter().all(|w| !w.sid.is_tagged()) {
                while at < bytes.len() {
                    let b = bytes[at];
                    let mut tagged = false;
                    for w in walks.iter_mut() {
                        let next = w.dfa.next_state_untagged(w.cache, w.sid, b);
                        w.before = w.sid;
                        w.sid = next;
                        tagged |= next.is_tagged();
                    }
                    if tagged {
                        for w in walks.iter_mut() {
                            w.sid = w.before;
                        }
                        break;
                    }
                    at += 1;
                }
                if at == bytes.len() {
                    break;
                }
            }
            // One byte the slow way: a state not built yet, or a match
            // (reported one byte late: a transition into a match state on
            // the byte at `at` is a match ending at `at`), or (never here)
            // dead, quit or given up.
            let b = bytes[at];
            for w in walks.iter_mut() {
                let Some(next) = w.advance(Some(b)) else {
                    w.ended = true;
                    complete &= w.ours;
                    continue;
                };
                w.report(next, at, &mut f, &mut g);
                w.sid = next;
            }
            walks.retain(|w| !w.ended);
            if walks.is_empty() {
                return complete;
            }
            at += 1;
        }
        for w in walks.iter_mut() {
            match w.advance(None) {
                Some(end) => w.report(end, bytes.len(), &mut f, &mut g),
                None => complete &= w.ours,
            }
        }
        complete
    }
}

impl Walk<'_> {
    /// The state after byte `b`, or after the end of the text (`None`),
    /// building it if need be; `None` when the search ends there (given up,
    /// or after a byte dead or quit: never with these settings). A cache
    /// clear gives ids to new states, so the last match state is forgotten.
    fn advance(&mut self, b: Option<u8>) -> Option<LazyStateID> {
        let clears = self.cache.clear_count();
        let next = match b {
            Some(b) => self
                .dfa
                .next_state(self.cache, self.sid, b)
                .ok()
                .filter(|next| !(next.is_dead() || next.is_quit())),
            None => self.dfa.next_eoi_state(self.cache, self.sid).ok(),
        };
        if self.cache.clear_count() != clears {
            self.last = LazyStateID::default();
        }
        next
    }

    /// Sends the patterns that match in `state` (entered at the byte at
    /// `end`, or at the end of the text) to `f` with `end` (the automaton's
    /// own), or to `g` (the other's). A match state is named to `g` once
    /// until another match state (or a cache clear) comes, so a run of the
    /// same match state (a URL's bytes, each a match end of the link rules)
    /// costs one report: `g` wants which patterns match, not where.
    fn report(
        &mut self,
        state: LazyStateID,
        end: usize,
        f: &mut impl FnMut(usize, usize),
        g: &mut impl FnMut(usize),
    ) {
        if self.ours {
            for p in matched(self.dfa, self.cache, state) {
                f(self.patterns[p], end);
            }
        } else if state != self.last {
            matched(self.dfa, self.cache, state).for_each(|p| g(self.patterns[p]));
            if state.is_match() {
                self.last = state;
            }
        }
    }
}

/// The patterns that match in state `sid` (none unless it is a match state).
fn matched<'a>(
    dfa: &'a DFA,
    cache: &'a Cache,
    sid: LazyStateID,
) -> impl Iterator<Item = usize> + 'a {
    let n = if sid.is_match() {
        dfa.match_len(cache, sid)
    } else {
        0
    };
    (0..n).map(move |i| dfa.match_pattern(cache, sid, i).as_usize())
}

/// Most bytes of one group's cache of built states (per search running at
/// once; the default rules have eight groups, so at most 128 MiB, allocated
/// as states are built). The benchmark's repeated outputs need about 1.7 MB
/// in all; a stream of 3,500 of this machine's files grew them to about
/// 34 MB with no clear. Half this cap ran that stream at half the speed, a
/// quarter at a third: smaller caches clear, and clearing is what made the
/// one-DFA automata slow (see [`crate::automata::groups`]).
const CACHE_CAPACITY: usize = 16 << 20;

/// The default rules' automata as the build script compiled them
/// ([`crate::automata`]).
pub(crate) static BUILT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/automata.bin"));

/// The automaton over `patterns`: one lazy DFA per group (every match end
/// of every pattern, no capture groups: only where matches end is
/// wanted); `None` for no patterns. A group's NFA is the one the build
/// compiled when the group is the default rules', else compiled now.
fn build(
    patterns: &[String],
    syntax: Syntax,
    what: &str,
    cache_capacity: usize,
) -> Result<Option<Automaton>, RulesError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let error = |e: String| RulesError(format!("the {what} do not compile together: {e}"));
    // Only the rules' automaton names patterns by runs: the signals' reports
    // where matches end.
    let runs = match syntax {
        Syntax::Signals => Vec::new(),
        Syntax::Rules => match crate::automata::decode_runs(BUILT, patterns) {
            Some(runs) => runs,
            None => crate::automata::runs(patterns, syntax).map_err(error)?,
        },
    };
    let mut groups = Vec::new();
    for (members, own) in crate::automata::groups_without(patterns, &runs) {
        let nfa = match crate::automata::decode(BUILT, &own, syntax) {
            Some(nfa) => nfa,
            None => crate::automata::compile(&own, syntax).map_err(error)?,
        };
        let (dfa, caches) = pooled(
            nfa,
            DFA::config()
                .match_kind(MatchKind::All)
                .cache_capacity(cache_capacity),
        )
        .map_err(error)?;
        groups.push(Group {
            dfa,
            caches,
            patterns: members,
        });
    }
    Ok(Some(Automaton { groups, runs }))
}

/// A lazy DFA over `nfa` with `config`, and a pool of its caches; the
/// error as text.
fn pooled(
    nfa: regex_automata::nfa::thompson::NFA,
    config: regex_automata::hybrid::dfa::Config,
) -> Result<(std::sync::Arc<DFA>, CachePool), String> {
    let dfa = DFA::builder()
        .configure(config)
        .build_from_nfa(nfa)
        .map_err(|e| e.to_string())?;
    let dfa = std::sync::Arc::new(dfa);
    let for_pool = dfa.clone();
    Ok((dfa, Pool::new(Box::new(move || for_pool.create_cache()))))
}

impl std::fmt::Debug for Exact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exact").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Automaton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Automaton").finish_non_exhaustive()
    }
}

/// A signal table of a rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSignal {
    id: String,
    description: String,
    weight: i32,
    patterns: Vec<String>,
}

/// The best-scoring window of a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scored {
    /// The window's score.
    pub score: u32,
    /// Indexes of the signals in it.
    pub signals: Vec<usize>,
    /// Its byte span (from the start of its first line to the end of its last).
    pub span: (usize, usize),
}

impl Signals {
    /// No signals: nothing is ever scored.
    pub fn none() -> Signals {
        Signals {
            signals: Vec::new(),
            thresholds: Thresholds::default(),
            patterns: Vec::new(),
            owners: Vec::new(),
            rule_patterns: Vec::new(),
            dfa: OnceLock::new(),
            rules_dfa: OnceLock::new(),
            exact: Vec::new(),
        }
    }

    /// Whether the automaton also looks for [`Shapes`] (it does whenever
    /// there are signals).
    fn finds_shapes(&self) -> bool {
        !self.signals.is_empty()
    }

    /// Compiles a rule file's signals, with the rule patterns that run in
    /// the same pass (`rules`, matched with the rule syntax: Unicode
    /// classes). The automaton is built now when `eager`, else on first use.
    pub(crate) fn compile(
        file: Vec<FileSignal>,
        thresholds: Thresholds,
        rules: Vec<String>,
        eager: bool,
    ) -> Result<Signals, RulesError> {
        if file.len() > MAX_SIGNALS {
            return Err(RulesError(format!(
                "{} signals defined; at most {MAX_SIGNALS} are allowed",
                file.len()
            )));
        }
        let mut signals: Vec<Signal> = Vec::new();
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for s in file {
            if signals.iter().any(|x| x.id == s.id) {
                return Err(RulesError(format!("signal {:?} is defined twice", s.id)));
            }
            if s.patterns.is_empty() {
                return Err(RulesError(format!("signal {:?} has no patterns", s.id)));
            }
            if !(-MAX_WEIGHT..=MAX_WEIGHT).contains(&s.weight) {
                return Err(RulesError(format!(
                    "signal {:?}: weight {} is out of range; give -{MAX_WEIGHT} to {MAX_WEIGHT}",
                    s.id, s.weight
                )));
            }
            for (i, p) in s.patterns.iter().enumerate() {
                // Checked on its own, with the signals' syntax, for an
                // error that names it.
                if eager {
                    regex_automata::util::syntax::parse_with(p, &Syntax::Signals.config())
                        .map_err(|e| RulesError(format!("signal {:?}, pattern {i}: {e}", s.id)))?;
                }
                patterns.push(p.clone());
                owners.push(signals.len());
            }
            signals.push(Signal {
                id: s.id,
                description: s.description,
                weight: s.weight,
            });
        }
        if !signals.is_empty() {
            // Shape patterns are owned by `signals.len() + k`, past the signals.
            for (k, p) in SHAPE_PATTERNS.iter().enumerate() {
                patterns.push(p.to_string());
                owners.push(signals.len() + k);
            }
        }
        let n_patterns = patterns.len();
        let compiled = Signals {
            signals,
            thresholds,
            patterns,
            owners,
            rule_patterns: rules,
            dfa: OnceLock::new(),
            rules_dfa: OnceLock::new(),
            exact: (0..n_patterns).map(|_| OnceLock::new()).collect(),
        };
        if eager {
            let (dfa, rules_dfa) = compiled.build_automata(CACHE_CAPACITY)?;
            let _ = compiled.dfa.set(dfa);
            let _ = compiled.rules_dfa.set(rules_dfa);
        }
        Ok(compiled)
    }

    /// The signals' automaton and the rules', built now with caches of
    /// `cache_capacity` bytes each.
    fn build_automata(
        &self,
        cache_capacity: usize,
    ) -> Result<(Option<Automaton>, Option<Automaton>), RulesError> {
        Ok((
            build(&self.patterns, Syntax::Signals, "signals", cache_capacity)?,
            build(&self.rule_patterns, Syntax::Rules, "rules", cache_capacity)?,
        ))
    }

    /// These signals with both automata built now with caches of `bytes`
    /// (a test's small cache clears often).
    #[cfg(test)]
    pub(crate) fn with_cache_capacity(self, bytes: usize) -> Signals {
        let (dfa, rules_dfa) = self
            .build_automata(bytes)
            .expect("the patterns compiled before");
        Signals {
            dfa: OnceLock::from(dfa),
            rules_dfa: OnceLock::from(rules_dfa),
            ..self
        }
    }

    /// The patterns of the signals' automaton and of the rules' automaton.
    #[cfg(test)]
    pub(crate) fn automaton_patterns(&self) -> (&[String], &[String]) {
        (&self.patterns, &self.rule_patterns)
    }

    /// Builds both automata now (see [`crate::RuleSet::prepare`]), each on
    /// its own thread when neither is compiled yet.
    pub fn prepare(&self) {
        if self.dfa.get().is_some() || self.rules_dfa.get().is_some() {
            self.automaton();
            self.rules_automaton();
            return;
        }
        std::thread::scope(|scope| {
            let other = std::thread::Builder::new()
                .name("guard-compile".into())
                .spawn_scoped(scope, || {
                    self.rules_automaton();
                });
            self.automaton();
            if other.map(|handle| handle.join()).is_err() {
                self.rules_automaton(); // no thread: compile it here
            }
        });
    }

    /// The signals' automaton, compiled on first use (the patterns were
    /// checked when the rule file loaded, or are the bundled ones, which are
    /// tested).
    fn automaton(&self) -> Option<&Automaton> {
        self.dfa
            .get_or_init(|| {
                build(&self.patterns, Syntax::Signals, "signals", CACHE_CAPACITY)
                    .expect("the rule file's signals compile (checked when it loaded)")
            })
            .as_ref()
    }

    /// The rules' automaton, compiled on first use.
    fn rules_automaton(&self) -> Option<&Automaton> {
        self.rules_dfa
            .get_or_init(|| {
                build(&self.rule_patterns, Syntax::Rules, "rules", CACHE_CAPACITY)
                    .expect("the rule file's patterns compile (checked when it loaded)")
            })
            .as_ref()
    }

    /// Every signal match end in `text`: (signal index, end byte offset,
    /// which may fall inside a character: the automaton runs on bytes), in
    /// order of their ends. Overlapping matches are all reported, so no
    /// signal hides another.
    pub fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let n = self.signals.len();
        self.each_match(text, |signal, end| {
            if signal < n {
                out.push((signal, end));
            }
        });
        out
    }

    /// Calls `f(signal, end)` for every match end, in one pass of the
    /// automaton (see [`Automaton::each_match`]), the relaxed patterns'
    /// confirmed (see [`Exact`]).
    fn each_match(&self, text: &str, f: impl FnMut(usize, usize)) {
        self.each_match_and_rules(text, None, f);
    }

    /// [`Signals::each_match`], and which rule patterns match, appended to
    /// `rules` when given (both automata step through the text together).
    fn each_match_and_rules(
        &self,
        text: &str,
        rules: Option<&mut Vec<usize>>,
        mut f: impl FnMut(usize, usize),
    ) {
        if self.dfa.get().is_none() {
            self.prepare(); // the first scan: compile both, side by side
        }
        let rules_auto = self.rules_automaton();
        // The signals' match ends, each relaxed pattern's confirmed.
        let mut confirm = Confirm::new(self, text);
        let mut ours = |p: usize, end: usize| {
            if confirm.confirms(p, end) {
                f(self.owners[p], end)
            }
        };
        match (self.automaton(), rules) {
            (Some(auto), Some(rules)) => {
                // Few patterns match a text, so a list (each pattern once,
                // sorted after) rather than a flag per pattern.
                let from = rules.len();
                let complete = auto.each_match_and(rules_auto, text, &mut ours, |p| {
                    if !rules[from..].contains(&p) {
                        rules.push(p);
                    }
                });
                match rules_auto {
                    Some(r) if !complete => {
                        rules.truncate(from);
                        r.all_matching(text, rules);
                    }
                    _ => rules[from..].sort_unstable(),
                }
            }
            (Some(auto), None) => auto.each_match(text, &mut ours),
            (None, Some(rules)) => {
                if let Some(r) = rules_auto {
                    r.which_match(text, rules);
                }
            }
            (None, None) => {}
        }
    }

    /// The best window of `text`, or `None` when no signal occurs in it.
    ///
    /// One pass of the automaton; each match enters and leaves the window
    /// once, and the window's signals are counted, so the work is linear in
    /// the text and its matches.
    pub fn score(&self, text: &str, thresholds: &Thresholds) -> Option<Scored> {
        self.score_and_shapes(text, thresholds).0
    }

    /// [`Signals::score`], and the [`Shapes`] seen in the same pass
    /// ([`Shapes::UNKNOWN`] when there are no signals, hence no pass).
    pub fn score_and_shapes(
        &self,
        text: &str,
        thresholds: &Thresholds,
    ) -> (Option<Scored>, Shapes) {
        if self.signals.is_empty() {
            return (None, Shapes::UNKNOWN);
        }
        self.scan(text, thresholds, None)
    }

    /// [`Signals::score_and_shapes`], and in the same pass which of the
    /// rule patterns the automaton holds may match in `text` (each index
    /// once, into [`crate::RuleSet::all`]; every one that matches, and some
    /// that do not: see [`crate::automata::relax`]), appended to `rules` when
    /// given.
    pub fn scan(
        &self,
        text: &str,
        thresholds: &Thresholds,
        rules: Option<&mut Vec<usize>>,
    ) -> (Option<Scored>, Shapes) {
        if self.signals.is_empty() {
            if let (Some(rules), Some(auto)) = (rules, self.rules_automaton()) {
                auto.which_match(text, rules);
            }
            return (None, Shapes::UNKNOWN);
        }
        let mut shapes = if self.finds_shapes() {
            Shapes {
                letter_spaced: false,
                quoted_list: false,
            }
        } else {
            Shapes::UNKNOWN
        };
        let n = self.signals.len();
        let span = thresholds.span_bytes();
        let mut weights = [0i32; MAX_SIGNALS];
        for (w, s) in weights.iter_mut().zip(&self.signals) {
            *w = s.weight;
        }
        // One pass of the automaton: the matches (end, line, signal), each
        // on the line it ends on (a sentence-start pattern begins at the end
        // of the sentence before).
        let (mut line, mut counted_to) = (0usize, 0usize);
        let mut lines = Lines::default();
        let bytes = text.as_bytes();
        let mut events: Vec<(usize, usize, usize)> = Vec::new();
        let mut negatives = false;
        self.each_match_and_rules(text, rules, |signal, end| {
            if signal >= n {
                match signal - n {
                    0 => shapes.letter_spaced = true,
                    _ => shapes.quoted_list = true,
                }
                return;
            }
            line += lines.count(bytes, counted_to, end);
            counted_to = end.max(counted_to);
            negatives |= weights[signal] < 0;
            events.push((end, line, signal));
        });
        // A negative signal (a mention, a list of requests) counts for the
        // whole of every window that holds the line it ends on or the line
        // before (its match may begin there), whether it comes before or
        // after the signals it qualifies. A window is named by its last line.
        let mut negative_lines: Vec<u32> = Vec::new();
        if negatives {
            negative_lines = vec![0; line + 2];
            for &(_, l, s) in events.iter().filter(|e| weights[e.2] < 0) {
                for lines in &mut negative_lines[l.saturating_sub(1)..=l + 1] {
                    *lines |= 1 << s;
                }
            }
        }
        // The positive signals, in a window that slides over them.
        let mut window: std::collections::VecDeque<(usize, usize, usize)> =
            std::collections::VecDeque::new();
        let mut counts = [0u32; MAX_SIGNALS];
        let mut best: Option<(i32, u32, usize, usize)> = None; // score, mask, first end, last end
        for &(end, line, signal) in events.iter().filter(|e| weights[e.2] >= 0) {
            while let Some(&(at, l, s)) = window.front() {
                if l + 1 < line || at + span < end {
                    counts[s] -= 1;
                    window.pop_front();
                } else {
                    break;
                }
            }
            window.push_back((end, line, signal));
            counts[signal] += 1;
            let mut mask = negative_lines.get(line).copied().unwrap_or(0);
            for (i, c) in counts[..n].iter().enumerate() {
                if *c > 0 {
                    mask |= 1 << i;
                }
            }
            let score: i32 = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| weights[i])
                .sum();
            if best.is_none_or(|b| score > b.0) {
                let first = window.front().map_or(end, |w| w.0);
                best = Some((score, mask, first, end));
            }
        }
        let Some((score, mask, first, end)) = best else {
            return (None, shapes);
        };
        // The automaton runs on bytes (ASCII classes: fewer states, and
        // every signal pattern is ASCII), so a match may end inside a
        // character: move to the next boundary.
        let first = ceil_boundary(text, first);
        let end = ceil_boundary(text, end);
        // From the start of the first match's line (the line its match
        // ends on) to the end of the last match's line.
        let from = text[..first].rfind('\n').map_or(0, |i| i + 1);
        let to = text[end..].find('\n').map_or(text.len(), |i| end + i);
        let scored = Scored {
            score: score.max(0).unsigned_abs(),
            signals: (0..self.signals.len())
                .filter(|i| mask & (1 << i) != 0)
                .collect(),
            span: (from, to),
        };
        (Some(scored), shapes)
    }
}

/// Counts window lines: a fenced code block (from a line that opens with
/// three backticks to the line that closes it) and the line before it count
/// as one line, so the sentence that introduces a block and the block's code
/// share a window. Each byte is looked at once over a whole text.
#[derive(Default)]
struct Lines {
    in_fence: bool,
}

impl Lines {
    /// The window lines that end between `from` and `to`.
    fn count(&mut self, bytes: &[u8], from: usize, to: usize) -> usize {
        let mut n = 0;
        for at in memchr::memchr_iter(b'\n', &bytes[from.min(to)..to]) {
            let next = &bytes[from + at + 1..];
            let indent = next.iter().take_while(|b| **b == b' ').count();
            let blank = next
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r'))
                .is_none_or(|b| *b == b'\n');
            if blank {
                // A blank line (a paragraph break) separates no window: the
                // lines around it count as adjacent.
                continue;
            }
            if next[indent..].starts_with(b"```") {
                // The line before a fence joins the block; a closing fence
                // is part of the block.
                self.in_fence = !self.in_fence;
            } else if !self.in_fence {
                n += 1;
            }
        }
        n
    }
}
