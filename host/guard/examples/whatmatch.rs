fn main() {
    let text = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let parts: Vec<String> = serde_json::from_str(&text).unwrap();
    let rules = fabric_guard::RuleSet::default_rules();
    for p in &parts {
        let m: Vec<_> = rules
            .all
            .set
            .matches(p)
            .iter()
            .map(|i| rules.all.owners[i])
            .map(|(r, i)| format!("{}#{}", rules.rules[r].id, i))
            .collect();
        println!(
            "{} ascii={} {:?} sig={:?}",
            p.len(),
            p.is_ascii(),
            m,
            rules.signals.matches(p)
        );
    }
}
