//! `balagh.v1.SlaService`: the business calendar, the SLA settings and their audit trail,
//! each ticket's deadlines, the board of tickets at risk, and the escalation sweep on demand.
//! Requests are parsed into the domain's spec types here; validation is the domain's.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{EnumInput, Violations, timestamp_to_proto};
use super::error::{invalid_argument, prefixed, status};
use super::proto::{self, sla_service_server::SlaService};
use super::request::{
    PageToken, filter_hash, page_size, parse_etag, parse_setting_etag, request_key, write_context,
};
use crate::domain::FieldViolation;
use crate::domain::calendar::{
    CalendarSpec, DayHoursSpec, HolidaySpec, RecurringHolidaySpec, SeasonSpec,
};
use crate::domain::sla::{
    DeadlineKind, EscalationTarget, LineHoldSpec, PolicySpec, SlaClock, SlaSettingsSpec, Targets,
};
use crate::domain::ticket::{Priority, Ticket};
use crate::domain::values::{Code, TicketId};
use crate::sla::{SlaConfig, SlaError, SlaRuntime};
use crate::store::{SettingKey, Store, StoreError, StoredSetting};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_AT_RISK_MINUTES: u32 = 60;
const MAX_AT_RISK_MINUTES: u32 = 10_080;
/// Most entries of any list in a calendar or settings request (far above real use).
const MAX_LIST_ENTRIES: usize = 2_000;

pub struct SlaServiceImpl {
    store: Arc<dyn Store>,
    sla: Arc<SlaRuntime>,
}

impl SlaServiceImpl {
    pub fn new(store: Arc<dyn Store>, sla: Arc<SlaRuntime>) -> Self {
        Self { store, sla }
    }
}

impl From<SlaError> for Status {
    fn from(error: SlaError) -> Self {
        match error {
            SlaError::Store(error) => error.into(),
            SlaError::Invalid(violations) => invalid_argument(violations),
        }
    }
}

fn etag(setting: &StoredSetting) -> String {
    crate::domain::ticket::etag_of(setting.version)
}

fn week_to_proto(week: &[DayHoursSpec]) -> Vec<proto::DayHours> {
    week.iter()
        .map(|d| proto::DayHours {
            day: d.day.clone(),
            hours: d.hours.clone(),
        })
        .collect()
}

fn week_from_proto(week: &[proto::DayHours]) -> Vec<DayHoursSpec> {
    week.iter()
        .map(|d| DayHoursSpec {
            day: d.day.clone(),
            hours: d.hours.clone(),
        })
        .collect()
}

fn calendar_to_proto(config: &SlaConfig) -> proto::BusinessCalendar {
    let spec = config.calendar.spec();
    let setting = &config.calendar_setting;
    proto::BusinessCalendar {
        week: week_to_proto(&spec.week),
        seasons: spec
            .seasons
            .iter()
            .map(|s| proto::Season {
                name: s.name.clone(),
                from: s.from.clone(),
                to: s.to.clone(),
                week: week_to_proto(&s.week),
            })
            .collect(),
        recurring_holidays: spec
            .recurring_holidays
            .iter()
            .map(|h| proto::RecurringHoliday {
                name: h.name.clone(),
                date: h.date.clone(),
            })
            .collect(),
        holidays: spec.holidays.iter().map(holiday_to_proto).collect(),
        etag: etag(setting),
        update_time: Some(timestamp_to_proto(setting.update_time)),
        updated_by: setting.actor.clone(),
    }
}

fn holiday_to_proto(h: &HolidaySpec) -> proto::Holiday {
    proto::Holiday {
        name: h.name.clone(),
        from: h.from.clone(),
        to: h.to.clone(),
    }
}

fn calendar_from_proto(c: &proto::BusinessCalendar) -> CalendarSpec {
    CalendarSpec {
        week: week_from_proto(&c.week),
        seasons: c
            .seasons
            .iter()
            .map(|s| SeasonSpec {
                name: s.name.clone(),
                from: s.from.clone(),
                to: s.to.clone(),
                week: week_from_proto(&s.week),
            })
            .collect(),
        recurring_holidays: c
            .recurring_holidays
            .iter()
            .map(|h| RecurringHolidaySpec {
                name: h.name.clone(),
                date: h.date.clone(),
            })
            .collect(),
        holidays: c
            .holidays
            .iter()
            .map(|h| HolidaySpec {
                name: h.name.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
            })
            .collect(),
    }
}

/// Refuses lists longer than [`MAX_LIST_ENTRIES`] before anything else looks at them.
fn check_sizes(v: &mut Violations, lists: &[(&str, usize)]) {
    for (field, n) in lists {
        if *n > MAX_LIST_ENTRIES {
            v.push(field, format!("at most {MAX_LIST_ENTRIES} entries"));
        }
    }
}

fn settings_to_proto(config: &SlaConfig) -> proto::SlaSettings {
    let spec = config.settings.spec();
    let setting = &config.settings_setting;
    proto::SlaSettings {
        warn_at_percent: u32::from(spec.warn_at_percent),
        default_policy: spec.default_policy.clone(),
        escalation_steps: spec
            .escalation_steps
            .iter()
            .filter_map(|s| EscalationTarget::from_str_opt(s))
            .map(|t| proto::EscalationTarget::from(t).into())
            .collect(),
        escalate_on: spec
            .escalate_on
            .iter()
            .filter_map(|k| DeadlineKind::from_str_opt(k))
            .map(|k| proto::DeadlineKind::from(k).into())
            .collect(),
        line_1_hold_minutes: spec.line_hold_minutes.line_1,
        line_2_hold_minutes: spec.line_hold_minutes.line_2,
        line_3_hold_minutes: spec.line_hold_minutes.line_3,
        policies: spec
            .policies
            .iter()
            .map(|p| proto::SlaPolicy {
                code: p.code.clone(),
                name: p.name.clone(),
                targets: p
                    .targets
                    .iter()
                    .filter_map(|(priority, t)| {
                        Priority::from_str_opt(priority).map(|priority| proto::PriorityTargets {
                            priority: proto::Priority::from(priority).into(),
                            first_response_minutes: t.first_response,
                            update_interval_minutes: t.update_interval.unwrap_or(0),
                            resolution_minutes: t.resolution,
                        })
                    })
                    .collect(),
            })
            .collect(),
        etag: etag(setting),
        update_time: Some(timestamp_to_proto(setting.update_time)),
        updated_by: setting.actor.clone(),
    }
}

/// Converts the request's settings into the domain's spec; enum values become their names,
/// so the domain's validation sees exactly what it sees in `catalog/sla.toml`.
fn settings_from_proto(v: &mut Violations, s: &proto::SlaSettings) -> Option<SlaSettingsSpec> {
    check_sizes(
        v,
        &[
            ("settings.escalation_steps", s.escalation_steps.len()),
            ("settings.escalate_on", s.escalate_on.len()),
            ("settings.policies", s.policies.len()),
        ],
    );
    let mut steps = Vec::new();
    for (i, step) in s.escalation_steps.iter().enumerate() {
        if let Some(t) = v.take(EscalationTarget::from_proto(
            &format!("settings.escalation_steps[{i}]"),
            *step,
        )) {
            steps.push(t.as_str().to_owned());
        }
    }
    let mut escalate_on = Vec::new();
    for (i, kind) in s.escalate_on.iter().enumerate() {
        if let Some(k) = v.take(DeadlineKind::from_proto(
            &format!("settings.escalate_on[{i}]"),
            *kind,
        )) {
            escalate_on.push(k.as_str().to_owned());
        }
    }
    let mut policies = Vec::new();
    for (i, p) in s.policies.iter().enumerate() {
        let mut targets = std::collections::BTreeMap::new();
        for (j, t) in p.targets.iter().enumerate() {
            let field = format!("settings.policies[{i}].targets[{j}]");
            let Some(priority) = v.take(Priority::from_proto(
                &format!("{field}.priority"),
                t.priority,
            )) else {
                continue;
            };
            let entry = Targets {
                first_response: t.first_response_minutes,
                update_interval: (t.update_interval_minutes > 0)
                    .then_some(t.update_interval_minutes),
                resolution: t.resolution_minutes,
            };
            if targets
                .insert(priority.as_str().to_owned(), entry)
                .is_some()
            {
                v.push(&format!("{field}.priority"), "is listed twice");
            }
        }
        policies.push(PolicySpec {
            code: p.code.clone(),
            name: p.name.clone(),
            targets,
        });
    }
    let warn_at_percent = match u8::try_from(s.warn_at_percent) {
        Ok(p) => p,
        Err(_) => {
            v.push("settings.warn_at_percent", "must be from 1 to 99");
            0
        }
    };
    v.is_empty().then(|| SlaSettingsSpec {
        warn_at_percent,
        default_policy: s.default_policy.clone(),
        escalation_steps: steps,
        escalate_on,
        line_hold_minutes: LineHoldSpec {
            line_1: s.line_1_hold_minutes,
            line_2: s.line_2_hold_minutes,
            line_3: s.line_3_hold_minutes,
        },
        policies,
    })
}

pub fn ticket_sla_to_proto(ticket: &Ticket, clock: &SlaClock) -> proto::TicketSla {
    proto::TicketSla {
        ticket_id: ticket.id.to_string(),
        policy_code: clock.policy.to_string(),
        paused: clock.paused,
        elapsed_business_seconds: clock.elapsed_seconds,
        deadlines: clock
            .deadlines
            .iter()
            .map(|d| proto::SlaDeadline {
                kind: proto::DeadlineKind::from(d.deadline.kind).into(),
                anchor_cursor: d.deadline.anchor,
                target_business_seconds: d.target_seconds,
                elapsed_business_seconds: d.elapsed_seconds,
                due_time: d.due_time.map(timestamp_to_proto),
                warn_time: d.warn_time.map(timestamp_to_proto),
                stop_time: d.stop_time.map(timestamp_to_proto),
                paused: d.paused,
                breached: d.is_breached(),
                warning_recorded: d.warned,
                breach_recorded: d.breach_recorded,
            })
            .collect(),
        next_due_time: clock.next_due_time().map(timestamp_to_proto),
    }
}

/// Prefixes the domain's violations (paths within the spec) with the request field.
fn in_field(field: &str) -> impl Fn(SlaError) -> Status + '_ {
    move |error| match error {
        SlaError::Invalid(violations) => invalid_argument(prefixed(field, violations)),
        other => other.into(),
    }
}

#[tonic::async_trait]
impl SlaService for SlaServiceImpl {
    async fn get_calendar(
        &self,
        _request: Request<proto::GetCalendarRequest>,
    ) -> Result<Response<proto::GetCalendarResponse>, Status> {
        let config = self.sla.reload().await?;
        Ok(Response::new(proto::GetCalendarResponse {
            calendar: Some(calendar_to_proto(&config)),
        }))
    }

    async fn update_calendar(
        &self,
        request: Request<proto::UpdateCalendarRequest>,
    ) -> Result<Response<proto::UpdateCalendarResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "UpdateCalendar",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let version = v
            .take(parse_setting_etag("etag", &message.etag, "calendar"))
            .map(Some);
        let Some(calendar) = &message.calendar else {
            v.push("calendar", "is required");
            return Err(invalid_argument(v.0));
        };
        check_sizes(
            &mut v,
            &[
                ("calendar.week", calendar.week.len()),
                ("calendar.seasons", calendar.seasons.len()),
                (
                    "calendar.recurring_holidays",
                    calendar.recurring_holidays.len(),
                ),
                ("calendar.holidays", calendar.holidays.len()),
            ],
        );
        let (key, version) = v
            .finish(|| Some((key?, version?)))
            .map_err(invalid_argument)?;
        let ctx = write_context(&request, key);
        let config = self
            .sla
            .update_calendar(ctx, calendar_from_proto(calendar), version)
            .await
            .map_err(in_field("calendar."))?;
        tracing::info!(
            version = config.calendar_setting.version,
            "business calendar changed"
        );
        Ok(Response::new(proto::UpdateCalendarResponse {
            calendar: Some(calendar_to_proto(&config)),
        }))
    }

    async fn add_holiday(
        &self,
        request: Request<proto::AddHolidayRequest>,
    ) -> Result<Response<proto::AddHolidayResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "AddHoliday",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let version = v.take(parse_etag("etag", &message.etag));
        let Some(holiday) = &message.holiday else {
            v.push("holiday", "is required");
            return Err(invalid_argument(v.0));
        };
        let (key, version) = v
            .finish(|| Some((key?, version?)))
            .map_err(invalid_argument)?;
        let current = self.sla.reload().await?;
        let expected = version.unwrap_or(current.calendar_setting.version);
        if expected != current.calendar_setting.version {
            return Err(StoreError::SettingVersionMismatch {
                current_version: current.calendar_setting.version,
            }
            .into());
        }
        let mut spec = current.calendar.spec().clone();
        let index = spec.holidays.len();
        spec.holidays.push(HolidaySpec {
            name: holiday.name.clone(),
            from: holiday.from.clone(),
            to: holiday.to.clone(),
        });
        let ctx = write_context(&request, key);
        let config = self
            .sla
            .update_calendar(ctx, spec, Some(expected))
            .await
            .map_err(|error| match error {
                SlaError::Invalid(violations) => invalid_argument(
                    violations
                        .into_iter()
                        .map(|v| {
                            let field = v
                                .field
                                .strip_prefix(&format!("holidays[{index}]"))
                                .map(|rest| format!("holiday{rest}"))
                                .unwrap_or_else(|| format!("holiday ({})", v.field));
                            FieldViolation::new(&field, v.description)
                        })
                        .collect(),
                ),
                other => other.into(),
            })?;
        tracing::info!(
            version = config.calendar_setting.version,
            "holiday added to the business calendar"
        );
        Ok(Response::new(proto::AddHolidayResponse {
            calendar: Some(calendar_to_proto(&config)),
        }))
    }

    async fn get_sla_settings(
        &self,
        _request: Request<proto::GetSlaSettingsRequest>,
    ) -> Result<Response<proto::GetSlaSettingsResponse>, Status> {
        let config = self.sla.reload().await?;
        Ok(Response::new(proto::GetSlaSettingsResponse {
            settings: Some(settings_to_proto(&config)),
        }))
    }

    async fn update_sla_settings(
        &self,
        request: Request<proto::UpdateSlaSettingsRequest>,
    ) -> Result<Response<proto::UpdateSlaSettingsResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "UpdateSlaSettings",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let version = v
            .take(parse_setting_etag("etag", &message.etag, "settings"))
            .map(Some);
        let Some(settings) = &message.settings else {
            v.push("settings", "is required");
            return Err(invalid_argument(v.0));
        };
        let spec = settings_from_proto(&mut v, settings);
        let (key, version, spec) = v
            .finish(|| Some((key?, version?, spec?)))
            .map_err(invalid_argument)?;
        let ctx = write_context(&request, key);
        let config = self
            .sla
            .update_settings(ctx, spec, version)
            .await
            .map_err(in_field("settings."))?;
        tracing::info!(
            version = config.settings_setting.version,
            "SLA settings changed"
        );
        Ok(Response::new(proto::UpdateSlaSettingsResponse {
            settings: Some(settings_to_proto(&config)),
        }))
    }

    async fn list_setting_changes(
        &self,
        request: Request<proto::ListSettingChangesRequest>,
    ) -> Result<Response<proto::ListSettingChangesResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = match proto::SettingKind::try_from(message.setting) {
            Ok(proto::SettingKind::Calendar) => Some(SettingKey::Calendar),
            Ok(proto::SettingKind::Sla) => Some(SettingKey::Sla),
            Ok(proto::SettingKind::KpiTargets) => Some(SettingKey::KpiTargets),
            Ok(proto::SettingKind::QualityRubric) => Some(SettingKey::QualityRubric),
            _ => {
                v.push("setting", "must be a kind of setting");
                None
            }
        };
        let size = v.take(page_size(
            message.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        ));
        let hash = filter_hash(message, |m| {
            m.page_size = 0;
            m.page_token.clear();
        });
        let token = v.take(PageToken::decode(&message.page_token, hash));
        let (key, size, token) = v
            .finish(|| Some((key?, size?, token?)))
            .map_err(invalid_argument)?;
        let changes = self
            .store
            .list_setting_changes(key, token.map(|t| t.position), size)
            .await?;
        let next_page_token = match changes.last() {
            Some(last) if changes.len() == size as usize && last.version > 1 => PageToken {
                position: last.version,
                filter_hash: hash,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListSettingChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| proto::SettingChange {
                    version: c.version,
                    actor: c.actor,
                    change_time: Some(timestamp_to_proto(c.update_time)),
                    value_json: c.value,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn get_ticket_sla(
        &self,
        request: Request<proto::GetTicketSlaRequest>,
    ) -> Result<Response<proto::GetTicketSlaResponse>, Status> {
        let id = TicketId::parse("ticket_id", &request.get_ref().ticket_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        let scope = crate::auth::Principal::of(&request).ticket_scope();
        // The ticket and the history its clock is computed from, as of one moment.
        let (ticket, events) = self
            .store
            .get_ticket_with_events(
                crate::store::TicketLookup::Id(id),
                crate::sla::MAX_EVENTS_PER_TICKET,
            )
            .await?
            .filter(|(ticket, _)| scope.admits(ticket))
            .ok_or(crate::store::StoreError::TicketNotFound)?;
        let clock = self.sla.ticket_sla_of(&ticket, &events).await?;
        Ok(Response::new(proto::GetTicketSlaResponse {
            sla: Some(ticket_sla_to_proto(&ticket, &clock)),
        }))
    }

    async fn list_tickets_at_risk(
        &self,
        request: Request<proto::ListTicketsAtRiskRequest>,
    ) -> Result<Response<proto::ListTicketsAtRiskResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let directorate = if message.directorate.is_empty() {
            Some(None)
        } else {
            v.take(Code::parse("directorate", &message.directorate))
                .map(Some)
        };
        let minutes = match message.within_business_minutes {
            0 => Some(DEFAULT_AT_RISK_MINUTES),
            m if m <= MAX_AT_RISK_MINUTES => Some(m),
            _ => {
                v.push(
                    "within_business_minutes",
                    format!("must be at most {MAX_AT_RISK_MINUTES}"),
                );
                None
            }
        };
        let size = v.take(page_size(
            message.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        ));
        let (directorate, minutes, size) = v
            .finish(|| Some((directorate?, minutes?, size?)))
            .map_err(invalid_argument)?;
        let scope = crate::auth::Principal::of(&request).ticket_scope();
        let Some(directorate) = scope.restrict_directorate(directorate) else {
            // Another directorate's tickets were asked for: none the caller may see.
            return Ok(Response::new(proto::ListTicketsAtRiskResponse::default()));
        };
        let config = self.sla.reload().await?;
        let now = self.sla.now();
        // The horizon is counted in business time: "the next business hour" on a Thursday
        // afternoon reaches into Sunday morning.
        let horizon = config
            .calendar
            .add_business_seconds(now, i64::from(minutes) * 60)
            .unwrap_or(now);
        let rows = self.store.sla_at_risk(directorate, horizon, size).await?;
        Ok(Response::new(proto::ListTicketsAtRiskResponse {
            tickets: rows
                .into_iter()
                .map(|row| proto::TicketAtRisk {
                    ticket_id: row.ticket_id.to_string(),
                    reference: row.reference.to_string(),
                    directorate: row.directorate.map(|d| d.to_string()).unwrap_or_default(),
                    kind: row
                        .next_due_kind
                        .map(|k| proto::DeadlineKind::from(k).into())
                        .unwrap_or_default(),
                    due_time: row.next_due_time.map(timestamp_to_proto),
                    breached: row.next_due_time.is_some_and(|t| t <= now),
                })
                .collect(),
        }))
    }

    async fn run_escalation_sweep(
        &self,
        _request: Request<proto::RunEscalationSweepRequest>,
    ) -> Result<Response<proto::RunEscalationSweepResponse>, Status> {
        let report = self.sla.sweep().await?;
        Ok(Response::new(proto::RunEscalationSweepResponse {
            tickets_recomputed: report.tickets_recomputed,
            warnings: report.warnings,
            breaches: report.breaches,
            escalations: report.escalations,
        }))
    }
}

/// The reason of a manual escalation that has nowhere higher to go.
pub fn no_higher_step() -> Status {
    status(
        tonic::Code::FailedPrecondition,
        "NO_HIGHER_ESCALATION",
        "the ticket already stands at the top of the escalation matrix",
        HashMap::new(),
        &[],
    )
}
