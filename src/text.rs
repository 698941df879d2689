//! Text for messages. Quoting input: never more than a short, printable excerpt,
//! so a 10 MB header line or a binary file does not end up in a terminal or a CI
//! log. Errors: one line with each cause once.

/// How many characters of input a message quotes.
pub const QUOTE_CHARS: usize = 80;

/// `text` cut to [`QUOTE_CHARS`] characters (with `…` and the full length when
/// cut), control characters escaped.
pub fn excerpt(text: &str) -> String {
    let shown = escaped(text.chars().take(QUOTE_CHARS));
    match text.chars().count() {
        n if n > QUOTE_CHARS => format!("{shown}… ({n} characters in all)"),
        _ => shown,
    }
}

/// [`excerpt`] of bytes that may not be UTF-8 (invalid sequences become `�`).
pub fn excerpt_bytes(bytes: &[u8]) -> String {
    // Decode no more than can be shown; beyond that, the length is told in bytes.
    let head = &bytes[..bytes.len().min(QUOTE_CHARS * 4)];
    let decoded = String::from_utf8_lossy(head);
    if head.len() == bytes.len() {
        return excerpt(&decoded);
    }
    let shown = escaped(decoded.chars().take(QUOTE_CHARS));
    format!("{shown}… ({} bytes in all)", bytes.len())
}

fn escaped(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    for c in chars {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its causes in one line, each cause shown once: many errors
/// already quote their cause's text, which `{:#}` would print a second time.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_control_characters_escaped() {
        assert_eq!(excerpt("left_eye_x"), "left_eye_x");
        assert_eq!(excerpt("a\0b\nc"), "a\\u{0}b\\nc");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000_000);
        let quoted = excerpt(&long);
        assert!(quoted.len() < 120, "{quoted}");
        assert!(quoted.ends_with("(10000000 characters in all)"), "{quoted}");
        let quoted = excerpt_bytes(long.as_bytes());
        assert!(quoted.len() < 120, "{quoted}");
        assert!(quoted.ends_with("… (10000000 bytes in all)"), "{quoted}");
        assert_eq!(excerpt_bytes(b"PK\x05\x06\0\0"), "PK\\u{5}\\u{6}\\u{0}\\u{0}");
    }
}
