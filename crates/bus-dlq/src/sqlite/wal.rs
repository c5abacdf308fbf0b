//! Reading a write-ahead log the way SQLite's recovery does, to find
//! frames it would silently drop.
//!
//! SQLite replays a WAL frame by frame and stops at the first frame whose
//! salts differ from the header's or whose cumulative checksum does not
//! match (<https://www.sqlite.org/fileformat2.html#walformat>). Stale frames
//! of an earlier WAL generation (other salts) and a torn last frame end it
//! legitimately. But frames of the *current* generation after such a break
//! were written after the broken one: a damaged frame in the middle. Any
//! connection that opens the store would recover up to the break and its
//! next checkpoint would make the loss permanent, quietly; `verify` reads
//! the file itself, without SQLite, and reports it.

use bus_core::DlqError;
use serde::{Deserialize, Serialize};
use std::path::Path;

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// Damage in the write-ahead log (`dlq.sqlite-wal`): commits SQLite's
/// recovery would drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WalDamage {
    /// Frames recovery keeps: up to the last commit before the break.
    pub recovered_frames: u64,
    /// The frame (1-based) whose salts or checksum break the chain; 0 when
    /// the header itself is damaged (recovery then ignores the whole log).
    pub broken_at_frame: u64,
    /// Frames of this log's generation after the break, lost with it.
    pub frames_after_break: u64,
    /// Of those, commit frames: transactions lost.
    pub commits_after_break: u64,
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.broken_at_frame == 0 {
            write!(
                f,
                "the write-ahead log's header is damaged: recovery would ignore all \
                 {} frames ({} commits) in it",
                self.frames_after_break, self.commits_after_break
            )
        } else {
            write!(
                f,
                "the write-ahead log breaks at frame {}: recovery would keep {} frames and drop \
                 {} later frames ({} commits) written after it",
                self.broken_at_frame,
                self.recovered_frames,
                self.frames_after_break,
                self.commits_after_break
            )
        }
    }
}

/// Reads the WAL at `path` (absent or empty: nothing to report).
pub(super) fn inspect(path: &Path) -> Result<Option<WalDamage>, DlqError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(damage(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes) continuing `s`.
fn checksum(mut s: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    let word = |c: &[u8]| {
        let w = [c[0], c[1], c[2], c[3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    for pair in data.chunks_exact(8) {
        s.0 = s.0.wrapping_add(word(&pair[..4])).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(word(&pair[4..])).wrapping_add(s.0);
    }
    s
}

pub(super) fn damage(wal: &[u8]) -> Option<WalDamage> {
    if wal.len() < HEADER || wal[..HEADER].iter().all(|&b| b == 0) {
        // Never written, or preallocated zeros: an empty log.
        return None;
    }
    let magic = be32(wal, 0);
    let page = be32(wal, 8) as usize;
    let frame = FRAME_HEADER + page;
    let big_endian = magic == MAGIC_BE;
    let (salt1, salt2) = (be32(wal, 16), be32(wal, 20));
    let header_ok = (magic == MAGIC_LE || magic == MAGIC_BE)
        && page.is_power_of_two()
        && (512..=65536).contains(&page)
        && checksum((0, 0), &wal[..24], big_endian) == (be32(wal, 24), be32(wal, 28));
    if !header_ok {
        // Without a trustworthy page size, count nothing: the header alone
        // being damaged means every frame is ignored.
        return Some(WalDamage {
            recovered_frames: 0,
            broken_at_frame: 0,
            frames_after_break: 0,
            commits_after_break: 0,
        });
    }
    let frames = wal[HEADER..].chunks_exact(frame);
    let mut sum = (be32(wal, 24), be32(wal, 28));
    let (mut recovered, mut broken) = (0_u64, None);
    let (mut after, mut commits_after) = (0_u64, 0_u64);
    for (i, f) in frames.enumerate() {
        let n = i as u64 + 1;
        let ours = be32(f, 8) == salt1 && be32(f, 12) == salt2;
        let commit = be32(f, 4) != 0;
        match broken {
            None => {
                let s = checksum(
                    checksum(sum, &f[..8], big_endian),
                    &f[FRAME_HEADER..],
                    big_endian,
                );
                if ours && s == (be32(f, 16), be32(f, 20)) {
                    sum = s;
                    if commit {
                        recovered = n;
                    }
                } else {
                    broken = Some(n);
                }
            }
            Some(_) if ours => {
                after += 1;
                commits_after += u64::from(commit);
            }
            Some(_) => {}
        }
    }
    match broken {
        Some(at) if after > 0 => Some(WalDamage {
            recovered_frames: recovered,
            broken_at_frame: at,
            frames_after_break: after,
            commits_after_break: commits_after,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 512;

    /// A log with `salts` in its header and one frame per entry of
    /// `frames` (its salts, whether it commits), checksummed as SQLite
    /// does (little-endian magic).
    fn log(salts: (u32, u32), frames: &[((u32, u32), bool)]) -> Vec<u8> {
        let mut w = Vec::new();
        for v in [MAGIC_LE, 3_007_000, PAGE as u32, 0, salts.0, salts.1] {
            w.extend_from_slice(&v.to_be_bytes());
        }
        let mut sum = checksum((0, 0), &w, false);
        w.extend_from_slice(&sum.0.to_be_bytes());
        w.extend_from_slice(&sum.1.to_be_bytes());
        for (i, &(s, commit)) in frames.iter().enumerate() {
            let page_no = i as u32 + 1;
            let mut head = Vec::new();
            for v in [page_no, u32::from(commit) * page_no, s.0, s.1] {
                head.extend_from_slice(&v.to_be_bytes());
            }
            let body = vec![u8::try_from(i % 251).unwrap(); PAGE];
            if s == salts {
                sum = checksum(checksum(sum, &head[..8], false), &body, false);
            }
            w.extend_from_slice(&head);
            w.extend_from_slice(&sum.0.to_be_bytes());
            w.extend_from_slice(&sum.1.to_be_bytes());
            w.extend_from_slice(&body);
        }
        w
    }

    fn frame_byte(n: usize) -> usize {
        HEADER + (n - 1) * (FRAME_HEADER + PAGE) + FRAME_HEADER + 7
    }

    const NOW: (u32, u32) = (7, 9);
    const OLD: (u32, u32) = (3, 4);

    #[test]
    fn a_sound_log_an_empty_one_and_zeros_are_not_damage() {
        assert_eq!(
            damage(&log(NOW, &[(NOW, false), (NOW, true), (NOW, true)])),
            None
        );
        assert_eq!(damage(&[]), None);
        assert_eq!(damage(&vec![0; 1 << 16]), None);
        // Preallocated zeros past the last frame.
        let mut w = log(NOW, &[(NOW, true)]);
        w.resize(w.len() + 10 * (FRAME_HEADER + PAGE), 0);
        assert_eq!(damage(&w), None);
    }

    #[test]
    fn stale_frames_of_an_earlier_generation_and_a_torn_last_frame_are_not_damage() {
        // After a restart the log is rewritten from the start; the frames
        // beyond still carry the old salts.
        assert_eq!(
            damage(&log(NOW, &[(NOW, true), (OLD, true), (OLD, true)])),
            None
        );
        let mut torn = log(NOW, &[(NOW, true), (NOW, true)]);
        let at = frame_byte(2);
        torn[at] ^= 1;
        assert_eq!(damage(&torn), None);
    }

    #[test]
    fn a_broken_frame_with_later_frames_of_its_generation_is_damage() {
        let mut w = log(NOW, &[(NOW, true), (NOW, false), (NOW, true), (NOW, true)]);
        let at = frame_byte(2);
        w[at] ^= 1;
        assert_eq!(
            damage(&w),
            Some(WalDamage {
                recovered_frames: 1,
                broken_at_frame: 2,
                frames_after_break: 2,
                commits_after_break: 2,
            })
        );
        let mut header = log(NOW, &[(NOW, true)]);
        header[17] ^= 1;
        assert_eq!(damage(&header).map(|d| d.broken_at_frame), Some(0));
    }
}
