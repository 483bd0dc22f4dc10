//! Spotlighting (Hines et al., 2024, "Defending Against Indirect Prompt
//! Injection Attacks With Spotlighting", arXiv:2403.14720): the tool output
//! reaches the agent marked as data, so the orchestrator's system prompt can
//! tell the model that nothing inside the marks is an instruction.
//!
//! Two modes, opt-in per policy (`[guard] spotlight = "delimit" | "datamark"`):
//!
//! - **delimit**: the output's text between two boundary lines that carry a
//!   per-call random marker:
//!   ```text
//!   <<<TOOL_OUTPUT 3f9a1c07d2b4e865>>>
//!   …the output…
//!   <<<END_TOOL_OUTPUT 3f9a1c07d2b4e865>>>
//!   ```
//!   The marker is 64 random bits, so text inside cannot forge the end line.
//! - **datamark**: every run of whitespace in the output's text (spaces,
//!   tabs and every other Unicode space) is replaced by the marker `^`
//!   followed by four random hex digits and `^` (`In^3f9a^this^3f9a^manner`),
//!   and every line (after LF, CR, VT, FF, NEL, U+2028 or U+2029) starts
//!   with it, so the model
//!   sees the mark throughout the data, not only at its edges. Hines et al.
//!   report spotlighting (datamarking, encoding) lowering the attack success
//!   rate from above 50 % to below 2 % with GPT-family models, with minimal
//!   loss on the tasks; plain delimiting was the weakest variant.
//!
//! The text spotlighted is the output itself when it is a string, else its
//! compact JSON text. Spotlighting runs after the guard: the guard's rules
//! see the output as the tool produced it.

use rand::Rng;
use serde::Serialize;

/// A spotlighting mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Spotlight {
    /// Boundary lines with a per-call random marker.
    Delimit,
    /// A per-call random marker in place of every run of whitespace and at
    /// the start of every line.
    Datamark,
}

impl Spotlight {
    /// Parses `delimit` or `datamark`.
    pub fn parse(s: &str) -> Option<Spotlight> {
        match s {
            "delimit" => Some(Spotlight::Delimit),
            "datamark" => Some(Spotlight::Datamark),
            _ => None,
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Spotlight::Delimit => "delimit",
            Spotlight::Datamark => "datamark",
        }
    }

    /// Marks `text` as data with a fresh random marker.
    pub fn apply(self, text: &str) -> Spotlighted {
        self.apply_with(text, &mut rand::rng())
    }

    /// Marks `text` as data with a marker drawn from `rng`. A marker that
    /// occurs in the text is drawn again, so the text cannot hold it; after
    /// [`DRAWS`] draws that all occur, the marker grows by four hex digits
    /// (a text can hold all 65,536 four-digit datamarks in 328 KB, and
    /// drawing until one is free would then never end).
    pub fn apply_with<R: Rng + ?Sized>(self, text: &str, rng: &mut R) -> Spotlighted {
        let mut digits = match self {
            Spotlight::Delimit => 16,
            Spotlight::Datamark => 4,
        };
        let marker = 'found: loop {
            for _ in 0..DRAWS {
                let hex = format!("{:032x}", rng.random::<u128>());
                let hex = &hex[..digits];
                let marker = match self {
                    Spotlight::Delimit => hex.to_string(),
                    Spotlight::Datamark => format!("^{hex}^"),
                };
                if !text.contains(&marker) {
                    break 'found marker;
                }
            }
            digits = (digits + 4).min(32);
        };
        let text = match self {
            Spotlight::Delimit => {
                format!("<<<TOOL_OUTPUT {marker}>>>\n{text}\n<<<END_TOOL_OUTPUT {marker}>>>")
            }
            Spotlight::Datamark => datamark(text, &marker),
        };
        Spotlighted {
            mode: self,
            marker,
            text,
        }
    }
}

/// Markers drawn at one length before a longer one is drawn.
pub const DRAWS: usize = 8;

/// An output marked as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Spotlighted {
    /// The mode used.
    pub mode: Spotlight,
    /// This call's marker (delimit: 16 hex digits in the boundary lines;
    /// datamark: `^` four hex digits `^`; more digits when the text holds
    /// the shorter markers drawn).
    pub marker: String,
    /// The marked text.
    pub text: String,
}

/// Every line starts with the marker, and every run of spaces and tabs
/// becomes the marker.
fn datamark(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    out.push_str(marker);
    let mut in_gap = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_line_break(c) {
            out.push(c);
            // A CR before LF is one break: the mark follows the LF.
            if !(c == '\r' && chars.peek() == Some(&'\n')) {
                out.push_str(marker);
            }
            in_gap = true;
        } else if c.is_whitespace() {
            // Any Unicode space (no-break, en, ideographic, …) is a gap, as
            // a space is: text laid out with them is marked too.
            if !in_gap {
                out.push_str(marker);
                in_gap = true;
            }
        } else {
            out.push(c);
            in_gap = false;
        }
    }
    out
}

/// Whether `c` ends a line for a reader: LF, CR, VT, FF, NEL and the
/// Unicode line and paragraph separators.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}
