//! `balagh platform-sim`: a SIMULATOR of the national platform, over real HTTP, for tests,
//! demos and benchmarks. It is not the platform and holds nothing real.
//!
//! It implements the whole contract of `docs/platform-api.md` in memory (OAuth2 client
//! credentials, cases, versions, idempotency, receipts, the change feed), injects faults at
//! configurable rates on a fixed seed ([`faults`]), and plays citizens who file and act on cases
//! ([`citizens`]). `GET /admin/state` shows everything it holds, so a test (or a person) can
//! compare it with the registry.
//!
//! Like the registry itself, it is handed an already bound listener and a shutdown token, so
//! tests bind port 0 and start it in-process; the CLI is a thin wrapper around the same
//! [`Simulator::start`].

pub mod citizens;
pub mod faults;
mod http;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use crate::domain::{Clock, SystemClock};
pub use citizens::{CitizenAction, CitizenActivity};
pub use faults::{FaultKind, FaultSettings};
pub use state::SimState;

/// Why the simulator cannot start, or refused an admin action.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    #[error("the simulator's listener has no address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("the simulator refused: {0}")]
    Refused(String),
}

/// The fixed credentials the tests use. They open nothing but a simulator.
pub const TEST_CLIENT_ID: &str = "balagh-test";
pub const TEST_CLIENT_SECRET: &str = "simulator-test-secret";
/// The entity id of Muscat Municipality on the (simulated) platform.
pub const DEFAULT_ENTITY: &str = "muscat-municipality";

/// How the simulator behaves.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// Seeds faults, citizens and tokens: the same seed gives the same run.
    pub seed: u64,
    pub entity: String,
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    pub faults: FaultSettings,
    /// Citizen actions per second; 0 turns the citizens off.
    pub citizen_rate: f64,
    /// Most changes the feed keeps (`None`: all); older cursors get 410.
    pub feed_retention: Option<usize>,
    /// Where the simulator reads the time: case timestamps, token expiry, maintenance windows.
    pub clock: Arc<dyn Clock>,
}

impl SimulatorConfig {
    /// Fault-free, no citizens, the test credentials, seed 1.
    pub fn for_tests() -> Self {
        Self {
            seed: 1,
            entity: DEFAULT_ENTITY.to_owned(),
            client_id: TEST_CLIENT_ID.to_owned(),
            client_secret: TEST_CLIENT_SECRET.to_owned(),
            token_ttl: Duration::from_secs(300),
            faults: FaultSettings::default(),
            citizen_rate: 0.0,
            feed_retention: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("seed", &self.seed)
            .field("entity", &self.entity)
            .field("client_id", &self.client_id)
            .field("token_ttl", &self.token_ttl)
            .field("faults", &self.faults)
            .field("citizen_rate", &self.citizen_rate)
            .field("feed_retention", &self.feed_retention)
            .finish_non_exhaustive()
    }
}

/// What the HTTP side and the citizens share.
struct Shared {
    seed: u64,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    clock: Arc<dyn Clock>,
    platform: Mutex<state::Platform>,
}

/// The simulator, started.
pub struct Simulator;

impl Simulator {
    /// Serves on `listener` until `shutdown` is cancelled.
    pub fn start(
        config: SimulatorConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<SimulatorHandle, SimulatorError> {
        config
            .faults
            .validate()
            .map_err(SimulatorError::InvalidConfig)?;
        if !(config.citizen_rate.is_finite() && config.citizen_rate >= 0.0) {
            return Err(SimulatorError::InvalidConfig(
                "the citizen rate must be a number of actions per second, 0 or more".to_owned(),
            ));
        }
        let local_addr = listener.local_addr().map_err(SimulatorError::Listener)?;
        let mut platform = state::Platform::new(
            config.entity.clone(),
            format!("{:08x}", faults::mix(config.seed, 0, 0xEB0C) as u32),
            config.feed_retention,
        );
        platform.faults.settings = config.faults.clone();
        let shared = Arc::new(Shared {
            seed: config.seed,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            token_ttl: config.token_ttl,
            clock: config.clock.clone(),
            platform: Mutex::new(platform),
        });
        let server = tokio::spawn(http::serve(
            listener,
            http::router(shared.clone()),
            shutdown.clone(),
        ));
        let citizens = (config.citizen_rate > 0.0).then(|| {
            tokio::spawn(play_citizens(
                shared.clone(),
                config.citizen_rate,
                shutdown.clone(),
            ))
        });
        tracing::info!(
            %local_addr,
            seed = config.seed,
            entity = %config.entity,
            citizen_rate = config.citizen_rate,
            "platform-sim started: this is a SIMULATOR of the national platform, not the platform"
        );
        Ok(SimulatorHandle {
            local_addr,
            shared,
            server,
            citizens,
        })
    }
}

/// A running simulator.
pub struct SimulatorHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    citizens: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, for the client's configuration.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The whole state, as `GET /admin/state` shows it.
    pub fn state(&self) -> SimState {
        self.shared.state()
    }

    /// Replaces the fault rates and parameters (`POST /admin/faults`).
    pub fn set_faults(&self, settings: FaultSettings) -> Result<(), SimulatorError> {
        self.shared
            .set_faults(settings)
            .map_err(SimulatorError::InvalidConfig)
    }

    /// Queues faults for the next API requests they apply to (`POST /admin/faults/force`).
    pub fn force_faults(&self, kinds: &[FaultKind]) {
        self.shared.force_faults(kinds);
    }

    /// Queues faults for the next token requests, in order (`POST /admin/faults/force` with
    /// `token_kinds`). Refuses kinds that never apply to the token endpoint.
    pub fn force_token_faults(&self, kinds: &[FaultKind]) -> Result<(), SimulatorError> {
        self.shared
            .force_token_faults(kinds)
            .map_err(SimulatorError::Refused)
    }

    /// Starts a maintenance window now, or ends it with 0 (`POST /admin/maintenance`).
    pub fn set_maintenance(&self, seconds: u64) {
        self.shared.set_maintenance(seconds);
    }

    /// Makes one citizen act (`POST /admin/citizens/act`).
    pub fn citizen_act(
        &self,
        action: Option<CitizenAction>,
        case_id: Option<&str>,
    ) -> Result<CitizenActivity, SimulatorError> {
        self.shared.citizens_act(action, case_id).map_err(|p| {
            SimulatorError::Refused(format!("{}: {}", p.title, p.detail.unwrap_or_default()))
        })
    }

    /// Waits until the simulator has stopped (after its shutdown token was cancelled).
    pub async fn stopped(self) {
        if let Some(citizens) = self.citizens {
            let _ = citizens.await;
        }
        let _ = self.server.await;
    }
}

async fn play_citizens(shared: Arc<Shared>, rate: f64, shutdown: CancellationToken) {
    let period = Duration::from_secs_f64((1.0 / rate).clamp(0.000_1, 3600.0));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                match shared.citizens_act(None, None) {
                    Ok(activity) => tracing::debug!(
                        action = ?activity.action,
                        case_id = %activity.case_id,
                        "a simulated citizen acted"
                    ),
                    Err(problem) => tracing::warn!(
                        problem = %problem.problem_type,
                        "a simulated citizen could not act"
                    ),
                }
            }
        }
    }
}

/// `balagh platform-sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "BALAGH_PLATFORM_SIM_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// Seed of faults, citizens and tokens: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The entity id the simulator serves.
    #[arg(long, default_value = DEFAULT_ENTITY)]
    pub entity: String,
    /// The client id balagh must present.
    #[arg(long, env = "BALAGH_PLATFORM_CLIENT_ID", default_value = "balagh-dev")]
    pub client_id: String,
    /// The client secret balagh must present (a simulator's, never a real one).
    #[arg(
        long,
        env = "BALAGH_PLATFORM_CLIENT_SECRET",
        default_value = "simulator-dev-secret",
        hide_env_values = true
    )]
    pub client_secret: String,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 300)]
    pub token_ttl_seconds: u64,
    /// Share of API requests that get a fault, spread evenly over every kind (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// One kind's rate, instead of its share of --fault-rate, e.g. `--fault timeout=0.02`.
    /// Kinds: server_error, rate_limited, maintenance, slow, timeout, reset, lost_answer,
    /// token_expired, conflict, malformed, duplicate_changes. Repeatable.
    #[arg(long = "fault", value_name = "KIND=RATE", value_parser = parse_fault_rate)]
    pub faults: Vec<(FaultKind, f64)>,
    /// How late a slow answer is, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub slow_ms: u64,
    /// How long a timed-out request is held before its connection is dropped, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_hold_ms: u64,
    /// `Retry-After` of a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_seconds: u64,
    /// Length of a maintenance window, in seconds.
    #[arg(long, default_value_t = 5)]
    pub maintenance_seconds: u64,
    /// Citizen actions per second (file, add details, rate, ask to reopen); 0 turns them off.
    #[arg(long, default_value_t = 0.0)]
    pub citizen_rate: f64,
    /// Most changes the feed keeps; older cursors get 410 Gone. Default: all.
    #[arg(long)]
    pub feed_retention: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_fault_rate(text: &str) -> Result<(FaultKind, f64), String> {
    let (kind, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KIND=RATE"))?;
    let kind: FaultKind = kind.trim().parse()?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("{rate:?} is not a rate from 0 to 1"))?;
    Ok((kind, rate))
}

impl SimArgs {
    pub fn to_config(&self) -> anyhow::Result<SimulatorConfig> {
        let mut faults = if self.fault_rate > 0.0 {
            FaultSettings::uniform(self.fault_rate)
        } else {
            FaultSettings::default()
        };
        for (kind, rate) in &self.faults {
            faults.rates.insert(*kind, *rate);
        }
        faults.slow_ms = self.slow_ms;
        faults.timeout_hold_ms = self.timeout_hold_ms;
        faults.retry_after_seconds = self.retry_after_seconds;
        faults.maintenance_seconds = self.maintenance_seconds;
        faults
            .validate()
            .map_err(anyhow::Error::msg)
            .context("invalid --fault-rate or --fault")?;
        Ok(SimulatorConfig {
            seed: self.seed,
            entity: self.entity.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_seconds.max(1)),
            faults,
            citizen_rate: self.citizen_rate,
            feed_retention: self.feed_retention,
            clock: Arc::new(SystemClock),
        })
    }
}

/// Runs the simulator until SIGTERM or SIGINT. The first line on stdout is
/// `platform-sim listening on ADDR`, for scripts and tests.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone());
    let handle = Simulator::start(config, listener, shutdown)?;
    // Scripts and tests read the real address from this first line of stdout.
    println!("platform-sim listening on {}", handle.local_addr());
    tracing::warn!(
        "THIS IS A SIMULATOR of the national platform (Tajawob); no case sent here reaches any citizen or government entity"
    );
    handle.stopped().await;
    tracing::info!("platform-sim stopped");
    Ok(())
}
