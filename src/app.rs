//! Wiring: the store, the gRPC server with health and reflection, and background upkeep.
//!
//! `Application::build` opens the store and binds the listener (port 0 works: tests read the
//! real port from [`Application::local_addr`] and never sleep waiting for a server).
//! `run_until_stopped` serves until the root token is cancelled, then: health turns
//! NOT_SERVING first, in-flight calls finish, the store finishes the writes it accepted and
//! closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::admin::AdminState;
use crate::auth::layer::AuthLayer;
use crate::config::Config;
use crate::domain::{Clock, SystemClock, Timestamp};
use crate::grpc::catalog_service::CatalogServiceImpl;
use crate::grpc::connection::CoalescedWrites;
use crate::grpc::encoded_tickets::EncodedTickets;
use crate::grpc::proto::FILE_DESCRIPTOR_SET;
use crate::grpc::proto::catalog_service_server::CatalogServiceServer;
use crate::grpc::proto::quality_service_server::QualityServiceServer;
use crate::grpc::proto::reporting_service_server::ReportingServiceServer;
use crate::grpc::proto::satisfaction_service_server::SatisfactionServiceServer;
use crate::grpc::proto::sla_service_server::SlaServiceServer;
use crate::grpc::proto::sync_service_server::SyncServiceServer;
use crate::grpc::quality_service::QualityServiceImpl;
use crate::grpc::reporting_service::ReportingServiceImpl;
use crate::grpc::satisfaction_service::SatisfactionServiceImpl;
use crate::grpc::shed::LoadShedLayer;
use crate::grpc::sla_service::SlaServiceImpl;
use crate::grpc::sync_service::{SyncRuntime, SyncServiceImpl};
use crate::grpc::ticket_service::TicketServiceImpl;
use crate::grpc::watch::ChangeFeed;
use crate::grpc::watch::route::TicketServiceRoute;
use crate::leader::LeaderSettings;
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::sla::SlaRuntime;
use crate::store::{LeaderRole, Store};
use std::sync::atomic::{AtomicBool, Ordering};

/// The names health reports on: the server as a whole and each service.
const SERVICE_NAMES: [&str; 8] = [
    "",
    "balagh.v1.TicketService",
    "balagh.v1.CatalogService",
    "balagh.v1.SyncService",
    "balagh.v1.SlaService",
    "balagh.v1.ReportingService",
    "balagh.v1.QualityService",
    "balagh.v1.SatisfactionService",
];

/// When a shed call is told to try again (its `RetryInfo`).
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often expired request ids and change-feed snapshots are dropped.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(3600);

pub struct Application {
    config: Config,
    /// The gRPC listener; none when gRPC is not one of the process's components.
    listener: Option<TcpListener>,
    admin_listener: TcpListener,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = config
            .open_store(clock.clone())
            .await
            .context("cannot open the database")?;
        if config.components.grpc && config.auth.is_none() {
            if !config.listen.ip().is_loopback() {
                anyhow::bail!(
                    "refusing to listen on {} without authentication: configure [auth] (docs/security.md), or listen on a loopback address for local development",
                    config.listen
                );
            }
            tracing::warn!(
                address = %config.listen,
                "NO AUTHENTICATION: every caller may do everything and sees personal data unmasked; for local development only"
            );
        }
        let listener = if config.components.grpc {
            Some(
                TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?,
            )
        } else {
            None
        };
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        Ok(Self {
            config,
            listener,
            admin_listener,
            store,
            clock,
        })
    }

    /// The gRPC address actually bound (with the real port when 0 was asked for); none when
    /// gRPC is not one of the process's components.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    /// The admin HTTP address (metrics, liveness, readiness).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            admin_listener,
            store,
            clock,
        } = self;
        let metrics = Metrics::new();
        let serving = Arc::new(AtomicBool::new(false));
        let limits = &config.limits;
        let (health, health_service) = tonic_health::server::health_reporter();
        let authenticated = config.auth.is_some();
        let mut watch_settings = config.watch.settings();
        watch_settings.mask_personal_data = authenticated;
        let caller_limits = crate::auth::rate::CallerLimits::new(
            limits.caller_rate_per_second,
            limits.caller_burst,
            limits.max_watch_streams_per_caller,
        );
        let (feed, feed_task) = ChangeFeed::start(store.clone(), &watch_settings, shutdown.clone())
            .await
            .context("cannot start the change feed")?;
        let sla = SlaRuntime::open(store.clone(), clock.clone())
            .await
            .context("cannot load the business calendar and SLA settings")?;
        let ticket_service = TicketServiceRoute::new(
            TicketServiceImpl::new(
                store.clone(),
                sla.clone(),
                feed.clone(),
                watch_settings,
                metrics.watch_streams_open.clone(),
                config.satisfaction,
            )
            .with_caller_limits(caller_limits.clone())
            .with_encoded_tickets(EncodedTickets::new(
                usize::try_from(config.store.encoded_ticket_cache_mib << 20).unwrap_or(usize::MAX),
                metrics.list_tickets_reused.clone(),
                metrics.list_tickets_made.clone(),
                metrics.list_tickets_kept_bytes.clone(),
            )),
            limits.max_message_bytes,
        );
        let catalog_service = CatalogServiceServer::new(CatalogServiceImpl::new(store.clone()))
            .max_decoding_message_size(limits.max_message_bytes);
        let (sync_runtime, sync_task) = if config.components.sync {
            start_sync(
                &config,
                store.clone(),
                clock.clone(),
                &metrics,
                shutdown.clone(),
            )
            .await?
        } else {
            tracing::info!("the sync worker is not one of this process's components");
            (None, tokio::spawn(async {}))
        };
        let sync_service =
            SyncServiceServer::new(SyncServiceImpl::new(store.clone(), sync_runtime))
                .max_decoding_message_size(limits.max_message_bytes);
        let sla_service = SlaServiceServer::new(SlaServiceImpl::new(store.clone(), sla.clone()))
            .max_decoding_message_size(limits.max_message_bytes);
        let reporting_service =
            ReportingServiceServer::new(ReportingServiceImpl::new(store.clone(), sla.clone()))
                .max_decoding_message_size(limits.max_message_bytes);
        let quality_service = QualityServiceServer::new(QualityServiceImpl::new(store.clone()))
            .max_decoding_message_size(limits.max_message_bytes);
        let satisfaction_service = SatisfactionServiceServer::new(SatisfactionServiceImpl::new(
            store.clone(),
            clock.clone(),
            config.satisfaction,
        ))
        .max_decoding_message_size(limits.max_message_bytes);
        let sla_task = if config.sla.enabled && config.components.scheduler {
            // One replica at a time sweeps: the one that leads the scheduler's role.
            let interval = Duration::from_secs(config.sla.sweep_interval_seconds.max(1));
            let sla = sla.clone();
            tokio::spawn(crate::leader::run_as_leader(
                store.clone(),
                LeaderRole::EscalationScheduler,
                LeaderSettings::default(),
                metrics.leading(LeaderRole::EscalationScheduler),
                shutdown.clone(),
                move |stop| sla.clone().run_until_stopped(interval, stop),
            ))
        } else {
            tokio::spawn(async {})
        };
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }

        let upkeep = tokio::spawn(upkeep(
            store.clone(),
            clock.clone(),
            Retention {
                request_ids: config.request_id_retention,
                change_feed: config.watch.retention(),
                personal_data: config.privacy.anonymise_after(),
            },
            shutdown.clone(),
        ));

        // The admin port outlives the gRPC server's drain, so /readyz can say 503 meanwhile.
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(crate::admin::serve(
            admin_listener,
            AdminState {
                metrics: metrics.clone(),
                store: store.clone(),
                feed,
                serving: serving.clone(),
                clock: clock.clone(),
            },
            admin_stop.clone(),
        ));

        let stopping = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            let serving = serving.clone();
            async move {
                shutdown.cancelled().await;
                serving.store(false, Ordering::SeqCst);
                // Load balancers stop sending new calls before the server stops taking them.
                for name in SERVICE_NAMES {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
            }
        };
        serving.store(true, Ordering::SeqCst);
        let served = match listener {
            Some(listener) => {
                tracing::info!(address = %listener.local_addr()?, components = %config.components.names(), "balagh is serving gRPC");
                let mut server = Server::builder();
                if let Some(tls) = &config.tls {
                    server = server
                        .tls_config(crate::auth::tls::server_tls_config(tls)?)
                        .context("invalid TLS configuration")?;
                }
                server
                    .timeout(Duration::from_secs(limits.request_timeout_seconds))
                    .max_concurrent_streams(limits.max_concurrent_streams)
                    .http2_keepalive_interval(Some(Duration::from_secs(
                        limits.http2_keepalive_interval_seconds,
                    )))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .layer(GrpcMetricsLayer(metrics))
                    .layer(LoadShedLayer::new(limits.max_in_flight, SHED_RETRY_AFTER))
                    .layer(AuthLayer::new(config.auth.clone(), caller_limits))
                    .add_service(health_service)
                    .add_service(reflection)
                    .add_service(ticket_service)
                    .add_service(catalog_service)
                    .add_service(sync_service)
                    .add_service(sla_service)
                    .add_service(reporting_service)
                    .add_service(quality_service)
                    .add_service(satisfaction_service)
                    .serve_with_incoming_shutdown(
                        // Nagle off on every accepted connection: without it each small response waits
                        // for the client's delayed ACK (about 40 ms). Server::tcp_nodelay does not
                        // reach connections handed in through an incoming stream. Small frames that
                        // are ready together leave in one write (`CoalescedWrites`).
                        TcpIncoming::from(listener)
                            .with_nodelay(Some(true))
                            .map(|accepted| accepted.map(CoalescedWrites::new)),
                        stopping,
                    )
                    .await
            }
            None => {
                tracing::info!(components = %config.components.names(), "balagh is running without gRPC");
                stopping.await;
                Ok(())
            }
        };
        shutdown.cancel();
        admin_stop.cancel();
        for (name, task) in [
            ("upkeep", upkeep),
            ("change feed", feed_task),
            ("admin", admin),
            ("sync", sync_task),
            ("escalation scheduler", sla_task),
        ] {
            if let Err(error) = task.await {
                tracing::error!(error = %error, task = name, "a background task failed");
            }
        }
        store.close().await;
        tracing::info!("balagh stopped");
        served.context("the gRPC server failed")
    }
}

/// Starts the sync worker (push and pull) when a platform is configured, and the simulator
/// when asked for. Without a platform, pushes wait in the outbox. Returns what the
/// SyncService reports on, and the task to wait for at shutdown.
async fn start_sync(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<(Option<SyncRuntime>, tokio::task::JoinHandle<()>)> {
    use crate::config::PlatformMode;
    use crate::platform::client::{ClientSecret, PlatformClient, PlatformClientConfig};
    use crate::platform::simulator::{Simulator, SimulatorConfig};
    let client_config = match &config.platform {
        PlatformMode::None => {
            tracing::info!("no national platform configured: pushes wait in the outbox");
            return Ok((None, tokio::spawn(async {})));
        }
        PlatformMode::Remote(settings) => PlatformClientConfig::new(
            settings.base_url.clone(),
            settings.entity.clone(),
            settings.client_id.clone(),
            settings.client_secret.clone(),
        ),
        PlatformMode::Simulator {
            listen,
            citizen_rate,
        } => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for the simulator"))?;
            let simulator_config = SimulatorConfig {
                // Citizens file and act on the simulated platform, so a newcomer sees cases
                // arrive as tickets.
                citizen_rate: *citizen_rate,
                ..SimulatorConfig::for_tests()
            };
            let entity = simulator_config.entity.clone();
            let client_id = simulator_config.client_id.clone();
            let secret = ClientSecret::new(simulator_config.client_secret.clone());
            let handle = Simulator::start(simulator_config, listener, shutdown.clone())
                .context("cannot start the platform simulator")?;
            tracing::warn!(
                url = %handle.base_url(),
                "pushing to the national platform SIMULATOR, not the real platform; see {}/admin/state",
                handle.base_url()
            );
            PlatformClientConfig::new(handle.base_url(), entity, client_id, secret)
        }
    };
    let client_config = config.sync.client(client_config);
    let client =
        Arc::new(PlatformClient::new(client_config).context("cannot build the platform client")?);
    let mapping =
        Arc::new(crate::platform::mapping::Mapping::v1().context("the platform code mapping")?);
    let pusher = crate::sync::platform_pusher::PlatformPusher::new(
        client.clone(),
        mapping.clone(),
        store.clone(),
    );
    let worker = Arc::new(crate::sync::SyncWorker::new(
        store.clone(),
        Arc::new(pusher),
        clock.clone(),
        config.sync.settings(),
    ));
    let puller = Arc::new(crate::sync::pull::Puller::new(
        client,
        mapping,
        store.clone(),
        clock,
        config.pull.clone(),
    ));
    // Every replica pushes (outbox leases keep each push on one of them); one at a time
    // pulls: the one that leads the pull's role.
    let push_task = tokio::spawn(worker.clone().run_until_stopped(shutdown.clone()));
    let pull_task = tokio::spawn({
        let puller = puller.clone();
        crate::leader::run_as_leader(
            store,
            LeaderRole::PlatformPull,
            LeaderSettings::default(),
            metrics.leading(LeaderRole::PlatformPull),
            shutdown,
            move |stop| puller.clone().run_until_stopped(stop),
        )
    });
    let task = tokio::spawn(async move {
        for (name, task) in [("push", push_task), ("pull", pull_task)] {
            if let Err(error) = task.await {
                tracing::error!(error = %error, task = name, "a sync task failed");
            }
        }
    });
    Ok((Some(SyncRuntime { worker, puller }), task))
}

/// How long things are kept.
struct Retention {
    request_ids: Duration,
    change_feed: Duration,
    /// `[privacy] anonymise_closed_after_years`; `None`: never.
    personal_data: Option<Duration>,
}

/// Tickets anonymised per upkeep round at most (the rest wait for the next hour).
const ANONYMISE_PER_ROUND: u32 = 5000;
const ANONYMISE_BATCH: u32 = 500;

/// The retention policy: erases the reporter's personal data of tickets settled and left
/// unchanged longer than `after`. Returns how many were anonymised.
pub async fn anonymise_settled_tickets(
    store: &dyn Store,
    before: Timestamp,
) -> Result<u64, crate::store::StoreError> {
    let mut n = 0;
    while n < u64::from(ANONYMISE_PER_ROUND) {
        let ids = store.tickets_to_anonymise(before, ANONYMISE_BATCH).await?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let ctx = crate::store::WriteContext {
                actor: "retention-policy".to_owned(),
                request: None,
                reach: None,
            };
            store
                .erase_personal_data(
                    ctx,
                    id,
                    "retention policy: settled longer than privacy.anonymise_closed_after_years"
                        .to_owned(),
                )
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Hourly, until shutdown: forgets expired request ids and prunes the change feed.
async fn upkeep(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Retention,
    shutdown: CancellationToken,
) {
    let before = |age: Duration| {
        let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        Timestamp::from_micros(clock.now().as_micros().saturating_sub(micros))
    };
    let mut every = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store
            .purge_request_records(before(retention.request_ids))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(n_purged = n, "forgot expired request ids"),
            Err(error) => tracing::warn!(error = %error, "purging request ids failed"),
        }
        match store.prune_feed(before(retention.change_feed)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n_pruned = n, "pruned the change feed"),
            Err(error) => tracing::warn!(error = %error, "pruning the change feed failed"),
        }
        if let Some(age) = retention.personal_data {
            match anonymise_settled_tickets(store.as_ref(), before(age)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    n_anonymised = n,
                    "anonymised settled tickets (retention policy)"
                ),
                Err(error) => tracing::warn!(error = %error, "anonymising settled tickets failed"),
            }
        }
        match store
            .prune_delivered_pushes(before(DELIVERED_PUSH_RETENTION))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(n_pruned = n, "pruned delivered pushes from the outbox"),
            Err(error) => tracing::warn!(error = %error, "pruning delivered pushes failed"),
        }
        match store
            .prune_platform_inbox(before(PLATFORM_INBOX_RETENTION))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(n_pruned = n, "pruned the platform inbox"),
            Err(error) => tracing::warn!(error = %error, "pruning the platform inbox failed"),
        }
    }
}

/// How long the record of each applied feed change is kept. The platform repeats changes
/// within minutes; an older repeat is caught by the case version anyway.
const PLATFORM_INBOX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a delivered push stays in the outbox (for `GetSyncStatus` and for inspection)
/// before the hourly upkeep deletes it.
const DELIVERED_PUSH_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
