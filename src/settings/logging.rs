//! The kinds of the logging keys: the line format and the tracing filter. (The keys are fields of
//! `Settings` and of `MigrateSettings`, which logs too.)

use super::kinds::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Kind for LogFormat {
    type Value = Self;

    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// A `tracing_subscriber::EnvFilter` directive, such as `info,clerk_users=debug`.
pub struct Filter;

impl Kind for Filter {
    type Value = String;

    fn parse(text: &str) -> Result<String, String> {
        tracing_subscriber::EnvFilter::try_new(text)
            .map_err(|e| format!("not a tracing filter ({e})"))?;
        Ok(text.to_string())
    }
}
