//! Satisfaction surveys: who was asked about which ticket, and when they may be asked again.
//!
//! After a ticket is settled the beneficiary is asked to rate it, on the national platform or
//! by a contact-centre call-back. Every time someone is asked, the survey ledger records it:
//! the ticket, the time, the channel and the outcome (rated, declined, no answer), keyed by
//! the beneficiary ([`BeneficiaryKey`]: a SHA-256 of their civil ID, else their phone, else
//! their e-mail, never the raw value).
//!
//! The policy ([`SurveyPolicy`]): nobody is asked again about **another** ticket within the
//! quiet period (90 days by default) after they were last asked, whatever the channel and
//! whatever the outcome. Asking again about the **same** ticket is allowed (a call that found
//! no answer is tried again). A rating that arrives from the national platform counts as
//! asked by the platform at the time it was taken in.
//!
//! [`check_call_back`] decides whether a call-back may be recorded; [`choose_call_backs`]
//! makes the contact centre's call-back list. Both are pure: the store reads the ledger and
//! the tickets, these functions decide.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lifecycle::{ActionKind, LifecycleError, next_status};
use super::quality::settle_time;
use super::ticket::{Reporter, Ticket};
use super::values::TicketId;
use super::{FieldViolation, Timestamp};

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// The quiet period when the configuration names none.
pub const DEFAULT_QUIET_PERIOD_DAYS: u32 = 90;
/// Call-back attempts per ticket that the list proposes when the configuration names none.
pub const DEFAULT_MAX_CALL_ATTEMPTS: u32 = 3;
pub const MAX_QUIET_PERIOD_DAYS: u32 = 3650;
pub const MAX_CALL_ATTEMPTS: u32 = 10;

/// Who a survey asks, as the ledger keys them: SHA-256 of `civil_id:<digits>`, else
/// `phone:+968XXXXXXXX`, else `email:<lower-case address>`. One person who gave a civil ID on
/// one ticket and only a phone on another has two keys: the ledger cannot tell they are one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BeneficiaryKey([u8; 32]);

impl BeneficiaryKey {
    /// The key of a ticket's reporter; `None` for an anonymous one.
    pub fn of(reporter: &Reporter) -> Option<Self> {
        if reporter.is_anonymous() {
            return None;
        }
        let normalised = if let Some(civil_id) = reporter.civil_id() {
            format!("civil_id:{}", civil_id.as_str())
        } else if let Some(phone) = reporter.phone() {
            format!("phone:{}", phone.as_str())
        } else {
            format!("email:{}", reporter.email()?.as_str().to_lowercase())
        };
        Some(Self(Sha256::digest(normalised.as_bytes()).into()))
    }

    /// A key as the store keeps it (32 bytes); `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

macro_rules! ledger_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The stable name used in the database and in logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn from_str_opt(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

ledger_enum!(
    /// Who asked the beneficiary.
    SurveyChannel {
        CallBack => "call_back",
        NationalPlatform => "national_platform",
    }
);

ledger_enum!(
    /// What asking brought.
    SurveyOutcome {
        Rated => "rated",
        Declined => "declined",
        NoAnswer => "no_answer",
    }
);

/// A call-back that brought no rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnratedCallBack {
    /// The beneficiary answered and did not want to rate.
    Declined,
    /// Nobody answered; the same ticket may be called again.
    NoAnswer,
}

impl From<UnratedCallBack> for SurveyOutcome {
    fn from(outcome: UnratedCallBack) -> Self {
        match outcome {
            UnratedCallBack::Declined => SurveyOutcome::Declined,
            UnratedCallBack::NoAnswer => SurveyOutcome::NoAnswer,
        }
    }
}

/// One entry of the survey ledger, as callers see it (without the beneficiary's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyRequest {
    pub ticket_id: TicketId,
    pub ask_time: Timestamp,
    pub channel: SurveyChannel,
    pub outcome: SurveyOutcome,
    /// Who recorded it (the agent, or the platform pull).
    pub actor: String,
}

/// A ledger entry with the key of the beneficiary it asked (`None`: an anonymous ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub beneficiary: Option<BeneficiaryKey>,
    pub request: SurveyRequest,
}

/// The survey policy in force (the `[satisfaction]` section of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurveyPolicy {
    quiet_period_days: u32,
    max_call_attempts: u32,
}

impl Default for SurveyPolicy {
    fn default() -> Self {
        Self {
            quiet_period_days: DEFAULT_QUIET_PERIOD_DAYS,
            max_call_attempts: DEFAULT_MAX_CALL_ATTEMPTS,
        }
    }
}

impl SurveyPolicy {
    /// A quiet period of 1 to [`MAX_QUIET_PERIOD_DAYS`] days, and 1 to [`MAX_CALL_ATTEMPTS`]
    /// call-back attempts per ticket that the list proposes.
    pub fn new(quiet_period_days: u32, max_call_attempts: u32) -> Result<Self, FieldViolation> {
        if !(1..=MAX_QUIET_PERIOD_DAYS).contains(&quiet_period_days) {
            return Err(FieldViolation::new(
                "satisfaction.quiet_period_days",
                format!("must be from 1 to {MAX_QUIET_PERIOD_DAYS}"),
            ));
        }
        if !(1..=MAX_CALL_ATTEMPTS).contains(&max_call_attempts) {
            return Err(FieldViolation::new(
                "satisfaction.max_call_attempts",
                format!("must be from 1 to {MAX_CALL_ATTEMPTS}"),
            ));
        }
        Ok(Self {
            quiet_period_days,
            max_call_attempts,
        })
    }

    pub fn quiet_period_days(&self) -> u32 {
        self.quiet_period_days
    }

    pub fn max_call_attempts(&self) -> u32 {
        self.max_call_attempts
    }

    /// Asks after this instant are within the quiet period at `now`.
    pub fn quiet_since(&self, now: Timestamp) -> Timestamp {
        Timestamp::from_micros(
            now.as_micros()
                .saturating_sub(i64::from(self.quiet_period_days) * DAY_MICROS),
        )
    }

    /// When a beneficiary last asked at `asked` may be asked about another ticket again.
    pub fn ask_again_time(&self, asked: Timestamp) -> Timestamp {
        Timestamp::from_micros(
            asked
                .as_micros()
                .saturating_add(i64::from(self.quiet_period_days) * DAY_MICROS),
        )
    }
}

/// Why a call-back may not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SurveyRefusal {
    #[error("the beneficiary was asked about another ticket within the quiet period")]
    AskedRecently {
        /// When they were last asked, and by whom.
        last_ask_time: Timestamp,
        last_channel: SurveyChannel,
        /// From when they may be asked about another ticket.
        ask_again_time: Timestamp,
    },
    #[error("the ticket was filed anonymously: there is nobody to call back")]
    Anonymous,
    #[error("the ticket's reporter gave no phone number to call back")]
    NoPhone,
}

/// The latest time the beneficiary was asked about another ticket, and by which channel.
pub type LastAsk = Option<(Timestamp, SurveyChannel)>;

/// Whether a call-back about `ticket` may be recorded. `last_ask_elsewhere` is the latest
/// ledger entry of the same beneficiary about **another** ticket within the quiet period.
///
/// The ticket must be settled (the same rule as a rating). A call-back that found no rating
/// needs someone to call: an anonymous ticket or one without a phone is refused. A rating is
/// taken whatever way the beneficiary reached the contact centre; an anonymous one has no
/// beneficiary the policy could apply to.
pub fn check_call_back(
    ticket: &Ticket,
    rated: bool,
    last_ask_elsewhere: LastAsk,
    policy: &SurveyPolicy,
) -> Result<(), CallBackRefusal> {
    if next_status(ticket.status, ActionKind::Rate).is_none() {
        return Err(CallBackRefusal::Lifecycle(LifecycleError::NotAllowed {
            action: ActionKind::Rate,
            status: ticket.status,
        }));
    }
    if !rated {
        if ticket.reporter.is_anonymous() {
            return Err(SurveyRefusal::Anonymous.into());
        }
        if ticket.reporter.phone().is_none() {
            return Err(SurveyRefusal::NoPhone.into());
        }
    }
    if let Some((last_ask_time, last_channel)) = last_ask_elsewhere {
        return Err(SurveyRefusal::AskedRecently {
            last_ask_time,
            last_channel,
            ask_again_time: policy.ask_again_time(last_ask_time),
        }
        .into());
    }
    Ok(())
}

/// A refusal of [`check_call_back`]: the ticket's state, or the survey policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallBackRefusal {
    #[error(transparent)]
    Lifecycle(LifecycleError),
    #[error(transparent)]
    Survey(#[from] SurveyRefusal),
}

/// Which tickets the call-back list looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBackQuery {
    /// Only tickets currently assigned to this directorate.
    pub directorate: Option<super::values::Code>,
    /// Tickets settled at or after this instant (and not after `now`).
    pub settled_from: Timestamp,
    pub now: Timestamp,
    pub policy: SurveyPolicy,
    /// Most entries.
    pub limit: u32,
}

/// One entry of the call-back list: the beneficiary's ticket to call about.
#[derive(Debug, Clone, PartialEq)]
pub struct CallBackCandidate {
    pub ticket: Ticket,
    pub settle_time: Timestamp,
    /// Earlier call-backs about this ticket that found no answer.
    pub n_previous_attempts: u32,
    pub last_attempt_time: Option<Timestamp>,
}

/// Whether a ticket may be on the call-back list at all: settled, not rated, with a
/// beneficiary who can be called.
pub fn may_be_called_about(ticket: &Ticket) -> bool {
    settle_time(ticket).is_some()
        && ticket.satisfaction.is_none()
        && !ticket.reporter.is_anonymous()
        && ticket.reporter.phone().is_some()
}

/// The call-back list: of `tickets` (the settled, unrated tickets of the query's period), those
/// whose beneficiary may be asked now, one per beneficiary, the most recently settled first,
/// at most `query.limit`.
///
/// `ledger` holds, for the beneficiaries of `tickets`, their entries within the quiet period,
/// and every entry about `tickets` themselves (in any order, each once). A ticket is left out
/// when:
/// - its beneficiary was asked about another ticket within the quiet period;
/// - it was asked about and the beneficiary rated (on any channel) or declined;
/// - it had `max_call_attempts` call-backs without an answer already;
/// - its last call-back without an answer was today (Muscat time): it is tried another day.
pub fn choose_call_backs(
    tickets: Vec<Ticket>,
    ledger: &[LedgerEntry],
    query: &CallBackQuery,
) -> Vec<CallBackCandidate> {
    let quiet_since = query.policy.quiet_since(query.now);
    let mut recent: HashMap<BeneficiaryKey, Vec<&SurveyRequest>> = HashMap::new();
    let mut of_ticket: HashMap<TicketId, Vec<&SurveyRequest>> = HashMap::new();
    for entry in ledger {
        if let Some(key) = entry.beneficiary
            && entry.request.ask_time > quiet_since
        {
            recent.entry(key).or_default().push(&entry.request);
        }
        of_ticket
            .entry(entry.request.ticket_id)
            .or_default()
            .push(&entry.request);
    }
    let mut settled: Vec<(Timestamp, Ticket)> = tickets
        .into_iter()
        .filter(may_be_called_about)
        .filter_map(|t| settle_time(&t).map(|at| (at, t)))
        .filter(|(at, t)| {
            query.settled_from <= *at
                && *at <= query.now
                && query
                    .directorate
                    .as_ref()
                    .is_none_or(|d| t.assignment.directorate.as_ref() == Some(d))
        })
        .collect();
    settled.sort_by(|(a, x), (b, y)| b.cmp(a).then_with(|| y.id.cmp(&x.id)));

    let today = muscat_day(query.now);
    let mut listed: HashSet<BeneficiaryKey> = HashSet::new();
    let mut out = Vec::new();
    for (settle_time, ticket) in settled {
        if out.len() >= query.limit as usize {
            break;
        }
        let Some(key) = BeneficiaryKey::of(&ticket.reporter) else {
            continue;
        };
        if listed.contains(&key) {
            continue;
        }
        let asked_elsewhere = recent
            .get(&key)
            .is_some_and(|asks| asks.iter().any(|r| r.ticket_id != ticket.id));
        if asked_elsewhere {
            continue;
        }
        let history = of_ticket.get(&ticket.id).map(Vec::as_slice).unwrap_or(&[]);
        if history.iter().any(|r| r.outcome != SurveyOutcome::NoAnswer) {
            continue;
        }
        let n_previous_attempts = u32::try_from(history.len()).unwrap_or(u32::MAX);
        if n_previous_attempts >= query.policy.max_call_attempts() {
            continue;
        }
        let last_attempt_time = history.iter().map(|r| r.ask_time).max();
        if last_attempt_time.is_some_and(|at| muscat_day(at) >= today) {
            continue;
        }
        listed.insert(key);
        out.push(CallBackCandidate {
            ticket,
            settle_time,
            n_previous_attempts,
            last_attempt_time,
        });
    }
    out
}

/// The day number in Muscat (UTC+4) of an instant.
fn muscat_day(t: Timestamp) -> i64 {
    (t.as_micros() + Timestamp::MUSCAT_OFFSET_SECONDS * 1_000_000).div_euclid(DAY_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ticket::{
        Assignment, Channel, Location, Priority, Resolution, ResolutionCode, Satisfaction, Status,
        TicketType,
    };
    use crate::domain::values::{CivilId, Code, Email, PhoneNumber, ReferenceNumber};

    /// Sunday 2026-11-29 08:00 in Muscat.
    const NOW: i64 = 1_795_924_800_000_000;
    const HOUR: i64 = 3_600_000_000;

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    fn reporter(phone: Option<&str>, email: Option<&str>, civil_id: Option<&str>) -> Reporter {
        Reporter::identified(
            "reporter",
            "Citizen".into(),
            phone.map(|p| PhoneNumber::parse("phone", p).unwrap()),
            email.map(|e| Email::parse("email", e).unwrap()),
            civil_id.map(|c| CivilId::parse("civil_id", c).unwrap()),
        )
        .unwrap()
    }

    fn settled(number: u32, reporter: Reporter, settled_at: i64) -> Ticket {
        Ticket {
            id: TicketId::new_v7(),
            reference: ReferenceNumber::new(2026, number).unwrap(),
            ticket_type: TicketType::Report,
            channel: Channel::ContactCentre,
            category: Code::parse("c", "pothole").unwrap(),
            priority: Priority::Normal,
            status: Status::Resolved,
            subject: "حفرة".into(),
            description: String::new(),
            reporter,
            location: Location::default(),
            attachments: vec![],
            assignment: Assignment {
                directorate: Some(Code::parse("d", "roads").unwrap()),
                ..Assignment::default()
            },
            resolution: Some(Resolution {
                code: ResolutionCode::Fixed,
                text: "تم".into(),
            }),
            transferred_to: None,
            duplicate_of: None,
            status_reason: None,
            create_time: at(settled_at - HOUR),
            update_time: at(settled_at),
            resolve_time: Some(at(settled_at)),
            close_time: None,
            satisfaction: None,
            escalation_level: 0,
            escalated_to_director_general: false,
            version: 3,
            created_by: None,
        }
    }

    fn asked(
        ticket: &Ticket,
        time: i64,
        channel: SurveyChannel,
        outcome: SurveyOutcome,
    ) -> LedgerEntry {
        LedgerEntry {
            beneficiary: BeneficiaryKey::of(&ticket.reporter),
            request: SurveyRequest {
                ticket_id: ticket.id,
                ask_time: at(time),
                channel,
                outcome,
                actor: "agent".into(),
            },
        }
    }

    fn query(limit: u32) -> CallBackQuery {
        CallBackQuery {
            directorate: None,
            settled_from: at(NOW - 30 * 24 * HOUR),
            now: at(NOW),
            policy: SurveyPolicy::default(),
            limit,
        }
    }

    fn listed(candidates: &[CallBackCandidate]) -> Vec<ReferenceNumber> {
        candidates.iter().map(|c| c.ticket.reference).collect()
    }

    #[test]
    fn the_key_prefers_the_civil_id_then_the_phone_then_the_email_and_normalises_each() {
        let by_phone = BeneficiaryKey::of(&reporter(Some("99000001"), None, None));
        assert_eq!(
            by_phone,
            BeneficiaryKey::of(&reporter(Some("+968 9900 0001"), Some("a@b.om"), None)),
            "the same phone, written differently"
        );
        let by_civil_id = BeneficiaryKey::of(&reporter(Some("99000001"), None, Some("1234567")));
        assert_ne!(by_civil_id, by_phone);
        assert_eq!(
            by_civil_id,
            BeneficiaryKey::of(&reporter(Some("99000002"), None, Some("1234567")))
        );
        assert_eq!(
            BeneficiaryKey::of(&reporter(None, Some("Salim@Example.OM"), None)),
            BeneficiaryKey::of(&reporter(None, Some("salim@example.om"), None))
        );
        assert_eq!(BeneficiaryKey::of(&Reporter::anonymous()), None);
        // The key is a digest, never the value.
        let key = by_phone.unwrap();
        let digest: [u8; 32] = Sha256::digest(b"phone:+96899000001").into();
        assert_eq!(key.as_bytes(), &digest);
    }

    #[test]
    fn a_call_back_about_another_ticket_waits_out_the_quiet_period() {
        let policy = SurveyPolicy::new(90, 3).unwrap();
        let ticket = settled(1, reporter(Some("99000001"), None, None), NOW - HOUR);
        assert_eq!(check_call_back(&ticket, false, None, &policy), Ok(()));
        let last = at(NOW - 10 * 24 * HOUR);
        assert_eq!(
            check_call_back(
                &ticket,
                true,
                Some((last, SurveyChannel::NationalPlatform)),
                &policy
            ),
            Err(CallBackRefusal::Survey(SurveyRefusal::AskedRecently {
                last_ask_time: last,
                last_channel: SurveyChannel::NationalPlatform,
                ask_again_time: at(NOW + 80 * 24 * HOUR),
            }))
        );
        let anonymous = Ticket {
            reporter: Reporter::anonymous(),
            ..ticket.clone()
        };
        assert_eq!(
            check_call_back(&anonymous, false, None, &policy),
            Err(SurveyRefusal::Anonymous.into())
        );
        // A rating of an anonymous ticket is taken (the beneficiary called in).
        assert_eq!(check_call_back(&anonymous, true, None, &policy), Ok(()));
        let by_mail = Ticket {
            reporter: reporter(None, Some("a@b.om"), None),
            ..ticket.clone()
        };
        assert_eq!(
            check_call_back(&by_mail, false, None, &policy),
            Err(SurveyRefusal::NoPhone.into())
        );
        let open = Ticket {
            status: Status::InProgress,
            ..ticket
        };
        assert!(matches!(
            check_call_back(&open, false, None, &policy),
            Err(CallBackRefusal::Lifecycle(
                LifecycleError::NotAllowed { .. }
            ))
        ));
    }

    #[test]
    fn the_list_has_one_entry_per_beneficiary_newest_settled_first() {
        let salim = reporter(Some("99000001"), None, None);
        let older = settled(1, salim.clone(), NOW - 48 * HOUR);
        let newer = settled(2, salim, NOW - 24 * HOUR);
        let other = settled(3, reporter(Some("99000002"), None, None), NOW - 36 * HOUR);
        let anonymous = settled(4, Reporter::anonymous(), NOW - HOUR);
        let by_mail = settled(5, reporter(None, Some("a@b.om"), None), NOW - HOUR);
        let rated = Ticket {
            satisfaction: Some(Satisfaction::parse("s", 5, None, at(NOW - HOUR)).unwrap()),
            ..settled(6, reporter(Some("99000006"), None, None), NOW - 2 * HOUR)
        };
        let too_old = settled(
            7,
            reporter(Some("99000007"), None, None),
            NOW - 31 * 24 * HOUR,
        );
        let tickets = vec![older, other, newer, anonymous, by_mail, rated, too_old];
        let all = choose_call_backs(tickets.clone(), &[], &query(50));
        assert_eq!(
            listed(&all),
            [
                ReferenceNumber::new(2026, 2).unwrap(),
                ReferenceNumber::new(2026, 3).unwrap()
            ]
        );
        assert_eq!(listed(&choose_call_backs(tickets, &[], &query(1))).len(), 1);
    }

    #[test]
    fn a_beneficiary_asked_within_the_quiet_period_is_left_out_then_proposed_again() {
        let salim = reporter(Some("99000001"), None, None);
        let earlier = settled(1, salim.clone(), NOW - 100 * 24 * HOUR);
        let ticket = settled(2, salim, NOW - 24 * HOUR);
        for channel in [SurveyChannel::CallBack, SurveyChannel::NationalPlatform] {
            for outcome in [
                SurveyOutcome::Rated,
                SurveyOutcome::Declined,
                SurveyOutcome::NoAnswer,
            ] {
                let ledger = [asked(&earlier, NOW - 89 * 24 * HOUR, channel, outcome)];
                let candidates = choose_call_backs(vec![ticket.clone()], &ledger, &query(50));
                assert!(candidates.is_empty(), "{channel:?} {outcome:?}");
            }
        }
        let ledger = [asked(
            &earlier,
            NOW - 90 * 24 * HOUR,
            SurveyChannel::CallBack,
            SurveyOutcome::Rated,
        )];
        assert_eq!(
            choose_call_backs(vec![ticket], &ledger, &query(50)).len(),
            1,
            "asked exactly 90 days ago: the quiet period is over"
        );
    }

    #[test]
    fn an_unanswered_call_is_tried_again_another_day_up_to_the_attempt_limit() {
        let ticket = settled(1, reporter(Some("99000001"), None, None), NOW - 72 * HOUR);
        let no_answer = |hours_ago: i64| {
            asked(
                &ticket,
                NOW - hours_ago * HOUR,
                SurveyChannel::CallBack,
                SurveyOutcome::NoAnswer,
            )
        };
        // Two hours ago was today in Muscat: not again today.
        assert!(choose_call_backs(vec![ticket.clone()], &[no_answer(2)], &query(50)).is_empty());
        let again = choose_call_backs(vec![ticket.clone()], &[no_answer(25)], &query(50));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].n_previous_attempts, 1);
        assert_eq!(again[0].last_attempt_time, Some(at(NOW - 25 * HOUR)));
        let three = [no_answer(60), no_answer(48), no_answer(25)];
        assert!(choose_call_backs(vec![ticket.clone()], &three, &query(50)).is_empty());
        let declined = [asked(
            &ticket,
            NOW - 48 * HOUR,
            SurveyChannel::CallBack,
            SurveyOutcome::Declined,
        )];
        assert!(choose_call_backs(vec![ticket], &declined, &query(50)).is_empty());
    }

    #[test]
    fn the_policy_refuses_periods_and_attempts_out_of_range() {
        assert!(SurveyPolicy::new(0, 3).is_err());
        assert!(SurveyPolicy::new(MAX_QUIET_PERIOD_DAYS + 1, 3).is_err());
        assert!(SurveyPolicy::new(90, 0).is_err());
        assert_eq!(SurveyPolicy::new(90, 3).unwrap(), SurveyPolicy::default());
    }
}
