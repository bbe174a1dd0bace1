//! Log lines fit for Cloud Logging: one JSON object per line with `severity`, `message`, `time`,
//! `target` and the event's fields at the top level.
//!
//! tracing-subscriber's own JSON format names the level `level`, which Cloud Logging ignores; this
//! formatter plugs into `tracing_subscriber::fmt` and writes `severity` instead (`WARN` → `WARNING`,
//! `TRACE` → `DEBUG`). Spans are not written: the app has none.

use std::fmt;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter: `tracing_subscriber::fmt().event_format(CloudLogging)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloudLogging;

/// Cloud Logging's name for a tracing level.
pub fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldsToJson(Map::new());
        event.record(&mut fields);
        let mut line = fields.0;
        line.entry("message").or_insert_with(|| Value::from(""));
        line.insert("severity".into(), severity(*meta.level()).into());
        line.insert(
            "time".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Nanos, true)
                .into(),
        );
        line.insert("target".into(), meta.target().into());
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields into a JSON object, keeping numbers and booleans typed.
struct FieldsToJson(Map<String, Value>);

impl Visit for FieldsToJson {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = crate::error::error_chain(value);
        self.0.insert(field.name().into(), text.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::lines_of;
    use std::io;

    #[test]
    fn one_json_object_per_event_with_severity_message_and_fields() {
        let lines = lines_of(|| {
            tracing::info!(status = 200u16, latency_ms = 1.5, uri = "/create", "served");
            tracing::warn!(retry = true, "careful");
            tracing::trace!("fine detail");
        });
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["severity"], "INFO");
        assert_eq!(lines[0]["message"], "served");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["latency_ms"], 1.5);
        assert_eq!(lines[0]["uri"], "/create");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["severity"], "WARNING");
        assert_eq!(lines[1]["retry"], true);
        assert_eq!(lines[2]["severity"], "DEBUG");
    }

    #[test]
    fn errors_are_written_with_their_causes() {
        let err = crate::error::CreateError::Open {
            path: "/x/y".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        let lines = lines_of(|| {
            tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
        });
        assert_eq!(lines[0]["severity"], "ERROR");
        assert_eq!(lines[0]["error"], "could not create file /x/y: gone");
    }
}
