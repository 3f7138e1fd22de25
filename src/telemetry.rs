//! Logging (§8): one JSON object a line on stdout (or a readable format for people), filtered by
//! `RUST_LOG`. Request-scoped fields come from the span opened in `api::middleware`.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::settings::LogFormat;

/// Install the global subscriber. `writer` is stdout in the binary and a capture in the tests.
pub fn init<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .try_init(),
        LogFormat::Pretty => builder.with_target(true).try_init(),
    };
}
