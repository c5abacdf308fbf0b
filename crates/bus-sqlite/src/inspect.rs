//! Reading a queue file from outside the process that runs it (`busctl
//! queue`), and dropping a group nobody subscribes to any more.

use crate::config::SqliteConfig;
use crate::error::SqliteError;
use crate::{owner, schema};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One group's queue and ledger, as the file holds them.
///
/// Its ledger spans every process that ever opened the file:
/// `published = acked + terminated + evicted + pending` (see
/// [`balances`](Self::balances)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct GroupReport {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Its bound.
    pub capacity: u64,
    /// Messages ready for a consumer.
    pub ready: u64,
    /// Messages waiting for a delayed redelivery.
    pub delayed: u64,
    /// Messages leased to a consumer (a live process, or a dead one whose
    /// leases return at the next open).
    pub leased: u64,
    /// How long ago the oldest pending message was published.
    #[serde(with = "humantime_serde")]
    pub oldest_pending_age: Option<Duration>,
    /// Copies stored for this group, ever.
    pub published: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries terminated (dead-lettered or discarded by the bus).
    pub terminated: u64,
    /// Messages evicted by `DiscardLowest` to make room.
    pub evicted: u64,
    /// Whether a live process subscribes to the group.
    pub subscribed: bool,
}

impl GroupReport {
    /// Messages still owed to the group: ready, delayed or leased.
    pub fn pending(&self) -> u64 {
        self.ready + self.delayed + self.leased
    }

    /// Whether the group's ledger adds up.
    pub fn balances(&self) -> bool {
        self.published == self.acked + self.terminated + self.evicted + self.pending()
    }
}

/// Every group of the queue in `data_dir`, read without changing the file
/// (a missing file is an error, and nothing is created).
///
/// ```
/// use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
/// use bus_sqlite::{SqliteConfig, SqliteTransport};
///
/// let dir = tempfile::tempdir().unwrap();
/// let t = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap();
/// let topic = Topic::new("orders").unwrap();
/// drop(t.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap());
/// t.publish(Envelope::new(topic, &b"x"[..]), std::time::Duration::from_secs(5)).unwrap();
/// let groups = bus_sqlite::inspect(dir.path()).unwrap();
/// assert_eq!((groups[0].pending(), groups[0].published), (1, 1));
/// assert!(groups[0].balances() && groups[0].subscribed);
/// ```
pub fn inspect(data_dir: &Path) -> Result<Vec<GroupReport>, SqliteError> {
    let config = SqliteConfig::new(data_dir);
    let conn = schema::connect_read_only(&config.db_path())?;
    let members = owner::live_members(&config.owners_dir());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut groups = conn.prepare(
        "SELECT id, topic, name, capacity, published, acked, terminated, evicted FROM groups \
         ORDER BY topic, name",
    )?;
    let mut counts = conn.prepare(
        "SELECT coalesce(sum(owner IS NULL AND due = 0), 0), \
         coalesce(sum(owner IS NULL AND due > 0), 0), coalesce(sum(owner IS NOT NULL), 0), \
         min(created_ns) FROM messages WHERE grp = ?1",
    )?;
    let rows: Vec<(i64, String, String, [i64; 5])> = groups
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let n = |v: i64| v.unsigned_abs();
    let mut out = Vec::with_capacity(rows.len());
    for (id, topic, group, [capacity, published, acked, terminated, evicted]) in rows {
        let (ready, delayed, leased, oldest): (i64, i64, i64, Option<i64>) =
            counts.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        out.push(GroupReport {
            subscribed: members.contains(&(topic.clone(), group.clone())),
            topic,
            group,
            capacity: n(capacity),
            ready: n(ready),
            delayed: n(delayed),
            leased: n(leased),
            oldest_pending_age: oldest.map(|t| Duration::from_nanos(n(now.saturating_sub(t)))),
            published: n(published),
            acked: n(acked),
            terminated: n(terminated),
            evicted: n(evicted),
        });
    }
    Ok(out)
}

/// Deletes the group `group` of `topic` and every message it still holds,
/// in one transaction, and returns how many messages went with it. Refused
/// ([`SqliteError::GroupInUse`]) while a live process subscribes to it.
pub fn drop_group(data_dir: &Path, topic: &str, group: &str) -> Result<u64, SqliteError> {
    let config = SqliteConfig::new(data_dir);
    let path = config.db_path();
    // Recognised first, so a foreign file is never written to.
    drop(schema::connect_read_only(&path)?);
    if owner::live_members(&config.owners_dir()).contains(&(topic.to_owned(), group.to_owned())) {
        return Err(SqliteError::GroupInUse {
            topic: topic.to_owned(),
            group: group.to_owned(),
        });
    }
    let mut conn = schema::connect(&path, config.durability)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id: Option<i64> = match tx.query_row(
        "SELECT id FROM groups WHERE topic = ?1 AND name = ?2",
        [topic, group],
        |r| r.get(0),
    ) {
        Ok(id) => Some(id),
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(id) = id else {
        return Err(SqliteError::NoSuchGroup {
            topic: topic.to_owned(),
            group: group.to_owned(),
        });
    };
    let dropped = tx.execute("DELETE FROM messages WHERE grp = ?1", [id])?;
    tx.execute("DELETE FROM groups WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(dropped as u64)
}
