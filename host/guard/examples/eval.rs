//! Quick eval without the host: `cargo run --release -p fabric-guard --example eval -- FILE.jsonl [--errors] [--model-rejects] [--rules-only]`
//! (`--model-rejects`: the learned detector rejects whatever the string's
//! length, as a policy may make it; `--rules-only`: no learned detector).
//! (`fabric guard eval` is the user-facing command.)

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show = args.iter().any(|a| a == "--errors");
    let mut config = fabric_guard::GuardConfig::with_limit(u64::MAX);
    if args.iter().any(|a| a == "--model-rejects") {
        config.model_rejects();
    }
    if args.iter().any(|a| a == "--rules-only") {
        config.model = None;
    }
    for file in args.iter().filter(|a| !a.starts_with("--")) {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: {e}");
                std::process::exit(2);
            }
        };
        match fabric_guard::eval::evaluate(&text, &config) {
            Ok(f) => {
                println!(
                    "{file}: detection {}/{} = {:.1} %, false positives {}/{} = {:.1} %",
                    f.detected,
                    f.injected,
                    100.0 * f.detection_rate,
                    f.false_positives,
                    f.benign,
                    100.0 * f.false_positive_rate
                );
                if show && !file.contains("validation") {
                    for m in &f.misses {
                        println!(
                            "  {}: {} [{}] {}",
                            m.line,
                            m.what,
                            m.source,
                            m.hits.join("; ")
                        );
                    }
                }
            }
            Err(e) => {
                eprintln!("{file}: {e}");
                std::process::exit(2);
            }
        }
    }
}
