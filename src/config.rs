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
    pub platform: PlatformMode,
    /// How the sync worker reads the platform's change feed.
    pub pull: crate::sync::pull::PullSettings,
    pub sla: SlaSchedulerConfig,
    /// The satisfaction survey policy, validated.
    pub satisfaction: crate::domain::satisfaction::SurveyPolicy,
    /// The parts of the service this process runs.
    pub components: Components,
    /// The sync worker's lease and concurrency.
    pub sync: SyncConfig,
    /// How callers authenticate; `None` runs open, which only a loopback address allows.
    pub auth: Option<crate::auth::layer::Authenticator>,
    /// TLS on the gRPC port (and mutual TLS when it names a client CA).
    pub tls: Option<crate::auth::tls::TlsConfig>,
    /// The retention of reporters' personal data.
    pub privacy: PrivacyConfig,
    /// Where traces are exported over OTLP; `None` when no endpoint is configured (then no
    /// span leaves the process).
    pub traces: Option<TraceExportConfig>,
}

/// `[telemetry]` of the config file: OpenTelemetry trace export (docs/operations.md, "Traces").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://collector:4318`); traces go to
    /// `<endpoint>/v1/traces`. None: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of every exported span.
    pub service_name: String,
    /// The share of traces started here that are exported, 0.0 to 1.0. A call that arrives
    /// with a `traceparent` follows its caller's decision instead.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "balagh".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// Trace export, resolved and checked: the collector's traces URL, the service's name and the
/// sampling ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExportConfig {
    traces_url: String,
    service_name: String,
    sample_ratio: f64,
}

impl TraceExportConfig {
    /// `endpoint` is the collector's base URL, an http(s) URL without credentials (a collector
    /// that wants them gets them from `OTEL_EXPORTER_OTLP_HEADERS`, never from a URL that
    /// could be logged). `setting` names where the endpoint came from, for the error.
    pub fn new(
        endpoint: &str,
        setting: &str,
        service_name: &str,
        sample_ratio: f64,
    ) -> anyhow::Result<Self> {
        let uri: http::Uri = endpoint
            .parse()
            .with_context(|| format!("{setting} {endpoint:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            anyhow::bail!(
                "{setting} must be an http:// or https:// URL like http://collector:4318, not {endpoint:?}"
            );
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            anyhow::bail!(
                "{setting} must not hold credentials: set OTEL_EXPORTER_OTLP_HEADERS instead"
            );
        }
        if uri.query().is_some() {
            anyhow::bail!("{setting} must not have a query string: {endpoint:?}");
        }
        check_service_and_ratio(service_name, sample_ratio)?;
        Ok(Self {
            traces_url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            service_name: service_name.to_owned(),
            sample_ratio,
        })
    }

    /// Where spans are posted: `<endpoint>/v1/traces`.
    pub fn traces_url(&self) -> &str {
        &self.traces_url
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio
    }
}

fn check_service_and_ratio(service_name: &str, sample_ratio: f64) -> anyhow::Result<()> {
    if service_name.trim().is_empty() {
        anyhow::bail!("telemetry.service_name must not be empty");
    }
    if !(0.0..=1.0).contains(&sample_ratio) {
        anyhow::bail!("telemetry.sample_ratio must be from 0.0 to 1.0, not {sample_ratio}");
    }
    Ok(())
}

/// Trace export from the flag (or `BALAGH_OTLP_ENDPOINT`), else the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `[telemetry] otlp_endpoint`; `None` when none is set
/// (an empty value counts as unset, as OpenTelemetry's specification asks).
fn trace_export(
    flag: Option<&str>,
    standard_env: Option<&str>,
    file: &TelemetryConfig,
) -> anyhow::Result<Option<TraceExportConfig>> {
    let endpoint = [
        (flag, "--otlp-endpoint (BALAGH_OTLP_ENDPOINT)"),
        (standard_env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (file.otlp_endpoint.as_deref(), "telemetry.otlp_endpoint"),
    ]
    .into_iter()
    .find_map(|(value, setting)| value.filter(|v| !v.is_empty()).map(|v| (v, setting)));
    // Checked even without an endpoint: a wrong value is a mistake either way.
    check_service_and_ratio(&file.service_name, file.sample_ratio)?;
    endpoint
        .map(|(endpoint, setting)| {
            TraceExportConfig::new(endpoint, setting, &file.service_name, file.sample_ratio)
        })
        .transpose()
}

/// `[privacy]` of the config file (docs/security.md, "Erasure and retention").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Years after which a closed (or rejected, transferred, merged) ticket left unchanged
    /// has its reporter's personal data erased, 1 to 100; 0 keeps it for ever.
    pub anonymise_closed_after_years: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            anonymise_closed_after_years: 5,
        }
    }
}

impl PrivacyConfig {
    /// How long after its last change a settled ticket keeps its reporter's personal data;
    /// `None`: for ever.
    pub fn anonymise_after(&self) -> Option<Duration> {
        (self.anonymise_closed_after_years > 0).then(|| {
            Duration::from_secs(u64::from(self.anonymise_closed_after_years) * 365 * 24 * 3600)
        })
    }
}

/// `[auth]` of the config file: bearer tokens and certificate callers (docs/security.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt: Option<crate::auth::jwt::JwtConfig>,
    pub certificate_callers: Vec<crate::auth::tls::CertificateCallerConfig>,
}

impl AuthConfig {
    /// The authenticator, with its keys read; `None` when nothing is configured.
    pub fn authenticator(
        &self,
        tls: Option<&crate::auth::tls::TlsConfig>,
    ) -> anyhow::Result<Option<crate::auth::layer::Authenticator>> {
        let jwt = self
            .jwt
            .as_ref()
            .map(crate::auth::jwt::JwtVerifier::from_config)
            .transpose()?;
        let certificates =
            crate::auth::tls::CertificateCallers::from_config(&self.certificate_callers)?;
        if !certificates.is_empty() && tls.and_then(|t| t.client_ca_file.as_ref()).is_none() {
            anyhow::bail!(
                "auth.certificate_callers need mutual TLS: set tls.cert_file, tls.key_file and tls.client_ca_file"
            );
        }
        let authenticator = crate::auth::layer::Authenticator { jwt, certificates };
        Ok(authenticator.is_configured().then_some(authenticator))
    }
}

/// The parts of the service a process runs (`--components`, default all of them), so a
/// deployment can run the API replicas apart from the sync worker and the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Components {
    /// The gRPC server.
    pub grpc: bool,
    /// The sync worker: pushes to the national platform, and the pull where it leads.
    pub sync: bool,
    /// The escalation scheduler, where it leads.
    pub scheduler: bool,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            grpc: true,
            sync: true,
            scheduler: true,
        }
    }
}

impl Components {
    /// `grpc,sync,scheduler` or any non-empty part of it, each name once.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut components = Self {
            grpc: false,
            sync: false,
            scheduler: false,
        };
        for name in text.split(',').map(str::trim) {
            let part = match name {
                "grpc" => &mut components.grpc,
                "sync" => &mut components.sync,
                "scheduler" => &mut components.scheduler,
                other => anyhow::bail!(
                    "--components: {other:?} is not a component (grpc, sync, scheduler)"
                ),
            };
            if *part {
                anyhow::bail!("--components: {name} is named twice");
            }
            *part = true;
        }
        Ok(components)
    }

    /// The names of the parts run, for logs.
    pub fn names(self) -> String {
        [
            (self.grpc, "grpc"),
            (self.sync, "sync"),
            (self.scheduler, "scheduler"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// The satisfaction survey policy (see docs/satisfaction.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SatisfactionConfig {
    /// Nobody is asked to rate another ticket within this many days after they were last
    /// asked (on a call-back or on the national platform), 1 to 3650.
    pub quiet_period_days: u32,
    /// Call-backs without an answer after which the call-back list stops proposing a ticket,
    /// 1 to 10.
    pub max_call_attempts: u32,
}

impl Default for SatisfactionConfig {
    fn default() -> Self {
        let policy = crate::domain::satisfaction::SurveyPolicy::default();
        Self {
            quiet_period_days: policy.quiet_period_days(),
            max_call_attempts: policy.max_call_attempts(),
        }
    }
}

/// The escalation scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaSchedulerConfig {
    /// Whether this process runs the escalation sweep. On several replicas, run it on one
    /// (two never record an alert twice, but they duplicate the work).
    pub enabled: bool,
    /// How often the sweep runs, in seconds: alerts are recorded at most this late.
    pub sweep_interval_seconds: u64,
}

impl Default for SlaSchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval_seconds: 30,
        }
    }
}

/// The sync worker's push side (see docs/operations.md, "The national platform").
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// How long a claimed push stays with the replica that claimed it before another replica
    /// may take it over (when the first died mid-push), in seconds, 5 to 3600.
    pub lease_seconds: u64,
    /// Pushes in flight at once per replica (always of different tickets), 1 to 256.
    pub concurrency: usize,
    /// How long one call to the platform (answer read included) may take, 1 to 300 s.
    pub request_timeout_seconds: u64,
    /// How long connecting to the platform may take, 1 to 60 s.
    pub connect_timeout_seconds: u64,
    /// How long one token request may take before it is abandoned, 100 to 60,000 ms (and no
    /// longer than the request timeout). Every call that needs a token waits for it.
    pub token_request_timeout_ms: u64,
    /// After this long without an answer a second token request is sent beside the first,
    /// 0 to 60,000 ms (0: at once; at or above the token timeout: never two at once).
    pub token_hedge_delay_ms: u64,
    /// After this long without an answer a write (or a read of one case) is sent again beside
    /// the first, same `Idempotency-Key`, 0 to 60,000 ms (0: never). At most about one call
    /// in ten is hedged.
    pub hedge_delay_ms: u64,
    /// Tokens kept fetched ahead of need, 0 to 8, so that a refused or expiring token is
    /// replaced without calls waiting for a token request.
    pub standby_tokens: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        use crate::platform::client;
        let defaults = crate::sync::SyncSettings::default();
        Self {
            lease_seconds: defaults.lease.as_secs(),
            concurrency: defaults.concurrency,
            request_timeout_seconds: client::DEFAULT_REQUEST_TIMEOUT.as_secs(),
            connect_timeout_seconds: client::DEFAULT_CONNECT_TIMEOUT.as_secs(),
            token_request_timeout_ms: millis(client::DEFAULT_TOKEN_REQUEST_TIMEOUT),
            token_hedge_delay_ms: millis(client::DEFAULT_TOKEN_HEDGE_DELAY),
            hedge_delay_ms: millis(client::DEFAULT_HEDGE_DELAY),
            standby_tokens: client::DEFAULT_STANDBY_TOKENS,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SyncConfig {
    fn check(self) -> anyhow::Result<Self> {
        if !(5..=3600).contains(&self.lease_seconds) {
            anyhow::bail!("sync.lease_seconds must be from 5 to 3600");
        }
        if !(1..=256).contains(&self.concurrency) {
            anyhow::bail!("sync.concurrency must be from 1 to 256");
        }
        if !(1..=300).contains(&self.request_timeout_seconds) {
            anyhow::bail!("sync.request_timeout_seconds must be from 1 to 300");
        }
        if !(1..=60).contains(&self.connect_timeout_seconds) {
            anyhow::bail!("sync.connect_timeout_seconds must be from 1 to 60");
        }
        if !(100..=60_000).contains(&self.token_request_timeout_ms)
            || self.token_request_timeout_ms > self.request_timeout_seconds * 1000
        {
            anyhow::bail!(
                "sync.token_request_timeout_ms must be from 100 to 60000 and at most \
                 sync.request_timeout_seconds"
            );
        }
        if self.token_hedge_delay_ms > 60_000 {
            anyhow::bail!("sync.token_hedge_delay_ms must be from 0 to 60000");
        }
        if self.hedge_delay_ms > 60_000 {
            anyhow::bail!("sync.hedge_delay_ms must be from 0 to 60000 (0: never)");
        }
        if self.standby_tokens > crate::platform::client::MAX_STANDBY_TOKENS {
            anyhow::bail!(
                "sync.standby_tokens must be from 0 to {}",
                crate::platform::client::MAX_STANDBY_TOKENS
            );
        }
        Ok(self)
    }

    /// `client` with this section's timeouts.
    pub fn client(
        self,
        client: crate::platform::client::PlatformClientConfig,
    ) -> crate::platform::client::PlatformClientConfig {
        crate::platform::client::PlatformClientConfig {
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            connect_timeout: Duration::from_secs(self.connect_timeout_seconds),
            token_request_timeout: Duration::from_millis(self.token_request_timeout_ms),
            token_hedge_delay: Duration::from_millis(self.token_hedge_delay_ms),
            hedge_delay: (self.hedge_delay_ms > 0)
                .then(|| Duration::from_millis(self.hedge_delay_ms)),
            standby_tokens: self.standby_tokens,
            ..client
        }
    }

    /// The worker's settings: these two, the rest at their defaults.
    pub fn settings(self) -> crate::sync::SyncSettings {
        crate::sync::SyncSettings {
            lease: Duration::from_secs(self.lease_seconds),
            concurrency: self.concurrency,
            ..crate::sync::SyncSettings::default()
        }
    }
}

/// Where the sync worker pushes, if anywhere.
#[derive(Debug, Clone)]
pub enum PlatformMode {
    /// No national platform configured: changes queue in the outbox until one is.
    None,
    /// The real platform (or any server speaking docs/platform-api.md).
    Remote(PlatformSettings),
    /// The platform simulator, started in this process on `listen`: for newcomers and demos.
    /// Its citizens act `citizen_rate` times a second (file, add details, rate, reopen).
    Simulator {
        listen: SocketAddr,
        citizen_rate: f64,
    },
}

#[derive(Clone)]
pub struct PlatformSettings {
    pub base_url: String,
    pub entity: String,
    pub client_id: String,
    pub client_secret: crate::platform::client::ClientSecret,
}

impl std::fmt::Debug for PlatformSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSettings")
            .field("base_url", &self.base_url)
            .field("entity", &self.entity)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
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
    /// Recent changes kept in memory, so a stream that fell a little behind catches up without
    /// reading the log (at least 16).
    pub ring_capacity: usize,
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
            ring_capacity: 4096,
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
            ring_capacity: self.ring_capacity.max(16),
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
    /// Calls worked on at once before more are shed with `RESOURCE_EXHAUSTED` and a
    /// `RetryInfo` (streams, health and reflection are not counted), at least 1.
    pub max_in_flight: usize,
    /// Calls per second each authenticated caller may make on average (a token bucket);
    /// beyond it, `RESOURCE_EXHAUSTED` with reason `RATE_LIMITED` and a `RetryInfo`.
    pub caller_rate_per_second: u32,
    /// Calls a caller may make at once above its rate (the bucket's size).
    pub caller_burst: u32,
    /// Watch streams one authenticated caller may hold open at once.
    pub max_watch_streams_per_caller: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            request_timeout_seconds: 30,
            max_concurrent_streams: 256,
            http2_keepalive_interval_seconds: 30,
            max_in_flight: 512,
            caller_rate_per_second: 200,
            caller_burst: 400,
            max_watch_streams_per_caller: 16,
        }
    }
}

/// `[store]`: the store's group commit and connections, and PostgreSQL's session limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreTuning {
    pub max_batch: usize,
    pub queue_depth: usize,
    pub readers: u32,
    /// SQLite only: MiB of the database file each read connection maps into memory
    /// (`mmap_size`); 0 = none, at most 65536 (the ceiling SQLite is built with).
    pub sqlite_mmap_mib: u64,
    /// PostgreSQL only: `statement_timeout` of every session but the migration's; 0 = none.
    pub statement_timeout_seconds: u64,
    /// PostgreSQL only: `idle_in_transaction_session_timeout` (a replica frozen inside a
    /// write transaction would otherwise hold every replica's write lock); 0 = none.
    pub idle_in_transaction_timeout_seconds: u64,
    /// PostgreSQL only: how long a read waits for a pooled connection before the call gets
    /// `UNAVAILABLE` `STORAGE_BUSY`; at least 1.
    pub acquire_timeout_seconds: u64,
    /// MiB of memory ListTickets may keep its tickets' encoded messages in, with the stored
    /// JSON each was made from (`grpc::encoded_tickets`); 0 = keep none, at most 65536.
    pub encoded_ticket_cache_mib: u64,
}

impl Default for StoreTuning {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue_depth: 4096,
            readers: 4,
            sqlite_mmap_mib: crate::store::SQLITE_DEFAULT_MMAP_BYTES >> 20,
            statement_timeout_seconds: 30,
            idle_in_transaction_timeout_seconds: 60,
            acquire_timeout_seconds: 10,
            encoded_ticket_cache_mib: crate::grpc::ticket_service::DEFAULT_ENCODED_TICKETS_MIB,
        }
    }
}

impl StoreTuning {
    /// The PostgreSQL session limits these settings ask for.
    pub fn session_limits(&self) -> crate::store::SessionLimits {
        let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        crate::store::SessionLimits {
            statement_timeout: seconds(self.statement_timeout_seconds),
            idle_in_transaction_timeout: seconds(self.idle_in_transaction_timeout_seconds),
            acquire_timeout: Duration::from_secs(self.acquire_timeout_seconds),
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
    pub sla: SlaSchedulerConfig,
    pub satisfaction: SatisfactionConfig,
    pub sync: SyncConfig,
    pub auth: AuthConfig,
    pub tls: Option<crate::auth::tls::TlsConfig>,
    pub privacy: PrivacyConfig,
    pub telemetry: TelemetryConfig,
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
    /// The OpenTelemetry collector's OTLP/HTTP base URL (http://collector:4318); spans are
    /// exported to <URL>/v1/traces. OTEL_EXPORTER_OTLP_ENDPOINT is read when this is not set.
    #[arg(long, env = "BALAGH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The parts of the service to run, comma-separated: grpc (the API), sync (pushes to the
    /// national platform, and the pull on the replica leading it), scheduler (the escalation
    /// sweep on the replica leading it). Default: all three.
    #[arg(long, env = "BALAGH_COMPONENTS")]
    pub components: Option<String>,
    /// Start the national platform SIMULATOR beside the service and push to it (for trying
    /// balagh out; never in production).
    #[arg(long)]
    pub with_simulator: bool,
    /// Where the simulator listens with --with-simulator.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub simulator_listen: String,
    /// How many times a second the simulator's citizens act with --with-simulator (file a
    /// case, add details, rate, ask to reopen); 0 for none.
    #[arg(long, default_value_t = 0.2)]
    pub simulator_citizen_rate: f64,
    /// The national platform's base URL; the sync worker runs when it is set.
    #[arg(long, env = "BALAGH_PLATFORM_URL")]
    pub platform_url: Option<String>,
    /// The municipality's entity id on the platform.
    #[arg(
        long,
        env = "BALAGH_PLATFORM_ENTITY",
        default_value = "muscat-municipality"
    )]
    pub platform_entity: String,
    /// The OAuth2 client id.
    #[arg(long, env = "BALAGH_PLATFORM_CLIENT_ID")]
    pub platform_client_id: Option<String>,
    /// A file holding the OAuth2 client secret (or set BALAGH_PLATFORM_CLIENT_SECRET).
    #[arg(long, env = "BALAGH_PLATFORM_CLIENT_SECRET_FILE")]
    pub platform_client_secret_file: Option<std::path::PathBuf>,
}

/// The platform the worker talks to, from the flags and the environment. The secret comes
/// from `BALAGH_PLATFORM_CLIENT_SECRET` or a file, never from a flag or the config file.
fn platform_mode(args: &ServeArgs) -> anyhow::Result<PlatformMode> {
    if args.with_simulator {
        if args.platform_url.is_some() {
            anyhow::bail!("--with-simulator and --platform-url exclude each other");
        }
        let listen = args.simulator_listen.parse().with_context(|| {
            format!(
                "--simulator-listen {:?} is not an address",
                args.simulator_listen
            )
        })?;
        if !(args.simulator_citizen_rate.is_finite() && args.simulator_citizen_rate >= 0.0) {
            anyhow::bail!("--simulator-citizen-rate must be 0 or more");
        }
        return Ok(PlatformMode::Simulator {
            listen,
            citizen_rate: args.simulator_citizen_rate,
        });
    }
    let Some(base_url) = args.platform_url.clone() else {
        return Ok(PlatformMode::None);
    };
    let client_id = args
        .platform_client_id
        .clone()
        .context("--platform-url needs --platform-client-id (or BALAGH_PLATFORM_CLIENT_ID)")?;
    let secret = match (
        &args.platform_client_secret_file,
        std::env::var("BALAGH_PLATFORM_CLIENT_SECRET"),
    ) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the client secret file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(secret)) => secret,
        (None, Err(_)) => anyhow::bail!(
            "--platform-url needs a client secret: BALAGH_PLATFORM_CLIENT_SECRET or --platform-client-secret-file"
        ),
    };
    Ok(PlatformMode::Remote(PlatformSettings {
        base_url,
        entity: args.platform_entity.clone(),
        client_id,
        client_secret: crate::platform::client::ClientSecret::new(secret),
    }))
}

impl Config {
    /// Opens the configured database with the configured tuning: what `serve` and
    /// `report` run on.
    pub async fn open_store(
        &self,
        clock: std::sync::Arc<dyn crate::domain::Clock>,
    ) -> Result<std::sync::Arc<dyn crate::store::Store>, crate::store::StoreError> {
        let tuning = &self.store;
        crate::store::open_store_with(
            &self.database_url,
            crate::store::OpenOptions {
                max_batch: tuning.max_batch,
                queue_depth: tuning.queue_depth,
                readers: tuning.readers,
                limits: tuning.session_limits(),
                sqlite_mmap_bytes: tuning.sqlite_mmap_mib << 20,
                sync_policy: crate::domain::sync::SyncPolicy::default(),
            },
            clock,
        )
        .await
    }

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
        if file.limits.max_in_flight == 0 {
            anyhow::bail!("limits.max_in_flight must be at least 1");
        }
        let max_mmap_mib = crate::store::SQLITE_MAX_MMAP_BYTES >> 20;
        if file.store.sqlite_mmap_mib > max_mmap_mib {
            anyhow::bail!(
                "store.sqlite_mmap_mib must be at most {max_mmap_mib} (SQLite maps no more)"
            );
        }
        if file.store.encoded_ticket_cache_mib > 65536 {
            anyhow::bail!(
                "store.encoded_ticket_cache_mib is {}; at most 65536",
                file.store.encoded_ticket_cache_mib
            );
        }
        if file.store.acquire_timeout_seconds == 0 {
            anyhow::bail!("store.acquire_timeout_seconds must be at least 1");
        }
        if file.limits.caller_rate_per_second == 0
            || file.limits.caller_burst == 0
            || file.limits.max_watch_streams_per_caller == 0
        {
            anyhow::bail!(
                "limits.caller_rate_per_second, caller_burst and max_watch_streams_per_caller must be at least 1"
            );
        }
        let auth = file.auth.authenticator(file.tls.as_ref())?;
        if file.privacy.anonymise_closed_after_years > 100 {
            anyhow::bail!("privacy.anonymise_closed_after_years is at most 100 (0: never)");
        }
        if file.watch.retention_days < 7 {
            anyhow::bail!("watch.retention_days must be at least 7");
        }
        let satisfaction = crate::domain::satisfaction::SurveyPolicy::new(
            file.satisfaction.quiet_period_days,
            file.satisfaction.max_call_attempts,
        )
        .map_err(|v| anyhow::anyhow!("{v}"))?;
        let traces = trace_export(
            args.otlp_endpoint.as_deref(),
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().as_deref(),
            &file.telemetry,
        )?;
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
            platform: platform_mode(args)?,
            pull: crate::sync::pull::PullSettings::default(),
            sla: file.sla,
            satisfaction,
            components: match &args.components {
                Some(names) => Components::parse(names)?,
                None => Components::default(),
            },
            sync: file.sync.check()?,
            auth,
            tls: file.tls,
            privacy: file.privacy,
            traces,
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
            platform: PlatformMode::None,
            pull: crate::sync::pull::PullSettings::default(),
            // Tests run the sweep when they say so (SlaService.RunEscalationSweep).
            sla: SlaSchedulerConfig {
                enabled: false,
                ..SlaSchedulerConfig::default()
            },
            satisfaction: crate::domain::satisfaction::SurveyPolicy::default(),
            components: Components::default(),
            sync: SyncConfig::default(),
            auth: None,
            tls: None,
            privacy: PrivacyConfig::default(),
            traces: None,
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_of_the_operations_guide_is_accepted() {
        let guide = include_str!("../docs/operations.md");
        let example = guide
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml example in docs/operations.md");
        let file: FileConfig = toml::from_str(example).expect("the example parses");
        assert_eq!(file.satisfaction.quiet_period_days, 90);
        assert_eq!(file.satisfaction.max_call_attempts, 3);
        assert_eq!(
            (file.sync.lease_seconds, file.sync.concurrency),
            (60, 32),
            "the guide shows the defaults"
        );
        let traces = trace_export(None, None, &file.telemetry)
            .expect("valid")
            .expect("the guide shows an endpoint");
        assert_eq!(
            traces.traces_url(),
            "http://otel-collector.observability:4318/v1/traces"
        );
    }

    #[test]
    fn the_platform_timeouts_reach_the_client_and_are_checked() {
        use crate::platform::client::{ClientSecret, PlatformClientConfig};
        let file: FileConfig = toml::from_str(
            "[sync]\nrequest_timeout_seconds = 20\nconnect_timeout_seconds = 5\n\
             token_request_timeout_ms = 1500\ntoken_hedge_delay_ms = 250\nhedge_delay_ms = 400\n\
             standby_tokens = 1\n",
        )
        .expect("parses");
        let sync = file.sync.check().expect("valid");
        let client = sync.client(PlatformClientConfig::new(
            "http://platform.example",
            "muscat",
            "balagh",
            ClientSecret::new("s"),
        ));
        assert_eq!(
            (
                client.request_timeout,
                client.connect_timeout,
                client.token_request_timeout,
                client.token_hedge_delay,
                client.hedge_delay,
                client.standby_tokens
            ),
            (
                Duration::from_secs(20),
                Duration::from_secs(5),
                Duration::from_millis(1500),
                Duration::from_millis(250),
                Some(Duration::from_millis(400)),
                1
            )
        );
        let never: FileConfig = toml::from_str("[sync]\nhedge_delay_ms = 0\n").expect("parses");
        let never = never
            .sync
            .check()
            .expect("valid")
            .client(PlatformClientConfig::new(
                "http://platform.example",
                "muscat",
                "balagh",
                ClientSecret::new("s"),
            ));
        assert_eq!(never.hedge_delay, None);
        let defaults = SyncConfig::default().client(PlatformClientConfig::new(
            "http://platform.example",
            "muscat",
            "balagh",
            ClientSecret::new("s"),
        ));
        assert_eq!(defaults.request_timeout, Duration::from_secs(10));
        assert_eq!(defaults.token_hedge_delay, Duration::from_millis(500));
        assert_eq!(defaults.hedge_delay, Some(Duration::from_secs(1)));
        assert_eq!(defaults.standby_tokens, 3);
        for bad in [
            "request_timeout_seconds = 0",
            "request_timeout_seconds = 301",
            "connect_timeout_seconds = 0",
            "token_request_timeout_ms = 99",
            "request_timeout_seconds = 2\ntoken_request_timeout_ms = 2500",
            "token_hedge_delay_ms = 60001",
            "hedge_delay_ms = 60001",
            "standby_tokens = 9",
        ] {
            let file: FileConfig = toml::from_str(&format!("[sync]\n{bad}\n")).expect("parses");
            assert!(file.sync.check().is_err(), "{bad}");
        }
    }

    #[test]
    fn components_are_named_once_each_and_default_to_all() {
        assert_eq!(
            Components::parse("grpc,sync,scheduler").unwrap(),
            Components::default()
        );
        let workers = Components::parse("sync, scheduler").unwrap();
        assert_eq!(
            (workers.grpc, workers.sync, workers.scheduler),
            (false, true, true)
        );
        assert_eq!(workers.names(), "sync,scheduler");
        for bad in ["", "grpc,", "api", "grpc,grpc"] {
            assert!(Components::parse(bad).is_err(), "{bad:?}");
        }
        let config = Config::resolve(&ServeArgs::default()).expect("defaults");
        assert_eq!(config.components, Components::default());
    }

    #[test]
    fn trace_export_takes_the_flag_then_the_standard_variable_then_the_file() {
        let file = TelemetryConfig {
            otlp_endpoint: Some("http://from-file:4318".into()),
            ..TelemetryConfig::default()
        };
        let url = |flag, env, file: &TelemetryConfig| {
            trace_export(flag, env, file)
                .expect("valid")
                .map(|t| t.traces_url().to_owned())
        };
        assert_eq!(url(None, None, &TelemetryConfig::default()), None);
        assert_eq!(
            url(None, None, &file).as_deref(),
            Some("http://from-file:4318/v1/traces")
        );
        assert_eq!(
            url(None, Some("https://from-env:4318/"), &file).as_deref(),
            Some("https://from-env:4318/v1/traces"),
            "the standard variable wins over the file, and a trailing slash is not doubled"
        );
        assert_eq!(
            url(
                Some("http://from-flag:4318/otlp"),
                Some("http://from-env"),
                &file
            )
            .as_deref(),
            Some("http://from-flag:4318/otlp/v1/traces")
        );
        assert_eq!(
            url(Some(""), Some(""), &file).as_deref(),
            Some("http://from-file:4318/v1/traces"),
            "empty values count as unset"
        );
        let traces = trace_export(None, None, &file).unwrap().unwrap();
        assert_eq!(
            (traces.service_name(), traces.sample_ratio()),
            ("balagh", 1.0)
        );
    }

    #[test]
    fn trace_export_settings_are_checked_and_errors_name_them() {
        let error = |flag: Option<&str>, env: Option<&str>, file: TelemetryConfig| {
            format!("{:#}", trace_export(flag, env, &file).expect_err("refused"))
        };
        let with_endpoint = |endpoint: &str| TelemetryConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        };
        for bad in [
            "collector:4318",
            "grpc://collector:4317",
            "file:///tmp/x",
            "http://",
        ] {
            let message = error(None, None, with_endpoint(bad));
            assert!(
                message.contains("telemetry.otlp_endpoint"),
                "{bad}: {message}"
            );
        }
        let message = error(None, Some("ftp://collector"), TelemetryConfig::default());
        assert!(message.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{message}");
        let message = error(Some("collector"), None, TelemetryConfig::default());
        assert!(message.contains("--otlp-endpoint"), "{message}");
        let message = error(
            None,
            None,
            with_endpoint("http://user:secret@collector:4318"),
        );
        assert!(
            message.contains("credentials") && !message.contains("secret"),
            "{message}"
        );
        for ratio in [-0.1, 1.5, f64::NAN] {
            // Refused even without an endpoint.
            let message = error(
                None,
                None,
                TelemetryConfig {
                    sample_ratio: ratio,
                    ..TelemetryConfig::default()
                },
            );
            assert!(
                message.contains("telemetry.sample_ratio"),
                "{ratio}: {message}"
            );
        }
        let message = error(
            None,
            None,
            TelemetryConfig {
                service_name: " ".into(),
                ..with_endpoint("http://collector:4318")
            },
        );
        assert!(message.contains("telemetry.service_name"), "{message}");
    }

    #[test]
    fn the_telemetry_section_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("balagh.toml");
        std::fs::write(
            &path,
            "[telemetry]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"balagh-api\"\nsample_ratio = 0.25\n",
        )
        .expect("write");
        let file = read_file(&path).expect("valid");
        let traces = trace_export(None, None, &file.telemetry).unwrap().unwrap();
        assert_eq!(traces.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(
            (traces.service_name(), traces.sample_ratio()),
            ("balagh-api", 0.25)
        );
        std::fs::write(
            &path,
            "[telemetry]\notlp_endpont = \"http://collector:4318\"\n",
        )
        .expect("write");
        assert!(read_file(&path).is_err(), "a misspelt key is refused");
    }

    #[test]
    fn the_satisfaction_section_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("balagh.toml");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        std::fs::write(&path, "[satisfaction]\nquiet_period_days = 30\n").expect("write");
        let config = Config::resolve(&args).expect("valid");
        assert_eq!(config.satisfaction.quiet_period_days(), 30);
        assert_eq!(config.satisfaction.max_call_attempts(), 3);
        std::fs::write(&path, "[satisfaction]\nquiet_period_days = 0\n").expect("write");
        let error = Config::resolve(&args).expect_err("a quiet period of 0 days");
        assert!(
            format!("{error:#}").contains("satisfaction.quiet_period_days"),
            "{error:#}"
        );
    }

    #[test]
    fn the_sqlite_map_size_defaults_to_16_gib_and_is_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("balagh.toml");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert_eq!(
            Config::resolve(&ServeArgs::default())
                .expect("defaults")
                .store
                .sqlite_mmap_mib,
            16 * 1024
        );
        for (mib, valid) in [
            (0, true),
            (65536, true),
            (65537, false),
            (i64::MAX.unsigned_abs(), false),
        ] {
            std::fs::write(&path, format!("[store]\nsqlite_mmap_mib = {mib}\n")).expect("write");
            match Config::resolve(&args) {
                Ok(config) => {
                    assert!(valid, "{mib} MiB was accepted");
                    assert_eq!(config.store.sqlite_mmap_mib, mib);
                }
                Err(error) => {
                    assert!(!valid, "{mib} MiB was refused: {error:#}");
                    assert!(
                        format!("{error:#}").contains("store.sqlite_mmap_mib"),
                        "{error:#}"
                    );
                }
            }
        }
    }
}
