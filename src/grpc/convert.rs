//! Protobuf to domain and back, in one place.
//!
//! Parsing collects every violation of a request (not just the first) so a caller fixes its
//! input in one round trip. Field paths are the request's, in snake_case.

use prost_types::Timestamp as ProtoTimestamp;

use super::proto;
use crate::domain::catalog::{Category, Directorate, Outlet, Wilayat, parse_names};
use crate::domain::kpi::KpiGrouping;
use crate::domain::lifecycle::{EventKind, TicketEvent};
use crate::domain::sla::{AlertStage, DeadlineKind, EscalationTarget};
use crate::domain::ticket::{
    Assignment, Channel, Location, MAX_ATTACHMENTS, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS,
    MAX_NOTE_CHARS, MAX_SUBJECT_CHARS, NewTicket, Priority, Reporter, Resolution, ResolutionCode,
    Satisfaction, Status, SupportLine, Ticket, TicketType, Visibility, check_ticket_rules,
};
use crate::domain::values::{
    Attachment, CivilId, Code, Email, EmployeeId, GeoPoint, PhoneNumber, TicketId, parse_text,
};
use crate::domain::{FieldViolation, Timestamp};

/// Collects violations while parsing a request.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Keeps the value, or records why it is invalid.
    pub fn take<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|v| self.0.push(v)).ok()
    }

    pub fn take_many<T>(&mut self, result: Result<T, Vec<FieldViolation>>) -> Option<T> {
        result.map_err(|v| self.0.extend(v)).ok()
    }

    pub fn push(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded; the value is built only then.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldViolation>> {
        if self.0.is_empty()
            && let Some(value) = build()
        {
            return Ok(value);
        }
        if self.0.is_empty() {
            // Every `None` above comes with a violation; this is a guard, not a path.
            return Err(vec![FieldViolation::new("", "invalid request")]);
        }
        Err(self.0)
    }
}

macro_rules! enum_map {
    ($domain:ident, $proto:path, $what:literal, { $($d:ident => $p:ident),+ $(,)? }) => {
        impl From<$domain> for $proto {
            fn from(value: $domain) -> Self {
                match value { $($domain::$d => <$proto>::$p),+ }
            }
        }

        /// Parses a required enum value: unspecified and unknown numbers are refused.
        impl EnumInput for $domain {
            fn from_proto(field: &str, value: i32) -> Result<Self, FieldViolation> {
                match <$proto>::try_from(value) {
                    $(Ok(<$proto>::$p) => Ok($domain::$d),)+
                    Ok(_) => Err(FieldViolation::new(field, "is required")),
                    Err(_) => Err(FieldViolation::new(field, concat!("is not a known ", $what))),
                }
            }
        }
    };
}

/// A domain enum that can be parsed from a protobuf enum number.
pub trait EnumInput: Sized {
    fn from_proto(field: &str, value: i32) -> Result<Self, FieldViolation>;
}

enum_map!(TicketType, proto::TicketType, "ticket type", {
    Report => Report, Complaint => Complaint, Suggestion => Suggestion, Inquiry => Inquiry,
});
enum_map!(Channel, proto::Channel, "channel", {
    ContactCentre => ContactCentre, Outlet => Outlet, App => App, SocialMedia => SocialMedia,
    Email => Email, NationalPlatform => NationalPlatform, GovernmentSystem => GovernmentSystem,
});
enum_map!(Priority, proto::Priority, "priority", {
    Low => Low, Normal => Normal, High => High, Urgent => Urgent,
});
enum_map!(Status, proto::TicketStatus, "ticket status", {
    New => New, Assigned => Assigned, InProgress => InProgress,
    WaitingOnBeneficiary => WaitingOnBeneficiary, Resolved => Resolved, Closed => Closed,
    Rejected => Rejected, Transferred => Transferred, Reopened => Reopened, Merged => Merged,
});
enum_map!(SupportLine, proto::SupportLine, "support line", {
    First => First, Second => Second, Third => Third,
});
enum_map!(ResolutionCode, proto::ResolutionCode, "resolution code", {
    Fixed => Fixed, InformationProvided => InformationProvided,
    SuggestionAccepted => SuggestionAccepted, SuggestionDeclined => SuggestionDeclined,
    NoActionNeeded => NoActionNeeded, CouldNotReproduce => CouldNotReproduce,
});
enum_map!(Visibility, proto::CommentVisibility, "comment visibility", {
    Public => Public, Internal => Internal,
});
enum_map!(EscalationTarget, proto::EscalationTarget, "escalation target", {
    Line2 => Line2, Line3 => Line3, DirectorGeneral => DirectorGeneral,
});
enum_map!(DeadlineKind, proto::DeadlineKind, "deadline kind", {
    FirstResponse => FirstResponse, Update => Update, Resolution => Resolution,
    LineHold => LineHold,
});
enum_map!(AlertStage, proto::SlaAlertStage, "alert stage", {
    Warning => Warning, Breach => Breach,
});
enum_map!(KpiGrouping, proto::KpiGrouping, "KPI grouping", {
    None => None, Directorate => Directorate, Outlet => Outlet, Category => Category,
    Channel => Channel, Wilayat => Wilayat, SupportLine => SupportLine, Employee => Employee,
});

/// An optional enum: unspecified means `None`.
pub fn optional_enum<T: EnumInput>(field: &str, value: i32) -> Result<Option<T>, FieldViolation> {
    if value == 0 {
        Ok(None)
    } else {
        T::from_proto(field, value).map(Some)
    }
}

pub fn timestamp_to_proto(t: Timestamp) -> ProtoTimestamp {
    let micros = t.as_micros();
    ProtoTimestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Accepts timestamps from year 1970 to 9999 with valid nanoseconds.
pub fn timestamp_from_proto(field: &str, t: &ProtoTimestamp) -> Result<Timestamp, FieldViolation> {
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(FieldViolation::new(
            field,
            "must be a time between 1970 and 9999 with nanos from 0 to 999999999",
        ));
    }
    Ok(Timestamp::from_micros(
        t.seconds * 1_000_000 + i64::from(t.nanos / 1000),
    ))
}

/// Optional free text: empty means `None`.
pub fn optional_text(
    v: &mut Violations,
    field: &str,
    value: &str,
    max_chars: usize,
    multiline: bool,
) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    v.take(parse_text(field, value, 1, max_chars, multiline))
}

pub fn required_text(
    v: &mut Violations,
    field: &str,
    value: &str,
    max_chars: usize,
    multiline: bool,
) -> Option<String> {
    v.take(parse_text(field, value, 1, max_chars, multiline))
}

pub fn optional_code(v: &mut Violations, field: &str, value: &str) -> Option<Code> {
    if value.is_empty() {
        None
    } else {
        v.take(Code::parse(field, value))
    }
}

/// Parses a reporter; `prefix` is its request path (`reporter`, `ticket.reporter`).
pub fn parse_reporter(
    v: &mut Violations,
    prefix: &str,
    reporter: Option<&proto::Reporter>,
) -> Option<Reporter> {
    let Some(r) = reporter else {
        v.push(
            prefix,
            "is required; set anonymous for an anonymous suggestion",
        );
        return None;
    };
    if r.erased {
        v.push(
            &format!("{prefix}.erased"),
            "is output only; send the reporter's data, or erase it with ErasePersonalData",
        );
        return None;
    }
    if r.masked {
        v.push(
            &format!("{prefix}.masked"),
            "a masked reporter cannot be written back; send the reporter's real data or leave it out",
        );
        return None;
    }
    if r.anonymous {
        if !(r.name.is_empty() && r.phone.is_empty() && r.email.is_empty() && r.civil_id.is_empty())
        {
            v.push(
                &format!("{prefix}.anonymous"),
                "an anonymous reporter carries no name, phone, e-mail or civil ID",
            );
            return None;
        }
        return Some(Reporter::anonymous());
    }
    let n_before = v.0.len();
    let name = required_text(v, &format!("{prefix}.name"), &r.name, MAX_NAME_CHARS, false);
    let phone = (!r.phone.is_empty())
        .then(|| v.take(PhoneNumber::parse(&format!("{prefix}.phone"), &r.phone)))
        .flatten();
    let email = (!r.email.is_empty())
        .then(|| v.take(Email::parse(&format!("{prefix}.email"), &r.email)))
        .flatten();
    let civil_id = (!r.civil_id.is_empty())
        .then(|| v.take(CivilId::parse(&format!("{prefix}.civil_id"), &r.civil_id)))
        .flatten();
    if v.0.len() > n_before {
        return None;
    }
    let name = name?;
    v.take(Reporter::identified(prefix, name, phone, email, civil_id))
}

pub fn parse_location(
    v: &mut Violations,
    prefix: &str,
    location: Option<&proto::Location>,
) -> Location {
    let Some(l) = location else {
        return Location::default();
    };
    Location {
        wilayat: optional_code(v, &format!("{prefix}.wilayat"), &l.wilayat),
        area: optional_text(v, &format!("{prefix}.area"), &l.area, MAX_NAME_CHARS, false),
        point: l.point.as_ref().and_then(|p| {
            v.take_many(GeoPoint::parse(
                &format!("{prefix}.point"),
                p.latitude,
                p.longitude,
            ))
        }),
    }
}

pub fn parse_attachments(
    v: &mut Violations,
    prefix: &str,
    attachments: &[proto::Attachment],
) -> Vec<Attachment> {
    if attachments.len() > MAX_ATTACHMENTS {
        v.push(
            prefix,
            format!(
                "at most {MAX_ATTACHMENTS} attachments, got {}",
                attachments.len()
            ),
        );
        return Vec::new();
    }
    attachments
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            v.take_many(Attachment::parse(
                &format!("{prefix}[{i}]"),
                &a.uri,
                &a.media_type,
                a.size_bytes,
                &a.sha256,
            ))
        })
        .collect()
}

pub fn parse_new_ticket(
    req: &proto::CreateTicketRequest,
) -> Result<NewTicket, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let ticket_type = v.take(TicketType::from_proto("type", req.r#type));
    let channel = v.take(Channel::from_proto("channel", req.channel));
    let category = v.take(Code::parse("category", &req.category));
    let priority = v.take(optional_enum::<Priority>("priority", req.priority));
    let subject = required_text(&mut v, "subject", &req.subject, MAX_SUBJECT_CHARS, false);
    let description = v.take(parse_text(
        "description",
        &req.description,
        0,
        MAX_DESCRIPTION_CHARS,
        true,
    ));
    let reporter = parse_reporter(&mut v, "reporter", req.reporter.as_ref());
    let location = parse_location(&mut v, "location", req.location.as_ref());
    let attachments = parse_attachments(&mut v, "attachments", &req.attachments);
    if let Some(t) = ticket_type {
        v.0.extend(check_ticket_rules(t, reporter.as_ref(), &location));
    }
    v.finish(|| {
        Some(NewTicket {
            ticket_type: ticket_type?,
            channel: channel?,
            category: category?,
            priority: priority?,
            subject: subject?,
            description: description?,
            reporter: reporter?,
            location,
            attachments,
        })
    })
}

pub fn parse_assignment(
    v: &mut Violations,
    directorate: &str,
    outlet: &str,
    assignee: &str,
    support_line: i32,
) -> Option<Assignment> {
    let directorate = v.take(Code::parse("directorate", directorate));
    let outlet = optional_code(v, "outlet", outlet);
    let assignee = (!assignee.is_empty())
        .then(|| v.take(EmployeeId::parse("assignee", assignee)))
        .flatten();
    // Routing to a directorate without naming a line reaches its liaison officer.
    let line = v
        .take(optional_enum::<SupportLine>("support_line", support_line))
        .map(|l| l.unwrap_or(SupportLine::Second));
    Some(Assignment {
        directorate: Some(directorate?),
        outlet,
        assignee,
        support_line: Some(line?),
    })
}

pub fn parse_resolution(
    v: &mut Violations,
    resolution: Option<&proto::Resolution>,
) -> Option<Resolution> {
    let Some(r) = resolution else {
        v.push("resolution", "is required");
        return None;
    };
    let code = v.take(ResolutionCode::from_proto("resolution.code", r.code));
    let text = required_text(v, "resolution.text", &r.text, MAX_NOTE_CHARS, true);
    Some(Resolution {
        code: code?,
        text: text?,
    })
}

pub fn ticket_to_proto(t: &Ticket) -> proto::Ticket {
    let reporter = &t.reporter;
    proto::Ticket {
        id: t.id.to_string(),
        reference: t.reference.to_string(),
        r#type: proto::TicketType::from(t.ticket_type).into(),
        channel: proto::Channel::from(t.channel).into(),
        category: t.category.to_string(),
        priority: proto::Priority::from(t.priority).into(),
        status: proto::TicketStatus::from(t.status).into(),
        subject: t.subject.clone(),
        description: t.description.clone(),
        reporter: Some(proto::Reporter {
            name: reporter.name().unwrap_or_default().to_owned(),
            phone: reporter
                .phone()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            email: reporter
                .email()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            civil_id: reporter
                .civil_id()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            anonymous: reporter.is_anonymous(),
            masked: false,
            erased: reporter.is_erased(),
        }),
        location: Some(proto::Location {
            wilayat: t
                .location
                .wilayat
                .as_ref()
                .map(Code::to_string)
                .unwrap_or_default(),
            area: t.location.area.clone().unwrap_or_default(),
            point: t.location.point.map(|p| proto::LatLng {
                latitude: p.latitude(),
                longitude: p.longitude(),
            }),
        }),
        attachments: t
            .attachments
            .iter()
            .map(|a| proto::Attachment {
                uri: a.uri().to_owned(),
                media_type: a.media_type().to_owned(),
                size_bytes: a.size_bytes(),
                sha256: a.sha256().to_owned(),
            })
            .collect(),
        assignment: Some(assignment_to_proto(&t.assignment)),
        resolution: t.resolution.as_ref().map(|r| proto::Resolution {
            code: proto::ResolutionCode::from(r.code).into(),
            text: r.text.clone(),
        }),
        transferred_to: t.transferred_to.clone().unwrap_or_default(),
        duplicate_of_ticket_id: t.duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
        status_reason: t.status_reason.clone().unwrap_or_default(),
        create_time: Some(timestamp_to_proto(t.create_time)),
        update_time: Some(timestamp_to_proto(t.update_time)),
        resolve_time: t.resolve_time.map(timestamp_to_proto),
        close_time: t.close_time.map(timestamp_to_proto),
        etag: t.etag(),
        satisfaction: t.satisfaction.as_ref().map(satisfaction_to_proto),
        escalation_level: t.escalation_level,
        escalated_to_director_general: t.escalated_to_director_general,
        sla: None,
        created_by: t.created_by.clone().unwrap_or_default(),
    }
}

fn satisfaction_to_proto(s: &Satisfaction) -> proto::Satisfaction {
    proto::Satisfaction {
        score: i32::from(s.score()),
        comment: s.comment.clone().unwrap_or_default(),
        rate_time: Some(timestamp_to_proto(s.rate_time)),
    }
}

fn assignment_to_proto(a: &Assignment) -> proto::Assignment {
    proto::Assignment {
        directorate: a
            .directorate
            .as_ref()
            .map(Code::to_string)
            .unwrap_or_default(),
        outlet: a.outlet.as_ref().map(Code::to_string).unwrap_or_default(),
        assignee: a
            .assignee
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        support_line: a
            .support_line
            .map(|l| proto::SupportLine::from(l).into())
            .unwrap_or_default(),
    }
}

/// A ticket as an answer carries it: with the reporter's personal data masked when `mask`.
pub fn ticket_to_proto_masked(ticket: &Ticket, mask: bool) -> proto::Ticket {
    let mut message = ticket_to_proto(ticket);
    if mask {
        mask_personal_data(&mut message);
    }
    message
}

/// Masks the reporter's personal data of an answer (docs/security.md): the name keeps its
/// first letter, the phone and civil ID their last two digits, the e-mail its first letter
/// and its domain, so an agent can confirm a caller without the data leaving the server.
pub fn mask_personal_data(ticket: &mut proto::Ticket) {
    let Some(reporter) = ticket.reporter.as_mut() else {
        return;
    };
    if reporter.anonymous || reporter.erased {
        return;
    }
    fn keep_first(text: &str) -> String {
        text.chars()
            .next()
            .map(|c| format!("{c}•••"))
            .unwrap_or_default()
    }
    fn keep_last_two(text: &str) -> String {
        if text.is_empty() {
            return String::new();
        }
        let digits: Vec<char> = text.chars().filter(char::is_ascii_digit).collect();
        let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
        format!("••••••{tail}")
    }
    reporter.name = keep_first(&reporter.name);
    reporter.phone = keep_last_two(&reporter.phone);
    reporter.civil_id = keep_last_two(&reporter.civil_id);
    reporter.email = match reporter.email.split_once('@') {
        Some((local, domain)) => format!("{}@{domain}", keep_first(local)),
        None => keep_first(&reporter.email),
    };
    reporter.masked = true;
}

pub fn event_to_proto(e: &TicketEvent) -> proto::TicketEvent {
    let r = &e.record;
    let kind = match r.kind {
        EventKind::Created => proto::TicketEventKind::Created,
        EventKind::Updated => proto::TicketEventKind::Updated,
        EventKind::Assigned => proto::TicketEventKind::Assigned,
        EventKind::StatusChanged => proto::TicketEventKind::StatusChanged,
        EventKind::Commented => proto::TicketEventKind::Commented,
        EventKind::Rated => proto::TicketEventKind::Rated,
        EventKind::SlaWarning => proto::TicketEventKind::SlaWarning,
        EventKind::SlaBreached => proto::TicketEventKind::SlaBreached,
        EventKind::Escalated => proto::TicketEventKind::Escalated,
    };
    proto::TicketEvent {
        cursor: e.cursor,
        ticket_id: e.ticket_id.to_string(),
        kind: kind.into(),
        actor: e.actor.clone(),
        occur_time: Some(timestamp_to_proto(e.occur_time)),
        from_status: r
            .from_status
            .map(|s| proto::TicketStatus::from(s).into())
            .unwrap_or_default(),
        to_status: r
            .to_status
            .map(|s| proto::TicketStatus::from(s).into())
            .unwrap_or_default(),
        note: r.note.clone().unwrap_or_default(),
        visibility: r
            .visibility
            .map(|s| proto::CommentVisibility::from(s).into())
            .unwrap_or_default(),
        assignment: r.assignment.as_ref().map(assignment_to_proto),
        changed_fields: r.changed_fields.clone(),
        satisfaction: r.satisfaction.as_ref().map(satisfaction_to_proto),
        etag: crate::domain::ticket::etag_of(e.version),
        sla_alert: r.sla_alert.as_ref().map(|a| proto::SlaAlert {
            kind: proto::DeadlineKind::from(a.deadline.kind).into(),
            anchor_cursor: a.deadline.anchor,
            stage: proto::SlaAlertStage::from(a.stage).into(),
            due_time: Some(timestamp_to_proto(a.due_time)),
        }),
        escalated_to: r
            .escalated_to
            .map(|t| proto::EscalationTarget::from(t).into())
            .unwrap_or_default(),
    }
}

pub fn parse_ticket_id(field: &str, value: &str) -> Result<TicketId, Vec<FieldViolation>> {
    TicketId::parse(field, value).map_err(|v| vec![v])
}

pub fn directorate_to_proto(d: &Directorate) -> proto::Directorate {
    proto::Directorate {
        code: d.code.to_string(),
        name_ar: d.name_ar.clone(),
        name_en: d.name_en.clone(),
        active: d.active,
    }
}

pub fn outlet_to_proto(o: &Outlet) -> proto::Outlet {
    proto::Outlet {
        code: o.code.to_string(),
        directorate_code: o.directorate_code.to_string(),
        wilayat_code: o.wilayat_code.to_string(),
        name_ar: o.name_ar.clone(),
        name_en: o.name_en.clone(),
        active: o.active,
    }
}

pub fn category_to_proto(c: &Category) -> proto::Category {
    proto::Category {
        code: c.code.to_string(),
        name_ar: c.name_ar.clone(),
        name_en: c.name_en.clone(),
        default_directorate_code: c.default_directorate_code.to_string(),
        default_priority: proto::Priority::from(c.default_priority).into(),
        sla_policy_code: c.sla_policy_code.to_string(),
        active: c.active,
    }
}

pub fn wilayat_to_proto(w: &Wilayat) -> proto::Wilayat {
    proto::Wilayat {
        code: w.code.to_string(),
        name_ar: w.name_ar.clone(),
        name_en: w.name_en.clone(),
    }
}

pub fn parse_directorate(
    d: Option<&proto::Directorate>,
) -> Result<Directorate, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let Some(d) = d else {
        return Err(vec![FieldViolation::new("directorate", "is required")]);
    };
    let code = v.take(Code::parse("directorate.code", &d.code));
    let names = v.take_many(parse_names("directorate", &d.name_ar, &d.name_en));
    v.finish(|| {
        let (name_ar, name_en) = names?;
        Some(Directorate {
            code: code?,
            name_ar,
            name_en,
            active: d.active,
        })
    })
}

pub fn parse_outlet(o: Option<&proto::Outlet>) -> Result<Outlet, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let Some(o) = o else {
        return Err(vec![FieldViolation::new("outlet", "is required")]);
    };
    let code = v.take(Code::parse("outlet.code", &o.code));
    let directorate = v.take(Code::parse("outlet.directorate_code", &o.directorate_code));
    let wilayat = v.take(Code::parse("outlet.wilayat_code", &o.wilayat_code));
    let names = v.take_many(parse_names("outlet", &o.name_ar, &o.name_en));
    v.finish(|| {
        let (name_ar, name_en) = names?;
        Some(Outlet {
            code: code?,
            directorate_code: directorate?,
            wilayat_code: wilayat?,
            name_ar,
            name_en,
            active: o.active,
        })
    })
}

pub fn parse_category(c: Option<&proto::Category>) -> Result<Category, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let Some(c) = c else {
        return Err(vec![FieldViolation::new("category", "is required")]);
    };
    let code = v.take(Code::parse("category.code", &c.code));
    let directorate = v.take(Code::parse(
        "category.default_directorate_code",
        &c.default_directorate_code,
    ));
    let priority = v.take(Priority::from_proto(
        "category.default_priority",
        c.default_priority,
    ));
    let sla = v.take(Code::parse("category.sla_policy_code", &c.sla_policy_code));
    let names = v.take_many(parse_names("category", &c.name_ar, &c.name_en));
    v.finish(|| {
        let (name_ar, name_en) = names?;
        Some(Category {
            code: code?,
            name_ar,
            name_en,
            default_directorate_code: directorate?,
            default_priority: priority?,
            sla_policy_code: sla?,
            active: c.active,
        })
    })
}
