//! The admin HTTP port: `/metrics` (Prometheus text format), `/livez` and `/readyz`.
//!
//! It is separate from the gRPC port so it can stay inside the cluster network. `/livez`
//! answers 200 while the process runs; `/readyz` answers 200 only while the server accepts
//! calls and the database answers, and 503 from the moment shutdown starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::grpc::watch::ChangeFeed;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub store: Arc<dyn Store>,
    pub feed: Arc<ChangeFeed>,
    /// True while the gRPC server accepts calls.
    pub serving: Arc<AtomicBool>,
    /// The application's clock, for ages such as the oldest waiting push.
    pub clock: Arc<dyn crate::domain::Clock>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the admin port until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(error = %error, "the admin server failed");
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Gauges read at scrape time: the log's end, the feed's position, the pool.
    if let Ok(Ok(bounds)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.feed_bounds()).await
    {
        state.metrics.event_log_latest.set(bounds.latest);
    }
    state
        .metrics
        .change_feed_published
        .set(state.feed.published());
    if let Ok(Ok(outbox)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.outbox_status()).await
    {
        for (name, n) in [
            ("pending", outbox.pending),
            ("leased", outbox.leased),
            ("dead", outbox.dead),
            ("delivered", outbox.delivered),
        ] {
            state
                .metrics
                .outbox_entries
                .get_or_create(&crate::metrics::StateLabels { state: name })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let age = outbox.oldest_pending.map_or(0, |t| {
            (state.clock.now().as_micros() - t.as_micros()).max(0) / 1_000_000
        });
        state.metrics.outbox_oldest_pending_seconds.set(age);
    }
    if let Ok(Ok(pull)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.pull_state()).await
    {
        state
            .metrics
            .platform_pulled_changes
            .set(i64::try_from(pull.n_changes).unwrap_or(i64::MAX));
        let age = pull.last_pull_time.map_or(-1, |t| {
            (state.clock.now().as_micros() - t.as_micros()).max(0) / 1_000_000
        });
        state.metrics.platform_last_pull_age_seconds.set(age);
    }
    let pool = state.store.pool_status();
    state.metrics.db_pool_connections.set(i64::from(pool.size));
    state
        .metrics
        .db_pool_idle
        .set(i64::try_from(pool.idle).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.serving.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving");
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.feed_bounds()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database not answering"),
    }
}
