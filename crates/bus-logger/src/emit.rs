//! The `tracing` side: every report becomes one event at a level mapped from
//! its severity.

use bus_errors::{ErrorReport, Severity};

/// The target of the logger's own events (a log it cannot write, lines it
/// had to shed).
pub const TRACING_TARGET: &str = "bus_logger";

/// The target of the event each report becomes: one per failed delivery,
/// so a filter can keep them apart from the logger's own complaints
/// (`bus_logger::report=off` silences only them).
pub const REPORT_TARGET: &str = "bus_logger::report";

/// The `tracing` level a report of this severity is emitted at:
/// `CRITICAL` and `HIGH` → `ERROR` (critical ones carry `escalated = true`),
/// `MEDIUM` → `WARN`, `LOW` → `INFO`.
pub fn level_for(severity: Severity) -> tracing::Level {
    match severity {
        Severity::Critical | Severity::High => tracing::Level::ERROR,
        Severity::Medium => tracing::Level::WARN,
        Severity::Low => tracing::Level::INFO,
    }
}

macro_rules! report_event {
    ($level:expr, $r:expr, $escalated:expr) => {
        tracing::event!(
            target: REPORT_TARGET,
            $level,
            report_id = %$r.id,
            message_id = $r.message_id.map(tracing::field::display),
            correlation_id = $r.correlation_id.as_deref(),
            category = $r.category.as_str(),
            severity = $r.severity.as_str(),
            component = $r.component.as_str(),
            topic = $r.topic.as_deref(),
            attempt = $r.attempt,
            escalated = $escalated,
            "{}",
            $r.message
        )
    };
}

/// Emits `report` as one event. Fields: `report_id`, `message_id`,
/// `correlation_id`, `category`, `severity`, `component`, `topic`, `attempt`,
/// `escalated` (true only for `CRITICAL`); the message is the error's message.
pub fn emit(report: &ErrorReport) {
    match report.severity {
        Severity::Critical => report_event!(tracing::Level::ERROR, report, true),
        Severity::High => report_event!(tracing::Level::ERROR, report, false),
        Severity::Medium => report_event!(tracing::Level::WARN, report, false),
        Severity::Low => report_event!(tracing::Level::INFO, report, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_levels() {
        assert_eq!(level_for(Severity::Critical), tracing::Level::ERROR);
        assert_eq!(level_for(Severity::High), tracing::Level::ERROR);
        assert_eq!(level_for(Severity::Medium), tracing::Level::WARN);
        assert_eq!(level_for(Severity::Low), tracing::Level::INFO);
    }
}
