//! The command's output, watched for a reader that went away.

use std::io::{self, Write};

/// Forwards to the command's output and remembers whether a write found it
/// closed by its reader (a broken pipe), which ends a command quietly.
pub(super) struct Output<'a> {
    inner: &'a mut dyn Write,
    closed: bool,
}

impl<'a> Output<'a> {
    pub(super) fn new(inner: &'a mut dyn Write) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    /// Whether a write or flush failed because the reader closed the output.
    pub(super) fn closed(&self) -> bool {
        self.closed
    }

    fn note<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.closed |= e.kind() == io::ErrorKind::BrokenPipe;
        }
        r
    }
}

impl Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let r = self.inner.write_all(buf);
        self.note(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}
