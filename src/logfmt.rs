//! The lines of `--log.format logfmt`, one per event, as Prometheus' own exporters write them
//! (go-kit's `ts` and `msg`, milliseconds):
//!
//! ```text
//! ts=2026-11-27T15:11:25.683Z level=warn msg="refresh failed" integration=payer reason=access_denied ...
//! ```
//!
//! The exporter's own lines carry no `target`: their message says what they are. Other crates'
//! lines (the AWS SDK's and hyper's, at debug level) name theirs (`target=aws_smithy_runtime::...`)
//! and their spans' fields. A value is quoted when it is empty or holds a space, `=`, `"` or a
//! control character; in quotes, `"` and `\` are escaped with a backslash and control
//! characters as `\n`, `\r`, `\t` or `\u{..}`.
//!
//! [`head_len`] and [`entry_len`] say how many characters a line will have, so that a refresh
//! failure can be told within the refresh's `MAX_LOG_LINE`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The target (module path) of the exporter's own events.
pub const OWN_TARGET: &str = "aws_cost_exporter";

/// The characters of a timestamp: `2026-11-27T15:11:25.683Z`.
pub const TIMESTAMP_LEN: usize = 24;

/// The event and field formatter of `--log.format logfmt`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logfmt;

/// Whether `target` is one of the exporter's own modules.
pub fn is_own(target: &str) -> bool {
    target
        .strip_prefix(OWN_TARGET)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// The level as written.
pub fn level_str(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Whether a value is written in quotes.
pub fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value
            .chars()
            .any(|c| c <= ' ' || c == '=' || c == '"' || c.is_control())
}

/// How many characters `c` takes inside a quoted value.
pub fn quoted_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' => 2,
        c if c.is_control() => format!("\\u{{{:x}}}", u32::from(c)).len(),
        _ => 1,
    }
}

/// How many characters `value` takes as written.
pub fn value_len(value: &str) -> usize {
    if needs_quotes(value) {
        2 + value.chars().map(quoted_char_len).sum::<usize>()
    } else {
        value.chars().count()
    }
}

/// How many characters ` key=value` takes (with the space before it).
pub fn entry_len(key: &str, value: &str) -> usize {
    1 + key.chars().count() + 1 + value_len(value)
}

/// How many characters an own event's `ts=... level=... msg=...` takes.
pub fn head_len(level: Level, message: &str) -> usize {
    "ts=".len() + TIMESTAMP_LEN + entry_len("level", level_str(level)) + entry_len("msg", message)
}

fn push_value(line: &mut String, value: &str) {
    if !needs_quotes(value) {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// ` key=value`; a key's characters that would break the line are left out.
fn push_entry(line: &mut String, key: &str, value: &str) {
    line.push(' ');
    line.extend(
        key.chars()
            .filter(|&c| !(c <= ' ' || c == '=' || c == '"' || c.is_control())),
    );
    line.push('=');
    push_value(line, value);
}

/// Gathers an event's message (`msg`) and its other fields, in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" if self.message.is_none() => self.message = Some(value),
            name => push_entry(&mut self.rest, name, &value),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, value.to_string());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
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
        let metadata = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("ts=");
        let _ = write!(
            line,
            "{}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        push_entry(&mut line, "level", level_str(*metadata.level()));
        let own = is_own(metadata.target());
        if !own {
            push_entry(&mut line, "target", metadata.target());
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(message) = &fields.message {
            push_entry(&mut line, "msg", message);
        }
        line.push_str(&fields.rest);
        if let Some(scope) = ctx.event_scope() {
            let mut spans = scope.from_root().peekable();
            while let Some(span) = spans.next() {
                if spans.peek().is_none() {
                    push_entry(&mut line, "span", span.name());
                }
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && !formatted.is_empty()
                {
                    line.push(' ');
                    line.push_str(formatted);
                }
            }
        }
        line.push('\n');
        writer.write_str(&line)
    }
}

/// Spans' fields, as ` key=value` entries without the first space.
impl<'writer> FormatFields<'writer> for Logfmt {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut gathered = Fields::default();
        fields.record(&mut gathered);
        let mut text = String::new();
        if let Some(message) = &gathered.message {
            push_entry(&mut text, "message", message);
        }
        text.push_str(&gathered.rest);
        writer.write_str(text.trim_start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Every line the closure logs, through [`Logfmt`].
    fn logged(log: impl FnOnce()) -> Vec<String> {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .event_format(Logfmt)
            .fmt_fields(Logfmt)
            .with_writer(move || Sink(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line without its timestamp, which must have the documented form.
    fn untimed(line: &str) -> &str {
        let ts = line.strip_prefix("ts=").expect("ts first");
        let (stamp, rest) = ts.split_at(TIMESTAMP_LEN);
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
            "{stamp}"
        );
        assert_eq!(stamp.as_bytes()[19], b'.', "{stamp}");
        rest
    }

    #[test]
    fn own_lines_have_no_target_and_say_msg() {
        let lines = logged(|| {
            tracing::warn!(
                target: "aws_cost_exporter::refresh",
                integration = %"payer",
                duration_seconds = 0.032,
                requests = 1u64,
                ok = false,
                error = %"GetCostAndUsage: AccessDeniedException: \"quoted\" \\ x=1\n",
                "refresh failed"
            );
            tracing::info!(target: "aws_cost_exporter", address = %"127.0.0.1:10067", "listening");
        });
        assert_eq!(
            untimed(&lines[0]),
            " level=warn msg=\"refresh failed\" integration=payer duration_seconds=0.032 \
             requests=1 ok=false error=\"GetCostAndUsage: AccessDeniedException: \\\"quoted\\\" \
             \\\\ x=1\\n\""
        );
        assert_eq!(
            untimed(&lines[1]),
            " level=info msg=listening address=127.0.0.1:10067"
        );
    }

    #[test]
    fn other_crates_lines_name_their_target_and_spans() {
        let lines = logged(|| {
            let span = tracing::debug_span!(target: "aws_smithy_runtime", "invoke", operation = "GetCostAndUsage");
            let _entered = span.enter();
            tracing::debug!(target: "aws_smithy_runtime::client", attempt = 1u64, "sending");
            tracing::debug!(target: "aws_cost_exporter_other", "not ours");
        });
        assert_eq!(
            untimed(&lines[0]),
            " level=debug target=aws_smithy_runtime::client msg=sending attempt=1 span=invoke \
             operation=GetCostAndUsage"
        );
        assert!(
            untimed(&lines[1]).starts_with(" level=debug target=aws_cost_exporter_other "),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn the_predicted_length_is_the_written_length() {
        let values = [
            "payer",
            "with space",
            "",
            "quote\"and\\back",
            "tab\tnew\nline\u{1}",
            "élan…",
        ];
        for value in values {
            let lines = logged(|| {
                tracing::warn!(target: "aws_cost_exporter::refresh", integration = %value, "refresh failed");
            });
            let predicted =
                head_len(Level::WARN, "refresh failed") + entry_len("integration", value);
            assert_eq!(lines[0].chars().count(), predicted, "{}", lines[0]);
        }
    }
}
