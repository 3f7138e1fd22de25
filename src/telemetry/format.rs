//! The log line, built in a buffer of the thread's and handed to the subscriber in one piece.
//! `json`: one object per event with `timestamp`, `level`, `message`, the event's fields, `target`,
//! and `span`: the request the line belongs to (`scope`), or else the current tracing span, as its
//! fields and `name`; inside a request, the tracing spans entered there follow as `spans`.
//! `pretty`: the same on one readable line. A span's fields are kept as a ready fragment, so
//! recording a field later appends to it; no event builds a `serde_json::Value`.

use std::{
    cell::{Cell, RefCell},
    fmt::{self, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    field::{RecordFields, Visit},
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

use super::scope::{self, RequestScope};

/// Formats events and span fields as JSON lines (`json: true`) or readable text.
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
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
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        // The line is built in a buffer of this thread's, where every write is a direct push,
        // and handed over in one piece: the `Writer` is a `dyn Write`, and a virtual call per
        // character and piece was most of a line's cost. A field's `Debug` that logs itself finds
        // the buffer taken and gets one of its own.
        LINE.with(|cell| {
            let mut held = cell.try_borrow_mut().ok();
            let mut own = String::new();
            let line = match held.as_deref_mut() {
                Some(line) => {
                    line.clear();
                    line
                }
                None => &mut own,
            };
            self.format_line(ctx, line, event)?;
            w.write_str(line)
        })
    }
}

impl Lines {
    fn format_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        w: &mut String,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let meta = event.metadata();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if self.json {
            w.push_str("{\"timestamp\":\"");
            write_timestamp(w, now)?;
            w.push_str("\",\"level\":\"");
            w.push_str(meta.level().as_str());
            w.push('"');
        } else {
            write_timestamp(w, now)?;
            write!(w, " {:>5} {}:", meta.level(), meta.target())?;
        }
        let mut fields = Fields::new(w, self.json, false);
        event.record(&mut fields);
        fields.result?;
        if self.json {
            w.push_str(",\"target\":");
            write_str(w, meta.target())?;
        }
        let in_request = scope::with_current(|s| self.write_scope(w, s)).transpose()?;
        if in_request.is_some() {
            // A span entered inside the request (`#[instrument]`) keeps its fields too, as `spans`,
            // from the outermost in.
            if let Some(spans) = ctx.event_scope() {
                if self.json {
                    w.push_str(",\"spans\":[");
                }
                for (i, span) in spans.from_root().enumerate() {
                    if self.json && i > 0 {
                        w.push(',');
                    }
                    self.write_span::<S, N>(w, &span)?;
                }
                if self.json {
                    w.push(']');
                }
            }
        } else if let Some(span) = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
        {
            if self.json {
                w.push_str(",\"span\":");
            }
            self.write_span::<S, N>(w, &span)?;
        }
        w.push_str(if self.json { "}\n" } else { "\n" });
        Ok(())
    }

    /// One tracing span: `{fields…,"name":…}` in JSON, ` name{fields}` in text.
    fn write_span<S, N>(
        &self,
        w: &mut String,
        span: &tracing_subscriber::registry::SpanRef<'_, S>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let ext = span.extensions();
        let fields = ext
            .get::<FormattedFields<N>>()
            .map_or("", |f| f.fields.as_str());
        if self.json {
            w.write_char('{')?;
            if !fields.is_empty() {
                w.write_str(fields)?;
                w.write_char(',')?;
            }
            w.write_str("\"name\":")?;
            write_str(w, span.name())?;
            w.write_char('}')
        } else {
            write!(w, " {}{{{}}}", span.name(), fields.trim_start())
        }
    }

    fn write_scope(&self, w: &mut String, s: &RequestScope) -> fmt::Result {
        if self.json {
            // The keys as literals, written whole: only the values can need escaping.
            w.push_str(",\"span\":{\"request_id\":");
            write_str(w, s.request_id.as_str())?;
            w.push_str(",\"method\":");
            write_str(w, &s.method)?;
            w.push_str(",\"path\":");
            write_str(w, &s.path)?;
            if let Some(clerk_id) = s.clerk_id() {
                w.push_str(",\"clerk_id\":");
                write_str(w, clerk_id)?;
            }
            w.push_str(",\"name\":\"request\"}");
            return Ok(());
        }
        let pairs = [
            ("request_id", Some(s.request_id.as_str())),
            ("method", Some(s.method.as_ref())),
            ("path", Some(s.path.as_str())),
            ("clerk_id", s.clerk_id()),
        ];
        w.write_str(" request{")?;
        for (i, (key, value)) in pairs.into_iter().enumerate() {
            if let Some(value) = value {
                write!(w, "{}{key}={value}", if i == 0 { "" } else { " " })?;
            }
        }
        w.write_char('}')
    }
}

impl<'w> FormatFields<'w> for Lines {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Fields::new(&mut w, self.json, true);
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
        let mut v = Fields::new(&mut w, self.json, first);
        fields.record(&mut v);
        v.result
    }
}

/// Writes fields: `"name":value` pairs separated by commas (JSON), or ` name=value` (text, where
/// the message comes bare). The first JSON pair gets a comma too unless `first` says it opens the
/// list.
struct Fields<'a, W> {
    w: &'a mut W,
    json: bool,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Fields<'a, W> {
    fn new(w: &'a mut W, json: bool, first: bool) -> Self {
        Self {
            w,
            json,
            first,
            result: Ok(()),
        }
    }

    /// `value` writes the value as JSON (a string in quotes) or, for text, as it reads.
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut W, bool) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let first = std::mem::take(&mut self.first);
        self.result = (|| {
            if self.json {
                if !first {
                    self.w.write_char(',')?;
                }
                write_str(self.w, field.name())?;
                self.w.write_char(':')?;
            } else if field.name() == "message" {
                self.w.write_char(' ')?;
            } else {
                write!(self.w, " {}=", field.name())?;
            }
            value(self.w, self.json)
        })();
    }

    fn plain(&mut self, field: &Field, value: impl fmt::Display) {
        self.pair(field, |w, _| write!(w, "{value}"));
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if let Some(thousandths) = exact_thousandths(value) {
            // Latencies in ms with three decimals: integer digits print several times faster.
            self.pair(field, |w, _| write_thousandths(w, thousandths));
        } else if value.is_finite() || !self.json {
            self.plain(field, value);
        } else {
            // JSON has no NaN or infinity.
            self.plain(field, "null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // A status on every access-log line: digits without the formatting machinery.
        self.pair(field, |w, _| {
            w.write_str(format_digits(&mut [0; 20], value, 1))
        });
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.plain(field, value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.plain(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |w, json| {
            if json {
                write_str(w, value)
            } else {
                w.write_str(value)
            }
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |w, json| {
            if json {
                w.write_char('"')?;
                write!(Escape(w), "{value:?}")?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
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
        // Most text needs no escape: one pass that the compiler vectorizes, then one write.
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(s);
        }
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

/// `value` as a whole number of thousandths, when it is exactly that (as `f64` goes) and small.
fn exact_thousandths(value: f64) -> Option<i64> {
    if !(value.is_finite() && value.abs() < 1e12) {
        return None;
    }
    let n = (value * 1000.0).round();
    (n / 1000.0 == value).then_some(n as i64)
}

/// What `{}` prints for `n / 1000.0`: `0.468`, `12.5`, `3`, `-0.001`.
fn write_thousandths(w: &mut impl Write, n: i64) -> fmt::Result {
    if n < 0 {
        w.write_char('-')?;
    }
    let n = n.unsigned_abs();
    let (whole, mut frac) = (n / 1000, n % 1000);
    let mut digits = [0u8; 20];
    let whole = format_digits(&mut digits, whole, 1);
    w.write_str(whole)?;
    if frac > 0 {
        let mut width = 3;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        w.write_char('.')?;
        w.write_str(format_digits(&mut digits, frac, width))?;
    }
    Ok(())
}

/// `n` in decimal, at least `width` digits (zero-padded), in `buf`.
fn format_digits(buf: &mut [u8; 20], mut n: u64, width: usize) -> &str {
    let mut at = buf.len();
    while n > 0 || buf.len() - at < width {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// RFC 3339 in UTC with microseconds, as `2026-11-26T10:48:39.362639Z`, for `since` the Unix
/// epoch. The part up to the second is made once a second per thread: working out the calendar
/// date on every line was a quarter of the line's cost.
fn write_timestamp(w: &mut impl Write, since: Duration) -> fmt::Result {
    thread_local! {
        /// The last second written, and its `2026-11-26T10:48:39.`
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    let (at, mut prefix) = SECOND.get();
    if at != secs {
        prefix = second_prefix(secs);
        SECOND.set((secs, prefix));
    }
    w.write_str(std::str::from_utf8(&prefix).unwrap_or("0000-00-00T00:00:00."))?;
    w.write_str(format_digits(&mut [0; 20], u64::from(micros), 6))?;
    w.write_char('Z')
}

/// `2026-11-26T10:48:39.` for a second since the Unix epoch.
fn second_prefix(secs: u64) -> [u8; 20] {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = [0u8; 20];
    let mut at = 0;
    let mut buf = [0u8; 20];
    for (n, width, then) in [
        (t.year().max(0) as u64, 4, b'-'),
        (u64::from(u8::from(t.month())), 2, b'-'),
        (u64::from(t.day()), 2, b'T'),
        (u64::from(t.hour()), 2, b':'),
        (u64::from(t.minute()), 2, b':'),
        (u64::from(t.second()), 2, b'.'),
    ] {
        let digits = format_digits(&mut buf, n, width).as_bytes();
        // A year past 9999 would not fit; RFC 3339 has four digits for it.
        let digits = &digits[digits.len().saturating_sub(width)..];
        out[at..at + width].copy_from_slice(digits);
        out[at + width] = then;
        at += width + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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
    fn thousandths_print_as_display_would() {
        for v in [
            0.0,
            0.468,
            12.5,
            3.0,
            1.001,
            0.001,
            999.999,
            123_456.78,
            -0.25,
            1e9 + 0.125,
        ] {
            let n = exact_thousandths(v).unwrap();
            let mut out = String::new();
            write_thousandths(&mut out, n).unwrap();
            assert_eq!(out, v.to_string());
        }
        for v in [0.0001, 1.0 / 3.0, f64::NAN, f64::INFINITY, 1e13] {
            assert_eq!(exact_thousandths(v), None, "{v}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |text: &str| {
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            Duration::from_nanos(u64::try_from(t.unix_timestamp_nanos()).unwrap())
        };
        let mut out = String::new();
        // Within one second the thread's prefix is reused; the next second makes a new one.
        for text in [
            "2026-01-02T03:04:05.000006Z",
            "2026-01-02T03:04:05.999999Z",
            "2026-01-02T03:04:06.000000Z",
            "1999-12-31T23:59:59.123456Z",
            "2026-01-02T03:04:05.500000Z",
        ] {
            out.clear();
            write_timestamp(&mut out, at(text)).unwrap();
            assert_eq!(out, text);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `log` writes in the given format, inside and outside a request.
    fn lines(json: bool) -> Vec<String> {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(Lines { json })
            .event_format(Lines { json })
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 3, ok = true, ratio = 0.5, text = "a \"b\"", "outside");
            let scope = scope::RequestScope::new("req-1", "GET", "/users/me".into());
            runtime.block_on(scope::in_request(scope, async {
                tracing::warn!("before auth");
                scope::record_clerk_id("user_1");
                tracing::info!(status = 200u16, "request finished");
                let inner = tracing::info_span!("lookup", table = "users");
                inner.in_scope(|| tracing::info!("inside a span in a request"));
            }));
            let span = tracing::info_span!("job", id = 7);
            span.in_scope(|| tracing::info!(nan = f64::NAN, "in a span"));
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_carry_the_request_or_the_span() {
        let lines: Vec<serde_json::Value> = lines(true)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 5);
        let outside = &lines[0];
        assert_eq!(outside["message"], "outside");
        assert_eq!(outside["level"], "INFO");
        assert_eq!(outside["target"], module_path!());
        assert_eq!(
            (&outside["n"], &outside["ok"], &outside["ratio"]),
            (&3.into(), &true.into(), &0.5.into())
        );
        assert_eq!(outside["text"], "a \"b\"");
        assert!(outside.get("span").is_none());
        assert!(
            time::OffsetDateTime::parse(
                outside["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        let before = &lines[1]["span"];
        assert_eq!(before["request_id"], "req-1");
        assert_eq!(
            (&before["method"], &before["path"]),
            (&"GET".into(), &"/users/me".into())
        );
        assert!(before.get("clerk_id").is_none());
        assert!(lines[1].get("spans").is_none());
        assert_eq!(lines[2]["span"]["clerk_id"], "user_1");
        assert_eq!(lines[2]["status"], 200);
        assert_eq!(lines[3]["span"]["request_id"], "req-1");
        assert_eq!(
            lines[3]["spans"],
            serde_json::json!([{"table": "users", "name": "lookup"}])
        );
        assert_eq!(
            lines[4]["span"],
            serde_json::json!({"id": 7, "name": "job"})
        );
        assert_eq!(lines[4]["nan"], serde_json::Value::Null);
    }

    #[test]
    fn pretty_lines_read_the_same_on_one_line() {
        let lines = lines(false);
        assert_eq!(lines.len(), 5);
        assert!(
            lines[0].ends_with(&format!(
                " INFO {}: outside n=3 ok=true ratio=0.5 text=a \"b\"",
                module_path!()
            )),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(" WARN ")
                && lines[1]
                    .ends_with(": before auth request{request_id=req-1 method=GET path=/users/me}"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(
                "status=200 request{request_id=req-1 method=GET path=/users/me clerk_id=user_1}"
            ),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].ends_with(
                "inside a span in a request request{request_id=req-1 method=GET path=/users/me \
                 clerk_id=user_1} lookup{table=users}"
            ),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].ends_with("in a span nan=NaN job{id=7}"),
            "{}",
            lines[4]
        );
    }
}
