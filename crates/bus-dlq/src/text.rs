//! Keeping what error messages echo of their input short.

/// The most characters of an input an error message repeats.
pub(crate) const MAX_ECHO: usize = 200;

/// `s` itself when it has at most `max_chars` characters; else its first
/// `max_chars` characters and how long the whole was, so that a 10 MB
/// import line or a 100 000-character topic never ends up whole in an error
/// message, a log line or a terminal.
pub(crate) fn excerpt(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &s[..end], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_says_its_length() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "é".repeat(100_000);
        let e = excerpt(&long, 5);
        assert_eq!(e, "ééééé… (200000 bytes in all)");
    }
}
