//! Failure signatures: which letters failed "the same way".
//!
//! A signature is the 64-bit FNV-1a hash (written here, no dependency) of the
//! error type, the error message with its variable parts replaced by
//! placeholders, and the component, as 16 lowercase hex digits. It is stable
//! across runs, versions and machines, so it can be stored and indexed.

/// Replaces the variable parts of an error message: UUIDs become `<uuid>`,
/// hex numbers (`0x1f`, or 8+ hex digits containing a digit) become `<hex>`,
/// and runs of decimal digits become `<n>`.
///
/// ```
/// use bus_dlq::normalize_message;
/// assert_eq!(
///     normalize_message("order 42 of user 5b2c6f1e-8a3d-4f4e-9c1a-0d2e3f4a5b6c failed at 0x7ffe"),
///     "order <n> of user <uuid> failed at <hex>"
/// );
/// assert_eq!(normalize_message("timeout after 1500ms"), "timeout after <n>ms");
/// ```
pub fn normalize_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut token = String::new();
    for ch in message.chars() {
        if ch.is_ascii_alphanumeric() || ch == '-' {
            token.push(ch);
        } else {
            flush_token(&mut token, &mut out);
            out.push(ch);
        }
    }
    flush_token(&mut token, &mut out);
    out
}

fn flush_token(token: &mut String, out: &mut String) {
    if token.is_empty() {
        return;
    }
    if is_uuid(token) {
        out.push_str("<uuid>");
    } else {
        for (i, part) in token.split('-').enumerate() {
            if i > 0 {
                out.push('-');
            }
            normalize_part(part, out);
        }
    }
    token.clear();
}

fn normalize_part(part: &str, out: &mut String) {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    // Tokens are ASCII (alphanumerics and '-'), so byte slicing is safe.
    let prefixed_hex =
        part.len() > 2 && part.as_bytes()[..2].eq_ignore_ascii_case(b"0x") && is_hex(&part[2..]);
    let long_hex = part.len() >= 8 && is_hex(part) && part.bytes().any(|b| b.is_ascii_digit());
    if prefixed_hex || long_hex {
        out.push_str("<hex>");
    } else {
        let mut in_digits = false;
        for ch in part.chars() {
            if ch.is_ascii_digit() {
                if !in_digits {
                    out.push_str("<n>");
                    in_digits = true;
                }
            } else {
                in_digits = false;
                out.push(ch);
            }
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// 64-bit FNV-1a.
fn fnv1a64(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte that cannot appear in UTF-8 text, so
            // ("ab", "c") and ("a", "bc") hash differently.
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// The failure signature of (error type, message, component): 16 hex digits.
///
/// ```
/// use bus_dlq::signature;
/// let a = signature("io::Error", "connect to 10.0.0.7:5432 refused", "orders");
/// let b = signature("io::Error", "connect to 10.0.0.9:5432 refused", "orders");
/// assert_eq!(a, b);
/// assert_ne!(a, signature("io::Error", "connect to 10.0.0.7:5432 refused", "billing"));
/// assert_eq!(a.len(), 16);
/// ```
pub fn signature(error_type: &str, message: &str, component: &str) -> String {
    let normalized = normalize_message(message);
    format!("{:016x}", fnv1a64(&[error_type, &normalized, component]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&["foobar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn signature_is_stable_across_runs() {
        // A stored signature must never change meaning: pin one value.
        assert_eq!(signature("E", "x 1", "c"), signature("E", "x 2", "c"));
        assert_eq!(
            signature("E", "x 1", "c"),
            format!("{:016x}", fnv1a64(&["E", "x <n>", "c"]))
        );
    }

    #[test]
    fn part_boundaries_matter() {
        assert_ne!(signature("ab", "c", ""), signature("a", "bc", ""));
    }

    #[test]
    fn normalizes_hex_and_keeps_words() {
        assert_eq!(
            normalize_message("deadbeef12 at v2-api"),
            "<hex> at v<n>-api"
        );
        assert_eq!(normalize_message("bad request"), "bad request");
        assert_eq!(normalize_message("éé 7"), "éé <n>");
        assert_eq!(
            normalize_message("at 0X7FFE, 0x, 0xZZ"),
            "at <hex>, <n>x, <n>xZZ"
        );
    }
}
