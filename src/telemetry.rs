//! Logging, set up once. JSON in production, readable text for people; h2, hyper, tower and
//! sqlx are quiet unless asked for. `RUST_LOG` overrides the defaults.
//!
//! Personal data (names, phone numbers, e-mail, civil IDs, free text) is never logged: spans
//! and events carry ticket ids, references, codes and statuses only.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,tonic=info";

/// Installs the global subscriber, writing to stderr. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER);
}

/// Like [`init`], with another default filter (the load tools keep the server they drive
/// quiet, so its per-call lines do not cost what they measure).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
