//! The log's file operations: appends that leave only whole lines, and a
//! file replaced whole (written beside it, synced, renamed over it).

use crate::emit::TRACING_TARGET;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// What the writer needs of its log file: appends, and a cut back to a
/// length when a write failed part-way.
pub(crate) trait LogFile: Write {
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// The result of [`append_whole_lines`].
#[derive(Debug)]
pub(crate) struct Appended {
    /// Bytes the file grew by (always whole lines).
    pub(crate) bytes: u64,
    /// Lines those bytes hold.
    pub(crate) lines: u64,
    /// Why the rest was not written.
    pub(crate) error: Option<io::Error>,
    /// The cut back to the last whole line failed too: the file may end in
    /// a partial line, to be ended before the next write.
    pub(crate) torn: bool,
}

/// Appends `buf` (whole lines) to `file`, which is `size` bytes long. A
/// write that fails part-way (a full disk takes what fits) would leave a
/// torn last line that no reader can parse, so the file is cut back to the
/// end of the last whole line written.
pub(crate) fn append_whole_lines(file: &mut dyn LogFile, size: u64, buf: &[u8]) -> Appended {
    let mut written = 0;
    let mut error = None;
    while written < buf.len() {
        match file.write(&buf[written..]) {
            Ok(0) => {
                error = Some(io::Error::from(io::ErrorKind::WriteZero));
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let keep = match error {
        None => written,
        Some(_) => buf[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1),
    };
    let mut torn = false;
    if keep < written {
        if let Err(e) = file.truncate_to(size + keep as u64) {
            tracing::error!(target: TRACING_TARGET, error = %e, "cannot cut a partly written line from the error log");
            torn = true;
        }
    }
    // If the cut failed, the partial line's bytes are on disk but count as
    // nothing: the next open ends the line first.
    let bytes = if torn { written } else { keep } as u64;
    let lines = buf[..keep].iter().filter(|&&b| b == b'\n').count() as u64;
    Appended {
        bytes,
        lines,
        error,
        torn,
    }
}

/// Replaces `dir/name` with `bytes` atomically: a temp file in the same
/// directory, fsync, rename, fsync the directory. If any step fails the temp
/// file is removed, so a full disk leaves the old file and no stray temp.
pub(crate) fn replace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = File::create(&tmp).and_then(|mut f| {
        write(&mut f, bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))
    });
    if let Err(e) = result {
        if let Err(rm) = fs::remove_file(&tmp) {
            if rm.kind() != io::ErrorKind::NotFound {
                tracing::error!(target: TRACING_TARGET, error = %rm, path = %tmp.display(), "cannot remove a temp file");
            }
        }
        return Err(e);
    }
    sync_dir(dir);
    Ok(())
}

pub(super) fn is_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

pub(super) fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes a rename durable where the platform allows opening a directory.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
