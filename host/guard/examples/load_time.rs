//! How long compiling the default rules takes (what a one-call CLI process pays).
fn main() {
    let started = std::time::Instant::now();
    let rules = fabric_guard::RuleSet::default_rules();
    println!("default rules compiled in {:?}", started.elapsed());
    std::hint::black_box(rules);
}
