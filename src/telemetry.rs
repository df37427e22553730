//! Logging: JSON lines by default (one object per event, for log pipelines), text for humans.
//! `JWTGATE_LOG_FORMAT` (`json`/`text`) and `RUST_LOG` override the config file.
//!
//! Nothing a client sends can forge a log line or put a control character into the log: every
//! client-controlled string reaches a log field only as [`crate::error::LogSafe`] (the one
//! sanitising path, which escapes everything but visible ASCII and spaces), the JSON format
//! escapes what it writes anyway, and the text format writes ANSI colours only to a terminal.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The format to use: the environment wins over the config file.
pub fn format_from_env(configured: LogFormat) -> LogFormat {
    match std::env::var("JWTGATE_LOG_FORMAT").as_deref() {
        Ok("text") => LogFormat::Text,
        Ok("json") => LogFormat::Json,
        _ => configured,
    }
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
