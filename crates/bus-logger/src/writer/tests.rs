use super::files::LogFile;
use super::*;

/// A disk that takes `room` more bytes, then answers "no space", like a
/// full tmpfs: the write that crosses the limit is partly done.
#[derive(Debug, Default)]
struct FullDisk {
    data: Vec<u8>,
    room: usize,
    cut_fails: bool,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.room);
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.room -= n;
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogFile for FullDisk {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        if self.cut_fails {
            return Err(io::Error::other("cannot truncate"));
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.room += self.data.len().saturating_sub(len);
        self.data.truncate(len);
        Ok(())
    }
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{{\"line\":{i},\"pad\":\"xxxxxxxx\"}}\n").into_bytes())
        .collect()
}

#[test]
fn a_write_cut_short_by_a_full_disk_leaves_only_whole_lines() {
    let first = lines(2);
    let batch = lines(10);
    let mut disk = FullDisk {
        room: first.len() + batch.len() / 2 + 7,
        ..FullDisk::default()
    };
    let a = append_whole_lines(&mut disk, 0, &first);
    assert!(a.error.is_none());
    assert_eq!((a.bytes, a.lines), (first.len() as u64, 2));

    let b = append_whole_lines(&mut disk, a.bytes, &batch);
    let err = b.error.expect("the disk filled up");
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    assert!(!b.torn);
    assert_eq!(b.lines, 5, "the lines that fit whole are kept");
    assert_eq!(disk.data.len() as u64, a.bytes + b.bytes);
    assert_eq!(disk.data.last(), Some(&b'\n'), "no torn last line");
    for line in disk.data.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<serde_json::Value>(line).expect("every line parses");
    }
}

#[test]
fn a_failed_cut_is_reported_as_torn() {
    let batch = lines(4);
    let mut disk = FullDisk {
        room: batch.len() - 3,
        cut_fails: true,
        ..FullDisk::default()
    };
    let b = append_whole_lines(&mut disk, 0, &batch);
    assert!(b.error.is_some());
    assert!(
        b.torn,
        "the writer must end the partial line before the next one"
    );
    assert_eq!(b.lines, 3);
    assert_eq!(b.bytes, disk.data.len() as u64);
}

#[test]
fn a_snapshot_that_cannot_be_written_leaves_the_old_file_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), METRICS_FILE, b"{\"old\":1}", |f, b| {
        f.write_all(b)
    })
    .unwrap();
    let err = replace_file(dir.path(), METRICS_FILE, b"{\"new\":2}", |f, b| {
        f.write_all(&b[..3])?;
        Err(io::Error::from(io::ErrorKind::StorageFull))
    })
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [METRICS_FILE], "no temp file is left");
    assert_eq!(
        fs::read(dir.path().join(METRICS_FILE)).unwrap(),
        b"{\"old\":1}"
    );
}
