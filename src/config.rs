//! Configuration: command-line flags, then environment variables, then an optional TOML file,
//! then defaults a newcomer can use (127.0.0.1:50051, SQLite under `./data/`).
//!
//! No secret lives here or in the repository; later parts (the national platform's client
//! secret) are read from the environment or a file named here.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/balagh.db";

/// Everything `balagh serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The admin HTTP port: /metrics, /livez, /readyz.
    pub admin_listen: SocketAddr,
    pub database_url: String,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub store: StoreTuning,
    /// How long a request id's first answer is kept for replay (at least 24 h).
    pub request_id_retention: Duration,
    pub watch: WatchConfig,
}

/// WatchTickets streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// How long the change feed keeps changes a stream can resume from, in days (at least 7).
    pub retention_days: u64,
    /// An idle stream gets a heartbeat this often, in seconds.
    pub heartbeat_seconds: u64,
    /// A stream whose client stops reading for this long is ended, in seconds.
    pub send_timeout_seconds: u64,
    /// Messages buffered per stream.
    pub stream_buffer: usize,
    /// Most tickets a snapshot may hold.
    pub max_snapshot_tickets: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            retention_days: 7,
            heartbeat_seconds: 30,
            send_timeout_seconds: 10,
            stream_buffer: 256,
            max_snapshot_tickets: 10_000,
        }
    }
}

impl WatchConfig {
    pub fn settings(&self) -> crate::grpc::watch::WatchSettings {
        crate::grpc::watch::WatchSettings {
            heartbeat_interval: Duration::from_secs(self.heartbeat_seconds.max(1)),
            send_timeout: Duration::from_secs(self.send_timeout_seconds.max(1)),
            stream_buffer: self.stream_buffer.max(1),
            max_snapshot_tickets: self.max_snapshot_tickets,
            ..Default::default()
        }
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days * 24 * 3600)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for production log collectors.
    Json,
}

/// Protection of the server from oversized or endless requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Deadline for a unary call when the client sets none, in seconds.
    pub request_timeout_seconds: u64,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval, in seconds.
    pub http2_keepalive_interval_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            request_timeout_seconds: 30,
            max_concurrent_streams: 256,
            http2_keepalive_interval_seconds: 30,
        }
    }
}

/// Tuning of the embedded store's group commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreTuning {
    pub max_batch: usize,
    pub queue_depth: usize,
    pub readers: u32,
}

impl Default for StoreTuning {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue_depth: 4096,
            readers: 4,
        }
    }
}

/// The optional TOML file (`--config`). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub request_id_retention_hours: Option<u64>,
    pub limits: Limits,
    pub store: StoreTuning,
    pub watch: WatchConfig,
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "BALAGH_LISTEN")]
    pub listen: Option<String>,
    /// Address of the admin HTTP port (/metrics, /livez, /readyz).
    #[arg(long, env = "BALAGH_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Database URL: sqlite://PATH (embedded) or postgres://USER@HOST/DB.
    #[arg(long, env = "BALAGH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML file with the remaining settings (see docs/operations.md).
    #[arg(long, env = "BALAGH_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "BALAGH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen.parse().with_context(|| {
            format!("--listen {listen:?} is not an address like 127.0.0.1:50051")
        })?;
        let admin_listen = args
            .admin_listen
            .clone()
            .or(file.admin_listen)
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
        let admin_listen = admin_listen.parse().with_context(|| {
            format!("--admin-listen {admin_listen:?} is not an address like 127.0.0.1:9464")
        })?;
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            anyhow::bail!("--database-url must be a sqlite:// or postgres:// URL");
        }
        let retention_hours = file.request_id_retention_hours.unwrap_or(48);
        if retention_hours < 24 {
            anyhow::bail!("request_id_retention_hours must be at least 24");
        }
        if file.watch.retention_days < 7 {
            anyhow::bail!("watch.retention_days must be at least 7");
        }
        Ok(Self {
            listen,
            admin_listen,
            database_url,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            limits: file.limits,
            store: file.store,
            request_id_retention: Duration::from_secs(retention_hours * 3600),
            watch: file.watch,
        })
    }

    /// A configuration for tests: port 0 on loopback and the given database.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            admin_listen: "127.0.0.1:0".parse().expect("literal address"),
            database_url: database_url.into(),
            log_format: LogFormat::Text,
            limits: Limits::default(),
            store: StoreTuning::default(),
            request_id_retention: Duration::from_secs(48 * 3600),
            watch: WatchConfig::default(),
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
