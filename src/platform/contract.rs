//! The national platform's wire contract: the JSON bodies, headers, code lists and problem
//! types of `docs/platform-api.md` (and `docs/platform-api.openapi.yaml`), as Rust types.
//!
//! Architecture invariant: these types stay inside `crate::platform`. The domain, the store
//! and the sync worker see domain types only; [`super::convert`] is the one place where a
//! platform case becomes a ticket and back. The simulator serialises the very same types the
//! client parses, so the two cannot drift apart silently; the OpenAPI file is checked against
//! the code lists here by a unit test.
//!
//! Codes are kept as the platform's strings (`"SHK"`, `"ST30"`, `"MUN-ROAD-010"`): the
//! platform may add codes at any time, and an unknown code must reach the mapping layer (which
//! decides what to do with it) rather than fail the parse of a whole change-feed page.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

/// The header that makes a write safe to repeat (IETF draft `Idempotency-Key`).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Present (`true`) on an answer that replays the first answer given to an idempotency key.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
/// The media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Longest idempotency key the platform accepts, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// Default and largest page of the change feed.
pub const DEFAULT_CHANGES_LIMIT: u32 = 100;
pub const MAX_CHANGES_LIMIT: u32 = 1000;
/// Text limits the platform enforces (the same as balagh's, so a ticket always fits).
pub const MAX_SUBJECT_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_TEXT_CHARS: usize = 2000;

/// One code of one of the platform's published code lists, with its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformCode {
    pub code: &'static str,
    pub name_en: &'static str,
    pub name_ar: &'static str,
}

const fn code(code: &'static str, name_en: &'static str, name_ar: &'static str) -> PlatformCode {
    PlatformCode {
        code,
        name_en,
        name_ar,
    }
}

/// The four case types.
pub const CASE_TYPES: &[PlatformCode] = &[
    code("BLG", "Report", "بلاغ"),
    code("SHK", "Complaint", "شكوى"),
    code("IQT", "Suggestion", "اقتراح"),
    code("IST", "Inquiry", "استفسار"),
];

/// Case statuses. `ST10` is the platform's own (a citizen filed, the entity has not yet
/// acknowledged receipt); an entity never sets it.
pub const CASE_STATUSES: &[PlatformCode] = &[
    code("ST10", "Submitted", "مقدم"),
    code("ST20", "Received by the entity", "مستلم"),
    code("ST30", "In progress", "قيد الإجراء"),
    code("ST35", "Awaiting the citizen", "بانتظار المواطن"),
    code("ST40", "Resolved", "تمت المعالجة"),
    code("ST50", "Closed", "مغلق"),
    code("ST55", "Closed as a duplicate", "مغلق لتكراره"),
    code("ST60", "Rejected: not within the entity's remit", "مرفوض"),
    code(
        "ST70",
        "Referred to another government entity",
        "محال إلى جهة أخرى",
    ),
    code("ST80", "Reopened", "أعيد فتحه"),
];

/// The status a citizen's case has until the entity acknowledges receipt.
pub const STATUS_SUBMITTED: &str = "ST10";
/// The status a receipt acknowledgement moves a submitted case to.
pub const STATUS_RECEIVED: &str = "ST20";
/// The status a resolution sets.
pub const STATUS_RESOLVED: &str = "ST40";
/// The status a citizen's reopen request sets.
pub const STATUS_REOPENED: &str = "ST80";
/// Statuses a citizen may rate or ask to reopen from.
pub const STATUSES_DONE: &[&str] = &["ST40", "ST50"];
/// Statuses after which a citizen can no longer add details.
pub const STATUSES_FINAL: &[&str] = &["ST50", "ST55", "ST60", "ST70"];

/// Resolution outcomes.
pub const OUTCOMES: &[PlatformCode] = &[
    code("OC10", "Fixed", "تم الإصلاح"),
    code("OC20", "Information provided", "تم تقديم المعلومات"),
    code("OC30", "Suggestion accepted", "تم قبول الاقتراح"),
    code("OC31", "Suggestion declined", "تم الاعتذار عن الاقتراح"),
    code("OC40", "No action needed", "لا يلزم إجراء"),
    code("OC50", "Could not be verified", "تعذر التحقق"),
];

/// Muscat Governorate's wilayats, by the national codes (ISO 3166-2 `OM-MA` and a number).
pub const WILAYATS: &[PlatformCode] = &[
    code("OM-MA-01", "Muscat", "مسقط"),
    code("OM-MA-02", "Muttrah", "مطرح"),
    code("OM-MA-03", "Bawshar", "بوشر"),
    code("OM-MA-04", "As Seeb", "السيب"),
    code("OM-MA-05", "Al Amerat", "العامرات"),
    code("OM-MA-06", "Qurayyat", "قريات"),
];

/// The national taxonomy's categories for municipal services (the part a municipality sees).
pub const CATEGORIES: &[PlatformCode] = &[
    code("MUN-ROAD-010", "Road surface damage", "تلف سطح الطريق"),
    code("MUN-ROAD-020", "Street lighting", "إنارة الشوارع"),
    code("MUN-ROAD-030", "Rainwater drainage", "تصريف مياه الأمطار"),
    code("MUN-HLTH-010", "Waste collection", "جمع النفايات"),
    code("MUN-HLTH-020", "Public cleanliness", "النظافة العامة"),
    code("MUN-HLTH-030", "Pest control", "مكافحة الآفات"),
    code("MUN-HLTH-040", "Food safety", "سلامة الغذاء"),
    code("MUN-HLTH-050", "Stray animals", "الحيوانات السائبة"),
    code("MUN-BLDG-010", "Building violations", "مخالفات البناء"),
    code("MUN-BLDG-020", "Building permits", "تصاريح البناء"),
    code(
        "MUN-PARK-010",
        "Parks and green areas",
        "الحدائق والمسطحات الخضراء",
    ),
    code("MUN-COMM-010", "Commercial licences", "التراخيص التجارية"),
    code(
        "GOV-CNDT-010",
        "Conduct of public servants",
        "تعامل الموظفين",
    ),
    code(
        "GOV-SRVC-010",
        "Service quality and improvement",
        "جودة الخدمات وتحسينها",
    ),
    code("GOV-INFO-010", "General information", "معلومات عامة"),
    code("MUN-OTHR-999", "Other municipal matter", "شؤون بلدية أخرى"),
];

/// True when `code` is in `list`.
pub fn is_known(list: &[PlatformCode], code: &str) -> bool {
    list.iter().any(|c| c.code == code)
}

/// A point in time on the wire: RFC 3339 with an offset (the platform writes UTC, `Z`, with
/// microseconds). Parsing one that is not RFC 3339 fails the body, which the client reports
/// as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlatformTime(Timestamp);

impl PlatformTime {
    pub fn new(at: Timestamp) -> Self {
        Self(at)
    }

    pub fn timestamp(self) -> Timestamp {
        self.0
    }

    pub fn parse(text: &str) -> Option<Self> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(Self(Timestamp::from_micros(parsed.timestamp_micros())))
    }
}

impl fmt::Display for PlatformTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        match chrono::DateTime::from_timestamp_micros(micros) {
            Some(at) => f.write_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            None => f.write_str("1970-01-01T00:00:00.000000Z"),
        }
    }
}

impl Serialize for PlatformTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlatformTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 date-time with offset"))
    }
}

/// `POST /oauth2/token` answer (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `POST /oauth2/token` error (RFC 6749 §5.2): `invalid_client`, `invalid_request`,
/// `unsupported_grant_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Where a case was first filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseSource {
    /// A citizen filed it on the platform for the entity.
    Citizen,
    /// The entity registered it through its own channels and shared it with the platform.
    Entity,
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Citizen,
    Entity,
    /// The platform itself (its quality team or its automation).
    Platform,
}

/// A WGS84 point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoLocation {
    pub latitude: f64,
    pub longitude: f64,
}

/// A file the citizen attached on the platform: a reference, never the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub uri: String,
    pub media_type: String,
    pub size_bytes: i64,
    pub sha256: String,
}

/// The citizen behind a case filed on the platform, as far as the entity needs to reach them:
/// an opaque reference, a name, and the contact the citizen chose to share. No civil ID, ever.
/// Absent on cases the entity filed, and on anonymous suggestions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citizen {
    /// The platform's opaque id of the citizen's account (stable, not a civil ID).
    #[serde(rename = "ref")]
    pub citizen_ref: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Something a citizen (or the platform) added to a case after filing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub detail_id: String,
    pub author: Actor,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    pub added_at: PlatformTime,
}

/// A public reply of the entity, shown to the citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub reply_id: String,
    pub text: String,
    pub replied_at: PlatformTime,
}

/// How the entity resolved the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResolution {
    /// An outcome code (`OC..`).
    pub outcome: String,
    pub text: String,
    pub resolved_at: PlatformTime,
}

/// A citizen's satisfaction rating of a resolved case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub rating_id: String,
    /// 1 (very dissatisfied) to 5 (very satisfied).
    pub score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub rated_at: PlatformTime,
}

/// A citizen's request to reopen a resolved or closed case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReopenRequest {
    pub request_id: String,
    pub reason: String,
    pub requested_at: PlatformTime,
}

/// A case as the platform holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The platform's case id, opaque.
    pub case_id: String,
    /// A type code (`BLG`, `SHK`, `IQT`, `IST`).
    #[serde(rename = "type")]
    pub case_type: String,
    pub category: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub subject: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wilayat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoLocation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    pub source: CaseSource,
    /// The entity's own reference (balagh's `MCT-2026-000123`), once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citizen: Option<Citizen>,
    #[serde(default)]
    pub details: Vec<Detail>,
    #[serde(default)]
    pub replies: Vec<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<CaseResolution>,
    #[serde(default)]
    pub ratings: Vec<Rating>,
    #[serde(default)]
    pub reopen_requests: Vec<ReopenRequest>,
    /// Starts at 1 and grows by one with every change, whoever makes it. `ETag` is `"<version>"`.
    pub version: i64,
    pub filed_at: PlatformTime,
    pub updated_at: PlatformTime,
}

/// `POST /v1/entities/{entity}/cases`: the entity shares a case it registered itself.
/// Carries no personal data of the citizen (see "Personal data" in the guide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCase {
    #[serde(rename = "type")]
    pub case_type: String,
    pub category: String,
    /// The entity's status of the case when it is shared; never `ST10`.
    pub status: String,
    pub subject: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wilayat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoLocation>,
    /// Unique per entity: a second case with the same reference is refused (409).
    pub entity_reference: String,
    pub filed_at: PlatformTime,
}

/// `PATCH /v1/entities/{entity}/cases/{case_id}` (with `If-Match`): the fields the entity owns.
/// An absent field is left alone; a patch that changes nothing does not make a new version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaseUpdate {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub case_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the status changed (shown to the citizen): a rejection or referral reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wilayat: Option<String>,
}

impl CaseUpdate {
    pub fn is_empty(&self) -> bool {
        self == &CaseUpdate::default()
    }
}

/// `POST .../cases/{case_id}/replies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReply {
    pub text: String,
    pub replied_at: PlatformTime,
}

/// `POST .../cases/{case_id}/resolution` (with `If-Match`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewResolution {
    pub outcome: String,
    pub text: String,
    pub resolved_at: PlatformTime,
}

/// `POST .../cases/{case_id}/receipt`: the entity took in a case a citizen filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub entity_reference: String,
    pub received_at: PlatformTime,
}

/// What a change on the feed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A citizen filed a new case for the entity.
    #[serde(rename = "case.filed")]
    Filed,
    /// The entity shared a case it registered.
    #[serde(rename = "case.created")]
    Created,
    /// The entity acknowledged receipt of a citizen's case.
    #[serde(rename = "case.received")]
    Received,
    /// The entity changed the type, category, wilayat or status.
    #[serde(rename = "case.updated")]
    Updated,
    /// The entity replied publicly.
    #[serde(rename = "case.reply_added")]
    ReplyAdded,
    /// The entity resolved the case.
    #[serde(rename = "case.resolved")]
    Resolved,
    /// A citizen (or the platform) added details.
    #[serde(rename = "case.detail_added")]
    DetailAdded,
    /// A citizen rated the resolution.
    #[serde(rename = "case.rated")]
    Rated,
    /// A citizen asked to reopen; the case is now `ST80`.
    #[serde(rename = "case.reopen_requested")]
    ReopenRequested,
    /// A kind this client does not know yet: the guide tells clients to skip these.
    #[serde(other)]
    Unknown,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Filed => "case.filed",
            ChangeKind::Created => "case.created",
            ChangeKind::Received => "case.received",
            ChangeKind::Updated => "case.updated",
            ChangeKind::ReplyAdded => "case.reply_added",
            ChangeKind::Resolved => "case.resolved",
            ChangeKind::DetailAdded => "case.detail_added",
            ChangeKind::Rated => "case.rated",
            ChangeKind::ReopenRequested => "case.reopen_requested",
            ChangeKind::Unknown => "unknown",
        }
    }
}

/// One entry of the change feed: what happened, to which case, and the case as it was right
/// after (so a consumer that sees a change twice, or out of date, can compare versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Unique and stable: a change delivered twice has the same id.
    pub change_id: String,
    /// Resume after this change by passing it as `after`.
    pub cursor: String,
    pub kind: ChangeKind,
    pub actor: Actor,
    pub occurred_at: PlatformTime,
    pub case_id: String,
    /// The case's version right after this change.
    pub case_version: i64,
    pub case: Case,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopen_request: Option<ReopenRequest>,
}

/// `GET /v1/entities/{entity}/changes` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Where to resume: the last change's cursor, or the `after` given when the page is empty.
    /// Absent only when the feed is empty and no `after` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// More changes are waiting: ask again at once.
    pub has_more: bool,
}

/// One offending field in a 400/422 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemField {
    /// The field's JSON name, dotted for nested fields (`location.latitude`).
    pub field: String,
    pub detail: String,
}

/// An RFC 9457 problem, with the platform's extension members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// On `412 version-mismatch`: the case's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// On `409 duplicate-reference`: the case that already has this entity reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// On `429` and `503`: the same as the `Retry-After` header, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            problem_type: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: Some(detail.into()),
            instance: None,
            current_version: None,
            case_id: None,
            retry_after_seconds: None,
            errors: Vec::new(),
        }
    }

    /// The problem type this body names, when it is one of the platform's.
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::ALL
            .iter()
            .copied()
            .find(|kind| kind.uri() == self.problem_type)
    }
}

/// The platform's problem types. The URI is `urn:national-platform:problem:<slug>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// 400: the body is not JSON or a field is invalid (`errors` names them).
    InvalidRequest,
    /// 400: a write without an `Idempotency-Key`, or a key that is too long.
    IdempotencyKeyMissing,
    /// 422: the key was used before with a different request.
    IdempotencyKeyReused,
    /// 400: `after` is not a cursor this feed issued.
    InvalidCursor,
    /// 410: the cursor is older than the feed keeps; start again without `after` and reconcile.
    CursorExpired,
    /// 401: no token, or it expired or was revoked. `WWW-Authenticate` says which.
    Unauthorized,
    /// 403: the token's client may not act for this entity.
    Forbidden,
    /// 404
    CaseNotFound,
    /// 409: another case already carries this entity reference (`case_id` names it).
    DuplicateReference,
    /// 409: the case was already received under another entity reference.
    AlreadyReceived,
    /// 409: the action does not apply to this case (a receipt of the entity's own case).
    InvalidState,
    /// 409: another request with this `Idempotency-Key` is still being processed; try again
    /// after `Retry-After`.
    IdempotencyKeyInUse,
    /// 412: `If-Match` names an older version (`current_version` has the current one).
    VersionMismatch,
    /// 428: an update without `If-Match`.
    PreconditionRequired,
    /// 429: slow down (`Retry-After`).
    RateLimited,
    /// 500
    InternalError,
    /// 503: planned maintenance or overload (`Retry-After`).
    Unavailable,
}

impl ProblemType {
    pub const ALL: [ProblemType; 17] = [
        ProblemType::InvalidRequest,
        ProblemType::IdempotencyKeyMissing,
        ProblemType::IdempotencyKeyReused,
        ProblemType::InvalidCursor,
        ProblemType::CursorExpired,
        ProblemType::Unauthorized,
        ProblemType::Forbidden,
        ProblemType::CaseNotFound,
        ProblemType::DuplicateReference,
        ProblemType::AlreadyReceived,
        ProblemType::InvalidState,
        ProblemType::IdempotencyKeyInUse,
        ProblemType::VersionMismatch,
        ProblemType::PreconditionRequired,
        ProblemType::RateLimited,
        ProblemType::InternalError,
        ProblemType::Unavailable,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "invalid-request",
            ProblemType::IdempotencyKeyMissing => "idempotency-key-missing",
            ProblemType::IdempotencyKeyReused => "idempotency-key-reused",
            ProblemType::InvalidCursor => "invalid-cursor",
            ProblemType::CursorExpired => "cursor-expired",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Forbidden => "forbidden",
            ProblemType::CaseNotFound => "case-not-found",
            ProblemType::DuplicateReference => "duplicate-reference",
            ProblemType::AlreadyReceived => "already-received",
            ProblemType::InvalidState => "invalid-state",
            ProblemType::IdempotencyKeyInUse => "idempotency-key-in-use",
            ProblemType::VersionMismatch => "version-mismatch",
            ProblemType::PreconditionRequired => "precondition-required",
            ProblemType::RateLimited => "rate-limited",
            ProblemType::InternalError => "internal-error",
            ProblemType::Unavailable => "unavailable",
        }
    }

    pub fn uri(self) -> String {
        format!("urn:national-platform:problem:{}", self.slug())
    }

    pub fn status(self) -> u16 {
        match self {
            ProblemType::InvalidRequest
            | ProblemType::IdempotencyKeyMissing
            | ProblemType::InvalidCursor => 400,
            ProblemType::Unauthorized => 401,
            ProblemType::Forbidden => 403,
            ProblemType::CaseNotFound => 404,
            ProblemType::DuplicateReference
            | ProblemType::AlreadyReceived
            | ProblemType::InvalidState
            | ProblemType::IdempotencyKeyInUse => 409,
            ProblemType::CursorExpired => 410,
            ProblemType::VersionMismatch => 412,
            ProblemType::IdempotencyKeyReused => 422,
            ProblemType::PreconditionRequired => 428,
            ProblemType::RateLimited => 429,
            ProblemType::InternalError => 500,
            ProblemType::Unavailable => 503,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "The request is invalid",
            ProblemType::IdempotencyKeyMissing => "An Idempotency-Key header is required",
            ProblemType::IdempotencyKeyReused => {
                "The Idempotency-Key was used with a different request"
            }
            ProblemType::InvalidCursor => "The cursor is not valid",
            ProblemType::CursorExpired => "The cursor has expired",
            ProblemType::Unauthorized => "Authentication is required",
            ProblemType::Forbidden => "Not allowed for this entity",
            ProblemType::CaseNotFound => "No such case",
            ProblemType::DuplicateReference => "A case with this entity reference exists",
            ProblemType::AlreadyReceived => "The case was received under another reference",
            ProblemType::InvalidState => "The action does not apply to this case",
            ProblemType::IdempotencyKeyInUse => {
                "A request with this Idempotency-Key is still being processed"
            }
            ProblemType::VersionMismatch => "The case has changed since that version",
            ProblemType::PreconditionRequired => "An If-Match header is required",
            ProblemType::RateLimited => "Too many requests",
            ProblemType::InternalError => "Internal error",
            ProblemType::Unavailable => "The platform is unavailable",
        }
    }
}

/// The `ETag` of a case version: `"7"`.
pub fn etag_of(version: i64) -> String {
    format!("\"{version}\"")
}

/// Reads a version from an `If-Match` or `ETag` value: `"7"`, `W/"7"` or `7`.
pub fn parse_etag(value: &str) -> Option<i64> {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    value.parse().ok().filter(|v: &i64| *v >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_microseconds() {
        let at = PlatformTime::new(Timestamp::from_micros(1_780_000_000_123_456));
        let text = at.to_string();
        assert_eq!(text, "2026-05-28T20:26:40.123456Z");
        assert_eq!(PlatformTime::parse(&text), Some(at));
        assert_eq!(
            PlatformTime::parse("2026-05-29T00:26:40.123456+04:00"),
            Some(at)
        );
        assert_eq!(PlatformTime::parse("2026-05-28 20:26:40"), None);
    }

    #[test]
    fn etags_parse_in_the_forms_clients_send() {
        assert_eq!(parse_etag("\"7\""), Some(7));
        assert_eq!(parse_etag("W/\"7\""), Some(7));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("\"0\""), None);
        assert_eq!(parse_etag("*"), None);
        assert_eq!(etag_of(12), "\"12\"");
    }

    #[test]
    fn unknown_change_kinds_parse_so_a_page_is_never_lost() {
        let kind: ChangeKind = serde_json::from_str("\"case.escalated_by_ministry\"").unwrap();
        assert_eq!(kind, ChangeKind::Unknown);
        let kind: ChangeKind = serde_json::from_str("\"case.rated\"").unwrap();
        assert_eq!(kind, ChangeKind::Rated);
    }

    #[test]
    fn problem_types_round_trip_through_their_uri() {
        for kind in ProblemType::ALL {
            let problem = Problem::new(kind, "x");
            assert_eq!(problem.kind(), Some(kind));
            assert!((400..600).contains(&problem.status));
        }
    }

    /// The OpenAPI file lists the same codes and problem types as this module.
    #[test]
    fn the_openapi_file_names_every_code_and_problem_type() {
        let openapi = include_str!("../../docs/platform-api.openapi.yaml");
        for list in [CASE_TYPES, CASE_STATUSES, OUTCOMES, WILAYATS, CATEGORIES] {
            for code in list {
                assert!(openapi.contains(code.code), "{} missing", code.code);
            }
        }
        for kind in ProblemType::ALL {
            assert!(openapi.contains(kind.slug()), "{} missing", kind.slug());
        }
        for kind in [
            ChangeKind::Filed,
            ChangeKind::Created,
            ChangeKind::Received,
            ChangeKind::Updated,
            ChangeKind::ReplyAdded,
            ChangeKind::Resolved,
            ChangeKind::DetailAdded,
            ChangeKind::Rated,
            ChangeKind::ReopenRequested,
        ] {
            assert!(openapi.contains(kind.as_str()), "{} missing", kind.as_str());
        }
    }
}
