//! Trains the guard's learned detector on a labelled set (the development
//! part) and writes its model file; prints the cross-validated figures,
//! and those with each source family held out whole ([`model::by_family`]).
//!
//!     cargo run --release -p fabric-guard --example train -- \
//!         tests/data/guard/dev.jsonl host/guard/src/model.bin

use fabric_guard::{model, GuardConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [set, out] = args.as_slice() else {
        return Err("usage: train LABELLED.jsonl MODEL.bin".into());
    };
    let text = std::fs::read_to_string(set).map_err(|e| format!("{set}: {e}"))?;
    let rules = GuardConfig {
        model: None,
        ..GuardConfig::with_limit(u64::MAX)
    };
    let records = model::records(&text, &rules).map_err(|e| format!("{set}:{e}"))?;
    let (model, cv) = model::fit(&records);
    // Refuse to write what the guard could not read back (a threshold
    // that is not finite, when the set has no benign record).
    let bytes = model.to_bytes();
    model::Model::from_bytes(&bytes).map_err(|e| format!("{set}: the trained model: {e}"))?;
    std::fs::write(out, bytes).map_err(|e| format!("{out}: {e}"))?;
    println!(
        "{} records; threshold {:.3} (p {:.3}); cross-validated: rules or model {:.1} % at {:.1} %, model alone {:.1} % at {:.1} %",
        records.len(),
        model.threshold(),
        1.0 / (1.0 + (-model.threshold()).exp()),
        100.0 * cv.detection,
        100.0 * cv.false_positives,
        100.0 * cv.model_detection,
        100.0 * cv.model_false_positives,
    );
    let family = model::by_family(&records);
    println!(
        "held out by source family: rules or model {:.1} % at {:.1} %, model alone {:.1} % at {:.1} %",
        100.0 * family.detection,
        100.0 * family.false_positives,
        100.0 * family.model_detection,
        100.0 * family.model_false_positives,
    );
    Ok(())
}
