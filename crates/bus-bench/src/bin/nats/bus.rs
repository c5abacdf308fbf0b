//! The bus over the run's transport: one publisher thread, one subscriber
//! with one worker (the defaults), a handler that only counts.

use crate::scratch::{GROUP, Scratch, TOPIC};
use crate::{BoxError, Rates, patience};
use bus_core::{Bus, Message, PublisherOptions};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The windows the bus is measured at: `Bus::publish`, which returns once
/// the server confirmed the message, is window 1; the others go through a
/// [`Publisher`](bus_core::Publisher) with that window.
pub(crate) const WINDOWS: [usize; 3] = [1, 16, 256];

/// Publishes `n` messages through a bus on `s`'s transport while its
/// subscriber handles and acks them.
pub(crate) fn run(s: &Scratch, window: usize, n: u64, payload: &Bytes) -> Result<Rates, BoxError> {
    let bus = Bus::builder().transport(Arc::new(s.nats.clone())).build();
    let (done, all_seen) = std::sync::mpsc::sync_channel(1);
    let seen = AtomicU64::new(0);
    bus.subscriber(GROUP).topic(TOPIC).start(
        move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            if seen.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = done.try_send(());
            }
            Ok(())
        },
    )?;
    let t0 = Instant::now();
    if window == 1 {
        for _ in 0..n {
            bus.publish(TOPIC, payload.clone())?;
        }
    } else {
        let publisher = bus.publisher_with(PublisherOptions::default().window(window));
        for _ in 0..n {
            // A refusal whose confirmation was dropped comes back from flush.
            drop(publisher.publish(TOPIC, payload.clone())?);
        }
        let refused = publisher
            .flush(patience(n))
            .map_err(|t| format!("{} publishes unconfirmed after {:?}", t.in_flight, t.waited))?;
        if let Some(first) = refused.into_iter().next() {
            return Err(first.into());
        }
    }
    let published = t0.elapsed();
    all_seen.recv_timeout(patience(n))?;
    s.drained(patience(n))?;
    let elapsed = t0.elapsed();
    let report = bus.shutdown(Duration::from_secs(10));
    let stats = report.stats;
    if !stats.invariant_holds() || stats.acked != n {
        return Err(format!("ledger: {n} published, {stats:?}").into());
    }
    Ok(Rates::of(n, published, elapsed))
}
