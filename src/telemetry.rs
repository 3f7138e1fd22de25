//! Logging (§8): one JSON object a line on stdout (or a readable format for people), filtered by
//! `RUST_LOG`. Request-scoped fields come from the span opened in `api::middleware`.

mod json;
mod stdout;

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

pub use self::{
    json::JsonLines,
    stdout::{Batched, BatchedStdout, FlushOnDrop, batched_stdout},
};
use crate::settings::LogFormat;

/// Install the global subscriber. `writer` is [`batched_stdout`] in the binaries and a capture in
/// the tests.
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
            .fmt_fields(JsonLines)
            .event_format(JsonLines)
            .try_init(),
        LogFormat::Pretty => builder.with_target(true).try_init(),
    };
}
