//! The demo's progress line on a terminal: how far the run is, and the
//! bus's counts, breaker and health as it goes.

use super::{DemoArgs, Target};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(super) fn progress_bar(args: &DemoArgs, target: Target) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let len = match target {
        Target::Messages(n) => n,
        Target::Duration(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    };
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:25} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub(super) fn tick(
    bar: &ProgressBar,
    bus: &bus::Bus,
    target: Target,
    next: &AtomicU64,
    started: Instant,
) {
    if bar.is_hidden() {
        return;
    }
    match target {
        Target::Messages(n) => bar.set_position(next.load(Ordering::Relaxed).min(n)),
        Target::Duration(_) => {
            bar.set_position(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
    }
    let s = bus.stats();
    let inventory = bus
        .breakers()
        .map(|b| b.get("inventory").effective_state().to_string())
        .unwrap_or_default();
    let health = bus
        .health()
        .map(|h| format!("{:?}", h.status).to_lowercase())
        .unwrap_or_default();
    bar.set_message(format!(
        "acked {} retried {} dlq {} rejected {} parked {} | inventory breaker {inventory} | {health}",
        s.acked, s.retried, s.dead_lettered, s.rejected_at_publish, s.parked
    ));
}
