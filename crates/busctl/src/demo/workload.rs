//! What the demo's handlers do: a deterministic fault plan per message, and
//! the handlers of each subscriber.

use bus::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The fault planned for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Handled on the first attempt.
    None,
    /// Fails its first attempt with a timeout, then succeeds (a retry recovers it).
    Transient,
    /// Cannot be decoded: a poison message, dead-lettered at once.
    Poison,
    /// The handler panics on the first attempt, then succeeds.
    Panic,
}

/// Fault rates, each in `[0, 1]`, summing to at most 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) transient: f64,
    pub(crate) poison: f64,
    pub(crate) panic: f64,
}

impl Rates {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("--fail-rate", self.transient),
            ("--poison-rate", self.poison),
            ("--panic-rate", self.panic),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be in [0, 1], got {r}"));
            }
        }
        if self.transient + self.poison + self.panic > 1.0 {
            return Err("the fault rates add up to more than 1".into());
        }
        Ok(())
    }

    /// The fault of message `seq` under `seed`: the same every run.
    pub(crate) fn fault(&self, seed: u64, seq: u64) -> Fault {
        let r = fastrand::Rng::with_seed(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)).f64();
        if r < self.poison {
            Fault::Poison
        } else if r < self.poison + self.transient {
            Fault::Transient
        } else if r < self.poison + self.transient + self.panic {
            Fault::Panic
        } else {
            Fault::None
        }
    }
}

/// The payload of message `seq`: JSON, except for poison.
pub(crate) fn payload(seq: u64, fault: Fault) -> Vec<u8> {
    let kind = match fault {
        Fault::None => "none",
        Fault::Transient => "transient",
        Fault::Panic => "panic",
        Fault::Poison => return format!("\u{1}poison #{seq} {{not json").into_bytes(),
    };
    format!(
        "{{\"seq\":{seq},\"fault\":\"{kind}\",\"amount_cents\":{}}}",
        seq % 10_000
    )
    .into_bytes()
}

#[derive(serde::Deserialize)]
struct Order {
    fault: String,
}

/// The panic message of injected panics (the demo's panic hook keeps them quiet).
pub(crate) const INJECTED_PANIC: &str = "busctl demo: injected panic";

/// `billing`: decodes the order (poison fails here), then fails or panics
/// once as planned.
pub(crate) fn billing(msg: &Message<'_>) -> Result<(), std::io::Error> {
    let order: Order = serde_json::from_slice(&msg.payload)?;
    if msg.attempt == 1 {
        match order.fault.as_str() {
            "transient" => return Err(std::io::ErrorKind::TimedOut.into()),
            "panic" => std::panic::panic_any(INJECTED_PANIC),
            _ => {}
        }
    }
    Ok(())
}

/// `inventory`: its dependency is down while `outage` is set.
pub(crate) fn inventory(
    outage: Arc<AtomicBool>,
) -> impl Fn(&Message<'_>) -> Result<(), std::io::Error> + Send + Sync + 'static {
    move |_msg| {
        if outage.load(Ordering::Relaxed) {
            Err(std::io::ErrorKind::ConnectionRefused.into())
        } else {
            Ok(())
        }
    }
}

/// `reports`: slow, with a small queue, so a burst overflows it.
pub(crate) fn reports(_msg: &Message<'_>) -> Result<(), std::io::Error> {
    std::thread::sleep(std::time::Duration::from_micros(200));
    Ok(())
}

/// Keeps injected panics off stderr (every other panic still prints), and
/// has each panic's report name where it happened (the bus's hook wraps
/// the quiet one).
pub(crate) fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&INJECTED_PANIC) {
            default(info);
        }
    }));
    bus::errors::install_panic_hook();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_plan_is_deterministic_and_close_to_the_rates() {
        let rates = Rates {
            transient: 0.05,
            poison: 0.01,
            panic: 0.005,
        };
        let n = 200_000;
        let poison = (0..n)
            .filter(|&s| rates.fault(1, s) == Fault::Poison)
            .count();
        assert!((1_600..2_400).contains(&poison), "{poison}");
        assert!((0..1000).all(|s| rates.fault(9, s) == rates.fault(9, s)));
    }

    #[test]
    fn poison_payload_does_not_decode_and_others_do() {
        assert!(serde_json::from_slice::<Order>(&payload(3, Fault::Poison)).is_err());
        let o: Order = serde_json::from_slice(&payload(3, Fault::Transient)).unwrap();
        assert_eq!(o.fault, "transient");
    }

    #[test]
    fn rates_are_validated() {
        let bad = Rates {
            transient: 0.7,
            poison: 0.5,
            panic: 0.0,
        };
        assert!(bad.validate().is_err());
        let neg = Rates {
            transient: -0.1,
            poison: 0.0,
            panic: 0.0,
        };
        assert!(neg.validate().unwrap_err().contains("--fail-rate"));
    }
}
