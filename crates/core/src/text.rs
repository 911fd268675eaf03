//! Text from files shown to a person: class names, paths and reasons come from folder names,
//! manifests and head metadata that anyone may have written, so a name must not be able to
//! move the cursor, recolour the terminal or forge an output line.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1 — newlines, carriage returns and the ESC of
/// terminal sequences among them) and every bidirectional override written as a visible escape
/// (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`), and a backslash as `\\`. Text without any is returned
/// as it is. For terminals and text reports; JSON and CSV keep the exact string.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    let needs = |c: char| c == '\\' || c.is_control() || is_bidi_control(c);
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`for_terminal`] for a message of several lines: newlines are kept, every other control
/// character is escaped.
pub fn for_terminal_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| for_terminal(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Unicode's bidirectional embedding, override and isolate controls (they reorder what follows).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_control_characters_are_escaped() {
        assert!(matches!(for_terminal("daisy"), Cow::Borrowed("daisy")));
        assert_eq!(for_terminal("rosé 🌹"), "rosé 🌹");
        assert_eq!(for_terminal("a\nb"), "a\\nb");
        assert_eq!(for_terminal("x\r\u{1b}[31mred"), "x\\r\\x1b[31mred");
        assert_eq!(for_terminal("back\\slash"), "back\\\\slash");
        assert_eq!(for_terminal("\u{202e}txt"), "\\u{202e}txt");
        assert_eq!(for_terminal("\u{9b}2J"), "\\x9b2J");
        assert_eq!(for_terminal("tab\there"), "tab\\there");
    }
}
