//! The alert sinks the `[alerts]` section configures.

#[cfg(feature = "health")]
use super::{AlertsSection, ConfigError};

#[cfg(feature = "health")]
impl AlertsSection {
    /// The sinks this section configures (none when it is empty).
    pub(crate) fn sinks(
        &self,
    ) -> Result<Vec<std::sync::Arc<dyn bus_health::AlertSink>>, ConfigError> {
        let mut sinks: Vec<std::sync::Arc<dyn bus_health::AlertSink>> = Vec::new();
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::invalid(
                "alerts.timeout",
                "0s",
                "longer than zero",
            ));
        }
        if let Some(command) = &self.command {
            let Some((program, args)) = command.split_first() else {
                return Err(ConfigError::invalid(
                    "alerts.command",
                    "[]",
                    "a program and its arguments",
                ));
            };
            let mut sink = bus_health::CommandAlertSink::new(program, args);
            if let Some(t) = self.timeout {
                sink = sink.with_timeout(t);
            }
            sinks.push(std::sync::Arc::new(sink));
        }
        if let Some(url) = &self.webhook {
            let mut sink = bus_health::WebhookAlertSink::new(url).map_err(|e| {
                ConfigError::invalid("alerts.webhook", format!("{url:?}"), e.to_string())
            })?;
            if let Some(t) = self.timeout {
                sink = sink.with_timeout(t);
            }
            sinks.push(std::sync::Arc::new(sink));
        }
        Ok(sinks)
    }
}
