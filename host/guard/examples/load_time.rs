//! How long loading the default rules takes, and the first check of a small
//! output (what a one-call CLI process pays): the rules are compiled part by
//! part on first use, so the first check pays for the one-pass automaton.
fn main() {
    let started = std::time::Instant::now();
    let rules = fabric_guard::RuleSet::default_rules();
    println!("default rules loaded in {:?}", started.elapsed());
    let config = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let started = std::time::Instant::now();
    let verdict = fabric_guard::check(serde_json::json!({"sum": 42, "note": "done"}), &config);
    println!(
        "first check (compiles what a clean scan needs) in {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let again = fabric_guard::check(serde_json::json!({"sum": 42, "note": "done"}), &config);
    println!("second check in {:?}", started.elapsed());
    // A list of short strings: the guard also checks the items joined.
    let started = std::time::Instant::now();
    let list = fabric_guard::check(serde_json::json!(["alpha", "beta", "gamma"]), &config);
    println!("first check of a list of words in {:?}", started.elapsed());
    std::hint::black_box((rules, verdict, again, list));
}
