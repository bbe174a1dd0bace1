//! Log output for the binaries: readable text on a terminal, Cloud Logging JSON lines otherwise.
//!
//! Only binaries call [`init`]; library code just emits `tracing` events and spans.
//!
//! Lines go to stderr, or with `--log-file PATH` are appended to that file (opened once, with
//! `O_APPEND`, so several processes and `logrotate`'s `copytruncate` can share it).
//!
//! - Text: `tracing-subscriber`'s default format, with colours only on a terminal.
//! - JSON: one object per line with the fields Cloud Logging (and so Cloud Run)
//!   recognises: `severity` (`DEBUG`/`INFO`/`WARNING`/`ERROR`), `message`, `time`
//!   (RFC 3339, UTC; Cloud Logging reads `timestamp` only as a seconds/nanos object), `logging.googleapis.com/sourceLocation`; plus `target`, the event's own
//!   fields, and `spans` (root first, each with its `name` and fields).
//!
//! Filtering: `--log-severity` applies to gcsfs's own events; dependencies only ever log
//! warnings and errors (unless the severity is stricter). A non-empty `RUST_LOG` replaces the
//! whole filter with its directives.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Text when the log's destination (stderr, or the log file) is a terminal, JSON otherwise
    /// (the default).
    Auto,
    /// Human-readable text.
    Text,
    /// Cloud Logging JSON lines.
    Json,
}

impl LogFormat {
    /// Whether this format writes JSON, given whether the destination is a terminal.
    pub fn is_json(self, destination_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => !destination_is_terminal,
            LogFormat::Text => false,
            LogFormat::Json => true,
        }
    }
}

/// The least severe events that are logged (gcsfuse's names); `off` logs nothing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum Severity {
    /// Everything, including per-operation detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (the default).
    Info,
    /// Something unexpected that gcsfs handled.
    #[value(alias = "warn")]
    Warning,
    /// Failures.
    Error,
    /// Nothing.
    Off,
}

impl Severity {
    /// The filter directives used when `RUST_LOG` is not set: this severity for gcsfs's own
    /// targets, at most warnings for dependencies. fuser's session module is kept to errors:
    /// its one warning, "Failed to umount filesystem", comes whenever the mount was already
    /// taken away from outside (`fusermount3 -u`, `umount`), which is how a mount normally ends.
    pub fn default_directives(self) -> String {
        const QUIET: &str = "fuser::session=error";
        match self {
            Severity::Off => "off".to_owned(),
            Severity::Error => "error".to_owned(),
            Severity::Warning => format!("warn,{QUIET}"),
            Severity::Info => format!("warn,{QUIET},gcsfs=info"),
            Severity::Debug => format!("warn,{QUIET},gcsfs=debug"),
            Severity::Trace => format!("warn,{QUIET},gcsfs=trace"),
        }
    }
}

/// Installs the global subscriber: `format` to stderr, or appended to `log_file` when given,
/// filtered by `RUST_LOG` if it is set and not empty, otherwise by `severity`. Fails if
/// `RUST_LOG` is invalid, the file cannot be opened, or a subscriber is already installed.
pub fn init(format: LogFormat, severity: Severity, log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = build_filter(std::env::var("RUST_LOG").ok().as_deref(), severity)?;
    let subscriber = match log_file {
        None => subscriber(
            format,
            filter,
            std::io::stderr().is_terminal(),
            std::io::stderr,
        ),
        Some(path) => {
            let file =
                open_log_file(path).with_context(|| format!("log file {}", path.display()))?;
            let terminal = file.is_terminal();
            subscriber(format, filter, terminal, Arc::new(file))
        }
    };
    // `try_init` also routes records of crates that use `log` instead of `tracing`.
    subscriber
        .try_init()
        .context("installing the log subscriber")
}

/// Opens `path` for appending, creating it if missing.
pub fn open_log_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The subscriber for `format` writing to `writer`; `terminal` says whether that is a terminal
/// (it decides `auto` and colours).
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    terminal: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    if format.is_json(terminal) {
        Box::new(json_subscriber(filter, writer))
    } else {
        Box::new(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(terminal)
                .finish(),
        )
    }
}

/// The filter: `rust_log`'s directives when given and non-empty, else `severity`'s defaults.
fn build_filter(rust_log: Option<&str>, severity: Severity) -> anyhow::Result<EnvFilter> {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(directives) => EnvFilter::builder()
            .parse(directives)
            // The parse error's Display already includes its source's text.
            .map_err(|e| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {e}")),
        None => Ok(EnvFilter::new(severity.default_directives())),
    }
}

/// A subscriber writing Cloud Logging JSON lines to `writer`.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(JsonFields::new())
        .event_format(CloudLoggingJson)
        .with_writer(writer)
        .finish()
}

/// Cloud Logging's name for a tracing level (it has no TRACE).
pub fn cloud_severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Keys this formatter writes itself; event fields with these names are written as `field.NAME`.
const RESERVED: &[&str] = &[
    "severity",
    "message",
    "time",
    "target",
    "spans",
    "logging.googleapis.com/sourceLocation",
];

/// Formats each event as one JSON object in Cloud Logging's structured-logging shape.
///
/// Span fields are read from the JSON that [`JsonFields`] stores in each span's extensions, so
/// use it as the subscriber's field formatter.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloudLoggingJson;

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldVisitor::default();
        event.record(&mut fields);

        let mut line = Map::new();
        line.insert(
            "severity".into(),
            Value::from(cloud_severity(*meta.level())),
        );
        line.insert(
            "message".into(),
            Value::from(fields.message.take().unwrap_or_default()),
        );
        line.insert(
            "time".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("target".into(), Value::from(meta.target()));
        if let (Some(file), Some(number)) = (meta.file(), meta.line()) {
            // Cloud Logging's SourceLocation has `line` as a string (an int64 in proto JSON).
            let location = serde_json::json!({ "file": file, "line": number.to_string() });
            line.insert("logging.googleapis.com/sourceLocation".into(), location);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut entry = Map::new();
                    entry.insert("name".into(), Value::from(span.name()));
                    let extensions = span.extensions();
                    if let Some(formatted) = extensions.get::<FormattedFields<N>>() {
                        match serde_json::from_str::<Value>(formatted.as_str()) {
                            Ok(Value::Object(map)) => entry.extend(map),
                            _ if formatted.is_empty() => {}
                            _ => {
                                entry.insert("fields".into(), Value::from(formatted.as_str()));
                            }
                        }
                    }
                    Value::Object(entry)
                })
                .collect();
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        for (name, value) in fields.fields {
            let key = if RESERVED.contains(&name.as_str()) {
                format!("field.{name}")
            } else {
                name
            };
            line.insert(key, value);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writer.write_str(&text)?;
        writer.write_char('\n')
    }
}

/// Collects an event's fields as JSON values; `message` separately.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(error_chain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// An error and its sources on one line, `error: cause: cause` (as anyhow's `{:#}`); a cause
/// whose text the line already ends with (an error that prints its source) is not repeated.
/// The one formatter of error chains: log fields, FUSE request failures.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cur = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` that appends everything to a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn capture(severity: Severity, f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let filter = build_filter(None, severity).unwrap();
        let subscriber = json_subscriber(filter, buffer.clone());
        tracing::subscriber::with_default(subscriber, f);
        buffer.lines()
    }

    #[derive(Debug, thiserror::Error)]
    #[error("upload failed")]
    struct Outer(#[source] io::Error);

    #[test]
    fn json_line_has_cloud_logging_fields() {
        let lines = capture(Severity::Info, || {
            let span = tracing::info_span!("flush", inode = 42_u64, key = "a/b.txt");
            let _guard = span.enter();
            tracing::warn!(attempt = 3, ok = false, "retrying {}", "upload");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "retrying upload");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["ok"], false);
        assert!(line.get("level").is_none(), "{line}");
        let timestamp = line["time"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 0, "{timestamp}");
        let location = &line["logging.googleapis.com/sourceLocation"];
        assert!(location["file"].as_str().unwrap().ends_with("logging.rs"));
        assert!(location["line"].as_str().unwrap().parse::<u32>().is_ok());
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0]["name"], "flush");
        assert_eq!(spans[0]["inode"], 42);
        assert_eq!(spans[0]["key"], "a/b.txt");
    }

    #[test]
    fn json_severity_mapping_and_nested_spans() {
        let lines = capture(Severity::Trace, || {
            let outer = tracing::info_span!("mount", bucket = "b");
            let _o = outer.enter();
            let inner = tracing::debug_span!("read");
            let _i = inner.enter();
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
            tracing::warn!("w");
            tracing::error!("e");
        });
        let severities: Vec<&str> = lines
            .iter()
            .map(|l| l["severity"].as_str().unwrap())
            .collect();
        assert_eq!(severities, ["DEBUG", "DEBUG", "INFO", "WARNING", "ERROR"]);
        let names: Vec<&str> = lines[0]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["mount", "read"]);
        assert_eq!(lines[0]["spans"][0]["bucket"], "b");
    }

    #[test]
    fn json_errors_carry_their_chain_and_reserved_names_are_renamed() {
        let lines = capture(Severity::Info, || {
            let err = Outer(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            let e: &(dyn std::error::Error + 'static) = &err;
            tracing::error!(error = e, severity = "fake", "flush failed");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["error"], "upload failed: reset");
        assert_eq!(lines[0]["severity"], "ERROR");
        assert_eq!(lines[0]["field.severity"], "fake");
        assert!(lines[0].get("spans").is_none());
    }

    #[test]
    fn an_error_chain_is_one_line_without_repeats() {
        #[derive(Debug)]
        struct Says(io::Error);
        impl std::fmt::Display for Says {
            // Prints its source itself, as many `thiserror` "{0}" messages do.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "open failed: {}", self.0)
            }
        }
        impl std::error::Error for Says {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(error_chain(&Says(reset())), "open failed: reset");
        assert_eq!(error_chain(&Outer(reset())), "upload failed: reset");
    }

    #[test]
    fn severity_filters_own_events_and_quiets_dependencies() {
        let lines = capture(Severity::Warning, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "shown");

        let lines = capture(Severity::Debug, || {
            tracing::debug!(target: "hyper::proto", "dependency chatter");
            tracing::warn!(target: "hyper::proto", "dependency warning");
            tracing::debug!("own detail");
        });
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["dependency warning", "own detail"]);

        // fuser's warning after an unmount from outside is hidden; its errors are not.
        let lines = capture(Severity::Info, || {
            tracing::warn!(target: "fuser::session", "Failed to umount filesystem");
            tracing::error!(target: "fuser::session", "Unsupported FUSE ABI version");
            tracing::warn!(target: "fuser::reply", "other fuser warning");
        });
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            ["Unsupported FUSE ABI version", "other fuser warning"]
        );

        assert!(capture(Severity::Off, || tracing::error!("nothing")).is_empty());
    }

    #[test]
    fn rust_log_replaces_the_severity() {
        let buffer = Buffer::default();
        let filter = build_filter(Some("hyper=debug"), Severity::Error).unwrap();
        tracing::subscriber::with_default(json_subscriber(filter, buffer.clone()), || {
            tracing::debug!(target: "hyper::proto", "from hyper");
            tracing::error!("own error is not selected by RUST_LOG");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "from hyper");

        // Blank RUST_LOG falls back to the severity.
        let f = build_filter(Some("  "), Severity::Off).unwrap();
        assert_eq!(f.to_string(), "off");
        assert!(build_filter(Some("gcsfs=loud"), Severity::Info).is_err());
    }

    /// Events logged through `subscriber` (as `init` builds it for `--log-file`) to `path`.
    fn log_to_file(path: &Path, format: LogFormat, f: impl FnOnce()) {
        let file = open_log_file(path).unwrap();
        let terminal = file.is_terminal();
        let filter = build_filter(None, Severity::Info).unwrap();
        tracing::subscriber::with_default(subscriber(format, filter, terminal, Arc::new(file)), f);
    }

    #[test]
    fn log_file_is_created_and_appended_to_in_the_same_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gcsfs.log");
        log_to_file(&path, LogFormat::Text, || {
            tracing::warn!(key = "a/b", "first")
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN") && text.contains("first") && text.contains("key=\"a/b\""));
        assert!(!text.contains('\u{1b}'), "no colours in a file: {text:?}");

        // `auto` is JSON in a file (not a terminal); the text line stays.
        log_to_file(&path, LogFormat::Auto, || {
            tracing::info!("second");
            tracing::debug!("below the severity");
        });
        let all = std::fs::read_to_string(&path).unwrap();
        assert!(all.starts_with(&text), "appended, not truncated");
        let json: Vec<Value> = all[text.len()..]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(json.len(), 1, "{all}");
        assert_eq!(json[0]["severity"], "INFO");
        assert_eq!(json[0]["message"], "second");
    }

    #[test]
    fn unopenable_log_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_log_file(&dir.path().join("missing/dir/gcsfs.log")).is_err());
        assert!(open_log_file(dir.path()).is_err(), "a directory");
    }

    #[test]
    fn auto_format_follows_the_terminal() {
        assert!(LogFormat::Auto.is_json(false));
        assert!(!LogFormat::Auto.is_json(true));
        assert!(LogFormat::Json.is_json(true));
        assert!(!LogFormat::Text.is_json(false));
    }
}
