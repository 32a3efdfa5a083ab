//! The ticket and what a ticket is made of.
//!
//! Invariant: a `Ticket` value is always consistent: its reporter may be anonymous only for a
//! suggestion, a resolved or closed ticket has a resolution, a merged one names its original.
//! Constructors and [`super::lifecycle`] are the only ways to make or change one.

use serde::{Deserialize, Serialize};

use super::values::{
    Attachment, CivilId, Code, Email, EmployeeId, GeoPoint, PhoneNumber, ReferenceNumber, TicketId,
};
use super::{FieldViolation, Timestamp};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name used in the database and in logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn from_str_opt(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The four ticket types, shared with the national platform.
    TicketType {
        Report => "report",
        Complaint => "complaint",
        Suggestion => "suggestion",
        Inquiry => "inquiry",
    }
);

string_enum!(
    Channel {
        ContactCentre => "contact_centre",
        Outlet => "outlet",
        App => "app",
        SocialMedia => "social_media",
        Email => "email",
        NationalPlatform => "national_platform",
        GovernmentSystem => "government_system",
    }
);

string_enum!(
    Priority {
        Low => "low",
        Normal => "normal",
        High => "high",
        Urgent => "urgent",
    }
);

string_enum!(
    Status {
        New => "new",
        Assigned => "assigned",
        InProgress => "in_progress",
        WaitingOnBeneficiary => "waiting_on_beneficiary",
        Resolved => "resolved",
        Closed => "closed",
        Rejected => "rejected",
        Transferred => "transferred",
        Reopened => "reopened",
        Merged => "merged",
    }
);

string_enum!(
    ResolutionCode {
        Fixed => "fixed",
        InformationProvided => "information_provided",
        SuggestionAccepted => "suggestion_accepted",
        SuggestionDeclined => "suggestion_declined",
        NoActionNeeded => "no_action_needed",
        CouldNotReproduce => "could_not_reproduce",
    }
);

string_enum!(
    Visibility {
        Public => "public",
        Internal => "internal",
    }
);

impl Status {
    /// A final status accepts no further change of the ticket's content or state
    /// (a closed ticket may still be reopened, see the lifecycle).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Closed | Status::Rejected | Status::Transferred | Status::Merged
        )
    }
}

/// The three support lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum SupportLine {
    First,
    Second,
    Third,
}

impl SupportLine {
    pub fn number(self) -> u8 {
        match self {
            SupportLine::First => 1,
            SupportLine::Second => 2,
            SupportLine::Third => 3,
        }
    }
}

impl TryFrom<u8> for SupportLine {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(SupportLine::First),
            2 => Ok(SupportLine::Second),
            3 => Ok(SupportLine::Third),
            other => Err(format!("no support line {other}")),
        }
    }
}

impl From<SupportLine> for u8 {
    fn from(line: SupportLine) -> u8 {
        line.number()
    }
}

/// Who filed the ticket. Personal data: never logged, never in an error message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reporter {
    anonymous: bool,
    name: Option<String>,
    phone: Option<PhoneNumber>,
    email: Option<Email>,
    civil_id: Option<CivilId>,
    /// The reporter's personal data was erased (on request, or by the retention policy):
    /// the ticket stays, nothing identifies who filed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
}

impl Reporter {
    /// An identified reporter needs a name and a way to reach them (phone or e-mail).
    /// `field` is the path of the reporter in the request, for violations.
    pub fn identified(
        field: &str,
        name: String,
        phone: Option<PhoneNumber>,
        email: Option<Email>,
        civil_id: Option<CivilId>,
    ) -> Result<Self, FieldViolation> {
        if phone.is_none() && email.is_none() {
            return Err(FieldViolation::new(
                &format!("{field}.phone"),
                "a phone number or an e-mail address is required unless the reporter is anonymous",
            ));
        }
        Ok(Self {
            anonymous: false,
            name: Some(name),
            phone,
            email,
            civil_id,
            erased: false,
        })
    }

    pub fn anonymous() -> Self {
        Self {
            anonymous: true,
            ..Self::default()
        }
    }

    /// A reporter whose personal data was erased (docs/security.md, "Erasure").
    pub fn erased() -> Self {
        Self {
            erased: true,
            ..Self::default()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    /// Whether there is personal data to protect: not anonymous, not erased.
    pub fn has_personal_data(&self) -> bool {
        !(self.anonymous || self.erased)
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    pub fn phone(&self) -> Option<&PhoneNumber> {
        self.phone.as_ref()
    }
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
    pub fn civil_id(&self) -> Option<&CivilId> {
        self.civil_id.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Location {
    pub wilayat: Option<Code>,
    pub area: Option<String>,
    pub point: Option<GeoPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignment {
    pub directorate: Option<Code>,
    pub outlet: Option<Code>,
    pub assignee: Option<EmployeeId>,
    pub support_line: Option<SupportLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub code: ResolutionCode,
    pub text: String,
}

/// How satisfied the beneficiary was with the handling of a ticket: a score from 1 (very
/// dissatisfied) to 5 (very satisfied) and an optional comment, as the beneficiary gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Satisfaction {
    score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub rate_time: Timestamp,
}

impl Satisfaction {
    pub const MIN_SCORE: u8 = 1;
    pub const MAX_SCORE: u8 = 5;

    /// A rating given at `rate_time`; the score must be 1 to 5 and the comment valid text.
    pub fn parse(
        field: &str,
        score: i64,
        comment: Option<&str>,
        rate_time: Timestamp,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let score = match u8::try_from(score) {
            Ok(s) if (Self::MIN_SCORE..=Self::MAX_SCORE).contains(&s) => s,
            _ => {
                violations.push(FieldViolation::new(
                    &join_path(field, "score"),
                    "must be from 1 to 5",
                ));
                0
            }
        };
        let comment = match comment.filter(|c| !c.trim().is_empty()) {
            None => None,
            Some(c) => match super::values::parse_text(
                &join_path(field, "comment"),
                c,
                1,
                MAX_NOTE_CHARS,
                true,
            ) {
                Ok(c) => Some(c),
                Err(v) => {
                    violations.push(v);
                    None
                }
            },
        };
        if violations.is_empty() {
            Ok(Self {
                score,
                comment,
                rate_time,
            })
        } else {
            Err(violations)
        }
    }

    pub fn score(&self) -> u8 {
        self.score
    }
}

/// A ticket as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub reference: ReferenceNumber,
    pub ticket_type: TicketType,
    pub channel: Channel,
    pub category: Code,
    pub priority: Priority,
    pub status: Status,
    pub subject: String,
    pub description: String,
    pub reporter: Reporter,
    pub location: Location,
    pub attachments: Vec<Attachment>,
    pub assignment: Assignment,
    pub resolution: Option<Resolution>,
    pub transferred_to: Option<String>,
    pub duplicate_of: Option<TicketId>,
    pub status_reason: Option<String>,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub resolve_time: Option<Timestamp>,
    pub close_time: Option<Timestamp>,
    /// The beneficiary's latest rating, once the ticket is resolved and rated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfaction: Option<Satisfaction>,
    /// How many times the ticket was escalated (by the SLA scheduler or by hand).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalation_level: u32,
    /// Whether the ticket was escalated to its directorate's director general.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated_to_director_general: bool,
    /// Starts at 1 and grows by one with every change; the etag is derived from it.
    pub version: i64,
    /// The caller that filed the ticket (its audit-trail actor): an external system reads
    /// the tickets it filed. `None` for tickets filed before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

impl Ticket {
    /// The opaque etag of this version (AIP-154).
    pub fn etag(&self) -> String {
        etag_of(self.version)
    }
}

/// `parent.child`, or `child` at the top of a request.
fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub fn etag_of(version: i64) -> String {
    format!("\"{version}\"")
}

/// What a caller asks to create. Fields are parsed; catalog references (category, wilayat)
/// are checked by the store inside the creating transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTicket {
    pub ticket_type: TicketType,
    pub channel: Channel,
    pub category: Code,
    /// `None`: the category's default priority.
    pub priority: Option<Priority>,
    pub subject: String,
    pub description: String,
    pub reporter: Reporter,
    pub location: Location,
    pub attachments: Vec<Attachment>,
}

/// Checks the rules that tie fields together, for a new ticket or after an update.
/// `reporter` is `None` when it could not be parsed; the other rules are checked anyway.
pub fn check_ticket_rules(
    ticket_type: TicketType,
    reporter: Option<&Reporter>,
    location: &Location,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if reporter.is_some_and(Reporter::is_anonymous) && ticket_type != TicketType::Suggestion {
        violations.push(FieldViolation::new(
            "reporter.anonymous",
            "only suggestions may be filed anonymously",
        ));
    }
    if ticket_type == TicketType::Report && location.wilayat.is_none() {
        violations.push(FieldViolation::new(
            "location.wilayat",
            "is required for a report: the field team needs to know where",
        ));
    }
    violations
}

/// Changes to a ticket's descriptive fields (UpdateTicket). `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TicketPatch {
    pub ticket_type: Option<TicketType>,
    pub category: Option<Code>,
    pub priority: Option<Priority>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub reporter: Option<Reporter>,
    pub location: Option<Location>,
    pub attachments: Option<Vec<Attachment>>,
}

impl TicketPatch {
    pub fn is_empty(&self) -> bool {
        self == &TicketPatch::default()
    }
}

/// Maximum number of attachment references per ticket.
pub const MAX_ATTACHMENTS: usize = 20;
/// Subject length in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Description length in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// Notes, reasons, comments and resolution texts, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Names, areas and entity names, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A new complaint with nothing but what every ticket has, for tests.
#[cfg(test)]
pub(crate) fn sample_ticket(created: Timestamp) -> Ticket {
    Ticket {
        id: TicketId::new_v7(),
        reference: ReferenceNumber::new(2026, 1).expect("reference"),
        ticket_type: TicketType::Complaint,
        channel: Channel::ContactCentre,
        category: Code::parse("category", "roads").expect("code"),
        priority: Priority::Normal,
        status: Status::New,
        subject: "s".into(),
        description: "d".into(),
        reporter: Reporter::anonymous(),
        location: Location::default(),
        attachments: Vec::new(),
        assignment: Assignment::default(),
        resolution: None,
        transferred_to: None,
        duplicate_of: None,
        status_reason: None,
        create_time: created,
        update_time: created,
        resolve_time: None,
        close_time: None,
        satisfaction: None,
        escalation_level: 0,
        escalated_to_director_general: false,
        version: 1,
        created_by: None,
    }
}
