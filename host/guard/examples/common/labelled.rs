//! Shared by the examples that read one labelled set (`families`,
//! `verdicts`).

/// The labelled set named by the first argument, read whole; exits with a
/// usage line or the read error.
pub fn read_set(usage: &str) -> (String, String) {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => (path, text),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    }
}
