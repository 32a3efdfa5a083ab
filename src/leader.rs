//! Leadership: the parts of the service that must run on one replica at a time.
//!
//! The escalation scheduler and the platform pull each run only on the replica that holds
//! their role ([`LeaderRole`]). On PostgreSQL a role is a session advisory lock, taken with
//! `pg_try_advisory_lock` on a connection of its own: every replica tries to take it every
//! [`LeaderSettings::retry`] (on the same session each time, kept between tries), the holder
//! checks every [`LeaderSettings::check`] that its session still answers. When the holder dies (also by SIGKILL) the server ends its session
//! and releases the lock, and another replica takes the role at its next try: leadership
//! moves within `retry` (plus the time PostgreSQL needs to notice a vanished peer; set TCP
//! keepalives for hosts that disappear without closing their connections).
//!
//! A holder that loses its session stops its task at its next check, so for up to `check`
//! two replicas may run the same role. Both roles are safe under that: an SLA alert is a
//! version-checked write that is recorded once, and a pulled change is applied once with
//! the cursor in the same transaction.
//!
//! On SQLite one process serves the file, and it plays every role.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::store::{LeaderRole, Store};

/// How often a replica tries to take a role, and how often the holder checks it still has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSettings {
    pub retry: Duration,
    pub check: Duration,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(2),
            check: Duration::from_secs(1),
        }
    }
}

/// Runs `task` while this replica holds `role`, until `shutdown`: takes the role when it is
/// free, starts the task with a token that is cancelled when the role is lost (or at
/// shutdown), waits for the task to end, and tries again. `leading` is 1 while the role is
/// held here, 0 otherwise.
pub async fn run_as_leader<F, Fut>(
    store: Arc<dyn Store>,
    role: LeaderRole,
    settings: LeaderSettings,
    leading: Gauge,
    shutdown: CancellationToken,
    task: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let role_name = role.as_str();
    loop {
        let lease = match store.try_lead(role).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(
                    role = role_name,
                    error = &error as &dyn std::error::Error,
                    "cannot try to take the role"
                );
                None
            }
        };
        let Some(mut lease) = lease else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(settings.retry) => continue,
            }
        };
        tracing::info!(role = role_name, "this replica took the role");
        leading.set(1);
        let stop = shutdown.child_token();
        let mut running = tokio::spawn(task(stop.clone()));
        let mut checks = tokio::time::interval(settings.check);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            tokio::select! {
                () = shutdown.cancelled() => break false,
                _ = &mut running => break false,
                _ = checks.tick() => {
                    if !lease.still_held().await {
                        break true;
                    }
                }
            }
        };
        stop.cancel();
        if !running.is_finished() {
            running.await.ok();
        }
        leading.set(0);
        if lost {
            tracing::warn!(
                role = role_name,
                "this replica lost the role (its database session ended); stopped it"
            );
        } else {
            lease.release().await;
            if shutdown.is_cancelled() {
                tracing::info!(role = role_name, "gave the role up at shutdown");
                return;
            }
            // The task ended by itself: give the role to whoever is next.
            tracing::warn!(role = role_name, "the role's task ended; gave the role up");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.retry) => {}
        }
    }
}
