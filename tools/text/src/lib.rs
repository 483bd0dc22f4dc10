//! `text`: plain-text utilities. The smallest useful Fabric tool.

sdk_guest::wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "fabric-tools:text/text",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use exports::fabric_tools::text::api::{Counts, Guest};

struct Text;

impl Guest for Text {
    fn echo(text: String) -> String {
        text
    }

    fn stats(text: String) -> Counts {
        Counts {
            lines: text.lines().count() as u64,
            words: text.split_whitespace().count() as u64,
            chars: text.chars().count() as u64,
            bytes: text.len() as u64,
        }
    }
}

export!(Text);
