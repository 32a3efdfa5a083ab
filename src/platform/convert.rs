//! Domain tickets to platform cases and back, through the versioned [`Mapping`].
//!
//! This is the one place where the platform's JSON meets the domain. The sync worker calls
//! these functions and hands the results to [`super::client::PlatformClient`]; it never builds
//! a DTO itself.
//!
//! Personal data: what goes out carries none of the reporter's data (no name, phone, e-mail
//! or civil ID), and no attachment references (the platform cannot read the municipality's
//! object store anyway). What comes in is parsed with the domain's own parsers, so a case that
//! becomes a `NewTicket` is as valid as one created over gRPC; anything that does not parse is
//! refused with the offending fields named in the case's JSON terms (`citizen.phone`).

use super::contract::{
    Case, CaseUpdate, GeoLocation, NewCase, NewReply, NewResolution, PlatformTime, Receipt,
};
use super::mapping::{Mapping, MappingError};
use crate::domain::ticket::{
    Channel, Location, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_SUBJECT_CHARS,
    NewTicket, Reporter, Resolution, Status, Ticket, check_ticket_rules,
};
use crate::domain::values::{Attachment, Email, GeoPoint, PhoneNumber, parse_text};
use crate::domain::{FieldViolation, Timestamp};

/// Why a ticket cannot become a case, or a case a ticket.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversionError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The case's fields do not make a valid ticket. Field names are the case's.
    #[error("the case does not make a valid ticket: {}", join(.0))]
    Invalid(Vec<FieldViolation>),
    /// The ticket has nothing of this kind to send (a resolution of an unresolved ticket).
    #[error("the ticket has no {0} to send")]
    NothingToSend(&'static str),
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A case taken in as a new local ticket, with what the sync worker should report.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundTicket {
    pub ticket: NewTicket,
    /// The status the platform's code maps to (a citizen's case arrives as `new`).
    pub status: Status,
    /// The platform's category code was not in the table and the fallback row was used.
    pub category_via_fallback: bool,
}

/// What the municipality shares when a ticket first goes to the platform.
pub fn new_case_from_ticket(
    ticket: &Ticket,
    mapping: &Mapping,
) -> Result<NewCase, ConversionError> {
    let wilayat = ticket
        .location
        .wilayat
        .as_ref()
        .map(|w| mapping.wilayat_to_platform(w).map(str::to_owned))
        .transpose()?;
    Ok(NewCase {
        case_type: mapping.type_to_platform(ticket.ticket_type)?.to_owned(),
        category: mapping.category_to_platform(&ticket.category)?.to_owned(),
        status: mapping.status_to_platform(ticket.status)?.to_owned(),
        subject: ticket.subject.clone(),
        description: ticket.description.clone(),
        wilayat,
        area: ticket.location.area.clone(),
        location: ticket.location.point.map(|p| GeoLocation {
            latitude: p.latitude(),
            longitude: p.longitude(),
        }),
        entity_reference: ticket.reference.to_string(),
        filed_at: PlatformTime::new(ticket.create_time),
    })
}

/// The fields the municipality owns on the platform, as they are on the ticket now. Sending
/// all of them (rather than a diff) makes a retried or re-ordered update converge.
pub fn case_update_from_ticket(
    ticket: &Ticket,
    mapping: &Mapping,
) -> Result<CaseUpdate, ConversionError> {
    let wilayat = ticket
        .location
        .wilayat
        .as_ref()
        .map(|w| mapping.wilayat_to_platform(w).map(str::to_owned))
        .transpose()?;
    // The citizen sees why a case was rejected or where it went; other reasons are internal.
    let status_reason = match ticket.status {
        Status::Rejected => ticket.status_reason.clone(),
        Status::Transferred => ticket.transferred_to.clone(),
        _ => None,
    };
    Ok(CaseUpdate {
        case_type: Some(mapping.type_to_platform(ticket.ticket_type)?.to_owned()),
        category: Some(mapping.category_to_platform(&ticket.category)?.to_owned()),
        status: Some(mapping.status_to_platform(ticket.status)?.to_owned()),
        status_reason,
        wilayat,
    })
}

/// The resolution of a resolved (or closed) ticket.
pub fn new_resolution_from_ticket(
    ticket: &Ticket,
    mapping: &Mapping,
) -> Result<NewResolution, ConversionError> {
    let Some(resolution) = &ticket.resolution else {
        return Err(ConversionError::NothingToSend("resolution"));
    };
    Ok(NewResolution {
        outcome: mapping.outcome_to_platform(resolution.code)?.to_owned(),
        text: resolution.text.clone(),
        resolved_at: PlatformTime::new(ticket.resolve_time.unwrap_or(ticket.update_time)),
    })
}

/// A public reply (a comment with public visibility).
pub fn new_reply(text: &str, at: Timestamp) -> NewReply {
    NewReply {
        text: text.to_owned(),
        replied_at: PlatformTime::new(at),
    }
}

/// The receipt acknowledgement of a case taken in as `ticket`.
pub fn receipt_for(ticket: &Ticket) -> Receipt {
    Receipt {
        entity_reference: ticket.reference.to_string(),
        received_at: PlatformTime::new(ticket.create_time),
    }
}

/// The local resolution a platform resolution stands for (used by the reconcile sweep).
pub fn resolution_from_case(
    case: &Case,
    mapping: &Mapping,
) -> Result<Option<Resolution>, ConversionError> {
    case.resolution
        .as_ref()
        .map(|r| {
            Ok(Resolution {
                code: mapping.outcome_from_platform(&r.outcome)?,
                text: r.text.clone(),
            })
        })
        .transpose()
}

/// A case a citizen filed on the platform, as a new local ticket (channel: national platform).
pub fn new_ticket_from_case(
    case: &Case,
    mapping: &Mapping,
) -> Result<InboundTicket, ConversionError> {
    let ticket_type = mapping.type_from_platform(&case.case_type)?;
    let status = mapping.status_from_platform(&case.status)?;
    let category = mapping.category_from_platform(&case.category);
    let wilayat = case
        .wilayat
        .as_deref()
        .map(|w| mapping.wilayat_from_platform(w))
        .transpose()?;

    let mut violations = Vec::new();
    let subject = take(
        &mut violations,
        parse_text("subject", &case.subject, 1, MAX_SUBJECT_CHARS, false),
    );
    let description = take(
        &mut violations,
        parse_text(
            "description",
            &case.description,
            0,
            MAX_DESCRIPTION_CHARS,
            true,
        ),
    );
    let area = case.area.as_deref().and_then(|a| {
        take(
            &mut violations,
            parse_text("area", a, 1, MAX_NAME_CHARS, false),
        )
    });
    let reporter = match &case.citizen {
        None => Some(Reporter::anonymous()),
        Some(citizen) => {
            let name = take(
                &mut violations,
                parse_text("citizen.name", &citizen.name, 1, MAX_NAME_CHARS, false),
            );
            let phone = citizen
                .phone
                .as_deref()
                .and_then(|p| take(&mut violations, PhoneNumber::parse("citizen.phone", p)));
            let email = citizen
                .email
                .as_deref()
                .and_then(|e| take(&mut violations, Email::parse("citizen.email", e)));
            // The civil ID is never asked of the platform: the municipality does not need it.
            name.and_then(|name| {
                take(
                    &mut violations,
                    Reporter::identified("citizen", name, phone, email, None),
                )
            })
        }
    };
    let point = match case.location {
        Some(p) => match GeoPoint::parse("location", p.latitude, p.longitude) {
            Ok(point) => Some(point),
            Err(v) => {
                violations.extend(v);
                None
            }
        },
        None => None,
    };
    let mut attachments = Vec::new();
    for (i, a) in case.attachments.iter().enumerate() {
        match Attachment::parse(
            &format!("attachments[{i}]"),
            &a.uri,
            &a.media_type,
            a.size_bytes,
            &a.sha256,
        ) {
            Ok(a) => attachments.push(a),
            Err(v) => violations.extend(v),
        }
    }
    let location = Location {
        wilayat,
        area,
        point,
    };
    violations.extend(check_ticket_rules(
        ticket_type,
        reporter.as_ref(),
        &location,
    ));
    match (subject, description, reporter) {
        (Some(subject), Some(description), Some(reporter)) if violations.is_empty() => {
            Ok(InboundTicket {
                ticket: NewTicket {
                    ticket_type,
                    channel: Channel::NationalPlatform,
                    category: category.code,
                    priority: None,
                    subject,
                    description,
                    reporter,
                    location,
                    attachments,
                },
                status,
                category_via_fallback: category.via_fallback,
            })
        }
        _ => Err(ConversionError::Invalid(violations)),
    }
}

/// Keeps the value, or records why it is invalid.
fn take<T>(violations: &mut Vec<FieldViolation>, result: Result<T, FieldViolation>) -> Option<T> {
    result.map_err(|v| violations.push(v)).ok()
}

/// A citizen's free text (a detail, a rating comment, a reopen reason) as a local note.
pub fn note_from_citizen(field: &str, text: &str) -> Result<String, ConversionError> {
    parse_text(field, text, 1, MAX_NOTE_CHARS, true).map_err(|v| ConversionError::Invalid(vec![v]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ticket::{Assignment, Priority, ResolutionCode, TicketType};
    use crate::domain::values::{Code, ReferenceNumber, TicketId};
    use crate::platform::contract::{CaseSource, Citizen};

    fn mapping() -> Mapping {
        Mapping::v1().unwrap()
    }

    fn ticket() -> Ticket {
        let phone = PhoneNumber::parse("p", "91234567").unwrap();
        Ticket {
            id: TicketId::new_v7(),
            reference: ReferenceNumber::new(2026, 42).unwrap(),
            ticket_type: TicketType::Complaint,
            channel: Channel::ContactCentre,
            category: Code::parse("c", "waste_collection").unwrap(),
            priority: Priority::High,
            status: Status::Assigned,
            subject: "لم تجمع النفايات".into(),
            description: "منذ ثلاثة أيام".into(),
            reporter: Reporter::identified("r", "Salim".into(), Some(phone), None, None).unwrap(),
            location: Location {
                wilayat: Some(Code::parse("w", "as_seeb").unwrap()),
                area: Some("Al Khoud".into()),
                point: Some(GeoPoint::parse("p", 23.6, 58.2).unwrap()),
            },
            attachments: Vec::new(),
            assignment: Assignment::default(),
            resolution: Some(Resolution {
                code: ResolutionCode::Fixed,
                text: "collected".into(),
            }),
            transferred_to: None,
            duplicate_of: None,
            status_reason: None,
            create_time: Timestamp::from_micros(1_780_000_000_000_000),
            update_time: Timestamp::from_micros(1_780_000_100_000_000),
            resolve_time: Some(Timestamp::from_micros(1_780_000_100_000_000)),
            close_time: None,
            satisfaction: None,
            escalation_level: 0,
            escalated_to_director_general: false,
            version: 3,
            created_by: None,
        }
    }

    #[test]
    fn a_ticket_goes_out_without_personal_data() {
        let case = new_case_from_ticket(&ticket(), &mapping()).unwrap();
        assert_eq!(case.case_type, "SHK");
        assert_eq!(case.category, "MUN-HLTH-010");
        assert_eq!(case.status, "ST30");
        assert_eq!(case.wilayat.as_deref(), Some("OM-MA-04"));
        assert_eq!(case.entity_reference, "MCT-2026-000042");
        let json = serde_json::to_string(&case).unwrap();
        assert!(
            !json.contains("Salim") && !json.contains("91234567"),
            "{json}"
        );
        let resolution = new_resolution_from_ticket(&ticket(), &mapping()).unwrap();
        assert_eq!(resolution.outcome, "OC10");
    }

    fn citizen_case() -> Case {
        let at = PlatformTime::new(Timestamp::from_micros(1_780_000_000_000_000));
        Case {
            case_id: "CASE-000001".into(),
            case_type: "BLG".into(),
            category: "MUN-ROAD-010".into(),
            status: "ST10".into(),
            status_reason: None,
            subject: "حفرة".into(),
            description: "حفرة كبيرة".into(),
            wilayat: Some("OM-MA-02".into()),
            area: None,
            location: Some(GeoLocation {
                latitude: 23.61,
                longitude: 58.56,
            }),
            attachments: Vec::new(),
            source: CaseSource::Citizen,
            entity_reference: None,
            citizen: Some(Citizen {
                citizen_ref: "CIT-000001".into(),
                name: "Aisha".into(),
                phone: Some("+968 9123 4567".into()),
                email: None,
            }),
            details: Vec::new(),
            replies: Vec::new(),
            resolution: None,
            ratings: Vec::new(),
            reopen_requests: Vec::new(),
            version: 1,
            filed_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_citizen_case_comes_in_as_a_platform_ticket() {
        let inbound = new_ticket_from_case(&citizen_case(), &mapping()).unwrap();
        assert_eq!(inbound.ticket.channel, Channel::NationalPlatform);
        assert_eq!(inbound.ticket.ticket_type, TicketType::Report);
        assert_eq!(inbound.ticket.category.as_str(), "pothole");
        assert_eq!(inbound.status, Status::New);
        assert!(!inbound.category_via_fallback);
        assert_eq!(
            inbound.ticket.reporter.phone().map(|p| p.as_str()),
            Some("+96891234567")
        );
        assert!(inbound.ticket.reporter.civil_id().is_none());
    }

    #[test]
    fn an_invalid_case_names_its_fields() {
        let mut case = citizen_case();
        case.wilayat = None;
        case.citizen = None;
        case.subject = String::new();
        let Err(ConversionError::Invalid(violations)) = new_ticket_from_case(&case, &mapping())
        else {
            panic!("expected violations");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["subject", "reporter.anonymous", "location.wilayat"]
        );
        let mut case = citizen_case();
        case.case_type = "XYZ".into();
        assert!(matches!(
            new_ticket_from_case(&case, &mapping()),
            Err(ConversionError::Mapping(_))
        ));
    }
}
