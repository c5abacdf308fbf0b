use super::{Outstanding, Window};
use crate::state::Counters;
use bus_test::wait_until;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn window_waits_only_when_full() {
    let window = Window::new(2);
    let a = window.acquire();
    let b = window.acquire();
    assert_eq!(window.counts(), (2, 0));
    let (tx, rx) = std::sync::mpsc::channel();
    let w = Arc::clone(&window);
    let third = std::thread::spawn(move || {
        let place = w.acquire();
        tx.send(()).unwrap();
        place
    });
    assert!(wait_until(PATIENCE, || window.counts().1 == 1));
    assert!(rx.try_recv().is_err(), "a full window let a third in");
    drop(a);
    rx.recv_timeout(PATIENCE).expect("a freed place is taken");
    let c = third.join().unwrap();
    assert_eq!(window.counts(), (2, 0));
    drop((b, c));
    assert_eq!(window.counts(), (0, 0));
}

/// The thread driving a current-thread runtime never waits for room: it
/// would wait for confirmations only it can run.
#[test]
fn a_forced_place_does_not_wait_for_a_full_window() {
    let window = Window::new(1);
    let a = window.acquire();
    let b = window.force();
    assert_eq!(window.counts(), (2, 0), "past the bound, nobody waiting");
    drop((a, b));
    assert_eq!(window.counts(), (0, 0));
}

#[test]
fn close_waits_for_owed_settles() {
    let out = Arc::new(Outstanding::default());
    let counters = Arc::new(Counters::default());
    let window = Window::new(8);
    let mut done = out.start(&counters, window.acquire());
    let mut late = out.start(&counters, window.acquire());
    assert!(!done.finish(true), "a confirmed settle is no failure");
    assert_eq!(counters.settles_unconfirmed.load(Ordering::Relaxed), 1);
    let o = Arc::clone(&out);
    let closing = std::thread::spawn(move || o.close(PATIENCE));
    assert!(!late.finish(true));
    assert_eq!(closing.join().unwrap(), 0, "nothing left unconfirmed");
    assert_eq!(counters.settles_unconfirmed.load(Ordering::Relaxed), 0);
}

#[test]
fn what_close_writes_off_is_not_counted_again() {
    let out = Arc::new(Outstanding::default());
    let counters = Arc::new(Counters::default());
    let window = Window::new(8);
    let mut owed = out.start(&counters, window.acquire());
    let mut confirmed_late = out.start(&counters, window.acquire());
    assert_eq!(out.close(Duration::ZERO), 2, "both unconfirmed at close");
    let mut after = out.start(&counters, window.acquire());
    assert!(!owed.finish(false), "counted by close already");
    assert!(!confirmed_late.finish(true));
    assert!(
        after.finish(false),
        "a settle after close counts its own failure"
    );
    drop(out.start(&counters, window.acquire()));
    assert_eq!(counters.settles_unconfirmed.load(Ordering::Relaxed), 0);
    drop((owed, confirmed_late, after));
    assert_eq!(window.counts(), (0, 0));
}
