//! With the opt-in panic hook, a panicking handler's report says where the
//! panic happened and carries the backtrace `RUST_BACKTRACE` asked for.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::{Bus, MemoryDeadLetters, Message, NoRetry};
use bus_errors::{ErrorReport, HandlerError};
use bus_test::RecordingObserver;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static PANIC_LINE: AtomicU32 = AtomicU32::new(0);

/// Runs one panicking delivery through a bus and returns its report.
fn report_of_a_panic() -> ErrorReport {
    bus_errors::install_panic_hook();
    let observer = RecordingObserver::new();
    let bus = Bus::builder()
        .recovery(Arc::new(NoRetry))
        .dead_letters(Arc::new(MemoryDeadLetters::new()))
        .observer(observer.clone())
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(|_: &Message<'_>| -> Result<(), HandlerError> {
            PANIC_LINE.store(line!() + 1, Ordering::SeqCst);
            panic!("handler exploded");
        })
        .unwrap();
    bus.publish("t", &b"boom"[..]).unwrap();
    let s = bus.shutdown(Duration::from_secs(20)).stats;
    assert_eq!((s.panics, s.dead_lettered), (1, 1));
    observer.reports().remove(0)
}

#[test]
fn the_report_of_a_panic_names_its_file_and_line() {
    let r = report_of_a_panic();
    let at = &r.context["panic.location"];
    let line = PANIC_LINE.load(Ordering::SeqCst);
    assert!(
        at.starts_with(&format!("{}:{line}:", file!())),
        "location {at}, expected {}:{line}",
        file!()
    );
    assert!(r.message.contains("handler exploded"), "{}", r.message);
}

/// In a child process of this test binary, whose `RUST_BACKTRACE` is set by
/// the parent: the backtrace is there exactly when it was asked for.
#[test]
fn the_backtrace_is_captured_when_rust_backtrace_asks() {
    if let Ok(expect) = std::env::var("BUS_PANIC_SITE_CHILD") {
        let r = report_of_a_panic();
        match expect.as_str() {
            "some" => {
                let bt = r.backtrace.expect("a backtrace under RUST_BACKTRACE=1");
                assert!(bt.contains("report_of_a_panic"), "{bt}");
                assert!(bt.chars().count() <= 4096 + 40, "sanitized length");
            }
            _ => assert_eq!(r.backtrace, None),
        }
        return;
    }
    let me = std::env::current_exe().unwrap();
    for (rust_backtrace, expect) in [("1", "some"), ("0", "none")] {
        let out = Command::new(&me)
            .args([
                "--exact",
                "the_backtrace_is_captured_when_rust_backtrace_asks",
                "--test-threads=1",
            ])
            .env("RUST_BACKTRACE", rust_backtrace)
            .env_remove("RUST_LIB_BACKTRACE")
            .env("BUS_PANIC_SITE_CHILD", expect)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "RUST_BACKTRACE={rust_backtrace}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ran = String::from_utf8_lossy(&out.stdout);
        assert!(ran.contains("1 passed"), "the child ran nothing: {ran}");
    }
}
