//! The SLA runtime: the calendar and SLA settings in force, each ticket's deadlines, and the
//! escalation scheduler that records warnings and breaches.
//!
//! How it fits together:
//! - The calendar and the SLA settings are versioned documents in the store
//!   ([`SettingKey`]); the defaults (`catalog/calendar.toml`, `catalog/sla.toml`) are stored
//!   on first start. [`SlaRuntime`] keeps the versions in force in memory and reloads them
//!   when they change.
//! - The *projection* follows the event log: for every ticket an event touched, it replays
//!   the ticket's history ([`SlaClock::replay`]) and stores when the sweep next has
//!   something to record and when its soonest deadline is due ([`SlaRow`]). When the
//!   calendar or the settings change, every open ticket is replayed again.
//! - With every replay the projection also stores the ticket's KPI facts
//!   ([`TicketFacts`]), for open and settled tickets alike: what `ReportingService` reads.
//! - The *sweep* takes the rows whose alert time has come, replays each ticket once more, and
//!   records the warnings and breaches that are due as events ([`Action::RecordSlaAlert`]),
//!   a breach escalating the ticket per the escalation matrix.
//!
//! Architecture invariants:
//! - The ticket's history is the truth; the projection is only an index. An alert is
//!   recorded only if the replayed history does not hold it yet, and with the version the
//!   replay read (a concurrent change makes the write fail and the next sweep look again), so
//!   a deadline is warned and breached at most once, across restarts and replicas.
//! - Time comes from the injected [`Clock`]: tests move it, nothing sleeps for real.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::calendar::{BusinessCalendar, CalendarSpec};
use crate::domain::filter::TicketFilter;
use crate::domain::kpi::TicketFacts;
use crate::domain::lifecycle::{Action, TicketEvent};
use crate::domain::sla::{AlertStage, SlaAlert, SlaClock, SlaSettings, SlaSettingsSpec};
use crate::domain::ticket::{Status, Ticket};
use crate::domain::values::{Code, TicketId};
use crate::domain::{Clock, FieldViolation, Timestamp};
use crate::store::{
    SettingKey, SlaProgress, SlaRow, Store, StoreError, StoredSetting, TicketLookup, TicketQuery,
    WriteContext,
};

/// Who the scheduler's alerts are recorded as.
pub const SCHEDULER_ACTOR: &str = "sla-scheduler";
/// Who the default settings stored on first start are recorded as.
const DEFAULTS_ACTOR: &str = "balagh (defaults)";
/// The most events one ticket's replay reads.
pub const MAX_EVENTS_PER_TICKET: u32 = 10_000;
/// Rows handled per store round trip.
const BATCH: u32 = 500;
/// Tickets whose alerts are recorded at once in a sweep.
const ALERTS_IN_FLIGHT: usize = 32;
/// How long the category-to-policy map read from the catalog is used.
const POLICY_CODES_TTL: Duration = Duration::from_secs(10);
/// Tickets replayed at once by the projection (reads only).
const REPLAYS_IN_FLIGHT: usize = 16;

/// The calendar and SLA settings in force, with their versions.
#[derive(Debug)]
pub struct SlaConfig {
    pub calendar: BusinessCalendar,
    pub calendar_setting: StoredSetting,
    pub settings: SlaSettings,
    pub settings_setting: StoredSetting,
}

impl SlaConfig {
    fn progress(&self, cursor: i64) -> SlaProgress {
        SlaProgress {
            cursor,
            calendar_version: self.calendar_setting.version,
            sla_version: self.settings_setting.version,
        }
    }
}

/// Why an SLA call failed.
#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid settings")]
    Invalid(Vec<FieldViolation>),
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub tickets_recomputed: u32,
    pub warnings: u32,
    pub breaches: u32,
    pub escalations: u32,
}

/// The category-to-policy map and when it was read.
type PolicyCodes = (std::time::Instant, Arc<HashMap<Code, Code>>);

/// What recording one ticket's due alerts leaves: its projection row, its facts, the counts.
type TicketAlerts = (SlaRow, Option<TicketFacts>, SweepReport);

/// See the module docs.
pub struct SlaRuntime {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: RwLock<Arc<SlaConfig>>,
    policy_codes: RwLock<Option<PolicyCodes>>,
    /// One projection step or sweep at a time in this process.
    busy: tokio::sync::Mutex<()>,
}

impl SlaRuntime {
    /// Loads the settings in force, storing the defaults the first time.
    pub async fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Arc<Self>, SlaError> {
        let config = load_config(store.as_ref()).await?;
        Ok(Arc::new(Self {
            store,
            clock,
            config: RwLock::new(Arc::new(config)),
            policy_codes: RwLock::new(None),
            busy: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<SlaConfig> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the settings again if another replica (or a call) changed them.
    pub async fn reload(&self) -> Result<Arc<SlaConfig>, SlaError> {
        let current = self.config();
        let calendar = self.store.get_setting(SettingKey::Calendar).await?;
        let sla = self.store.get_setting(SettingKey::Sla).await?;
        if calendar.as_ref().map(|s| s.version) == Some(current.calendar_setting.version)
            && sla.as_ref().map(|s| s.version) == Some(current.settings_setting.version)
        {
            return Ok(current);
        }
        let fresh = Arc::new(load_config(self.store.as_ref()).await?);
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        Ok(fresh)
    }

    /// Replaces the calendar. `expected_version` guards against a lost update.
    pub async fn update_calendar(
        &self,
        ctx: WriteContext,
        spec: CalendarSpec,
        expected_version: Option<i64>,
    ) -> Result<Arc<SlaConfig>, SlaError> {
        BusinessCalendar::parse(spec.clone()).map_err(SlaError::Invalid)?;
        let value = serde_json::to_string(&spec).map_err(corrupt)?;
        self.store
            .put_setting(ctx, SettingKey::Calendar, value, expected_version)
            .await?;
        self.reload().await
    }

    /// Replaces the SLA settings. `expected_version` guards against a lost update.
    pub async fn update_settings(
        &self,
        ctx: WriteContext,
        spec: SlaSettingsSpec,
        expected_version: Option<i64>,
    ) -> Result<Arc<SlaConfig>, SlaError> {
        SlaSettings::parse(spec.clone()).map_err(SlaError::Invalid)?;
        let value = serde_json::to_string(&spec).map_err(corrupt)?;
        self.store
            .put_setting(ctx, SettingKey::Sla, value, expected_version)
            .await?;
        self.reload().await
    }

    /// A ticket's SLA clocks as they stand now, from its events read with it (its first
    /// [`MAX_EVENTS_PER_TICKET`], as [`crate::store::Store::get_ticket_with_events`] gives
    /// them, so the two agree).
    pub async fn ticket_sla_of(
        &self,
        ticket: &Ticket,
        events: &[TicketEvent],
    ) -> Result<SlaClock, SlaError> {
        let config = self.config();
        let policies = self.policy_codes().await?;
        Ok(replay(ticket, events, &policies, &config, self.clock.now()))
    }

    /// Brings the projection (and the KPI facts) up to date with the event log, without
    /// recording alerts: what a report calls before it reads the facts. Returns how many
    /// tickets were replayed.
    pub async fn follow(&self) -> Result<u32, SlaError> {
        let _busy = self.busy.lock().await;
        let config = self.reload().await?;
        self.follow_log(&config).await
    }

    /// Brings the projection up to date with the event log and records every alert due.
    pub async fn sweep(&self) -> Result<SweepReport, SlaError> {
        let _busy = self.busy.lock().await;
        let config = self.reload().await?;
        let mut report = SweepReport {
            tickets_recomputed: self.follow_log(&config).await?,
            ..SweepReport::default()
        };
        let policies = self.policy_codes().await?;
        // Each round records what is due and re-projects the tickets it touched; a ticket
        // whose write lost a race is left for the next sweep.
        let mut seen = BTreeSet::new();
        loop {
            let now = self.clock.now();
            let due = self.store.sla_alerts_due(now, BATCH).await?;
            let fresh: Vec<SlaRow> = due
                .into_iter()
                .filter(|row| seen.insert(row.ticket_id))
                .collect();
            if fresh.is_empty() {
                break;
            }
            // Tickets are independent: their alerts are recorded side by side, so the
            // writer can commit them in groups.
            let outcomes: Vec<Result<TicketAlerts, SlaError>> = futures::stream::iter(fresh)
                .map(|row| self.record_due_alerts(row.ticket_id, &config, &policies, now))
                .buffer_unordered(ALERTS_IN_FLIGHT)
                .collect()
                .await;
            let mut rows = Vec::with_capacity(outcomes.len());
            let mut facts = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                let (row, fact, counts) = outcome?;
                report.warnings += counts.warnings;
                report.breaches += counts.breaches;
                report.escalations += counts.escalations;
                rows.push(row);
                facts.extend(fact);
            }
            self.store.save_sla_projection(rows, facts, None).await?;
        }
        Ok(report)
    }

    /// Records the alerts due for one ticket; returns its fresh projection row, its facts
    /// and what it recorded.
    async fn record_due_alerts(
        &self,
        id: TicketId,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        now: Timestamp,
    ) -> Result<TicketAlerts, SlaError> {
        let mut report = SweepReport::default();
        let Some((mut ticket, mut events)) = self.with_history(id).await? else {
            return Ok((idle_row(id), None, report));
        };
        let mut clock = replay(&ticket, &events, policies, config, now);
        for alert in clock.alerts_due(now) {
            let escalate_to = (alert.stage == AlertStage::Breach
                && config.settings.escalates_on(alert.deadline.kind))
            .then(|| {
                config.settings.next_escalation(
                    ticket.assignment.support_line,
                    ticket.escalated_to_director_general,
                )
            })
            .flatten();
            match self.record_alert(&ticket, alert.clone(), escalate_to).await {
                Ok((next, event)) => {
                    match alert.stage {
                        AlertStage::Warning => report.warnings += 1,
                        AlertStage::Breach => report.breaches += 1,
                    }
                    report.escalations += u32::from(escalate_to.is_some());
                    ticket = next;
                    events.push(event);
                }
                // Changed meanwhile (or no longer open): the projection sees the change and
                // the next sweep replays it.
                Err(StoreError::EtagMismatch { .. } | StoreError::Lifecycle(_)) => break,
                Err(error) => return Err(error.into()),
            }
        }
        clock = replay(&ticket, &events, policies, config, now);
        let facts = TicketFacts::derive(&ticket, &events, &clock);
        Ok((row_of(&ticket, &clock), Some(facts), report))
    }

    async fn record_alert(
        &self,
        ticket: &Ticket,
        alert: SlaAlert,
        escalate_to: Option<crate::domain::sla::EscalationTarget>,
    ) -> Result<(Ticket, TicketEvent), StoreError> {
        tracing::info!(
            ticket_id = %ticket.id,
            reference = %ticket.reference,
            deadline = alert.deadline.kind.as_str(),
            stage = ?alert.stage,
            escalate_to = escalate_to.map(|t| t.as_str()),
            "recording an SLA alert"
        );
        let ctx = WriteContext {
            actor: SCHEDULER_ACTOR.to_owned(),
            request: None,
            reach: None,
        };
        self.store
            .apply_action(
                ctx,
                ticket.id,
                Some(ticket.version),
                Action::RecordSlaAlert { alert, escalate_to },
            )
            .await
    }

    /// Replays the tickets touched since the projection's cursor (or every open ticket, when
    /// the settings changed or the log moved past what can be followed). Returns how many.
    async fn follow_log(&self, config: &SlaConfig) -> Result<u32, SlaError> {
        let progress = self.store.sla_progress().await?;
        let bounds = self.store.feed_bounds().await?;
        let settings_changed = progress.calendar_version != config.calendar_setting.version
            || progress.sla_version != config.settings_setting.version;
        let policies = self.policy_codes().await?;
        let now = self.clock.now();
        if progress.cursor < bounds.oldest_resumable {
            // Which tickets changed since the cursor can no longer be read from the log:
            // every ticket is replayed, settled ones too, so that no KPI facts go stale.
            return self
                .rebuild(config, &policies, bounds.latest, now, Replay::Every)
                .await;
        }
        if settings_changed {
            // The rebuild replays open tickets only and then moves the cursor past the log:
            // the tickets settled since the cursor are replayed first, so that their KPI
            // facts (and the removal of their rows) are not skipped. The cursor stays where it
            // is until the rebuild moves it.
            let n = self
                .replay_touched(progress.cursor, config, &policies, now, false)
                .await?;
            let m = self
                .rebuild(config, &policies, bounds.latest, now, Replay::Open)
                .await?;
            return Ok(n.saturating_add(m));
        }
        self.replay_touched(progress.cursor, config, &policies, now, true)
            .await
    }

    /// Replays every ticket touched after `cursor`, page by page; with `advance`, each page
    /// also moves the projection's cursor.
    async fn replay_touched(
        &self,
        mut cursor: i64,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        now: Timestamp,
        advance: bool,
    ) -> Result<u32, SlaError> {
        let mut n = 0;
        loop {
            let changes = self.store.read_changes(cursor, BATCH).await?;
            let Some(last) = changes.last() else {
                return Ok(n);
            };
            cursor = last.event.cursor;
            let touched: BTreeSet<TicketId> = if advance {
                changes.iter().map(|c| c.event.ticket_id).collect()
            } else {
                // Before a rebuild of the open tickets: only the tickets this page leaves
                // settled need a replay here; the rebuild replays the others.
                let mut last_status = HashMap::new();
                for change in &changes {
                    last_status.insert(change.event.ticket_id, change.ticket.status);
                }
                last_status
                    .into_iter()
                    .filter(|(_, status)| !OPEN_STATUSES.contains(status))
                    .map(|(id, _)| id)
                    .collect()
            };
            let (rows, facts) = self.project_all(touched, config, policies, now).await?;
            n += u32::try_from(rows.len()).unwrap_or(u32::MAX);
            let progress = advance.then(|| config.progress(cursor));
            self.store
                .save_sla_projection(rows, facts, progress)
                .await?;
        }
    }

    /// Replays every open ticket (or every ticket): after a calendar or settings change,
    /// deadlines are recomputed from each ticket's history.
    async fn rebuild(
        &self,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        latest_cursor: i64,
        now: Timestamp,
        which: Replay,
    ) -> Result<u32, SlaError> {
        tracing::info!(
            calendar_version = config.calendar_setting.version,
            sla_version = config.settings_setting.version,
            every_ticket = which == Replay::Every,
            "recomputing the deadlines of every open ticket"
        );
        let statuses = match which {
            Replay::Open => OPEN_STATUSES.to_vec(),
            Replay::Every => Vec::new(),
        };
        let mut query = TicketQuery {
            filter: TicketFilter {
                statuses,
                ..TicketFilter::default()
            },
            limit: BATCH,
            ..TicketQuery::default()
        };
        let mut n = 0;
        loop {
            let page = self.store.list_tickets(&query).await?;
            let Some(last) = page.last() else {
                break;
            };
            query.before_position = Some(last.position);
            // The futures are made first, outside the stream: a stream's closure that borrows
            // would make the sweep's future lose `Send` (rust-lang/rust#102211).
            let replays: Vec<_> = page
                .iter()
                .map(|listed| self.project_ticket(&listed.ticket, config, policies, now))
                .collect();
            let projected: Vec<(SlaRow, TicketFacts)> = futures::stream::iter(replays)
                .buffered(REPLAYS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            // A settled ticket's row comes out idle: the projection drops it.
            let (rows, facts): (Vec<SlaRow>, Vec<TicketFacts>) = projected.into_iter().unzip();
            n += u32::try_from(rows.len()).unwrap_or(u32::MAX);
            self.store.save_sla_projection(rows, facts, None).await?;
        }
        // A row left from a ticket no longer open is made idle by its next sweep. The cursor is taken before the pages were read, so a change made meanwhile is
        // replayed again by the next step.
        self.store
            .save_sla_projection(Vec::new(), Vec::new(), Some(config.progress(latest_cursor)))
            .await?;
        Ok(n)
    }

    /// Replays several tickets side by side.
    async fn project_all(
        &self,
        ids: BTreeSet<TicketId>,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        now: Timestamp,
    ) -> Result<(Vec<SlaRow>, Vec<TicketFacts>), SlaError> {
        let replays: Vec<_> = ids
            .into_iter()
            .map(|id| self.project(id, config, policies, now))
            .collect();
        let projected: Vec<(SlaRow, Option<TicketFacts>)> = futures::stream::iter(replays)
            .buffered(REPLAYS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut rows = Vec::with_capacity(projected.len());
        let mut facts = Vec::with_capacity(projected.len());
        for (row, fact) in projected {
            rows.push(row);
            facts.extend(fact);
        }
        Ok((rows, facts))
    }

    /// A ticket's projection row and KPI facts. A ticket that is no longer open leaves the
    /// projection, but its facts (which matter most once it is settled) are still written.
    async fn project(
        &self,
        id: TicketId,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        now: Timestamp,
    ) -> Result<(SlaRow, Option<TicketFacts>), SlaError> {
        let Some((ticket, events)) = self.with_history(id).await? else {
            return Ok((idle_row(id), None));
        };
        let (row, facts) = project_with(&ticket, &events, config, policies, now);
        Ok((row, Some(facts)))
    }

    /// The row (idle unless the ticket is open) and the facts of a ticket read already.
    async fn project_ticket(
        &self,
        ticket: &Ticket,
        config: &SlaConfig,
        policies: &HashMap<Code, Code>,
        now: Timestamp,
    ) -> Result<(SlaRow, TicketFacts), SlaError> {
        let events = self
            .store
            .list_ticket_events(ticket.id, 0, MAX_EVENTS_PER_TICKET)
            .await?
            .unwrap_or_default();
        Ok(project_with(ticket, &events, config, policies, now))
    }

    /// A ticket with the history its clock is replayed from, read as of one moment.
    async fn with_history(
        &self,
        id: TicketId,
    ) -> Result<Option<(Ticket, Vec<TicketEvent>)>, SlaError> {
        Ok(self
            .store
            .get_ticket_with_events(TicketLookup::Id(id), MAX_EVENTS_PER_TICKET)
            .await?)
    }

    /// Category code to SLA policy code, read from the catalog at most every
    /// [`POLICY_CODES_TTL`]: a category's new policy applies within that time.
    async fn policy_codes(&self) -> Result<Arc<HashMap<Code, Code>>, SlaError> {
        if let Some((read_at, codes)) = self
            .policy_codes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && read_at.elapsed() < POLICY_CODES_TTL
        {
            return Ok(codes.clone());
        }
        let codes: Arc<HashMap<Code, Code>> = Arc::new(
            self.store
                .catalog()
                .await?
                .categories
                .into_iter()
                .map(|c| (c.code, c.sla_policy_code))
                .collect(),
        );
        *self
            .policy_codes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), codes.clone()));
        Ok(codes)
    }

    /// Runs the sweep every `interval` until `shutdown`.
    pub async fn run_until_stopped(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.sweep().await {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(?report, "escalation sweep");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "escalation sweep failed"
                    );
                }
            }
        }
    }
}

/// Which tickets a rebuild replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    Open,
    Every,
}

/// The statuses in which a ticket's SLA clocks can run.
pub const OPEN_STATUSES: [Status; 5] = [
    Status::New,
    Status::Assigned,
    Status::InProgress,
    Status::WaitingOnBeneficiary,
    Status::Reopened,
];

/// The projection row (idle unless the ticket is open) and the KPI facts of a ticket and its
/// history.
fn project_with(
    ticket: &Ticket,
    events: &[TicketEvent],
    config: &SlaConfig,
    policies: &HashMap<Code, Code>,
    now: Timestamp,
) -> (SlaRow, TicketFacts) {
    let clock = replay(ticket, events, policies, config, now);
    let facts = TicketFacts::derive(ticket, events, &clock);
    if !OPEN_STATUSES.contains(&ticket.status) {
        return (row_of(ticket, &idle_clock()), facts);
    }
    (row_of(ticket, &clock), facts)
}

fn replay(
    ticket: &Ticket,
    events: &[TicketEvent],
    policies: &HashMap<Code, Code>,
    config: &SlaConfig,
    now: Timestamp,
) -> SlaClock {
    // A category unknown to the catalog (never the case) falls back to the default policy.
    let policy = policies
        .get(&ticket.category)
        .cloned()
        .unwrap_or_else(|| ticket.category.clone());
    SlaClock::replay(
        ticket,
        events,
        &policy,
        &config.settings,
        &config.calendar,
        now,
    )
}

fn idle_clock() -> SlaClock {
    SlaClock {
        policy: Code::parse("policy", "none").expect("a valid code"),
        paused: false,
        elapsed_seconds: 0,
        deadlines: Vec::new(),
    }
}

fn idle_row(id: TicketId) -> SlaRow {
    SlaRow {
        ticket_id: id,
        reference: crate::domain::values::ReferenceNumber::new(2000, 1).expect("a valid reference"),
        directorate: None,
        next_alert_time: None,
        next_due_time: None,
        next_due_kind: None,
    }
}

fn row_of(ticket: &Ticket, clock: &SlaClock) -> SlaRow {
    let next_due = clock
        .open_deadlines()
        .filter(|d| !d.breach_recorded)
        .filter_map(|d| d.due_time.map(|t| (t, d.deadline.kind)))
        .min();
    let open = OPEN_STATUSES.contains(&ticket.status);
    SlaRow {
        ticket_id: ticket.id,
        reference: ticket.reference,
        directorate: ticket.assignment.directorate.clone(),
        next_alert_time: clock.next_alert_time().filter(|_| open),
        next_due_time: next_due.map(|(t, _)| t).filter(|_| open),
        next_due_kind: next_due.map(|(_, k)| k).filter(|_| open),
    }
}

async fn load_config(store: &dyn Store) -> Result<SlaConfig, SlaError> {
    let calendar_setting = match store.get_setting(SettingKey::Calendar).await? {
        Some(s) => s,
        None => {
            let spec = BusinessCalendar::muscat_default().spec().clone();
            store_default(store, SettingKey::Calendar, &spec).await?
        }
    };
    let settings_setting = match store.get_setting(SettingKey::Sla).await? {
        Some(s) => s,
        None => {
            let spec = SlaSettings::default_settings().spec().clone();
            store_default(store, SettingKey::Sla, &spec).await?
        }
    };
    let calendar_spec: CalendarSpec =
        serde_json::from_str(&calendar_setting.value).map_err(corrupt)?;
    let calendar = BusinessCalendar::parse(calendar_spec)
        .map_err(|v| SlaError::Store(StoreError::Corrupt(format!("stored calendar: {}", v[0]))))?;
    let sla_spec: SlaSettingsSpec =
        serde_json::from_str(&settings_setting.value).map_err(corrupt)?;
    let settings = SlaSettings::parse(sla_spec).map_err(|v| {
        SlaError::Store(StoreError::Corrupt(format!(
            "stored SLA settings: {}",
            v[0]
        )))
    })?;
    Ok(SlaConfig {
        calendar,
        calendar_setting,
        settings,
        settings_setting,
    })
}

/// Stores a default the first time; when another replica stored it first, reads theirs.
async fn store_default<T: serde::Serialize>(
    store: &dyn Store,
    key: SettingKey,
    spec: &T,
) -> Result<StoredSetting, SlaError> {
    let value = serde_json::to_string(spec).map_err(corrupt)?;
    let ctx = WriteContext {
        actor: DEFAULTS_ACTOR.to_owned(),
        request: None,
        reach: None,
    };
    match store.put_setting(ctx, key, value, Some(0)).await {
        Ok(stored) => Ok(stored),
        Err(StoreError::SettingVersionMismatch { .. }) => store
            .get_setting(key)
            .await?
            .ok_or_else(|| SlaError::Store(StoreError::Corrupt("setting vanished".into()))),
        Err(error) => Err(error.into()),
    }
}

fn corrupt(error: serde_json::Error) -> SlaError {
    SlaError::Store(StoreError::Corrupt(format!("settings document: {error}")))
}
