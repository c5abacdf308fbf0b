//! JSON-lines export and import: one [`StoredLetter`] per line, payload bytes
//! included, so an export imported elsewhere gives back the same letters.

use crate::query::{DlqQuery, Filter, ImportReport, PAGE, pages};
use crate::record::StoredLetter;
use crate::text::{MAX_ECHO, excerpt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bus_core::DlqError;
use serde_json::Value;
use std::io::{BufRead, Write};

/// Writes the letters `filter` selects, one per line, calling `progress`
/// with the count written so far after each page; returns the count.
pub(crate) fn export<Q: DlqQuery + ?Sized>(
    q: &Q,
    filter: &Filter,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, DlqError> {
    let mut n = 0;
    pages(
        filter,
        &mut |f, after| q.scan_letters(f, after, PAGE),
        |s| s.letter.id,
        &mut |page| {
            for stored in page {
                write_line(&mut *out, stored)?;
                n += 1;
            }
            progress(n);
            Ok(true)
        },
    )?;
    out.flush()?;
    Ok(n)
}

/// One letter as one line, its payload written as [`PayloadFormatter`] does.
fn write_line(out: &mut dyn Write, stored: &StoredLetter) -> Result<(), DlqError> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, PayloadFormatter);
    serde::Serialize::serialize(stored, &mut ser).map_err(|e| match e.io_error_kind() {
        // The output failed (a full disk, a closed pipe): an I/O error.
        Some(kind) => DlqError::Io(std::io::Error::new(kind, e)),
        None => DlqError::Other(e.into()),
    })?;
    out.write_all(b"\n")?;
    Ok(())
}

/// JSON as serde_json writes it compactly, but bytes (a letter has one
/// byte field: the payload) as a JSON string when they are UTF-8 and as
/// `{"base64": "..."}` (standard alphabet, padded) otherwise, instead of an
/// array of numbers: a third to a quarter of the size, and no number to
/// parse per byte. [`parse_line`] reads all three forms.
#[derive(Debug, Clone, Copy)]
struct PayloadFormatter;

impl serde_json::ser::Formatter for PayloadFormatter {
    fn write_byte_array<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        value: &[u8],
    ) -> std::io::Result<()> {
        match std::str::from_utf8(value) {
            Ok(text) => serde_json::to_writer(writer, text).map_err(std::io::Error::other),
            Err(_) => {
                writer.write_all(b"{\"base64\":\"")?;
                writer.write_all(BASE64.encode(value).as_bytes())?;
                writer.write_all(b"\"}")
            }
        }
    }
}

/// Letters per import transaction: each commit is synced, so small ones
/// spend the import on syncs.
const IMPORT_BATCH: usize = 4096;

/// Input bytes per import transaction at most (past [`IMPORT_BATCH`]
/// letters or this, whichever comes first), so large payloads do not pile
/// up in memory.
const IMPORT_BATCH_BYTES: usize = 16 << 20;

/// Reads JSON lines; a line that is not a letter is [`DlqError::BadInput`]
/// with its number, and the letters of the lines before it are stored
/// first: run again once the line is fixed, the import skips them (ids
/// already present are left alone).
pub(crate) fn import<Q: DlqQuery + ?Sized>(
    q: &Q,
    input: &mut dyn BufRead,
) -> Result<ImportReport, DlqError> {
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut batch_bytes = 0_usize;
    let mut line = Vec::new();
    let mut line_no = 0_u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let stored = match parse_line(&line) {
            Ok(s) => s,
            Err(reason) => {
                flush(q, &mut batch, &mut report)?;
                return Err(DlqError::BadInput {
                    line: line_no,
                    reason,
                });
            }
        };
        report.read += 1;
        batch.push(stored);
        batch_bytes += line.len();
        if batch.len() == IMPORT_BATCH || batch_bytes >= IMPORT_BATCH_BYTES {
            flush(q, &mut batch, &mut report)?;
            batch_bytes = 0;
        }
    }
    flush(q, &mut batch, &mut report)?;
    Ok(report)
}

/// One line as a letter, or why it is not one, in a message that repeats
/// at most [`MAX_ECHO`] characters of the line however long it is (serde's
/// message can quote a whole string value).
///
/// The payload may be a string (UTF-8 text), `{"base64": "..."}` or an
/// array of byte values (what earlier versions wrote). The envelope's own
/// deserializer reads the first and the last; a line it refuses is read
/// again as a JSON value, where a base64 payload is decoded in place.
fn parse_line(line: &[u8]) -> Result<StoredLetter, String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "not UTF-8 at byte {} of {} bytes",
            e.valid_up_to(),
            line.len()
        )
    })?;
    let not_a_letter = |e: &dyn std::fmt::Display| {
        format!(
            "not a dead letter ({} bytes): {}",
            line.len(),
            excerpt(&e.to_string(), MAX_ECHO)
        )
    };
    let direct_err = match serde_json::from_str(text) {
        Ok(stored) => return Ok(stored),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_str::<Value>(text) else {
        return Err(not_a_letter(&direct_err));
    };
    let Some(payload) = value.pointer_mut("/letter/envelope/payload") else {
        return Err(not_a_letter(&direct_err));
    };
    let Some(encoded) = base64_payload(payload) else {
        return Err(not_a_letter(&direct_err));
    };
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| not_a_letter(&format_args!("payload: bad base64: {e}")))?;
    *payload = Value::Array(bytes.into_iter().map(Value::from).collect());
    serde_json::from_value(value).map_err(|e| not_a_letter(&e))
}

/// The text of a `{"base64": "..."}` payload.
fn base64_payload(payload: &Value) -> Option<&str> {
    let map = payload.as_object()?;
    (map.len() == 1).then(|| map.get("base64")?.as_str())?
}

fn flush<Q: DlqQuery + ?Sized>(
    q: &Q,
    batch: &mut Vec<StoredLetter>,
    report: &mut ImportReport,
) -> Result<(), DlqError> {
    let inserted = q.insert(batch)? as u64;
    report.inserted += inserted;
    report.existing += batch.len() as u64 - inserted;
    batch.clear();
    Ok(())
}
