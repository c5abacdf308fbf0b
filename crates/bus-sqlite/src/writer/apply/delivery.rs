//! Deliveries in a batch: leasing them, settling them, putting them back.

use super::Batch;
use crate::row::{ENVELOPE_COLUMNS, decode};
use crate::shared::{How, Leased, untoken};
use bus_core::Envelope;
use rusqlite::{Connection, params};

impl Batch<'_> {
    pub(super) fn lease(
        &mut self,
        conn: &Connection,
        group: i64,
        max: usize,
    ) -> rusqlite::Result<Vec<Leased>> {
        let Some(g) = self.shared.routes().by_id.get(&group).cloned() else {
            return Ok(Vec::new());
        };
        let until = self.now.saturating_add(
            i64::try_from(self.shared.config.lease.as_millis()).unwrap_or(i64::MAX),
        );
        let mut stmt = conn.prepare_cached(&format!(
            "UPDATE messages SET owner = ?1, lease_until = ?2, leases = leases + 1 \
             WHERE seq IN (SELECT seq FROM messages WHERE grp = ?3 AND owner IS NULL \
             AND due = 0 ORDER BY prio DESC, seq LIMIT ?4) \
             RETURNING seq, leases, {ENVELOPE_COLUMNS}"
        ))?;
        let mut rows = stmt.query(params![
            self.shared.owner,
            until,
            group,
            i64::try_from(max).unwrap_or(i64::MAX)
        ])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            match decode(&g.topic, row, 2) {
                Ok(envelope) => out.push(Leased {
                    seq,
                    leases: row.get(1)?,
                    lease_until: until,
                    envelope,
                }),
                // Left leased to this open: it returns at the next one,
                // and the damage is reported each time.
                Err(e) => tracing::error!(seq, error = %e, "sqlite queue row cannot be decoded"),
            }
        }
        drop(rows);
        // RETURNING gives no order: the queue's order is priority, then age.
        out.sort_by_key(|l| (std::cmp::Reverse(l.envelope.priority), l.seq));
        self.delta(group).depth -= i64::try_from(out.len()).unwrap_or(0);
        Ok(out)
    }

    pub(super) fn settle(
        &mut self,
        conn: &Connection,
        token: u64,
        how: How,
    ) -> rusqlite::Result<()> {
        let (seq, lease) = untoken(token);
        let owner = self.shared.owner;
        let mine = "seq = ?1 AND owner = ?2 AND (leases & 65535) = ?3";
        let group: Option<i64> = match &how {
            How::Ack | How::Term => conn
                .prepare_cached(&format!("DELETE FROM messages WHERE {mine} RETURNING grp"))?
                .query_row(params![seq, owner, lease], |r| r.get(0))
                .map(Some),
            How::Nak {
                delay_ms,
                attempt,
                extra,
            } => {
                let due = if *delay_ms <= 0 {
                    0
                } else {
                    self.now.saturating_add(*delay_ms)
                };
                conn.prepare_cached(&format!(
                    "UPDATE messages SET owner = NULL, lease_until = NULL, due = ?4, \
                     attempt = ?5, extra = ?6 WHERE {mine} RETURNING grp"
                ))?
                .query_row(
                    params![seq, owner, lease, due, i64::from(*attempt), extra],
                    |r| r.get(0),
                )
                .map(Some)
            }
            How::Release => conn
                .prepare_cached(&format!(
                    "UPDATE messages SET owner = NULL, lease_until = NULL WHERE {mine} \
                     RETURNING grp"
                ))?
                .query_row(params![seq, owner, lease], |r| r.get(0))
                .map(Some),
            How::Extend => {
                let until = self.now.saturating_add(
                    i64::try_from(self.shared.config.lease.as_millis()).unwrap_or(i64::MAX),
                );
                conn.prepare_cached(&format!(
                    "UPDATE messages SET lease_until = ?4 WHERE {mine} RETURNING grp"
                ))?
                .query_row(params![seq, owner, lease, until], |r| r.get(0))
                .map(Some)
            }
        }
        .or_else(|e| match e {
            // The lease expired and went elsewhere: this settle is stale.
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
        let Some(group) = group else { return Ok(()) };
        let d = self.delta(group);
        match how {
            How::Ack => d.acked += 1,
            How::Term => d.terminated += 1,
            How::Nak { delay_ms, .. } => {
                d.depth += 1;
                d.woke |= delay_ms <= 0;
            }
            How::Release => {
                d.depth += 1;
                d.woke = true;
            }
            How::Extend => {}
        }
        Ok(())
    }

    pub(super) fn requeue(
        &mut self,
        conn: &Connection,
        group: i64,
        env: &Envelope,
        extra: Option<&str>,
    ) -> rusqlite::Result<bool> {
        let Some(g) = self.shared.routes().by_id.get(&group).cloned() else {
            return Ok(false);
        };
        let pending = self.delta(group).depth;
        if i64::try_from(g.depth()).unwrap_or(i64::MAX) + pending
            >= i64::try_from(g.capacity.saturating_mul(2)).unwrap_or(i64::MAX)
        {
            return Ok(false);
        }
        self.insert(conn, group, env, extra)?;
        Ok(true)
    }
}
