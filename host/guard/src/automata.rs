//! The guard's two one-pass automata as Thompson NFAs: how their patterns
//! are grouped and compiled, and a compact binary form of a compiled NFA.
//!
//! Compiling the default rules' automata (about 50 000 NFA states in all,
//! in eight groups) takes tens of milliseconds of CPU, which a one-shot
//! `fabric call` process paid on every call. The build script (`build.rs`,
//! which includes this file) compiles each group once, when the crate is
//! built, and embeds the result; at run time [`decode`] rebuilds the same
//! NFAs state by state, in a few milliseconds of CPU. The embedded form names the exact pattern list it was
//! compiled from, so it is used only for that list: a rule file with other
//! patterns (or a build whose list differs) is compiled as before. It holds
//! only what [`thompson_config`] can produce: a forward NFA with the default
//! look-around matcher and no capture states ([`encode`] refuses others).
//! Beside the groups, it holds which of the rules' patterns a [`Run`] names
//! instead, for the same exact list ([`encode_runs`], [`decode_runs`]).
//!
//! This file is shared with the build script, so it depends on nothing but
//! `regex-automata`, `regex-syntax` and `std`.

use regex_automata::nfa::thompson::{self, Builder, State, Transition, NFA};
use regex_automata::util::look::Look;
use regex_automata::util::primitives::StateID;
use regex_syntax::hir::{Capture, Hir, HirKind, Repetition};

/// The patterns that find the guard's text shapes (letter-spaced text,
/// quoted lists), after the signals' in the signals' automaton.
pub const SHAPE_PATTERNS: [&str; 2] = [
    r"(?:^|[^A-Za-z0-9])[A-Za-z][ .\-] *[A-Za-z][ .\-] *[A-Za-z][ .\-] *[A-Za-z][ .\-]",
    r#"["']\s*,\s*["']"#,
];

/// Most patterns in one of an automaton's lazy DFAs: a larger automaton is
/// split into [`groups`].
pub const GROUP_PATTERNS: usize = 32;

/// The groups that `patterns` are split into, each as its members' indices
/// and its own pattern list: as few groups as hold [`GROUP_PATTERNS`] each,
/// the patterns dealt among them in turn.
///
/// One DFA over all of the guard's patterns builds a state for every
/// combination of partial matches that a text brings together, and on
/// varied text (source files, documentation) the combinations do not run
/// out: each of the two automata cleared its 16 MiB cache again and again
/// and scanned about 1 MiB/s. Groups' states add up instead of
/// multiplying. Four groups each (32 patterns) checked the development
/// part's benign records 3-4 times as fast as one, and a stream of this
/// machine's files 4-5 times; the cost is on text whose states are all
/// built (the benchmark's repeated outputs), where stepping eight DFAs a
/// byte instead of two takes 1.6-2 times as long. Twenty patterns (seven
/// and six groups) gained a little more on varied text and lost 2.5 times
/// on repeated text.
pub fn groups(patterns: &[String]) -> Vec<(Vec<usize>, Vec<String>)> {
    let n = patterns.len();
    let k = n.div_ceil(GROUP_PATTERNS).max(1);
    (0..k)
        .map(|g| {
            let members: Vec<usize> = (g..n).step_by(k).collect();
            let own = members.iter().map(|&i| patterns[i].clone()).collect();
            (members, own)
        })
        .collect()
}

/// The groups of an automaton over `patterns` once the patterns that
/// `runs` name are taken out (see [`Run`]): [`groups`] of the rest, each
/// with its members as indices into `patterns`.
pub fn groups_without(
    patterns: &[String],
    runs: &[(usize, Run)],
) -> Vec<(Vec<usize>, Vec<String>)> {
    let kept: Vec<usize> = (0..patterns.len())
        .filter(|i| !runs.iter().any(|(r, _)| r == i))
        .collect();
    let rest: Vec<String> = kept.iter().map(|&i| patterns[i].clone()).collect();
    groups(&rest)
        .into_iter()
        .filter(|(members, _)| !members.is_empty())
        .map(|(members, own)| (members.iter().map(|&m| kept[m]).collect(), own))
        .collect()
}

/// How an automaton's patterns are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Signal and shape patterns: ASCII classes and case folding, over bytes
    /// (the patterns are ASCII, and Unicode `\w` and `\s` would multiply the
    /// states).
    Signals,
    /// Rule patterns: the `regex` crate's default (Unicode) syntax, as each
    /// rule's own regex reads them.
    Rules,
}

impl Syntax {
    /// The syntax configuration.
    pub fn config(self) -> regex_automata::util::syntax::Config {
        let config = regex_automata::util::syntax::Config::new();
        match self {
            Syntax::Signals => config.unicode(false).utf8(false),
            Syntax::Rules => config,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Syntax::Signals => 1,
            Syntax::Rules => 2,
        }
    }
}

/// The automata's NFA configuration: no capture groups (only where matches
/// end is wanted).
pub fn thompson_config() -> thompson::Config {
    thompson::Config::new().which_captures(thompson::WhichCaptures::None)
}

/// Compiles `patterns` into one NFA, as the guard's automata are compiled;
/// the error as text. Patterns are [`relax`]ed first.
pub fn compile(patterns: &[String], syntax: Syntax) -> Result<NFA, String> {
    let mut hirs = Vec::with_capacity(patterns.len());
    for p in patterns {
        let hir = regex_automata::util::syntax::parse_with(p, &syntax.config())
            .map_err(|e| e.to_string())?;
        hirs.push(relax(&hir));
    }
    thompson::Compiler::new()
        .configure(thompson_config())
        .build_many_from_hir(&hirs)
        .map_err(|e| e.to_string())
}

/// Widest bounded repetition the automata keep as written (`max - min`); a
/// wider one loses its upper bound.
pub const RELAX_ABOVE: u32 = 8;

/// `hir` with the upper bound of every wide repetition removed
/// (`[^.\n]{0,40}` becomes `[^.\n]*`) and every Unicode word boundary
/// (`\b` in a rule file's default syntax) taken as always true: it matches
/// every text `hir` matches, and more.
///
/// The rules' automaton only says which rule patterns may match; each such
/// rule's own regex then finds its matches (`scan` in `lib.rs`), so a
/// looser pattern there changes no result. A bounded gap makes the DFA
/// count: every byte after its start is another state, times the states of
/// every other pattern, and those states are what the automaton spends its
/// time fetching from memory (a handful of such gaps held about a third of
/// its states on varied text).
///
/// The signals' automaton reports where matches end, so each end it reports
/// for a pattern that relaxing changed is confirmed with the pattern as
/// written (`Exact` in `signals.rs`).
pub fn relax(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Repetition(rep) => {
            let wide = rep.max.is_some_and(|max| max - rep.min > RELAX_ABOVE);
            Hir::repetition(Repetition {
                min: rep.min,
                max: if wide { None } else { rep.max },
                greedy: rep.greedy,
                sub: Box::new(relax(&rep.sub)),
            })
        }
        HirKind::Capture(cap) => Hir::capture(Capture {
            index: cap.index,
            name: cap.name.clone(),
            sub: Box::new(relax(&cap.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(relax).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(relax).collect()),
        HirKind::Look(look) if unicode_word(*look) => Hir::empty(),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => hir.clone(),
    }
}

/// Whether `look` is a Unicode word boundary, which lazy DFAs do not
/// build: a rule file's `\b` is one (the default rules write
/// `(?-u:\b)`), and the rules' automaton, which only names the rules that
/// may match, reads it as always true.
fn unicode_word(look: regex_syntax::hir::Look) -> bool {
    use regex_syntax::hir::Look as L;
    matches!(
        look,
        L::WordUnicode
            | L::WordUnicodeNegate
            | L::WordStartUnicode
            | L::WordEndUnicode
            | L::WordStartHalfUnicode
            | L::WordEndHalfUnicode
    )
}

/// Shortest run (see [`Run`]) for which a rule pattern is checked by a run
/// counter instead of in the rules' automaton.
pub const RUN_MIN: usize = 20;

/// A run that every match of a pattern holds: at least `min` bytes in a
/// row, each in `set`.
///
/// The rules' patterns for encoded blobs (`[A-Za-z0-9+/]{40,}` and the
/// like) are counters: in a lazy DFA, a state for each byte of a run, times
/// every other pattern's states. They held 2.2 of one group's 3.7 MB of
/// states, and 3.3 of another's 4.4 MB, on the development part's benign
/// records. A text without such a run cannot match them, and one with it
/// nearly always does (the rest of these patterns is optional or a word
/// boundary), so the rules' automaton names them by looking for the run
/// instead, which costs a probe every `min` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The bytes a run is made of.
    pub set: [bool; 256],
    /// Its least length.
    pub min: usize,
}

impl Run {
    /// Whether `bytes` holds the run. A run of `min` bytes covers one of
    /// every `min`th byte, so only those are probed, and a probe in the
    /// set is widened back and forth to see how long its run is: each byte
    /// is looked at at most twice.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        let n = self.min.max(1);
        let mut probe = n - 1;
        while probe < bytes.len() {
            if !self.set[bytes[probe] as usize] {
                probe += n;
                continue;
            }
            let start = bytes[..probe]
                .iter()
                .rposition(|b| !self.set[*b as usize])
                .map_or(0, |i| i + 1);
            let end = bytes[probe..]
                .iter()
                .take(n)
                .position(|b| !self.set[*b as usize])
                .map_or((probe + n).min(bytes.len()), |i| probe + i);
            if end - start >= n {
                return true;
            }
            // The byte at `end` is not in the set (or the text ends): a
            // run starts after it.
            probe = end + n;
        }
        false
    }
}

/// The run every match of `hir` holds, when it is at least [`RUN_MIN`]
/// bytes long and holds no space or line break; `None` for any other
/// pattern. Read over bytes: a class with characters above ASCII counts
/// every byte above ASCII as in it (a character is at least one byte).
pub fn required_run(hir: &Hir) -> Option<Run> {
    let (set, min) = class_run(hir)?;
    if min >= RUN_MIN && !set[b' ' as usize] && !set[b'\n' as usize] {
        return Some(Run { set, min });
    }
    match hir.kind() {
        HirKind::Concat(subs) => subs
            .iter()
            .filter_map(required_run)
            .max_by_key(|run| run.min),
        HirKind::Capture(cap) => required_run(&cap.sub),
        HirKind::Repetition(rep) if rep.min >= 1 => required_run(&rep.sub),
        _ => None,
    }
}

/// The bytes every match of `hir` is made of, and its least length;
/// `None` when a part of it is not a class, a literal or a look-around.
fn class_run(hir: &Hir) -> Option<([bool; 256], usize)> {
    use regex_syntax::hir::Class;
    let mut set = [false; 256];
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some((set, 0)),
        HirKind::Literal(lit) => {
            for b in lit.0.iter() {
                set[*b as usize] = true;
            }
            Some((set, lit.0.len()))
        }
        HirKind::Class(Class::Bytes(class)) => {
            for r in class.ranges() {
                for b in r.start()..=r.end() {
                    set[b as usize] = true;
                }
            }
            Some((set, 1))
        }
        HirKind::Class(Class::Unicode(class)) => {
            for r in class.ranges() {
                let (a, b) = (r.start() as u32, r.end() as u32);
                for c in a..=b.min(0x7f) {
                    set[c as usize] = true;
                }
                if b > 0x7f {
                    set[0x80..].fill(true);
                }
            }
            Some((set, 1))
        }
        HirKind::Capture(cap) => class_run(&cap.sub),
        HirKind::Repetition(rep) => {
            let (set, min) = class_run(&rep.sub)?;
            Some((set, min.saturating_mul(rep.min as usize)))
        }
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            let concat = matches!(hir.kind(), HirKind::Concat(_));
            let mut min = if concat { 0 } else { usize::MAX };
            for sub in subs {
                let (s, m) = class_run(sub)?;
                for (a, b) in set.iter_mut().zip(s) {
                    *a |= b;
                }
                min = if concat {
                    min.saturating_add(m)
                } else {
                    min.min(m)
                };
            }
            Some((set, min))
        }
    }
}

/// The patterns of the rules' automaton that a [`Run`] names instead, by
/// index into `patterns`; none for the signals' automaton, which reports
/// where matches end. The error as text.
pub fn runs(patterns: &[String], syntax: Syntax) -> Result<Vec<(usize, Run)>, String> {
    if syntax != Syntax::Rules {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let hir = regex_automata::util::syntax::parse_with(p, &syntax.config())
            .map_err(|e| e.to_string())?;
        if let Some(run) = required_run(&hir) {
            out.push((i, run));
        }
    }
    Ok(out)
}

/// The tag of a runs entry in an encoded automata file.
const RUNS_TAG: u8 = 3;

/// Appends `runs` (from [`runs`] over `patterns`) to an encoded automata
/// file.
pub fn encode_runs(out: &mut Vec<u8>, patterns: &[String], runs: &[(usize, Run)]) -> Option<()> {
    let u32_of = |n: usize| u32::try_from(n).ok();
    let at = begin_entry(out, RUNS_TAG, patterns)?;
    put(out, u32_of(runs.len())?);
    for (i, run) in runs {
        put(out, u32_of(*i)?);
        put(out, u32_of(run.min)?);
        for chunk in run.set.chunks(8) {
            out.push(
                chunk
                    .iter()
                    .rev()
                    .fold(0u8, |acc, &b| (acc << 1) | u8::from(b)),
            );
        }
    }
    end_entry(out, at)
}

/// The runs that `file` holds for exactly `patterns`; `None` when it holds
/// none (or is malformed).
pub fn decode_runs(file: &[u8], patterns: &[String]) -> Option<Vec<(usize, Run)>> {
    let body = entry(file, RUNS_TAG, patterns)?;
    let mut r = Reader(body);
    let count = r.len()?;
    let mut runs = Vec::with_capacity(count.min(patterns.len()));
    for _ in 0..count {
        let i = r.len()?;
        let min = r.len()?;
        (i < patterns.len()).then_some(())?;
        let mut set = [false; 256];
        for (k, byte) in r.take(32)?.iter().enumerate() {
            for bit in 0..8 {
                set[k * 8 + bit] = byte >> bit & 1 == 1;
            }
        }
        runs.push((i, Run { set, min }));
    }
    r.0.is_empty().then_some(runs)
}

/// The start of an encoded automata file.
const MAGIC: &[u8; 8] = b"FGNFA\x00\x00\x01";

/// Appends the encoded form of `nfa` (compiled from `patterns` with
/// `syntax`) to `out`; `out` must start with [`begin`]. `None` for an NFA
/// this form does not hold (one with capture states).
pub fn encode(out: &mut Vec<u8>, patterns: &[String], syntax: Syntax, nfa: &NFA) -> Option<()> {
    let u32_of = |n: usize| u32::try_from(n).ok();
    let default_looks = regex_automata::util::look::LookMatcher::new();
    if nfa.is_reverse()
        || nfa.look_matcher().get_line_terminator() != default_looks.get_line_terminator()
    {
        return None; // not rebuilt by `read_nfa`
    }
    let at = begin_entry(out, syntax.tag(), patterns)?;
    out.push(u8::from(nfa.is_utf8()));
    put(out, nfa.start_anchored().as_u32());
    put(out, nfa.start_unanchored().as_u32());
    put(out, u32_of(nfa.pattern_len())?);
    for pid in nfa.patterns() {
        put(out, nfa.start_pattern(pid)?.as_u32());
    }
    put(out, u32_of(nfa.states().len())?);
    for state in nfa.states() {
        match state {
            State::ByteRange { trans } => {
                out.push(0);
                put_transition(out, trans);
            }
            State::Sparse(sparse) => {
                out.push(1);
                put(out, u32_of(sparse.transitions.len())?);
                for t in sparse.transitions.iter() {
                    put_transition(out, t);
                }
            }
            State::Look { look, next } => {
                out.push(2);
                put(out, look.as_repr());
                put(out, next.as_u32());
            }
            State::Union { alternates } => {
                out.push(3);
                put(out, u32_of(alternates.len())?);
                for a in alternates.iter() {
                    put(out, a.as_u32());
                }
            }
            State::BinaryUnion { alt1, alt2 } => {
                out.push(4);
                put(out, alt1.as_u32());
                put(out, alt2.as_u32());
            }
            State::Fail => out.push(5),
            State::Match { pattern_id } => {
                out.push(6);
                put(out, pattern_id.as_u32());
            }
            State::Dense(_) | State::Capture { .. } => return None,
        }
    }
    end_entry(out, at)
}

/// Starts an entry of an encoded automata file: its tag and the pattern
/// list it serves (as [`entry`] reads them), then room for its body's
/// length, written first so that a reader looking for another list skips
/// the body unread. Returns where that length goes, for [`end_entry`].
fn begin_entry(out: &mut Vec<u8>, tag: u8, patterns: &[String]) -> Option<usize> {
    out.push(tag);
    put(out, u32::try_from(patterns.len()).ok()?);
    for p in patterns {
        put(out, u32::try_from(p.len()).ok()?);
        out.extend_from_slice(p.as_bytes());
    }
    let at = out.len();
    put(out, 0);
    Some(at)
}

/// Ends the entry [`begin_entry`] started: writes its body's length.
fn end_entry(out: &mut [u8], at: usize) -> Option<()> {
    let len = u32::try_from(out.len() - at - 4).ok()?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Some(())
}

/// Starts an encoded automata file.
pub fn begin() -> Vec<u8> {
    MAGIC.to_vec()
}

/// The NFA in `file` (from [`begin`] and [`encode`]) compiled from exactly
/// `patterns` with `syntax`, rebuilt; `None` when the file holds none (or
/// is malformed).
pub fn decode(file: &[u8], patterns: &[String], syntax: Syntax) -> Option<NFA> {
    read_nfa(&mut Reader(entry(file, syntax.tag(), patterns)?))
}

/// The body of the entry of `file` with `tag` for exactly `patterns`.
fn entry<'a>(file: &'a [u8], tag: u8, patterns: &[String]) -> Option<&'a [u8]> {
    let mut r = Reader(file.strip_prefix(MAGIC.as_slice())?);
    while !r.0.is_empty() {
        let this = r.byte()?;
        let count = r.len()?;
        let mut same = this == tag && count == patterns.len();
        for i in 0..count {
            let len = r.len()?;
            let text = r.take(len)?;
            same = same && patterns.get(i).is_some_and(|p| p.as_bytes() == text);
        }
        let len = r.len()?;
        let body = r.take(len)?;
        if same {
            return Some(body);
        }
    }
    None
}

/// Reads one NFA and rebuilds it with the builder the compiler uses: each
/// state is added in order, so it keeps its id.
fn read_nfa(r: &mut Reader<'_>) -> Option<NFA> {
    let utf8 = r.byte()? == 1;
    let start_anchored = r.state_id()?;
    let start_unanchored = r.state_id()?;
    let pattern_len = r.len()?;
    let mut starts = Vec::new();
    for _ in 0..pattern_len {
        starts.push(r.state_id()?);
    }
    let state_len = r.len()?;
    let in_range = |id: StateID| id.as_usize() < state_len;
    let mut b = Builder::new();
    b.set_utf8(utf8);
    // Patterns are added in order, each around its match state (the only
    // state that needs one open); a pattern without one is added empty.
    let mut next_pattern = 0usize;
    for index in 0..state_len {
        let id = match r.byte()? {
            0 => b.add_range(r.transition_below(state_len)?).ok()?,
            1 => {
                let n = r.len()?;
                let mut ts = Vec::with_capacity(n.min(256));
                for _ in 0..n {
                    ts.push(r.transition_below(state_len)?);
                }
                b.add_sparse(ts).ok()?
            }
            2 => {
                let look = Look::from_repr(r.u32()?)?;
                b.add_look(r.state_below(state_len)?, look).ok()?
            }
            3 => {
                let n = r.len()?;
                let mut alternates = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    alternates.push(r.state_below(state_len)?);
                }
                (alternates.len() > 2).then_some(())?;
                b.add_union(alternates).ok()?
            }
            4 => {
                let alt1 = r.state_below(state_len)?;
                let alt2 = r.state_below(state_len)?;
                b.add_union(vec![alt1, alt2]).ok()?
            }
            5 => b.add_fail().ok()?,
            6 => {
                let pid = r.len()?;
                (pid >= next_pattern && pid < pattern_len).then_some(())?;
                add_empty_patterns(&mut b, &starts[next_pattern..pid])?;
                let started = b.start_pattern().ok()?;
                (started.as_usize() == pid).then_some(())?;
                let id = b.add_match().ok()?;
                b.finish_pattern(starts[pid]).ok()?;
                next_pattern = pid + 1;
                id
            }
            _ => return None,
        };
        // Every state keeps its id: the builder drops none of these.
        (id.as_usize() == index).then_some(())?;
    }
    add_empty_patterns(&mut b, &starts[next_pattern..])?;
    r.0.is_empty().then_some(())?;
    (in_range(start_anchored) && in_range(start_unanchored)).then_some(())?;
    starts.iter().all(|s| in_range(*s)).then_some(())?;
    b.build(start_anchored, start_unanchored).ok()
}

/// Adds patterns that have no match state, one per start.
fn add_empty_patterns(b: &mut Builder, starts: &[StateID]) -> Option<()> {
    for start in starts {
        b.start_pattern().ok()?;
        b.finish_pattern(*start).ok()?;
    }
    Some(())
}

fn put(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_transition(out: &mut Vec<u8>, t: &Transition) {
    out.push(t.start);
    out.push(t.end);
    put(out, t.next.as_u32());
}

/// A cursor over an encoded file.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    fn state_id(&mut self) -> Option<StateID> {
        StateID::new(self.len()?).ok()
    }

    /// A state id below `states`, the NFA's state count.
    fn state_below(&mut self, states: usize) -> Option<StateID> {
        self.state_id().filter(|id| id.as_usize() < states)
    }

    /// A byte range to a state below `states`.
    fn transition_below(&mut self, states: usize) -> Option<Transition> {
        let start = self.byte()?;
        let end = self.byte()?;
        let next = self.state_below(states)?;
        (start <= end).then_some(Transition { start, end, next })
    }
}
