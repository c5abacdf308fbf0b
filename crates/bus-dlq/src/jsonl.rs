//! JSON-lines export and import: one [`StoredLetter`] per line, payload bytes
//! included, so an export imported elsewhere gives back the same letters.

use crate::query::{DlqQuery, Filter, ImportReport, PAGE};
use crate::record::StoredLetter;
use bus_core::DlqError;
use std::io::{BufRead, Write};

pub(crate) fn export<Q: DlqQuery + ?Sized>(
    q: &Q,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<u64, DlqError> {
    let mut n = 0;
    q.walk(filter, &mut |page| {
        for s in page {
            if let Some(stored) = q.get(s.id)? {
                serde_json::to_writer(&mut *out, &stored).map_err(|e| DlqError::Other(e.into()))?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
        Ok(true)
    })?;
    out.flush()?;
    Ok(n)
}

pub(crate) fn import<Q: DlqQuery + ?Sized>(
    q: &Q,
    input: &mut dyn BufRead,
) -> Result<ImportReport, DlqError> {
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(PAGE);
    let mut line = String::new();
    let mut line_no = 0_u64;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let stored: StoredLetter = serde_json::from_str(&line).map_err(|e| {
            DlqError::Corrupt(format!("import line {line_no} is not a dead letter: {e}"))
        })?;
        report.read += 1;
        batch.push(stored);
        if batch.len() == PAGE {
            flush(q, &mut batch, &mut report)?;
        }
    }
    flush(q, &mut batch, &mut report)?;
    Ok(report)
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
