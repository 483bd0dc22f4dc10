//! Compiles the default rules' two automata (the signals' and the rules')
//! into NFAs now, once, and embeds them (`OUT_DIR/automata.bin`): a process
//! then rebuilds them in a few milliseconds instead of compiling them in
//! tens (see `src/automata.rs`, which this script shares).

#[path = "src/automata.rs"]
#[allow(dead_code)]
mod automata;

use automata::Syntax;
use serde::Deserialize;

/// The parts of the rule file the automata are compiled from.
#[derive(Deserialize)]
struct File {
    rule: Vec<Rule>,
    #[serde(default)]
    signal: Vec<Signal>,
}

#[derive(Deserialize)]
struct Rule {
    kind: String,
    patterns: Vec<String>,
}

#[derive(Deserialize)]
struct Signal {
    patterns: Vec<String>,
}

fn main() {
    println!("cargo::rerun-if-changed=src/default-rules.toml");
    println!("cargo::rerun-if-changed=src/automata.rs");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let path = format!("{dir}/src/default-rules.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    // As `RuleSet` and `Signals` order them: the signals' patterns, then the
    // shapes'; every rule pattern but the `decoded` kind's, in file order.
    let mut signals: Vec<String> = file.signal.into_iter().flat_map(|s| s.patterns).collect();
    if !signals.is_empty() {
        signals.extend(automata::SHAPE_PATTERNS.iter().map(|p| p.to_string()));
    }
    let rules: Vec<String> = file
        .rule
        .into_iter()
        .filter(|r| r.kind != "decoded")
        .flat_map(|r| r.patterns)
        .collect();
    let mut out = automata::begin();
    for (patterns, syntax) in [(signals, Syntax::Signals), (rules, Syntax::Rules)] {
        if patterns.is_empty() {
            continue;
        }
        // As `signals::build` splits them: patterns a run names, and the
        // rest in the automaton's groups.
        let runs = automata::runs(&patterns, syntax)
            .unwrap_or_else(|e| panic!("{path}: the {syntax:?} patterns do not parse: {e}"));
        if !runs.is_empty() {
            automata::encode_runs(&mut out, &patterns, &runs)
                .unwrap_or_else(|| panic!("{path}: too many {syntax:?} patterns"));
        }
        for (_, own) in automata::groups_without(&patterns, &runs) {
            let nfa = automata::compile(&own, syntax)
                .unwrap_or_else(|e| panic!("{path}: the {syntax:?} patterns do not compile: {e}"));
            automata::encode(&mut out, &own, syntax, &nfa).unwrap_or_else(|| {
                panic!("{path}: the {syntax:?} NFA has a form `encode` does not hold")
            });
        }
    }
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{dir}/automata.bin"), out).expect("OUT_DIR is writable");
}
