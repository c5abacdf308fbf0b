//! `--transport sqlite`: the demo's bus on bus-sqlite in the data
//! directory. A run killed mid-way leaves its queues in the file; the next
//! run on the same `--data-dir` resumes them, and its summary counts what
//! it was handed of an earlier run's work (`broker.resumed`) and what it
//! left in the file (`broker.kept_streams`).

use super::summary::Broker;
use bus::Config;
use bus::sqlite::{SqliteConfig, SqliteTransport};
use busctl::transport::TransportKind;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) struct Sqlite {
    transport: Arc<SqliteTransport>,
    data_dir: PathBuf,
    owed_at_start: u64,
}

/// Deliveries the file owes, over every group.
fn owed(data_dir: &std::path::Path) -> u64 {
    bus::sqlite::inspect(data_dir)
        .map(|gs| gs.iter().map(bus::sqlite::GroupReport::pending).sum())
        .unwrap_or(0)
}

/// Opens the transport when the demo runs on SQLite, with the
/// configuration's `[sqlite]` settings (the defaults if it has none).
pub(super) fn open(
    kind: TransportKind,
    cfg: &Config,
) -> Result<Option<Sqlite>, Box<dyn std::error::Error>> {
    if kind != TransportKind::Sqlite {
        return Ok(None);
    }
    let mut config: SqliteConfig = cfg.sqlite.clone().unwrap_or_default();
    config.data_dir = cfg.data_dir.clone();
    let owed_at_start = owed(&cfg.data_dir);
    if owed_at_start > 0 {
        eprintln!(
            "resuming {owed_at_start} deliveries an earlier run on this data dir left in queue.sqlite"
        );
    }
    Ok(Some(Sqlite {
        transport: Arc::new(SqliteTransport::open(config)?),
        data_dir: cfg.data_dir.clone(),
        owed_at_start,
    }))
}

impl Sqlite {
    pub(super) fn transport(&self) -> Arc<dyn bus::transport::Transport> {
        Arc::clone(&self.transport) as Arc<dyn bus::transport::Transport>
    }

    /// After the shutdown: what this run resumed and what the file owes.
    pub(super) fn broker(&self) -> Broker {
        let owed = owed(&self.data_dir);
        if owed > 0 {
            eprintln!(
                "queue.sqlite kept: {owed} deliveries unsettled; a run with the same --data-dir resumes them"
            );
        }
        Broker {
            url: format!("sqlite:{}", self.transport.path().display()),
            owed_at_start: self.owed_at_start,
            resumed: self.transport.resumed(),
            outages: 0,
            unreachable_seconds: 0.0,
            publish_resends: 0,
            redeliveries_settled_again: 0,
            dropped_by_limits: 0,
            backstop_dead_letters: 0,
            backstop_lost: 0,
            kept_streams: if owed > 0 {
                vec![("queue.sqlite".to_owned(), owed)]
            } else {
                Vec::new()
            },
        }
    }
}
