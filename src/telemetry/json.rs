//! The JSON log line (§8), written straight into the formatter's buffer: one object per event with
//! `timestamp`, `level`, `message`, the event's fields, `target`, and the current span as `span`
//! (its fields and `name`). A span's fields are kept as a ready JSON fragment, so recording a field
//! later (`clerk_id`) appends to it instead of parsing and re-serializing, and no event builds a
//! `serde_json::Value`. The shape is the one tracing-subscriber's `json()` format prints.

use std::fmt::{self, Write};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    field::{RecordFields, Visit},
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

/// Formats events and span fields as JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, time::OffsetDateTime::now_utc())?;
        write!(w, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields::new(&mut w, false);
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_str(&mut w, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.write_str(",\"span\":{")?;
            let ext = span.extensions();
            if let Some(f) = ext
                .get::<FormattedFields<N>>()
                .filter(|f| !f.fields.is_empty())
            {
                w.write_str(&f.fields)?;
                w.write_char(',')?;
            }
            w.write_str("\"name\":")?;
            write_str(&mut w, span.name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

impl<'w> FormatFields<'w> for JsonLines {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Fields::new(&mut w, true);
        fields.record(&mut v);
        v.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut w = current.as_writer();
        let mut v = Fields::new(&mut w, first);
        fields.record(&mut v);
        v.result
    }
}

/// Writes `"name":value` pairs, separated by commas; the first one gets a comma too unless
/// `first` says it opens the list.
struct Fields<'a, W> {
    w: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Fields<'a, W> {
    fn new(w: &'a mut W, first: bool) -> Self {
        Self {
            w,
            first,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(',')?;
        }
        write_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        if value.is_finite() {
            self.pair(field, |w| write!(w, "{value}"));
        } else {
            self.pair(field, |w| w.write_str("null"));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |w| write!(w, "{value}"));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.pair(field, |w| write!(w, "{value}"));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.pair(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |w| write!(w, "{value}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |w| write_str(w, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |w| {
            w.write_char('"')?;
            write!(Escape(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON string literal.
fn write_str<W: Write + ?Sized>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string (RFC 8259 §7).
struct Escape<'a, W: ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// RFC 3339 in UTC with microseconds, as `2026-11-26T10:48:39.362639Z`.
fn write_timestamp(w: &mut impl Write, t: time::OffsetDateTime) -> fmt::Result {
    write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, s).unwrap();
        out
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nbreak\r\t",
            "\u{0}\u{1f}",
            "ä ✓ 🦀",
            "",
        ] {
            let json = escaped(s);
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), s, "{json}");
        }
        assert_eq!(escaped("a\u{1}b"), "\"a\\u0001b\"");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = time::Date::from_calendar_date(2026, time::Month::January, 2)
            .unwrap()
            .with_hms_micro(3, 4, 5, 6)
            .unwrap()
            .assume_utc();
        let mut out = String::new();
        write_timestamp(&mut out, t).unwrap();
        assert_eq!(out, "2026-01-02T03:04:05.000006Z");
    }
}
