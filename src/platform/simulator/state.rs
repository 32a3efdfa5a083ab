//! The simulated platform's memory: cases, their history, the change feed, the idempotency
//! store and the issued tokens, behind one mutex.
//!
//! Invariants: every change to a case bumps its version by one and appends exactly one entry
//! to the change feed and to the case's history, under the same lock; an idempotency record is
//! stored in the same critical section as the write it answers, so "applied" and "replayable"
//! never part (that is what makes the lost-answer fault recoverable).

use std::collections::{BTreeMap, HashMap, VecDeque};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::faults::{FaultBook, FaultKind, FaultRecord, FaultSettings};
use crate::platform::contract::{
    self, Actor, Case, CaseResolution, CaseSource, CaseUpdate, Change, ChangeKind, ChangePage,
    Citizen, Detail, NewCase, NewReply, NewResolution, PlatformTime, Problem, ProblemField,
    ProblemType, Rating, Receipt, ReopenRequest, Reply,
};

/// A case and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case: Case,
    pub history: Vec<HistoryEntry>,
}

/// One change of a case, as the admin state shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: i64,
    pub kind: ChangeKind,
    pub actor: Actor,
    pub status: String,
    pub change_id: String,
    pub at: PlatformTime,
}

/// The stored first answer to an idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub version: i64,
    pub case_id: String,
    pub method: String,
    pub path: String,
}

/// An idempotency key as the admin state shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKeyState {
    pub client_id: String,
    pub key: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub case_id: String,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub client_id: String,
    pub expires_at_micros: i64,
    pub revoked: bool,
}

/// What a successful write answers.
#[derive(Debug, Clone)]
pub struct Applied {
    /// 200 or 201.
    pub status: u16,
    pub case: Case,
}

/// Everything the simulated platform knows.
#[derive(Debug)]
pub struct Platform {
    pub entity: String,
    /// Tells cursors of this feed from cursors of another run.
    pub feed_epoch: String,
    /// Most changes the feed keeps (`None`: all).
    pub feed_retention: Option<usize>,
    pub cases: BTreeMap<String, CaseRecord>,
    by_reference: HashMap<String, String>,
    changes: VecDeque<Change>,
    /// Sequence number of `changes[0]`; sequence numbers start at 1.
    first_seq: u64,
    next_seq: u64,
    pub idempotency: HashMap<(String, String), IdempotencyRecord>,
    pub tokens: HashMap<String, TokenRecord>,
    pub n_tokens_issued: u64,
    pub faults: FaultBook,
    pub n_citizen_actions: u64,
    next_case: u64,
    next_item: u64,
    pub next_citizen: u64,
}

/// The whole state, for `GET /admin/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    pub entity: String,
    pub seed: u64,
    pub cases: Vec<CaseRecord>,
    pub feed: FeedState,
    pub faults: FaultState,
    pub idempotency_keys: Vec<IdempotencyKeyState>,
    pub tokens_issued: u64,
    pub citizen_actions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// Changes ever appended.
    pub total: u64,
    /// Changes still kept (older cursors are expired).
    pub retained: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultState {
    pub settings: FaultSettings,
    pub forced: Vec<FaultKind>,
    /// Faults queued for the next token requests.
    #[serde(default)]
    pub forced_token: Vec<FaultKind>,
    pub counts: BTreeMap<FaultKind, u64>,
    /// The latest injected faults, oldest first (at most 10,000).
    pub recent: Vec<FaultRecord>,
    pub api_requests: u64,
    /// Token requests among `api_requests`, answered or not (`tokens_issued` counts the
    /// tokens given out).
    #[serde(default)]
    pub token_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_until: Option<PlatformTime>,
}

fn problem(kind: ProblemType, detail: impl Into<String>) -> Box<Problem> {
    Box::new(Problem::new(kind, detail))
}

fn invalid(errors: Vec<ProblemField>) -> Box<Problem> {
    let mut p = problem(
        ProblemType::InvalidRequest,
        "one or more fields are invalid",
    );
    p.errors = errors;
    p
}

fn field(field: &str, detail: &str) -> ProblemField {
    ProblemField {
        field: field.to_owned(),
        detail: detail.to_owned(),
    }
}

fn check_text(
    errors: &mut Vec<ProblemField>,
    name: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
) {
    let n = value.chars().count();
    if value.trim().chars().count() < min_chars {
        errors.push(field(name, "is required"));
    } else if n > max_chars {
        errors.push(field(
            name,
            &format!("must be at most {max_chars} characters"),
        ));
    }
}

fn check_code(
    errors: &mut Vec<ProblemField>,
    name: &str,
    value: &str,
    list: &[contract::PlatformCode],
) {
    if !contract::is_known(list, value) {
        errors.push(field(name, "is not a code of the published list"));
    }
}

fn check_location(errors: &mut Vec<ProblemField>, location: Option<&contract::GeoLocation>) {
    if let Some(p) = location {
        if !(p.latitude.is_finite() && (-90.0..=90.0).contains(&p.latitude)) {
            errors.push(field("location.latitude", "must be from -90 to 90"));
        }
        if !(p.longitude.is_finite() && (-180.0..=180.0).contains(&p.longitude)) {
            errors.push(field("location.longitude", "must be from -180 to 180"));
        }
    }
}

fn check_reference(errors: &mut Vec<ProblemField>, reference: &str) {
    if reference.trim().is_empty() || reference.len() > 64 {
        errors.push(field("entity_reference", "must be 1 to 64 characters"));
    }
}

/// Checks `If-Match` against the case's version.
fn check_version(case: &Case, if_match: Option<i64>, required: bool) -> Result<(), Box<Problem>> {
    match if_match {
        None if required => Err(problem(
            ProblemType::PreconditionRequired,
            "send If-Match with the version you read",
        )),
        Some(v) if v != case.version => {
            let mut p = problem(
                ProblemType::VersionMismatch,
                format!(
                    "If-Match names version {v}, the case is at {}",
                    case.version
                ),
            );
            p.current_version = Some(case.version);
            Err(p)
        }
        _ => Ok(()),
    }
}

impl Platform {
    pub fn new(entity: String, feed_epoch: String, feed_retention: Option<usize>) -> Self {
        Self {
            entity,
            feed_epoch,
            feed_retention,
            cases: BTreeMap::new(),
            by_reference: HashMap::new(),
            changes: VecDeque::new(),
            first_seq: 1,
            next_seq: 1,
            idempotency: HashMap::new(),
            tokens: HashMap::new(),
            n_tokens_issued: 0,
            faults: FaultBook::default(),
            n_citizen_actions: 0,
            next_case: 1,
            next_item: 1,
            next_citizen: 1,
        }
    }

    pub fn snapshot(&self, seed: u64) -> SimState {
        let mut keys: Vec<_> = self
            .idempotency
            .iter()
            .map(|((client_id, key), r)| IdempotencyKeyState {
                client_id: client_id.clone(),
                key: key.clone(),
                method: r.method.clone(),
                path: r.path.clone(),
                status: r.status,
                case_id: r.case_id.clone(),
            })
            .collect();
        keys.sort_by(|a, b| (&a.client_id, &a.key).cmp(&(&b.client_id, &b.key)));
        SimState {
            entity: self.entity.clone(),
            seed,
            cases: self.cases.values().cloned().collect(),
            feed: FeedState {
                total: self.next_seq - 1,
                retained: self.changes.len() as u64,
            },
            faults: FaultState {
                settings: self.faults.settings.clone(),
                forced: self.faults.forced.iter().copied().collect(),
                forced_token: self.faults.forced_token.iter().copied().collect(),
                counts: self.faults.counts.clone(),
                recent: self.faults.log.iter().cloned().collect(),
                api_requests: self.faults.n_requests,
                token_requests: self.faults.n_token_requests,
                maintenance_until: self
                    .faults
                    .maintenance_until_micros
                    .map(|m| PlatformTime::new(crate::domain::Timestamp::from_micros(m))),
            },
            idempotency_keys: keys,
            tokens_issued: self.n_tokens_issued,
            citizen_actions: self.n_citizen_actions,
        }
    }

    fn next_item_id(&mut self, prefix: &str) -> String {
        let n = self.next_item;
        self.next_item += 1;
        format!("{prefix}-{n:08}")
    }

    pub fn case(&self, case_id: &str) -> Result<&Case, Box<Problem>> {
        self.cases
            .get(case_id)
            .map(|r| &r.case)
            .ok_or_else(|| problem(ProblemType::CaseNotFound, "no such case for this entity"))
    }

    fn case_mut(&mut self, case_id: &str) -> Result<&mut CaseRecord, Box<Problem>> {
        self.cases
            .get_mut(case_id)
            .ok_or_else(|| problem(ProblemType::CaseNotFound, "no such case for this entity"))
    }

    /// Records a change already made to `record.case` (whose version the caller bumped).
    fn append_change(
        &mut self,
        case_id: &str,
        kind: ChangeKind,
        actor: Actor,
        now: PlatformTime,
        extra: ChangeExtra,
    ) -> Result<Case, Box<Problem>> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let change_id = format!("CHG-{seq:010}");
        let cursor = self.cursor_of(seq);
        let record = self.case_mut(case_id)?;
        record.case.updated_at = now;
        record.history.push(HistoryEntry {
            version: record.case.version,
            kind,
            actor,
            status: record.case.status.clone(),
            change_id: change_id.clone(),
            at: now,
        });
        let case = record.case.clone();
        self.changes.push_back(Change {
            change_id,
            cursor,
            kind,
            actor,
            occurred_at: now,
            case_id: case_id.to_owned(),
            case_version: case.version,
            case: case.clone(),
            detail: extra.detail,
            rating: extra.rating,
            reopen_request: extra.reopen_request,
        });
        if let Some(keep) = self.feed_retention {
            while self.changes.len() > keep.max(1) {
                self.changes.pop_front();
                self.first_seq += 1;
            }
        }
        Ok(case)
    }

    fn cursor_of(&self, seq: u64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{seq}", self.feed_epoch))
    }

    /// Reads a cursor back into a sequence number: 400 when it is not one of ours, 410 when it
    /// is from another run of the feed or older than the feed keeps.
    fn seq_of(&self, cursor: &str) -> Result<u64, Box<Problem>> {
        let bad = || problem(ProblemType::InvalidCursor, "not a cursor of this feed");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (epoch, seq) = text.split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if epoch != self.feed_epoch {
            return Err(problem(
                ProblemType::CursorExpired,
                "the cursor is from an earlier incarnation of the feed; read from the start and reconcile",
            ));
        }
        if seq >= self.next_seq {
            return Err(bad());
        }
        // A cursor names the last change seen; the next one must still be kept.
        if seq + 1 < self.first_seq {
            return Err(problem(
                ProblemType::CursorExpired,
                "the feed no longer keeps changes that old; read from the start and reconcile",
            ));
        }
        Ok(seq)
    }

    /// One page of the feed after `after`, possibly repeating `n_repeated` changes from before
    /// it (at-least-once delivery, as the contract allows).
    pub fn changes_page(
        &self,
        after: Option<&str>,
        limit: u32,
        n_repeated: u64,
    ) -> Result<ChangePage, Box<Problem>> {
        let after_seq = match after {
            Some(cursor) => self.seq_of(cursor)?,
            None => self.first_seq.saturating_sub(1),
        };
        let start_seq = after_seq
            .saturating_sub(n_repeated)
            .max(self.first_seq.saturating_sub(1));
        let skip = usize::try_from(start_seq + 1 - self.first_seq).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let changes: Vec<Change> = self
            .changes
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let last_seq = start_seq + changes.len() as u64;
        let next_cursor = match changes.last() {
            Some(last) if last_seq >= after_seq => Some(last.cursor.clone()),
            _ => after.map(str::to_owned),
        };
        Ok(ChangePage {
            has_more: last_seq + 1 < self.next_seq,
            changes,
            next_cursor,
        })
    }

    pub fn idempotency_record(&self, client_id: &str, key: &str) -> Option<&IdempotencyRecord> {
        self.idempotency
            .get(&(client_id.to_owned(), key.to_owned()))
    }

    pub fn store_idempotency(&mut self, client_id: &str, key: &str, record: IdempotencyRecord) {
        self.idempotency
            .insert((client_id.to_owned(), key.to_owned()), record);
    }

    /// `POST .../cases`.
    pub fn create_case(
        &mut self,
        new: NewCase,
        now: PlatformTime,
    ) -> Result<Applied, Box<Problem>> {
        let mut errors = Vec::new();
        check_code(&mut errors, "type", &new.case_type, contract::CASE_TYPES);
        check_code(&mut errors, "category", &new.category, contract::CATEGORIES);
        check_code(&mut errors, "status", &new.status, contract::CASE_STATUSES);
        if new.status == contract::STATUS_SUBMITTED {
            errors.push(field("status", "ST10 is the platform's own status"));
        }
        check_text(
            &mut errors,
            "subject",
            &new.subject,
            1,
            contract::MAX_SUBJECT_CHARS,
        );
        check_text(
            &mut errors,
            "description",
            &new.description,
            0,
            contract::MAX_DESCRIPTION_CHARS,
        );
        match &new.wilayat {
            Some(w) => check_code(&mut errors, "wilayat", w, contract::WILAYATS),
            None if new.case_type == "BLG" => {
                errors.push(field("wilayat", "is required for a report"));
            }
            None => {}
        }
        check_location(&mut errors, new.location.as_ref());
        check_reference(&mut errors, &new.entity_reference);
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        if let Some(existing) = self.by_reference.get(&new.entity_reference) {
            let mut p = problem(
                ProblemType::DuplicateReference,
                "a case with this entity reference exists",
            );
            p.case_id = Some(existing.clone());
            return Err(p);
        }
        let case_id = format!("CASE-{:08}", self.next_case);
        self.next_case += 1;
        let case = Case {
            case_id: case_id.clone(),
            case_type: new.case_type,
            category: new.category,
            status: new.status,
            status_reason: None,
            subject: new.subject,
            description: new.description,
            wilayat: new.wilayat,
            area: new.area,
            location: new.location,
            attachments: Vec::new(),
            source: CaseSource::Entity,
            entity_reference: Some(new.entity_reference.clone()),
            citizen: None,
            details: Vec::new(),
            replies: Vec::new(),
            resolution: None,
            ratings: Vec::new(),
            reopen_requests: Vec::new(),
            version: 1,
            filed_at: new.filed_at,
            updated_at: now,
        };
        self.by_reference
            .insert(new.entity_reference, case_id.clone());
        self.cases.insert(
            case_id.clone(),
            CaseRecord {
                case,
                history: Vec::new(),
            },
        );
        let case = self.append_change(
            &case_id,
            ChangeKind::Created,
            Actor::Entity,
            now,
            ChangeExtra::default(),
        )?;
        Ok(Applied { status: 201, case })
    }

    /// `PATCH .../cases/{id}`.
    pub fn update_case(
        &mut self,
        case_id: &str,
        if_match: Option<i64>,
        update: CaseUpdate,
        now: PlatformTime,
    ) -> Result<Applied, Box<Problem>> {
        let mut errors = Vec::new();
        if let Some(t) = &update.case_type {
            check_code(&mut errors, "type", t, contract::CASE_TYPES);
        }
        if let Some(c) = &update.category {
            check_code(&mut errors, "category", c, contract::CATEGORIES);
        }
        if let Some(s) = &update.status {
            check_code(&mut errors, "status", s, contract::CASE_STATUSES);
            if s == contract::STATUS_SUBMITTED {
                errors.push(field("status", "ST10 is the platform's own status"));
            }
        }
        if let Some(w) = &update.wilayat {
            check_code(&mut errors, "wilayat", w, contract::WILAYATS);
        }
        if let Some(r) = &update.status_reason {
            check_text(&mut errors, "status_reason", r, 1, contract::MAX_TEXT_CHARS);
        }
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let record = self.case_mut(case_id)?;
        check_version(&record.case, if_match, true)?;
        let case = &mut record.case;
        let before = case.clone();
        if let Some(t) = update.case_type {
            case.case_type = t;
        }
        if let Some(c) = update.category {
            case.category = c;
        }
        if let Some(w) = update.wilayat {
            case.wilayat = Some(w);
        }
        if let Some(s) = update.status {
            if s != case.status {
                // A reason belongs to the status it explains.
                case.status_reason = None;
            }
            case.status = s;
        }
        if update.status_reason.is_some() {
            case.status_reason = update.status_reason;
        }
        if *case == before {
            return Ok(Applied {
                status: 200,
                case: before,
            });
        }
        case.version += 1;
        let case = self.append_change(
            case_id,
            ChangeKind::Updated,
            Actor::Entity,
            now,
            ChangeExtra::default(),
        )?;
        Ok(Applied { status: 200, case })
    }

    /// `POST .../cases/{id}/replies`.
    pub fn add_reply(
        &mut self,
        case_id: &str,
        if_match: Option<i64>,
        reply: NewReply,
        now: PlatformTime,
    ) -> Result<Applied, Box<Problem>> {
        let mut errors = Vec::new();
        check_text(
            &mut errors,
            "text",
            &reply.text,
            1,
            contract::MAX_TEXT_CHARS,
        );
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        check_version(self.case(case_id)?, if_match, false)?;
        let reply_id = self.next_item_id("RPL");
        let record = self.case_mut(case_id)?;
        record.case.replies.push(Reply {
            reply_id,
            text: reply.text,
            replied_at: reply.replied_at,
        });
        record.case.version += 1;
        let case = self.append_change(
            case_id,
            ChangeKind::ReplyAdded,
            Actor::Entity,
            now,
            ChangeExtra::default(),
        )?;
        Ok(Applied { status: 200, case })
    }

    /// `POST .../cases/{id}/resolution`.
    pub fn resolve(
        &mut self,
        case_id: &str,
        if_match: Option<i64>,
        resolution: NewResolution,
        now: PlatformTime,
    ) -> Result<Applied, Box<Problem>> {
        let mut errors = Vec::new();
        check_code(
            &mut errors,
            "outcome",
            &resolution.outcome,
            contract::OUTCOMES,
        );
        check_text(
            &mut errors,
            "text",
            &resolution.text,
            1,
            contract::MAX_TEXT_CHARS,
        );
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let record = self.case_mut(case_id)?;
        check_version(&record.case, if_match, true)?;
        record.case.status = contract::STATUS_RESOLVED.to_owned();
        record.case.status_reason = None;
        record.case.resolution = Some(CaseResolution {
            outcome: resolution.outcome,
            text: resolution.text,
            resolved_at: resolution.resolved_at,
        });
        record.case.version += 1;
        let case = self.append_change(
            case_id,
            ChangeKind::Resolved,
            Actor::Entity,
            now,
            ChangeExtra::default(),
        )?;
        Ok(Applied { status: 200, case })
    }

    /// `POST .../cases/{id}/receipt`. Acknowledging twice with the same reference is a no-op.
    pub fn receive(
        &mut self,
        case_id: &str,
        receipt: Receipt,
        now: PlatformTime,
    ) -> Result<Applied, Box<Problem>> {
        let mut errors = Vec::new();
        check_reference(&mut errors, &receipt.entity_reference);
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let case = self.case(case_id)?;
        if case.source != CaseSource::Citizen {
            return Err(problem(
                ProblemType::InvalidState,
                "only a case a citizen filed on the platform is received",
            ));
        }
        match case.entity_reference.as_deref() {
            Some(existing) if existing == receipt.entity_reference => {
                return Ok(Applied {
                    status: 200,
                    case: case.clone(),
                });
            }
            Some(_) => {
                return Err(problem(
                    ProblemType::AlreadyReceived,
                    "the case was received under another reference",
                ));
            }
            None => {}
        }
        if let Some(other) = self.by_reference.get(&receipt.entity_reference) {
            let mut p = problem(
                ProblemType::DuplicateReference,
                "another case carries this entity reference",
            );
            p.case_id = Some(other.clone());
            return Err(p);
        }
        self.by_reference
            .insert(receipt.entity_reference.clone(), case_id.to_owned());
        let record = self.case_mut(case_id)?;
        record.case.entity_reference = Some(receipt.entity_reference);
        if record.case.status == contract::STATUS_SUBMITTED {
            record.case.status = contract::STATUS_RECEIVED.to_owned();
        }
        record.case.version += 1;
        let case = self.append_change(
            case_id,
            ChangeKind::Received,
            Actor::Entity,
            now,
            ChangeExtra::default(),
        )?;
        Ok(Applied { status: 200, case })
    }

    /// A citizen files a case for the entity.
    pub fn citizen_files(
        &mut self,
        filing: CitizenFiling,
        now: PlatformTime,
    ) -> Result<Case, Box<Problem>> {
        let case_id = format!("CASE-{:08}", self.next_case);
        self.next_case += 1;
        let case = Case {
            case_id: case_id.clone(),
            case_type: filing.case_type,
            category: filing.category,
            status: contract::STATUS_SUBMITTED.to_owned(),
            status_reason: None,
            subject: filing.subject,
            description: filing.description,
            wilayat: filing.wilayat,
            area: filing.area,
            location: filing.location,
            attachments: Vec::new(),
            source: CaseSource::Citizen,
            entity_reference: None,
            citizen: filing.citizen,
            details: Vec::new(),
            replies: Vec::new(),
            resolution: None,
            ratings: Vec::new(),
            reopen_requests: Vec::new(),
            version: 1,
            filed_at: now,
            updated_at: now,
        };
        self.cases.insert(
            case_id.clone(),
            CaseRecord {
                case,
                history: Vec::new(),
            },
        );
        self.append_change(
            &case_id,
            ChangeKind::Filed,
            Actor::Citizen,
            now,
            ChangeExtra::default(),
        )
    }

    /// A citizen (or the platform) adds details to a case.
    pub fn add_detail(
        &mut self,
        case_id: &str,
        author: Actor,
        text: String,
        now: PlatformTime,
    ) -> Result<Case, Box<Problem>> {
        let detail_id = self.next_item_id("DTL");
        let record = self.case_mut(case_id)?;
        let detail = Detail {
            detail_id,
            author,
            text,
            attachments: Vec::new(),
            added_at: now,
        };
        record.case.details.push(detail.clone());
        record.case.version += 1;
        self.append_change(
            case_id,
            ChangeKind::DetailAdded,
            author,
            now,
            ChangeExtra {
                detail: Some(detail),
                ..ChangeExtra::default()
            },
        )
    }

    /// A citizen rates a resolved or closed case.
    pub fn rate(
        &mut self,
        case_id: &str,
        score: u8,
        comment: Option<String>,
        now: PlatformTime,
    ) -> Result<Case, Box<Problem>> {
        let rating_id = self.next_item_id("RTG");
        let record = self.case_mut(case_id)?;
        if !contract::STATUSES_DONE.contains(&record.case.status.as_str()) {
            return Err(problem(
                ProblemType::InvalidState,
                "only a resolved or closed case is rated",
            ));
        }
        let rating = Rating {
            rating_id,
            score: score.clamp(1, 5),
            comment,
            rated_at: now,
        };
        record.case.ratings.push(rating.clone());
        record.case.version += 1;
        self.append_change(
            case_id,
            ChangeKind::Rated,
            Actor::Citizen,
            now,
            ChangeExtra {
                rating: Some(rating),
                ..ChangeExtra::default()
            },
        )
    }

    /// A citizen asks to reopen a resolved or closed case; the platform reopens it.
    pub fn request_reopen(
        &mut self,
        case_id: &str,
        reason: String,
        now: PlatformTime,
    ) -> Result<Case, Box<Problem>> {
        let request_id = self.next_item_id("RQO");
        let record = self.case_mut(case_id)?;
        if !contract::STATUSES_DONE.contains(&record.case.status.as_str()) {
            return Err(problem(
                ProblemType::InvalidState,
                "only a resolved or closed case is reopened",
            ));
        }
        let request = ReopenRequest {
            request_id,
            reason,
            requested_at: now,
        };
        record.case.reopen_requests.push(request.clone());
        record.case.status = contract::STATUS_REOPENED.to_owned();
        record.case.status_reason = None;
        record.case.version += 1;
        self.append_change(
            case_id,
            ChangeKind::ReopenRequested,
            Actor::Citizen,
            now,
            ChangeExtra {
                reopen_request: Some(request),
                ..ChangeExtra::default()
            },
        )
    }

    /// The conflict fault: the platform's quality team annotates the case, so the version a
    /// client read a moment ago is stale.
    pub fn platform_touches(&mut self, case_id: &str, now: PlatformTime) {
        if self.cases.contains_key(case_id) {
            let _ = self.add_detail(
                case_id,
                Actor::Platform,
                "راجع فريق جودة المنصة البلاغ — reviewed by the platform's quality team".to_owned(),
                now,
            );
        }
    }
}

/// What a simulated citizen files.
#[derive(Debug, Clone)]
pub struct CitizenFiling {
    pub case_type: String,
    pub category: String,
    pub subject: String,
    pub description: String,
    pub wilayat: Option<String>,
    pub area: Option<String>,
    pub location: Option<contract::GeoLocation>,
    pub citizen: Option<Citizen>,
}

#[derive(Debug, Default)]
struct ChangeExtra {
    detail: Option<Detail>,
    rating: Option<Rating>,
    reopen_request: Option<ReopenRequest>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn at(seconds: i64) -> PlatformTime {
        PlatformTime::new(Timestamp::from_micros(
            1_780_000_000_000_000 + seconds * 1_000_000,
        ))
    }

    fn new_case(reference: &str) -> NewCase {
        NewCase {
            case_type: "SHK".into(),
            category: "MUN-HLTH-010".into(),
            status: "ST20".into(),
            subject: "s".into(),
            description: "d".into(),
            wilayat: Some("OM-MA-01".into()),
            area: None,
            location: None,
            entity_reference: reference.into(),
            filed_at: at(0),
        }
    }

    #[test]
    fn the_feed_pages_resumes_and_expires() {
        let mut p = Platform::new("e".into(), "ep".into(), Some(3));
        for i in 0..5 {
            p.create_case(new_case(&format!("MCT-2026-{i:06}")), at(i))
                .unwrap();
        }
        // Only the last three are kept.
        let page = p.changes_page(None, 2, 0).unwrap();
        let ids: Vec<_> = page.changes.iter().map(|c| c.change_id.as_str()).collect();
        assert_eq!(ids, ["CHG-0000000003", "CHG-0000000004"]);
        assert!(page.has_more);
        let next = p.changes_page(page.next_cursor.as_deref(), 10, 0).unwrap();
        assert_eq!(next.changes.len(), 1);
        assert!(!next.has_more);
        let empty = p.changes_page(next.next_cursor.as_deref(), 10, 0).unwrap();
        assert!(empty.changes.is_empty());
        assert_eq!(empty.next_cursor, next.next_cursor);
        // A repeat starts a little earlier, never before what is kept.
        let repeated = p.changes_page(page.next_cursor.as_deref(), 10, 2).unwrap();
        assert_eq!(repeated.changes[0].change_id, "CHG-0000000003");
        // The cursor of change 1 is too old now; one of another run is expired too.
        let old = p.cursor_of(1);
        assert_eq!(
            p.changes_page(Some(&old), 10, 0).unwrap_err().kind(),
            Some(ProblemType::CursorExpired)
        );
        let other = Platform::new("e".into(), "other".into(), None).cursor_of(1);
        assert_eq!(
            p.changes_page(Some(&other), 10, 0).unwrap_err().kind(),
            Some(ProblemType::CursorExpired)
        );
        assert_eq!(
            p.changes_page(Some("garbage!"), 10, 0).unwrap_err().kind(),
            Some(ProblemType::InvalidCursor)
        );
    }

    #[test]
    fn versions_and_references_are_enforced() {
        let mut p = Platform::new("e".into(), "ep".into(), None);
        let case = p
            .create_case(new_case("MCT-2026-000001"), at(0))
            .unwrap()
            .case;
        let dup = p
            .create_case(new_case("MCT-2026-000001"), at(1))
            .unwrap_err();
        assert_eq!(dup.case_id.as_deref(), Some(case.case_id.as_str()));
        let update = CaseUpdate {
            status: Some("ST30".into()),
            ..CaseUpdate::default()
        };
        let stale = p
            .update_case(&case.case_id, Some(7), update.clone(), at(2))
            .unwrap_err();
        assert_eq!(stale.current_version, Some(1));
        let missing = p
            .update_case(&case.case_id, None, update.clone(), at(2))
            .unwrap_err();
        assert_eq!(missing.status, 428);
        let updated = p
            .update_case(&case.case_id, Some(1), update.clone(), at(2))
            .unwrap();
        assert_eq!(updated.case.version, 2);
        // The same patch again changes nothing and makes no version.
        let again = p
            .update_case(&case.case_id, Some(2), update, at(3))
            .unwrap();
        assert_eq!(again.case.version, 2);
        assert_eq!(p.cases[&case.case_id].history.len(), 2);
    }
}
