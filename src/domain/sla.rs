//! SLA policies, the escalation matrix, and a ticket's SLA clocks replayed from its history.
//!
//! A ticket runs up to four clocks, all in business time of the [`BusinessCalendar`]:
//! - **first response**: from creation to the first thing the beneficiary is told (a public
//!   comment, or the ticket taken into work, put on hold for them, resolved, rejected or
//!   transferred);
//! - **update interval**: after the first response, the longest the beneficiary may wait
//!   for the next public update while the ticket is open;
//! - **resolution**: from creation (or from a reopening) to resolution, paused while the
//!   ticket waits on the beneficiary;
//! - **line hold**: how long the support line that holds the ticket may keep it, from the
//!   assignment or escalation that brought it there, paused while waiting on the beneficiary.
//!
//! Each clock run is a *deadline*, named by its kind and its *anchor*: the cursor of the event
//! that started it. A warning and a breach are recorded at most once per deadline, as events
//! in the ticket's log ([`SlaAlert`]); replaying the history tells which have fired, so
//! nothing fires twice, after a restart or after a calendar change moved a due time.
//!
//! Architecture invariant: [`SlaClock::replay`] is pure and depends only on the ticket's
//! history, its current priority and category policy, the calendar and `now`: deadlines
//! are recomputed deterministically whenever any of them changes.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::calendar::BusinessCalendar;
use super::lifecycle::{EventKind, TicketEvent};
use super::ticket::{Priority, Status, SupportLine, Ticket, Visibility};
use super::values::Code;
use super::{FieldViolation, Timestamp};

/// The default SLA settings shipped with balagh.
pub const DEFAULT_SLA_TOML: &str = include_str!("../../catalog/sla.toml");

/// The kind of a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    FirstResponse,
    Update,
    Resolution,
    LineHold,
}

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 4] = [
        DeadlineKind::FirstResponse,
        DeadlineKind::Update,
        DeadlineKind::Resolution,
        DeadlineKind::LineHold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::FirstResponse => "first_response",
            DeadlineKind::Update => "update",
            DeadlineKind::Resolution => "resolution",
            DeadlineKind::LineHold => "line_hold",
        }
    }

    pub fn from_str_opt(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Whether an alert warns before a deadline or records its breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStage {
    Warning,
    Breach,
}

/// One deadline, as an alert names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeadlineRef {
    pub kind: DeadlineKind,
    /// The cursor of the event that started the clock.
    pub anchor: i64,
}

/// A warning or breach of one deadline, recorded in the ticket's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaAlert {
    pub deadline: DeadlineRef,
    pub stage: AlertStage,
    /// When the deadline was due (for a warning: when it will be due).
    pub due_time: Timestamp,
}

/// Where an escalation takes a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationTarget {
    Line2,
    Line3,
    DirectorGeneral,
}

impl EscalationTarget {
    pub const ALL: [EscalationTarget; 3] = [
        EscalationTarget::Line2,
        EscalationTarget::Line3,
        EscalationTarget::DirectorGeneral,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EscalationTarget::Line2 => "line_2",
            EscalationTarget::Line3 => "line_3",
            EscalationTarget::DirectorGeneral => "director_general",
        }
    }

    pub fn from_str_opt(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The support line this target puts the ticket on, if it is a line.
    pub fn support_line(self) -> Option<SupportLine> {
        match self {
            EscalationTarget::Line2 => Some(SupportLine::Second),
            EscalationTarget::Line3 => Some(SupportLine::Third),
            EscalationTarget::DirectorGeneral => None,
        }
    }

    /// Whether escalating a ticket that stands at `line` (and has or has not reached the
    /// director general) to this target moves it up.
    pub fn is_above(self, line: Option<SupportLine>, at_director_general: bool) -> bool {
        match self.support_line() {
            Some(target) => !at_director_general && line.is_none_or(|l| l < target),
            None => !at_director_general,
        }
    }
}

/// Targets of one priority, in business minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub first_response: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_interval: Option<u32>,
    pub resolution: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub code: String,
    pub name: String,
    /// Keyed by priority (`urgent`, `high`, `normal`, `low`); all four are required.
    pub targets: BTreeMap<String, Targets>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineHoldSpec {
    pub line_1: u32,
    pub line_2: u32,
    pub line_3: u32,
}

/// The SLA settings as data: what `catalog/sla.toml` holds and the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSettingsSpec {
    pub warn_at_percent: u8,
    pub default_policy: String,
    pub escalation_steps: Vec<String>,
    pub escalate_on: Vec<String>,
    pub line_hold_minutes: LineHoldSpec,
    pub policies: Vec<PolicySpec>,
}

/// Validated SLA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaSettings {
    spec: SlaSettingsSpec,
    warn_at_percent: u8,
    default_policy: Code,
    escalation_steps: Vec<EscalationTarget>,
    escalate_on: Vec<DeadlineKind>,
    line_hold: [u32; 3],
    policies: BTreeMap<Code, [Targets; 4]>,
}

/// The longest target a policy may set: a year of eight-hour working days.
const MAX_TARGET_MINUTES: u32 = 366 * 8 * 60;
const MAX_POLICIES: usize = 500;

fn priority_index(priority: Priority) -> usize {
    match priority {
        Priority::Urgent => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

impl SlaSettings {
    pub fn default_settings() -> Self {
        let spec: SlaSettingsSpec =
            toml::from_str(DEFAULT_SLA_TOML).expect("catalog/sla.toml is valid TOML");
        Self::parse(spec).expect("catalog/sla.toml holds valid SLA settings")
    }

    /// Validates settings, collecting every violation (paths within the spec).
    pub fn parse(spec: SlaSettingsSpec) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if !(1..=99).contains(&spec.warn_at_percent) {
            violations.push(FieldViolation::new(
                "warn_at_percent",
                "must be from 1 to 99",
            ));
        }
        let default_policy = Code::parse("default_policy", &spec.default_policy)
            .map_err(|v| violations.push(v))
            .ok();
        let mut escalation_steps = Vec::new();
        for (i, step) in spec.escalation_steps.iter().enumerate() {
            match EscalationTarget::from_str_opt(step) {
                Some(t)
                    if escalation_steps
                        .last()
                        .is_some_and(|last: &EscalationTarget| {
                            !t.is_above(
                                last.support_line(),
                                *last == EscalationTarget::DirectorGeneral,
                            )
                        }) =>
                {
                    violations.push(FieldViolation::new(
                        &format!("escalation_steps[{i}]"),
                        "each step must be above the one before it",
                    ))
                }
                Some(t) => escalation_steps.push(t),
                None => violations.push(FieldViolation::new(
                    &format!("escalation_steps[{i}]"),
                    "must be line_2, line_3 or director_general",
                )),
            }
        }
        let mut escalate_on = Vec::new();
        for (i, kind) in spec.escalate_on.iter().enumerate() {
            match DeadlineKind::from_str_opt(kind) {
                Some(k) if !escalate_on.contains(&k) => escalate_on.push(k),
                Some(_) => violations.push(FieldViolation::new(
                    &format!("escalate_on[{i}]"),
                    "is listed twice",
                )),
                None => violations.push(FieldViolation::new(
                    &format!("escalate_on[{i}]"),
                    "must be first_response, update, resolution or line_hold",
                )),
            }
        }
        let holds = &spec.line_hold_minutes;
        for (name, minutes) in [
            ("line_1", holds.line_1),
            ("line_2", holds.line_2),
            ("line_3", holds.line_3),
        ] {
            check_minutes(
                &format!("line_hold_minutes.{name}"),
                minutes,
                &mut violations,
            );
        }
        if spec.policies.len() > MAX_POLICIES {
            violations.push(FieldViolation::new(
                "policies",
                format!("at most {MAX_POLICIES} policies"),
            ));
        }
        let mut policies = BTreeMap::new();
        for (i, policy) in spec.policies.iter().enumerate() {
            let field = format!("policies[{i}]");
            let code = match Code::parse(&format!("{field}.code"), &policy.code) {
                Ok(code) => code,
                Err(v) => {
                    violations.push(v);
                    continue;
                }
            };
            let name_chars = policy.name.trim().chars().count();
            if name_chars == 0 || name_chars > 200 {
                violations.push(FieldViolation::new(
                    &format!("{field}.name"),
                    "must be 1 to 200 characters",
                ));
            }
            let mut targets = [None; 4];
            for (key, t) in &policy.targets {
                let path = format!("{field}.targets.{key}");
                let Some(priority) = Priority::from_str_opt(key) else {
                    violations.push(FieldViolation::new(
                        &path,
                        "must be urgent, high, normal or low",
                    ));
                    continue;
                };
                check_minutes(
                    &format!("{path}.first_response"),
                    t.first_response,
                    &mut violations,
                );
                check_minutes(&format!("{path}.resolution"), t.resolution, &mut violations);
                if let Some(update) = t.update_interval {
                    check_minutes(&format!("{path}.update_interval"), update, &mut violations);
                }
                if t.first_response > t.resolution {
                    violations.push(FieldViolation::new(
                        &format!("{path}.first_response"),
                        "must not be longer than the resolution target",
                    ));
                }
                targets[priority_index(priority)] = Some(*t);
            }
            match targets {
                [Some(u), Some(h), Some(n), Some(l)] => {
                    if policies.insert(code, [u, h, n, l]).is_some() {
                        violations.push(FieldViolation::new(
                            &format!("{field}.code"),
                            "is used by another policy",
                        ));
                    }
                }
                _ => violations.push(FieldViolation::new(
                    &format!("{field}.targets"),
                    "needs targets for urgent, high, normal and low",
                )),
            }
        }
        // Named by code, so that a policy with mistakes of its own is not reported twice.
        if let Some(code) = &default_policy
            && !spec.policies.iter().any(|p| p.code == code.as_str())
        {
            violations.push(FieldViolation::new(
                "default_policy",
                "must be the code of one of the policies",
            ));
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            warn_at_percent: spec.warn_at_percent,
            default_policy: default_policy.expect("checked above"),
            escalation_steps,
            escalate_on,
            line_hold: [holds.line_1, holds.line_2, holds.line_3],
            policies,
            spec,
        })
    }

    pub fn spec(&self) -> &SlaSettingsSpec {
        &self.spec
    }

    pub fn warn_at_percent(&self) -> u8 {
        self.warn_at_percent
    }

    /// The policy a category's code names, or the default policy when no policy has that
    /// code: the code in effect and its targets for `priority`.
    pub fn targets(&self, policy: &Code, priority: Priority) -> (&Code, Targets) {
        let (code, targets) = self
            .policies
            .get_key_value(policy)
            .or_else(|| self.policies.get_key_value(&self.default_policy))
            .expect("the default policy exists (checked by parse)");
        (code, targets[priority_index(priority)])
    }

    /// Business minutes a support line may hold a ticket.
    pub fn line_hold_minutes(&self, line: SupportLine) -> u32 {
        self.line_hold[usize::from(line.number() - 1)]
    }

    pub fn escalates_on(&self, kind: DeadlineKind) -> bool {
        self.escalate_on.contains(&kind)
    }

    /// The next step of the escalation matrix for a ticket standing at `line`: the first
    /// step above it. `None` when the matrix has nothing higher.
    pub fn next_escalation(
        &self,
        line: Option<SupportLine>,
        at_director_general: bool,
    ) -> Option<EscalationTarget> {
        self.escalation_steps
            .iter()
            .copied()
            .find(|step| step.is_above(line, at_director_general))
    }
}

fn check_minutes(field: &str, minutes: u32, violations: &mut Vec<FieldViolation>) {
    if minutes == 0 || minutes > MAX_TARGET_MINUTES {
        violations.push(FieldViolation::new(
            field,
            format!("must be from 1 to {MAX_TARGET_MINUTES} business minutes"),
        ));
    }
}

/// One deadline of a ticket, as it stands at the time of the replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub deadline: DeadlineRef,
    /// The target, in business seconds.
    pub target_seconds: i64,
    /// Business seconds counted so far (up to `now`, or to when the clock stopped).
    pub elapsed_seconds: i64,
    /// When the target is (or was) reached; `None` while the clock is paused short of it,
    /// or when the calendar has no working time left.
    pub due_time: Option<Timestamp>,
    /// When the warning share of the target is (or was) reached.
    pub warn_time: Option<Timestamp>,
    /// When the clock stopped because the deadline was met (or the ticket left the state the
    /// clock measures). `None` while it runs or is paused.
    pub stop_time: Option<Timestamp>,
    pub paused: bool,
    pub warned: bool,
    pub breach_recorded: bool,
}

impl Deadline {
    pub fn is_open(&self) -> bool {
        self.stop_time.is_none()
    }

    /// Whether more business time was used than the target allows.
    pub fn is_breached(&self) -> bool {
        self.elapsed_seconds > self.target_seconds
    }

    /// The next instant at which this deadline needs the scheduler: its warning, then its
    /// breach, unless they were recorded.
    pub fn next_alert_time(&self) -> Option<Timestamp> {
        if !self.is_open() || self.breach_recorded {
            return None;
        }
        if !self.warned && self.warn_time.is_some() {
            return self.warn_time;
        }
        self.due_time
    }
}

/// A ticket's SLA, replayed from its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    /// The policy in effect (the category's, or the default one).
    pub policy: Code,
    /// Whether the clock is paused because the ticket waits on the beneficiary.
    pub paused: bool,
    /// Business seconds the ticket has been open and not waiting on the beneficiary, over
    /// all its resolution clocks.
    pub elapsed_seconds: i64,
    /// Every deadline the ticket has run, oldest first.
    pub deadlines: Vec<Deadline>,
}

/// A clock that runs in segments: running while a segment is open.
#[derive(Debug, Clone)]
struct Run {
    deadline: DeadlineRef,
    target_seconds: i64,
    segments: Vec<(Timestamp, Option<Timestamp>)>,
    stop_time: Option<Timestamp>,
}

impl Run {
    fn start(kind: DeadlineKind, anchor: i64, at: Timestamp, minutes: u32, paused: bool) -> Self {
        Run {
            deadline: DeadlineRef { kind, anchor },
            target_seconds: i64::from(minutes) * 60,
            segments: if paused { Vec::new() } else { vec![(at, None)] },
            stop_time: None,
        }
    }

    fn pause(&mut self, at: Timestamp) {
        if let Some((_, end @ None)) = self.segments.last_mut() {
            *end = Some(at);
        }
    }

    fn resume(&mut self, at: Timestamp) {
        if self.stop_time.is_none() && !self.is_running() {
            self.segments.push((at, None));
        }
    }

    fn stop(&mut self, at: Timestamp) {
        if self.stop_time.is_none() {
            self.pause(at);
            self.stop_time = Some(at);
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.segments.last(), Some((_, None)))
    }

    /// Business seconds counted up to `now`.
    fn elapsed(&self, calendar: &BusinessCalendar, now: Timestamp) -> i64 {
        self.segments
            .iter()
            .map(|(start, end)| {
                let end = end.unwrap_or(now).min(now);
                calendar.business_seconds_between(*start, end)
            })
            .sum()
    }

    /// The instant at which `seconds` business seconds were (or will be) counted: inside a
    /// closed segment, or after the start of the open one. `None` if never (paused short).
    fn instant_of(&self, calendar: &BusinessCalendar, seconds: i64) -> Option<Timestamp> {
        let mut before = 0;
        for (start, end) in &self.segments {
            let left = seconds - before;
            match end {
                Some(end) => {
                    let here = calendar.business_seconds_between(*start, *end);
                    if here >= left {
                        return calendar.add_business_seconds(*start, left);
                    }
                    before += here;
                }
                None => return calendar.add_business_seconds(*start, left),
            }
        }
        None
    }

    fn finish(
        self,
        calendar: &BusinessCalendar,
        warn_percent: u8,
        fired: &HashSet<(DeadlineRef, AlertStage)>,
        now: Timestamp,
    ) -> Deadline {
        let until = self.stop_time.unwrap_or(now);
        let elapsed = self.elapsed(calendar, until);
        let warn_seconds = self.target_seconds * i64::from(warn_percent) / 100;
        Deadline {
            due_time: self.instant_of(calendar, self.target_seconds),
            warn_time: self.instant_of(calendar, warn_seconds),
            elapsed_seconds: elapsed,
            target_seconds: self.target_seconds,
            stop_time: self.stop_time,
            paused: self.stop_time.is_none() && !self.is_running(),
            warned: fired.contains(&(self.deadline, AlertStage::Warning)),
            breach_recorded: fired.contains(&(self.deadline, AlertStage::Breach)),
            deadline: self.deadline,
        }
    }
}

/// Whether a move to `status` is something the beneficiary is told: it answers the ticket.
pub(super) fn is_response_status(status: Status) -> bool {
    matches!(
        status,
        Status::InProgress
            | Status::WaitingOnBeneficiary
            | Status::Resolved
            | Status::Rejected
            | Status::Transferred
    )
}

pub(super) fn is_open_status(status: Status) -> bool {
    matches!(
        status,
        Status::New
            | Status::Assigned
            | Status::InProgress
            | Status::WaitingOnBeneficiary
            | Status::Reopened
    )
}

impl SlaClock {
    /// Replays a ticket's history (all its events, oldest first) into its SLA clocks as they
    /// stand at `now`. The targets are those of the ticket's current priority under
    /// `policy` (its category's policy code).
    pub fn replay(
        ticket: &Ticket,
        events: &[TicketEvent],
        policy: &Code,
        settings: &SlaSettings,
        calendar: &BusinessCalendar,
        now: Timestamp,
    ) -> SlaClock {
        let (policy, targets) = settings.targets(policy, ticket.priority);
        let mut done: Vec<Run> = Vec::new();
        let mut first_response: Option<Run> = None;
        let mut update: Option<Run> = None;
        let mut resolution: Option<Run> = None;
        let mut line_hold: Option<Run> = None;
        let mut line: Option<SupportLine> = None;
        let mut status = Status::New;
        let mut fired = HashSet::new();
        let mut resolution_runs: Vec<Run> = Vec::new();

        let start_line = |line: Option<SupportLine>, anchor: i64, at: Timestamp, paused| {
            line.map(|l| {
                Run::start(
                    DeadlineKind::LineHold,
                    anchor,
                    at,
                    settings.line_hold_minutes(l),
                    paused,
                )
            })
        };

        for event in events {
            let at = event.occur_time;
            let anchor = event.cursor;
            let record = &event.record;
            if let Some(alert) = &record.sla_alert {
                fired.insert((alert.deadline, alert.stage));
            }
            let next_status = record.to_status.unwrap_or(status);
            if record.kind == EventKind::Created {
                status = next_status;
                line = record.assignment.as_ref().and_then(|a| a.support_line);
                first_response = Some(Run::start(
                    DeadlineKind::FirstResponse,
                    anchor,
                    at,
                    targets.first_response,
                    false,
                ));
                resolution = Some(Run::start(
                    DeadlineKind::Resolution,
                    anchor,
                    at,
                    targets.resolution,
                    false,
                ));
                line_hold = start_line(line, anchor, at, false);
                continue;
            }

            // A line change restarts the line-hold clock.
            let new_line = record
                .assignment
                .as_ref()
                .and_then(|a| a.support_line)
                .or(line);
            let line_changed = new_line != line;

            let was_open = is_open_status(status);
            let now_open = is_open_status(next_status);
            let waiting_before = status == Status::WaitingOnBeneficiary;
            let waiting_after = next_status == Status::WaitingOnBeneficiary;
            let responded = (record.kind == EventKind::Commented
                && record.visibility == Some(Visibility::Public))
                || (next_status != status && is_response_status(next_status));

            if was_open && !now_open {
                // Resolved, rejected, transferred, merged: every clock stops.
                for run in [
                    &mut first_response,
                    &mut update,
                    &mut resolution,
                    &mut line_hold,
                ]
                .into_iter()
                .flatten()
                {
                    run.stop(at);
                }
            } else if !was_open && now_open {
                // Reopened: a new resolution clock and a new update owed; the line that
                // holds the ticket holds it afresh.
                if let Some(run) = resolution.take() {
                    resolution_runs.push(run);
                }
                resolution = Some(Run::start(
                    DeadlineKind::Resolution,
                    anchor,
                    at,
                    targets.resolution,
                    false,
                ));
                if let Some(run) = update.take() {
                    done.push(run);
                }
                update = targets
                    .update_interval
                    .map(|m| Run::start(DeadlineKind::Update, anchor, at, m, false));
                if let Some(run) = line_hold.take() {
                    done.push(run);
                }
                line_hold = start_line(new_line, anchor, at, false);
            } else if now_open {
                if waiting_after && !waiting_before {
                    for run in [&mut update, &mut resolution, &mut line_hold]
                        .into_iter()
                        .flatten()
                    {
                        run.pause(at);
                    }
                } else if waiting_before && !waiting_after {
                    for run in [&mut update, &mut resolution, &mut line_hold]
                        .into_iter()
                        .flatten()
                    {
                        run.resume(at);
                    }
                }
                if responded {
                    if let Some(run) = first_response.as_mut() {
                        run.stop(at);
                    }
                    if let Some(run) = update.take() {
                        let mut run = run;
                        run.stop(at);
                        done.push(run);
                    }
                    update = targets
                        .update_interval
                        .map(|m| Run::start(DeadlineKind::Update, anchor, at, m, waiting_after));
                }
                if line_changed {
                    if let Some(mut run) = line_hold.take() {
                        run.stop(at);
                        done.push(run);
                    }
                    line_hold = start_line(new_line, anchor, at, waiting_after);
                }
            }
            if responded && let Some(run) = first_response.as_mut() {
                run.stop(at);
            }
            status = next_status;
            line = new_line;
        }

        if let Some(run) = resolution.take() {
            resolution_runs.push(run);
        }
        let elapsed_seconds = resolution_runs
            .iter()
            .map(|r| r.elapsed(calendar, r.stop_time.unwrap_or(now)))
            .sum();
        let warn = settings.warn_at_percent();
        let mut deadlines: Vec<Deadline> = first_response
            .into_iter()
            .chain(resolution_runs)
            .chain(done)
            .chain(update)
            .chain(line_hold)
            .map(|run| run.finish(calendar, warn, &fired, now))
            .collect();
        deadlines.sort_by_key(|d| (d.deadline.anchor, d.deadline.kind));
        SlaClock {
            policy: policy.clone(),
            paused: status == Status::WaitingOnBeneficiary,
            elapsed_seconds,
            deadlines,
        }
    }

    /// The deadlines still running (or paused), soonest due first.
    pub fn open_deadlines(&self) -> impl Iterator<Item = &Deadline> {
        self.deadlines.iter().filter(|d| d.is_open())
    }

    /// When the scheduler next has something to record for this ticket.
    pub fn next_alert_time(&self) -> Option<Timestamp> {
        self.deadlines
            .iter()
            .filter_map(Deadline::next_alert_time)
            .min()
    }

    /// The soonest due time of an open deadline whose breach is not recorded yet.
    pub fn next_due_time(&self) -> Option<Timestamp> {
        self.open_deadlines()
            .filter(|d| !d.breach_recorded)
            .filter_map(|d| d.due_time)
            .min()
    }

    /// The alerts to record at `now`, one per deadline: its breach when due (a warning that
    /// was missed is then moot), else its warning when due.
    pub fn alerts_due(&self, now: Timestamp) -> Vec<SlaAlert> {
        let mut alerts = Vec::new();
        for d in self.open_deadlines() {
            let (Some(due), false) = (d.due_time, d.breach_recorded) else {
                continue;
            };
            if due <= now {
                alerts.push(SlaAlert {
                    deadline: d.deadline,
                    stage: AlertStage::Breach,
                    due_time: due,
                });
            } else if !d.warned && d.warn_time.is_some_and(|w| w <= now) {
                alerts.push(SlaAlert {
                    deadline: d.deadline,
                    stage: AlertStage::Warning,
                    due_time: due,
                });
            }
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{CalendarSpec, DayHoursSpec, HolidaySpec};
    use crate::domain::lifecycle::EventRecord;
    use crate::domain::ticket::{Assignment, Visibility};

    /// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
    const SUNDAY_8: i64 = 1_795_924_800_000_000;
    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;

    fn at(offset_micros: i64) -> Timestamp {
        Timestamp::from_micros(SUNDAY_8 + offset_micros)
    }

    /// Sunday to Thursday, 08:00-16:00 (480 business minutes a day).
    fn calendar(holidays: Vec<HolidaySpec>) -> BusinessCalendar {
        let week = ["sunday", "monday", "tuesday", "wednesday", "thursday"]
            .into_iter()
            .map(|day| DayHoursSpec {
                day: day.to_owned(),
                hours: vec!["08:00-16:00".to_owned()],
            })
            .collect();
        BusinessCalendar::parse(CalendarSpec {
            week,
            seasons: Vec::new(),
            recurring_holidays: Vec::new(),
            holidays,
        })
        .expect("valid calendar")
    }

    fn settings() -> SlaSettings {
        let toml = r#"
            warn_at_percent = 75
            default_policy = "standard"
            escalation_steps = ["line_2", "line_3", "director_general"]
            escalate_on = ["line_hold", "resolution"]
            [line_hold_minutes]
            line_1 = 120
            line_2 = 240
            line_3 = 480
            [[policies]]
            code = "standard"
            name = "Standard"
            targets.urgent = { first_response = 30, update_interval = 60, resolution = 240 }
            targets.high = { first_response = 30, update_interval = 60, resolution = 240 }
            targets.normal = { first_response = 60, update_interval = 120, resolution = 480 }
            targets.low = { first_response = 60, update_interval = 120, resolution = 960 }
        "#;
        SlaSettings::parse(toml::from_str(toml).expect("toml")).expect("valid settings")
    }

    fn ticket(created: Timestamp) -> Ticket {
        crate::domain::ticket::sample_ticket(created)
    }

    /// Builds a history event by event; cursors count from 1.
    struct History {
        ticket: Ticket,
        events: Vec<TicketEvent>,
    }

    impl History {
        fn new(created: Timestamp) -> Self {
            let ticket = ticket(created);
            let mut history = History {
                ticket: ticket.clone(),
                events: Vec::new(),
            };
            history.push(created, crate::domain::lifecycle::created_event(&ticket));
            history
        }

        fn push(&mut self, time: Timestamp, record: EventRecord) -> i64 {
            let cursor = self.events.len() as i64 + 1;
            if let Some(status) = record.to_status {
                self.ticket.status = status;
            }
            if let Some(assignment) = &record.assignment {
                self.ticket.assignment = assignment.clone();
            }
            self.events.push(TicketEvent {
                cursor,
                ticket_id: self.ticket.id,
                actor: "test".into(),
                occur_time: time,
                version: cursor,
                record,
            });
            cursor
        }

        fn status(&mut self, time: Timestamp, to: Status) -> i64 {
            let from = self.ticket.status;
            let mut record = record(EventKind::StatusChanged);
            record.from_status = Some(from);
            record.to_status = Some(to);
            self.push(time, record)
        }

        fn comment(&mut self, time: Timestamp, visibility: Visibility) -> i64 {
            let mut record = record(EventKind::Commented);
            record.visibility = Some(visibility);
            self.push(time, record)
        }

        fn assign_line(&mut self, time: Timestamp, line: SupportLine) -> i64 {
            let mut record = record(EventKind::Assigned);
            let from = self.ticket.status;
            record.from_status = Some(from);
            record.to_status = Some(Status::Assigned);
            record.assignment = Some(Assignment {
                support_line: Some(line),
                ..Assignment::default()
            });
            self.push(time, record)
        }

        fn alert(&mut self, time: Timestamp, alert: SlaAlert) -> i64 {
            let mut record = record(match alert.stage {
                AlertStage::Warning => EventKind::SlaWarning,
                AlertStage::Breach => EventKind::SlaBreached,
            });
            record.sla_alert = Some(alert);
            self.push(time, record)
        }

        fn replay(&self, calendar: &BusinessCalendar, now: Timestamp) -> SlaClock {
            let policy = Code::parse("policy", "standard").expect("code");
            SlaClock::replay(
                &self.ticket,
                &self.events,
                &policy,
                &settings(),
                calendar,
                now,
            )
        }
    }

    fn record(kind: EventKind) -> EventRecord {
        let mut record = crate::domain::lifecycle::created_event(&ticket(at(0)));
        record.kind = kind;
        record.to_status = None;
        record.assignment = None;
        record
    }

    fn deadline(clock: &SlaClock, kind: DeadlineKind) -> &Deadline {
        clock
            .deadlines
            .iter()
            .rev()
            .find(|d| d.deadline.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} deadline in {clock:#?}"))
    }

    #[test]
    fn the_default_settings_parse() {
        let settings = SlaSettings::default_settings();
        let unknown = Code::parse("policy", "no_such_policy").expect("code");
        let (code, _) = settings.targets(&unknown, Priority::Normal);
        assert_eq!(code.as_str(), "standard");
    }

    #[test]
    fn a_new_ticket_owes_a_first_response_and_a_resolution_in_business_time() {
        let history = History::new(at(0));
        let clock = history.replay(&calendar(Vec::new()), at(30 * MINUTE));
        let first = deadline(&clock, DeadlineKind::FirstResponse);
        assert_eq!(first.due_time, Some(at(HOUR)));
        assert_eq!(first.warn_time, Some(at(45 * MINUTE)));
        assert_eq!(first.elapsed_seconds, 30 * 60);
        let resolution = deadline(&clock, DeadlineKind::Resolution);
        assert_eq!(resolution.due_time, Some(at(8 * HOUR)));
        assert_eq!(clock.elapsed_seconds, 30 * 60);
        assert!(!clock.paused);
        assert_eq!(clock.next_alert_time(), Some(at(45 * MINUTE)));
    }

    #[test]
    fn a_ticket_filed_on_thursday_afternoon_is_due_after_the_weekend() {
        // Thursday 15:00: one business hour left that day, the other seven on Sunday.
        let thursday_15 = 4 * DAY + 7 * HOUR;
        let history = History::new(at(thursday_15));
        let clock = history.replay(&calendar(Vec::new()), at(thursday_15));
        let resolution = deadline(&clock, DeadlineKind::Resolution);
        assert_eq!(resolution.due_time, Some(at(7 * DAY + 7 * HOUR)));
    }

    #[test]
    fn waiting_on_the_beneficiary_pauses_resolution_and_moves_its_due_time() {
        let mut history = History::new(at(0));
        history.assign_line(at(10 * MINUTE), SupportLine::First);
        history.status(at(2 * HOUR), Status::InProgress);
        history.status(at(3 * HOUR), Status::WaitingOnBeneficiary);
        let calendar = calendar(Vec::new());
        let paused = history.replay(&calendar, at(4 * HOUR));
        assert!(paused.paused);
        let resolution = deadline(&paused, DeadlineKind::Resolution);
        assert!(resolution.paused);
        assert_eq!(resolution.due_time, None, "no due time while paused short");
        assert_eq!(resolution.elapsed_seconds, 3 * 3600);
        // The beneficiary answers two hours later: the due time moves by two hours.
        history.status(at(5 * HOUR), Status::InProgress);
        let resumed = history.replay(&calendar, at(5 * HOUR));
        let resolution = deadline(&resumed, DeadlineKind::Resolution);
        assert_eq!(resolution.due_time, Some(at(DAY + 2 * HOUR)));
        assert_eq!(resumed.elapsed_seconds, 3 * 3600);
    }

    #[test]
    fn a_public_reply_meets_the_first_response_and_starts_the_update_interval() {
        let mut history = History::new(at(0));
        history.comment(at(10 * MINUTE), Visibility::Internal);
        let cursor = history.comment(at(20 * MINUTE), Visibility::Public);
        let clock = history.replay(&calendar(Vec::new()), at(HOUR));
        let first = deadline(&clock, DeadlineKind::FirstResponse);
        assert_eq!(first.stop_time, Some(at(20 * MINUTE)));
        assert!(!first.is_breached());
        let update = deadline(&clock, DeadlineKind::Update);
        assert_eq!(update.deadline.anchor, cursor);
        assert_eq!(update.due_time, Some(at(20 * MINUTE + 2 * HOUR)));
    }

    #[test]
    fn alerts_fire_once_per_deadline_in_the_order_warning_then_breach() {
        let mut history = History::new(at(0));
        let calendar = calendar(Vec::new());
        assert!(
            history
                .replay(&calendar, at(44 * MINUTE))
                .alerts_due(at(44 * MINUTE))
                .is_empty()
        );
        let warn_now = at(46 * MINUTE);
        let alerts = history.replay(&calendar, warn_now).alerts_due(warn_now);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].stage, AlertStage::Warning);
        assert_eq!(alerts[0].deadline.kind, DeadlineKind::FirstResponse);
        history.alert(warn_now, alerts[0].clone());
        assert!(
            history
                .replay(&calendar, warn_now)
                .alerts_due(warn_now)
                .is_empty()
        );
        let late = at(HOUR + MINUTE);
        let alerts = history.replay(&calendar, late).alerts_due(late);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].stage, AlertStage::Breach);
        history.alert(late, alerts[0].clone());
        let clock = history.replay(&calendar, late);
        assert!(clock.alerts_due(late).is_empty());
        // Next: the resolution's warning at 75% of eight hours.
        assert_eq!(clock.next_alert_time(), Some(at(6 * HOUR)));
    }

    #[test]
    fn a_missed_warning_is_moot_once_the_deadline_is_breached() {
        let history = History::new(at(0));
        let now = at(2 * HOUR);
        let alerts = history.replay(&calendar(Vec::new()), now).alerts_due(now);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].stage, AlertStage::Breach);
    }

    #[test]
    fn an_escalation_to_a_new_line_restarts_the_line_hold_clock() {
        let mut history = History::new(at(0));
        let first = history.assign_line(at(0), SupportLine::First);
        let calendar = calendar(Vec::new());
        let clock = history.replay(&calendar, at(MINUTE));
        let hold = deadline(&clock, DeadlineKind::LineHold);
        assert_eq!(hold.deadline.anchor, first);
        assert_eq!(hold.due_time, Some(at(2 * HOUR)));
        let mut record = record(EventKind::SlaBreached);
        record.assignment = Some(Assignment {
            support_line: Some(SupportLine::Second),
            ..Assignment::default()
        });
        record.escalated_to = Some(EscalationTarget::Line2);
        let second = history.push(at(2 * HOUR), record);
        let clock = history.replay(&calendar, at(2 * HOUR));
        let hold = deadline(&clock, DeadlineKind::LineHold);
        assert_eq!(hold.deadline.anchor, second);
        assert_eq!(
            hold.due_time,
            Some(at(6 * HOUR)),
            "line 2 holds for four hours"
        );
    }

    #[test]
    fn a_reopened_ticket_runs_a_new_resolution_deadline() {
        let mut history = History::new(at(0));
        history.status(at(HOUR), Status::Resolved);
        let calendar = calendar(Vec::new());
        let resolved = history.replay(&calendar, at(2 * HOUR));
        assert!(resolved.open_deadlines().next().is_none());
        assert_eq!(resolved.next_alert_time(), None);
        let reopen = history.status(at(DAY), Status::Reopened);
        let clock = history.replay(&calendar, at(DAY));
        let resolution = deadline(&clock, DeadlineKind::Resolution);
        assert_eq!(resolution.deadline.anchor, reopen);
        assert_eq!(resolution.due_time, Some(at(DAY + 8 * HOUR)));
        assert_eq!(clock.elapsed_seconds, 3600, "business time of both runs");
    }

    #[test]
    fn a_calendar_change_moves_due_times_but_not_what_has_fired() {
        let mut history = History::new(at(0));
        let before = calendar(Vec::new());
        let now = at(46 * MINUTE);
        let warning = history.replay(&before, now).alerts_due(now).remove(0);
        history.alert(now, warning);
        // Sunday becomes a holiday (announced late): every due time moves to Monday, and the
        // warning of the first-response deadline stays recorded.
        let after = calendar(vec![HolidaySpec {
            name: "Announced holiday".into(),
            from: "2026-11-29".into(),
            to: "2026-11-29".into(),
        }]);
        let clock = history.replay(&after, now);
        let first = deadline(&clock, DeadlineKind::FirstResponse);
        assert_eq!(first.due_time, Some(at(DAY + HOUR)));
        assert!(first.warned);
        assert!(clock.alerts_due(now).is_empty());
    }

    #[test]
    fn settings_with_mistakes_name_every_field() {
        let mut spec = settings().spec().clone();
        spec.warn_at_percent = 100;
        spec.escalation_steps = vec!["line_3".into(), "line_2".into()];
        spec.escalate_on = vec!["breakfast".into()];
        spec.policies[0].targets.remove("low");
        spec.default_policy = "nope".into();
        let violations = SlaSettings::parse(spec).expect_err("invalid");
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "warn_at_percent",
                "escalation_steps[1]",
                "escalate_on[0]",
                "policies[0].targets",
                "default_policy"
            ]
        );
    }

    #[test]
    fn the_escalation_matrix_goes_up_one_step_at_a_time() {
        let settings = settings();
        assert_eq!(
            settings.next_escalation(None, false),
            Some(EscalationTarget::Line2)
        );
        assert_eq!(
            settings.next_escalation(Some(SupportLine::Second), false),
            Some(EscalationTarget::Line3)
        );
        assert_eq!(
            settings.next_escalation(Some(SupportLine::Third), false),
            Some(EscalationTarget::DirectorGeneral)
        );
        assert_eq!(
            settings.next_escalation(Some(SupportLine::Third), true),
            None
        );
    }
}
