//! Reading the log back: every report in the rotated files, oldest first.

use crate::error::ReadError;
use crate::writer::log_file_name;
use bus_errors::ErrorReport;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

/// The log files under `<dir>/logs`, oldest first: `errors.{n}.jsonl` from
/// the highest `n` down to 1, then `errors.jsonl`.
pub fn log_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, ReadError> {
    let logs = dir.as_ref().join("logs");
    let entries = std::fs::read_dir(&logs).map_err(|source| ReadError::Io {
        path: logs.clone(),
        source,
    })?;
    let mut numbered = Vec::new();
    let mut current = None;
    for entry in entries {
        let entry = entry.map_err(|source| ReadError::Io {
            path: logs.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == log_file_name(0) {
            current = Some(entry.path());
        } else if let Some(n) = name
            .strip_prefix("errors.")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .and_then(|s| s.parse::<usize>().ok())
        {
            numbered.push((n, entry.path()));
        }
    }
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    files.extend(current);
    Ok(files)
}

/// Every report in the log files under `<dir>/logs` (the `dir` given to
/// [`ErrorLogger::open`](crate::ErrorLogger::open)), oldest file first, in
/// the order written. A line that does not parse (for example one cut short
/// by a crash) is an `Err` item and reading goes on with the next line.
///
/// Read after [`flush`](crate::ErrorLogger::flush) or once the logger is
/// dropped: a rotation while reading can make a file be skipped or read twice.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// for report in bus_logger::read_reports(dir.path())? {
///     let report = report?;
///     println!("{} {}", report.category, report.message);
/// }
/// # Ok(()) }
/// ```
pub fn read_reports(dir: impl AsRef<Path>) -> Result<Reports, ReadError> {
    let logs = dir.as_ref().join("logs");
    let files = if logs.exists() {
        log_files(dir)?
    } else {
        Vec::new()
    };
    Ok(Reports {
        files: files.into_iter(),
        current: None,
    })
}

/// The iterator returned by [`read_reports`].
#[derive(Debug)]
pub struct Reports {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, usize, Lines<BufReader<File>>)>,
}

impl Iterator for Reports {
    type Item = Result<ErrorReport, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((path, line_no, lines)) = &mut self.current {
                match lines.next() {
                    Some(Ok(line)) => {
                        *line_no += 1;
                        if line.trim().is_empty() {
                            continue;
                        }
                        return Some(serde_json::from_str(&line).map_err(|source| {
                            ReadError::Parse {
                                path: path.clone(),
                                line: *line_no,
                                source,
                            }
                        }));
                    }
                    Some(Err(source)) => {
                        let path = path.clone();
                        self.current = None;
                        return Some(Err(ReadError::Io { path, source }));
                    }
                    None => self.current = None,
                }
            }
            let path = self.files.next()?;
            match File::open(&path) {
                Ok(f) => self.current = Some((path, 0, BufReader::new(f).lines())),
                // Rotated away between listing and opening: nothing to read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Some(Err(ReadError::Io { path, source })),
            }
        }
    }
}
