//! The one place where errors become gRPC statuses.
//!
//! Every status carries exactly one `google.rpc.ErrorInfo` (domain `balagh`, an UPPER_SNAKE
//! reason) and, for bad input, a `google.rpc.BadRequest` naming each field. The conversion
//! from [`StoreError`] is exhaustive, so a new error forces a choice of code. Internal details
//! go to the log (with the whole cause chain), never to the client.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldViolation;
use crate::domain::lifecycle::LifecycleError;
use crate::domain::satisfaction::SurveyRefusal;
use crate::domain::ticket::etag_of;
use crate::store::StoreError;

/// The error domain of every `ErrorInfo` balagh sends.
pub const ERROR_DOMAIN: &str = "balagh";

/// A status with an `ErrorInfo` and optional field violations.
pub fn status(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
    violations: &[FieldViolation],
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(code, message, details)
}

/// `INVALID_ARGUMENT` naming every offending field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let message = match violations.as_slice() {
        [one] => format!("invalid {}: {}", one.field, one.description),
        many => format!("{} invalid fields, first {}", many.len(), many[0]),
    };
    status(
        Code::InvalidArgument,
        "INVALID_FIELDS",
        message,
        HashMap::new(),
        &violations,
    )
}

/// PostgreSQL refusals that a retry can overcome: a serialization failure (40001), a
/// deadlock (40P01), a lock not available (55P03), or a statement cancelled by
/// `statement_timeout` (57014). See `SessionLimits` in the PostgreSQL store.
fn storage_busy(error: &sqlx::Error) -> bool {
    const RETRYABLE: [&str; 4] = ["40001", "40P01", "55P03", "57014"];
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| RETRYABLE.contains(&code.as_ref()))
}

fn internal(error: &dyn std::error::Error) -> Status {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "internal error");
    status(
        Code::Internal,
        "INTERNAL",
        "internal error; it has been logged",
        HashMap::new(),
        &[],
    )
}

/// Adds a path prefix (`ticket.`) to violations found deeper than the request root.
pub fn prefixed(prefix: &str, violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    violations
        .into_iter()
        .map(|v| FieldViolation {
            field: format!("{prefix}{}", v.field),
            description: v.description,
        })
        .collect()
}

impl From<LifecycleError> for Status {
    fn from(error: LifecycleError) -> Self {
        match error {
            LifecycleError::NotAllowed {
                action,
                status: current,
            } => status(
                Code::FailedPrecondition,
                &format!("TICKET_{}", current.as_str().to_ascii_uppercase()),
                format!(
                    "cannot {} a ticket that is {}",
                    action.as_str(),
                    current.as_str()
                ),
                HashMap::from([
                    ("current_status".to_owned(), current.as_str().to_owned()),
                    ("action".to_owned(), action.as_str().to_owned()),
                ]),
                &[],
            ),
            LifecycleError::NotEditable { status: current } => status(
                Code::FailedPrecondition,
                &format!("TICKET_{}", current.as_str().to_ascii_uppercase()),
                format!(
                    "a ticket that is {} can no longer be edited",
                    current.as_str()
                ),
                HashMap::from([("current_status".to_owned(), current.as_str().to_owned())]),
                &[],
            ),
            LifecycleError::Invalid(violations) => invalid_argument(violations),
        }
    }
}

/// An instant as RFC 3339 in UTC, for error metadata.
fn rfc3339(t: crate::domain::Timestamp) -> String {
    chrono::DateTime::from_timestamp_micros(t.as_micros())
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl From<SurveyRefusal> for Status {
    fn from(refusal: SurveyRefusal) -> Self {
        match refusal {
            SurveyRefusal::AskedRecently {
                last_ask_time,
                last_channel,
                ask_again_time,
            } => status(
                Code::FailedPrecondition,
                "BENEFICIARY_ASKED_RECENTLY",
                format!(
                    "the beneficiary was asked about another ticket within the quiet period; \
                     they may be asked again from {}",
                    rfc3339(ask_again_time)
                ),
                HashMap::from([
                    ("ask_again_time".to_owned(), rfc3339(ask_again_time)),
                    ("last_ask_time".to_owned(), rfc3339(last_ask_time)),
                    (
                        "last_ask_channel".to_owned(),
                        last_channel.as_str().to_owned(),
                    ),
                ]),
                &[],
            ),
            SurveyRefusal::Anonymous => status(
                Code::FailedPrecondition,
                "BENEFICIARY_ANONYMOUS",
                "the ticket was filed anonymously: there is nobody to call back",
                HashMap::new(),
                &[],
            ),
            SurveyRefusal::NoPhone => status(
                Code::FailedPrecondition,
                "BENEFICIARY_HAS_NO_PHONE",
                "the ticket's reporter gave no phone number to call back",
                HashMap::new(),
                &[],
            ),
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TicketNotFound => status(
                Code::NotFound,
                "TICKET_NOT_FOUND",
                "no such ticket",
                HashMap::new(),
                &[],
            ),
            StoreError::Lifecycle(error) => error.into(),
            StoreError::EtagMismatch { current_version } => status(
                Code::Aborted,
                "ETAG_MISMATCH",
                "the ticket changed since it was read; read it again and retry",
                HashMap::from([("current_etag".to_owned(), etag_of(current_version))]),
                &[],
            ),
            StoreError::SettingVersionMismatch { current_version } => status(
                Code::Aborted,
                "ETAG_MISMATCH",
                "the setting changed since it was read; read it again and retry",
                HashMap::from([("current_etag".to_owned(), etag_of(current_version))]),
                &[],
            ),
            StoreError::UnknownReference(violation) => status(
                Code::InvalidArgument,
                "UNKNOWN_REFERENCE",
                format!("invalid {}: {}", violation.field, violation.description),
                HashMap::new(),
                &[violation],
            ),
            StoreError::QualityReviewExists => status(
                Code::AlreadyExists,
                "QUALITY_REVIEW_EXISTS",
                "this employee was already reviewed on this ticket",
                HashMap::new(),
                &[],
            ),
            StoreError::Survey(refusal) => refusal.into(),
            StoreError::RequestIdReused => status(
                Code::InvalidArgument,
                "REQUEST_ID_REUSED",
                "this request_id was already used with a different request",
                HashMap::new(),
                &[FieldViolation::new(
                    "request_id",
                    "was already used with a different request; use a new id for a new request",
                )],
            ),
            StoreError::SnapshotTooLarge { max } => status(
                Code::FailedPrecondition,
                "SNAPSHOT_TOO_LARGE",
                format!(
                    "more than {max} tickets match; narrow the filter (for example by status) \
                     or watch without a snapshot"
                ),
                HashMap::from([("max_tickets".to_owned(), max.to_string())]),
                &[],
            ),
            StoreError::ShuttingDown => status(
                Code::Unavailable,
                "SHUTTING_DOWN",
                "the server is shutting down; retry on another instance",
                HashMap::new(),
                &[],
            ),
            StoreError::CommitFailed => status(
                Code::Unavailable,
                "STORAGE_UNAVAILABLE",
                "the write could not be committed; retry with the same request_id",
                HashMap::new(),
                &[],
            ),
            StoreError::Database(sqlx::Error::PoolTimedOut) => status(
                Code::Unavailable,
                "STORAGE_BUSY",
                "storage is busy; retry shortly",
                HashMap::new(),
                &[],
            ),
            StoreError::Database(error) if storage_busy(&error) => {
                tracing::warn!(error = %error, "a storage conflict or timeout refused a call");
                status(
                    Code::Unavailable,
                    "STORAGE_BUSY",
                    "storage is busy; retry shortly (a write with the same request_id)",
                    HashMap::new(),
                    &[],
                )
            }
            StoreError::Database(error) => internal(&error),
            StoreError::Sqlite(error) => internal(&error),
            error @ StoreError::Corrupt(_) => internal(&error),
        }
    }
}
