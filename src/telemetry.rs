//! Logging: one JSON object a line on stdout (or a readable line for people), filtered by
//! `RUST_LOG`. Request-scoped fields come from the [`RequestScope`] `api::middleware` runs each
//! request in.

mod format;
mod scope;
mod stdout;

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

pub use self::{
    format::Lines,
    scope::{RequestId, RequestScope, in_request, record_clerk_id},
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
    let lines = Lines {
        json: format == LogFormat::Json,
    };
    let _ = builder.fmt_fields(lines).event_format(lines).try_init();
}
