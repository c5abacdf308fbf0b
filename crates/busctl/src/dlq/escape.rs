//! Text from a letter made safe to print on a terminal.

/// `s` with its control characters escaped (`\n`, `\r`, `\t`, else
/// `\u{1b}`), so that text from a letter printed on a terminal can neither
/// move the cursor, clear the screen nor break a table row; with
/// `keep_lines`, newlines and tabs stay as they are (a payload shown as a
/// block).
pub(super) fn escape_controls(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s, keep_lines);
    std::borrow::Cow::Owned(out)
}

fn push_escaped(out: &mut String, s: &str, keep_lines: bool) {
    use std::fmt::Write as _;
    for c in s.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\n' | '\r' | '\t' => out.extend(c.escape_default()),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
}

/// Payload bytes as printable text: UTF-8 with its control characters
/// escaped as [`escape_controls`] does (newlines and tabs kept), and every
/// byte that is not UTF-8 as `\xNN`.
pub(super) fn printable_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), true);
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bad_bytes_are_escaped() {
        assert_eq!(escape_controls("plain é", false), "plain é");
        assert_eq!(
            escape_controls("a\nb\x1b[2J\u{7}", false),
            "a\\nb\\u{1b}[2J\\u{7}"
        );
        assert_eq!(escape_controls("a\nb\tc\r", true), "a\nb\tc\\r");
        assert_eq!(
            printable_bytes(b"ok\n\x1b]0;x\x07\xff\xfe"),
            "ok\n\\u{1b}]0;x\\u{7}\\xff\\xfe"
        );
    }
}
