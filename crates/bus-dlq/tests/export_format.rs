//! The JSON-lines export writes payloads compactly (text when UTF-8,
//! base64 otherwise) and the import reads those and the array of byte
//! values earlier versions wrote.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_dlq::{DlqError, DlqQuery, Filter, MemoryDlq, StoredLetter};
use bus_errors::ErrorCategory;
use serde_json::Value;

fn export(letters: &[bus_dlq::DeadLetter]) -> (MemoryDlq, Vec<Value>) {
    let dlq = MemoryDlq::new();
    for l in letters {
        bus_dlq::DeadLetterStore::push(&dlq, l).unwrap();
    }
    let mut out = Vec::new();
    dlq.export_jsonl(&Filter::all(), &mut out).unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (dlq, lines)
}

fn import(jsonl: &str) -> Result<MemoryDlq, DlqError> {
    let dlq = MemoryDlq::new();
    dlq.import_jsonl(&mut jsonl.as_bytes())?;
    Ok(dlq)
}

fn all(dlq: &MemoryDlq) -> Vec<StoredLetter> {
    dlq.list(&Filter::all())
        .unwrap()
        .iter()
        .map(|s| dlq.get(s.id).unwrap().unwrap())
        .collect()
}

#[test]
fn utf8_payloads_are_text_and_binary_ones_base64_and_both_round_trip() {
    let mut text = common::letter("orders", ErrorCategory::Timeout, "svc", "x");
    text.envelope.payload = "{\"order\":7,\"note\":\"é \\\" \\n\"}\n\u{1}"
        .as_bytes()
        .to_vec()
        .into();
    let binary = common::rich_letter(3);
    assert!(std::str::from_utf8(&binary.envelope.payload).is_err());
    let (dlq, lines) = export(&[text.clone(), binary.clone()]);
    let payload = |i: usize| lines[i]["letter"]["envelope"]["payload"].clone();
    assert_eq!(
        payload(0),
        Value::String(String::from_utf8(text.envelope.payload.to_vec()).unwrap())
    );
    let b64 = payload(1)["base64"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap(),
        binary.envelope.payload.to_vec()
    );
    let mut out = Vec::new();
    dlq.export_jsonl(&Filter::all(), &mut out).unwrap();
    let again = import(std::str::from_utf8(&out).unwrap()).unwrap();
    assert_eq!(all(&again), all(&dlq));
}

#[test]
fn the_array_form_of_earlier_exports_still_imports() {
    let binary = common::rich_letter(5);
    let (dlq, _) = export(std::slice::from_ref(&binary));
    let stored = all(&dlq);
    // What earlier versions wrote: serde's own form of the payload bytes.
    let old = serde_json::to_string(&stored[0]).unwrap();
    assert!(old.contains("\"payload\":["), "{old}");
    assert_eq!(all(&import(&old).unwrap()), stored);
}

#[test]
fn a_bad_base64_payload_is_bad_input_with_its_line() {
    let (_dlq, lines) = export(&[common::rich_letter(1), common::rich_letter(2)]);
    let mut bad = lines[1].clone();
    bad["letter"]["envelope"]["payload"] = serde_json::json!({ "base64": "not base64!" });
    let jsonl = format!("{}\n{}\n", lines[0], bad);
    let dlq = MemoryDlq::new();
    let err = dlq.import_jsonl(&mut jsonl.as_bytes()).unwrap_err();
    match err {
        DlqError::BadInput { line, reason } => {
            assert_eq!(line, 2);
            assert!(reason.contains("base64"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // The line before it was stored.
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 1);
}
