//! Quoting input in messages: never more than a short, printable excerpt, so a
//! 10 MB header line or a binary file does not end up in a terminal or a CI log.

/// How many characters of input a message quotes.
pub const QUOTE_CHARS: usize = 80;

/// `text` cut to [`QUOTE_CHARS`] characters (with `…` and the full length when
/// cut), control characters escaped.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == QUOTE_CHARS {
            out.push_str(&format!("… ({} characters in all)", text.chars().count()));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`excerpt`] of bytes that may not be UTF-8 (invalid sequences become `�`).
pub fn excerpt_bytes(bytes: &[u8]) -> String {
    // Decode no more than can be shown: the rest only counts.
    let head = &bytes[..bytes.len().min(QUOTE_CHARS * 4)];
    let mut quoted = excerpt(&String::from_utf8_lossy(head));
    if head.len() < bytes.len() && !quoted.ends_with("in all)") {
        quoted.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    quoted
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
        assert_eq!(excerpt_bytes(b"PK\x05\x06\0\0"), "PK\\u{5}\\u{6}\\u{0}\\u{0}");
    }
}
