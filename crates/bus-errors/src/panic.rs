//! Where a panic happened, for the [`PanicError`](crate::PanicError) the bus
//! makes of it.
//!
//! `catch_unwind` hands back only the panic's payload; the location and a
//! backtrace are known only to the panic hook. [`install_panic_hook`] adds a
//! hook that records both for the thread that panicked (and then runs the
//! hook that was installed before, so the usual message still prints), and
//! [`PanicError::from_payload`](crate::PanicError::from_payload), called on
//! that thread after the unwind, takes them.

use std::cell::RefCell;
use std::sync::Once;

/// Where a panic happened and, if one was captured, its backtrace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PanicSite {
    pub(crate) location: Option<String>,
    pub(crate) backtrace: Option<String>,
}

thread_local! {
    static LAST: RefCell<Option<PanicSite>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs a panic hook that records each panic's location (file, line,
/// column) and, when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` asks for one,
/// its backtrace, so that a handler's panic report carries them
/// ([`ErrorReport::backtrace`](crate::ErrorReport::backtrace) and the
/// `panic.location` context entry).
///
/// Opt-in, and safe to call more than once: the first call wraps the hook
/// installed at that moment and calls it after recording, so a hook the
/// application set (or the standard one that prints the message) keeps
/// working. A hook installed later with `std::panic::set_hook` replaces this
/// one; install yours first, then call this.
///
/// ```
/// bus_errors::install_panic_hook();
/// let caught = std::panic::catch_unwind(|| panic!("boom"));
/// let err = bus_errors::PanicError::from_payload(&*caught.unwrap_err());
/// assert!(err.location.unwrap().contains(file!()));
/// ```
pub fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            let bt = std::backtrace::Backtrace::capture();
            let backtrace =
                (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| bt.to_string());
            // A panic inside a thread-local's destructor finds it gone:
            // nothing to record then.
            let _ = LAST.try_with(|l| {
                if let Ok(mut l) = l.try_borrow_mut() {
                    *l = Some(PanicSite {
                        location,
                        backtrace,
                    });
                }
            });
            previous(info);
        }));
    });
}

/// The site of the latest panic on this thread, if the hook recorded one;
/// taken, so it is never attached to a later panic's report.
pub(crate) fn take_site() -> Option<PanicSite> {
    LAST.try_with(|l| l.try_borrow_mut().ok().and_then(|mut l| l.take()))
        .ok()
        .flatten()
}
