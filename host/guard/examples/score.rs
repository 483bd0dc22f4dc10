//! Prints the signal matches and the score of a text read from stdin (a
//! tuning aid): `echo "…" | cargo run -p fabric-guard --example score`.

use std::io::Read;

fn main() {
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        eprintln!("stdin is not UTF-8 text");
        std::process::exit(2);
    }
    let rules = fabric_guard::RuleSet::default_rules();
    let signals = &rules.signals;
    for (signal, end) in signals.matches(&text) {
        let from = text[..end]
            .char_indices()
            .rev()
            .nth(40)
            .map_or(0, |(i, _)| i);
        println!(
            "{:<18} …{:?}",
            signals.signals[signal].id,
            text.get(from..end).unwrap_or("(inside a character)")
        );
    }
    println!("{:?}", signals.score(&text, &signals.thresholds));
}
