//! The demo run end to end, with the publisher threads started by a test.
#![allow(clippy::unwrap_used)]

use super::*;
use clap::Parser;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
}

/// A thread limit met while the publishers that did start have the
/// dependency down: the run must still end at once, not hold its drain
/// for the whole deadline behind an outage nobody will end.
#[test]
fn a_refused_publisher_during_the_outage_does_not_hold_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let run = Duration::from_secs(2);
    let drain = Duration::from_secs(30);
    let args = Cli::parse_from([
        "demo".as_ref(),
        "--duration".as_ref(),
        "2s".as_ref(),
        "--publishers".as_ref(),
        "2".as_ref(),
        "--drain-timeout".as_ref(),
        "30s".as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ])
    .demo;
    let begun = Instant::now();
    // The second thread is refused once the run is inside its outage
    // window (30 % to 50 % of the duration), where the first publisher
    // has switched the dependency off.
    let mut spawn = |i: usize, body: Box<dyn FnOnce() + Send>| {
        if i == 0 {
            return publishers::os_threads(i, body);
        }
        while begun.elapsed() < run.mul_f64(0.4) {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable",
        ))
    };
    let err = run_with(args, &mut spawn).unwrap_err();
    assert!(err.to_string().contains("publisher thread 2 of 2"), "{err}");
    // Parked messages drain once the breaker probes the dependency
    // again (at most max_wait_in_open, 2 s); the drain deadline is 30 s.
    assert!(
        begun.elapsed() < drain / 3,
        "the drain took {:?}",
        begun.elapsed()
    );
}
