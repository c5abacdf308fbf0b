//! The limit: the transport's transactions written by hand on rusqlite,
//! with nothing else (no routing, no envelopes beyond the columns, no
//! bounds, no ledger, no wake-ups by group).

use super::{LEASE, MAX_BATCH, PAYLOAD_BYTES, PUBLISHERS, WINDOW};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, params};
use std::path::Path;
use std::time::{Duration, Instant};

/// The transport's `messages` table and indexes.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, grp INTEGER NOT NULL, prio INTEGER NOT NULL,
    due INTEGER NOT NULL DEFAULT 0, owner INTEGER, lease_until INTEGER,
    leases INTEGER NOT NULL DEFAULT 0, id BLOB NOT NULL, created_ns INTEGER NOT NULL,
    attempt INTEGER NOT NULL, extra TEXT, payload BLOB NOT NULL);
CREATE INDEX messages_ready ON messages (grp, prio DESC, seq) WHERE owner IS NULL AND due = 0;
CREATE INDEX messages_delayed ON messages (due) WHERE owner IS NULL AND due > 0;
CREATE INDEX messages_leased ON messages (lease_until) WHERE owner IS NOT NULL;
";

enum Op {
    Insert {
        id: [u8; 16],
        payload: bytes::Bytes,
        freed: Receiver<()>,
    },
    Lease(Sender<Vec<(i64, Vec<u8>)>>),
    Ack(i64),
    Done,
}

/// The same work as [`super::bus::pipelined`], by hand.
pub(crate) fn pipelined(dir: &Path, n: usize) -> Duration {
    let conn = Connection::open(dir.join("raw.sqlite")).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<Op>();
    // Rows were inserted: wakes a consumer that found none (the
    // transport's members wait on their group's signal alike).
    let (ready_tx, ready) = crossbeam_channel::bounded::<()>(1);
    let start = Instant::now();
    let writer = std::thread::spawn(move || write(&conn, &rx, &ready_tx));
    let consumer = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut got = 0;
            while got < n {
                let (reply, answer) = crossbeam_channel::bounded(1);
                tx.send(Op::Lease(reply)).unwrap();
                let rows = answer.recv().unwrap();
                if rows.is_empty() {
                    let _ = ready.recv_timeout(Duration::from_millis(200));
                }
                for (seq, payload) in rows {
                    assert_eq!(payload.len(), PAYLOAD_BYTES);
                    tx.send(Op::Ack(seq)).unwrap();
                    got += 1;
                }
            }
            tx.send(Op::Done).unwrap();
        })
    };
    let payload = bytes::Bytes::from(vec![0xAB_u8; PAYLOAD_BYTES]);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (tx, payload) = (tx.clone(), payload.clone());
            std::thread::spawn(move || {
                let (permit, freed) = crossbeam_channel::bounded::<()>(WINDOW);
                for _ in 0..n / PUBLISHERS {
                    permit.send(()).unwrap();
                    let id = *uuid::Uuid::now_v7().as_bytes();
                    let op = Op::Insert {
                        id,
                        payload: payload.clone(),
                        freed: freed.clone(),
                    };
                    tx.send(op).unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    consumer.join().unwrap();
    writer.join().unwrap();
    start.elapsed()
}

fn write(conn: &Connection, rx: &Receiver<Op>, ready: &Sender<()>) {
    let mut full = None;
    loop {
        let mut ops = vec![rx.recv().unwrap()];
        ops.extend(rx.try_iter().take(MAX_BATCH - 1));
        let inserts = ops.iter().any(|op| matches!(op, Op::Insert { .. }));
        if full != Some(inserts) {
            conn.execute_batch(if inserts {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            })
            .unwrap();
            full = Some(inserts);
        }
        conn.prepare_cached("BEGIN IMMEDIATE")
            .unwrap()
            .execute([])
            .unwrap();
        let mut confirms = Vec::new();
        let mut leases = Vec::new();
        let mut done = false;
        for op in ops {
            match op {
                Op::Insert { id, payload, freed } => {
                    conn.prepare_cached(
                        "INSERT INTO messages (grp, prio, id, created_ns, attempt, extra, payload) \
                         VALUES (1, 1, ?1, ?2, 1, NULL, ?3)",
                    )
                    .unwrap()
                    .execute(params![&id[..], 0_i64, &payload[..]])
                    .unwrap();
                    confirms.push(freed);
                }
                Op::Lease(reply) => {
                    let mut stmt = conn
                        .prepare_cached(
                            "UPDATE messages SET owner = 1, lease_until = 1, leases = leases + 1 \
                             WHERE seq IN (SELECT seq FROM messages WHERE grp = 1 AND owner IS NULL \
                             AND due = 0 ORDER BY prio DESC, seq LIMIT ?1) RETURNING seq, payload",
                        )
                        .unwrap();
                    let rows: Vec<(i64, Vec<u8>)> = stmt
                        .query_map([LEASE as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    leases.push((reply, rows));
                }
                Op::Ack(seq) => {
                    conn.prepare_cached(
                        "DELETE FROM messages WHERE seq = ?1 AND owner = 1 AND (leases & 65535) = 1",
                    )
                    .unwrap()
                    .execute([seq])
                    .unwrap();
                }
                Op::Done => done = true,
            }
        }
        conn.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
        if inserts {
            let _ = ready.try_send(());
        }
        for freed in confirms {
            let _ = freed.try_recv();
        }
        for (reply, rows) in leases {
            let _ = reply.send(rows);
        }
        if done {
            return;
        }
    }
}
