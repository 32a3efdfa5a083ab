//! `balagh.v1.TicketService`: requests are parsed into domain values here, in one place, and
//! handed to the store; answers are converted back. No business rule lives here.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};

use super::convert::{
    EnumInput, Violations, event_to_proto, optional_enum, optional_text, parse_assignment,
    parse_attachments, parse_location, parse_new_ticket, parse_reporter, parse_resolution,
    required_text, ticket_to_proto, timestamp_from_proto,
};
use super::encoded_tickets::EncodedTickets;
use super::error::{invalid_argument, prefixed};
use super::proto::{self, ticket_service_server::TicketService};
use super::request::{PageToken, filter_hash, page_size, parse_etag, request_key, write_context};
use super::watch::{
    ChangeFeed, ChangeStream, Start, WatchSettings, WatchStream, decode_cursor, encode_cursor,
};
use crate::auth::rate::CallerLimits;
use crate::auth::{Principal, TicketScope};
use crate::domain::filter::TicketFilter;
use crate::domain::lifecycle::{Action, LifecycleError, TicketEvent};
use crate::domain::satisfaction::SurveyPolicy;
use crate::domain::sla::EscalationTarget;
use crate::domain::text::search_words;
use crate::domain::ticket::{
    Channel, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_SUBJECT_CHARS, Priority,
    Satisfaction, Status as TicketStatus, SupportLine, Ticket, TicketPatch, TicketType, Visibility,
};
use crate::domain::values::{Code, EmployeeId, ReferenceNumber, TicketId, parse_text};
use crate::store::{
    PersonalDataAccess, Store, StoreError, TicketLookup, TicketQuery, decode_ticket,
};

/// ListTickets page size when none is asked for, and the most it returns.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_EVENT_PAGE_SIZE: u32 = 100;
const MAX_EVENT_PAGE_SIZE: u32 = 1000;
/// Most words of a free-text search that are used.
const MAX_SEARCH_WORDS: usize = 8;
/// Most values of one repeated list filter.
const MAX_FILTER_VALUES: usize = 50;

pub struct TicketServiceImpl {
    store: Arc<dyn Store>,
    sla: Arc<crate::sla::SlaRuntime>,
    feed: Arc<ChangeFeed>,
    watch_settings: WatchSettings,
    streams_open: prometheus_client::metrics::gauge::Gauge,
    survey_policy: SurveyPolicy,
    /// Caps the watch streams of each authenticated caller (none without authentication).
    caller_limits: Option<Arc<CallerLimits>>,
    /// ListTickets' encoded tickets, by stored body.
    encoded: Arc<EncodedTickets>,
}

/// MiB of bodies and encoded tickets ListTickets keeps when the configuration says nothing
/// (`store.encoded_ticket_cache_mib`).
pub const DEFAULT_ENCODED_TICKETS_MIB: u64 = 64;

/// A `ListTicketsResponse` from its tickets' encoded messages: the bytes prost would write
/// for the message with these tickets and this token (fields in tag order).
pub fn encode_list_response(tickets: &[Bytes], next_page_token: &str) -> Bytes {
    use bytes::BufMut;
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let size = tickets.iter().map(|t| field(t.len())).sum::<usize>()
        + if next_page_token.is_empty() {
            0
        } else {
            field(next_page_token.len())
        };
    let mut out = bytes::BytesMut::with_capacity(size);
    for ticket in tickets {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(ticket.len() as u64, &mut out);
        out.put_slice(ticket);
    }
    if !next_page_token.is_empty() {
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(next_page_token.len() as u64, &mut out);
        out.put_slice(next_page_token.as_bytes());
    }
    out.freeze()
}

/// A ticket as the principal may see it: personal data masked for authenticated callers.
pub fn answer(principal: &Principal, ticket: &Ticket) -> proto::Ticket {
    super::convert::ticket_to_proto_masked(ticket, principal.masks_personal_data())
}

/// The ticket, when the scope reaches it; `NOT_FOUND` otherwise, as for a ticket that does
/// not exist, so a caller learns nothing of tickets outside its scope.
pub async fn ticket_in_scope(
    store: &dyn Store,
    scope: &TicketScope,
    id: TicketId,
) -> Result<Ticket, Status> {
    let ticket = store
        .get_ticket(id)
        .await?
        .filter(|t| scope.admits(t))
        .ok_or(StoreError::TicketNotFound)?;
    Ok(ticket)
}

impl TicketServiceImpl {
    pub fn new(
        store: Arc<dyn Store>,
        sla: Arc<crate::sla::SlaRuntime>,
        feed: Arc<ChangeFeed>,
        watch_settings: WatchSettings,
        streams_open: prometheus_client::metrics::gauge::Gauge,
        survey_policy: SurveyPolicy,
    ) -> Self {
        Self {
            store,
            sla,
            feed,
            watch_settings,
            streams_open,
            survey_policy,
            caller_limits: None,
            encoded: Arc::new(EncodedTickets::new(
                (DEFAULT_ENCODED_TICKETS_MIB << 20) as usize,
                Default::default(),
                Default::default(),
                Default::default(),
            )),
        }
    }

    /// Keeps ListTickets' encoded tickets in `encoded` instead of the default.
    pub fn with_encoded_tickets(mut self, encoded: EncodedTickets) -> Self {
        self.encoded = Arc::new(encoded);
        self
    }

    /// A ListTickets answer, encoded: the tickets' messages are made once per stored body and
    /// shape, then reused (`grpc::encoded_tickets`). The generated `list_tickets` and the
    /// route's pre-encoded ListTickets both answer with it.
    pub async fn list_tickets_encoded(
        &self,
        principal: &Principal,
        message: &proto::ListTicketsRequest,
    ) -> Result<Bytes, Status> {
        let (mut query, hash) = parse_list_query(message).map_err(invalid_argument)?;
        let page_size = query.limit - 1;
        let Some(filter) = principal.ticket_scope().restrict(query.filter) else {
            // Only tickets outside the caller's scope were asked for: there are none to show.
            return Ok(Bytes::new());
        };
        query.filter = filter;
        let mut rows = self.store.list_ticket_bodies(&query).await?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|last| {
                    PageToken {
                        position: last.position,
                        filter_hash: hash,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let masked = principal.masks_personal_data();
        let bodies = rows.into_iter().map(|row| row.body).collect();
        let tickets = self.encoded.messages(bodies, masked, |body| {
            let ticket = decode_ticket(body)?;
            let message = super::convert::ticket_to_proto_masked(&ticket, masked);
            Ok::<_, StoreError>(Bytes::from(message.encode_to_vec()))
        })?;
        Ok(encode_list_response(&tickets, &next_page_token))
    }

    /// Caps each authenticated caller's watch streams.
    pub fn with_caller_limits(mut self, limits: Arc<CallerLimits>) -> Self {
        self.caller_limits = Some(limits);
        self
    }

    /// `NOT_FOUND` unless the principal's scope reaches the ticket.
    async fn check_scope(&self, principal: &Principal, id: TicketId) -> Result<(), Status> {
        let scope = principal.ticket_scope();
        if scope != TicketScope::All {
            ticket_in_scope(self.store.as_ref(), &scope, id).await?;
        }
        Ok(())
    }

    /// Opens a WatchTickets stream: checks the request and the cursor, takes the snapshot if
    /// asked, and hands the stream to the change feed.
    pub async fn open_watch(
        &self,
        principal: &Principal,
        message: &proto::WatchTicketsRequest,
    ) -> Result<ChangeStream, Status> {
        let mut v = Violations::default();
        let filter = parse_watch_filter(&mut v, message.filter.as_ref());
        let resume = if message.cursor.is_empty() {
            None
        } else {
            let position = decode_cursor(&message.cursor);
            if position.is_none() {
                v.push("cursor", "is not a cursor this server issued");
            }
            position
        };
        if !v.is_empty() {
            return Err(invalid_argument(v.0));
        }
        let Some(filter) = principal.ticket_scope().restrict(filter) else {
            return Err(super::error::status(
                tonic::Code::PermissionDenied,
                "FILTER_OUTSIDE_SCOPE",
                "the filter asks only for tickets outside the caller's scope (another directorate or outlet)",
                std::collections::HashMap::new(),
                &[],
            ));
        };
        let slot = match (&self.caller_limits, principal.caller()) {
            (Some(limits), Some(caller)) => {
                Some(limits.open_stream(&caller.id).ok_or_else(|| {
                    super::error::status(
                        tonic::Code::ResourceExhausted,
                        "TOO_MANY_STREAMS",
                        format!(
                            "this caller already holds {} watch streams; close one first",
                            limits.max_streams()
                        ),
                        std::collections::HashMap::new(),
                        &[],
                    )
                })?)
            }
            _ => None,
        };
        let start = match resume {
            Some(position) => {
                let bounds = self.store.feed_bounds().await?;
                if position < bounds.oldest_resumable {
                    return Err(super::error::status(
                        tonic::Code::OutOfRange,
                        "CURSOR_EXPIRED",
                        "the cursor is older than the change feed keeps; take a new snapshot",
                        std::collections::HashMap::from([(
                            "oldest_cursor".to_owned(),
                            encode_cursor(bounds.oldest_resumable),
                        )]),
                        &[],
                    ));
                }
                if position > bounds.latest {
                    return Err(invalid_argument(vec![crate::domain::FieldViolation::new(
                        "cursor",
                        "is ahead of the change feed; it was not issued by this registry",
                    )]));
                }
                Start::After(position)
            }
            None if message.send_snapshot => Start::Snapshot(
                self.store
                    .snapshot(&filter, self.watch_settings.max_snapshot_tickets)
                    .await?,
            ),
            None => Start::After(self.feed.published()),
        };
        tracing::info!(
            resume = resume.is_some(),
            snapshot = message.send_snapshot,
            "watch stream opened"
        );
        Ok(self
            .feed
            .open(filter, start, self.streams_open.clone())
            .holding(slot))
    }

    /// The shared path of every lifecycle RPC: parse the common fields and the action, apply.
    async fn act<R: LifecycleRequest>(
        &self,
        request: Request<R>,
        parse_action: impl FnOnce(&R, &mut Violations) -> Option<Action>,
    ) -> Result<(proto::Ticket, TicketEvent), Status> {
        let principal = Principal::of(&request);
        let message = request.get_ref();
        let mut v = Violations::default();
        let id = v.take(TicketId::parse("ticket_id", message.ticket_id()));
        let version = v.take(parse_etag("etag", message.etag()));
        let key = v.take(request_key(
            R::OPERATION,
            message.request_id(),
            message,
            R::clear_request_id,
        ));
        let action = parse_action(message, &mut v);
        let (id, version, key, action) = v
            .finish(|| Some((id?, version?, key?, action?)))
            .map_err(invalid_argument)?;
        self.check_scope(&principal, id).await?;
        if let Action::Merge { duplicate_of } = &action {
            // The original must be one the caller reaches too (or the merge would tell it
            // that a ticket outside its scope exists).
            self.check_scope(&principal, *duplicate_of)
                .await
                .map_err(|_| {
                    StoreError::UnknownReference(crate::domain::FieldViolation::new(
                        "duplicate_of_ticket_id",
                        "is not a ticket",
                    ))
                })?;
        }
        let ctx = write_context(&request, key);
        let (ticket, event) = self.store.apply_action(ctx, id, version, action).await?;
        tracing::info!(
            ticket_id = %ticket.id,
            reference = %ticket.reference,
            operation = R::OPERATION,
            status = %ticket.status,
            cursor = event.cursor,
            "ticket changed"
        );
        Ok((answer(&principal, &ticket), event))
    }
}

/// A page of one ticket's history (its events, its personal-data reveals): the ticket, the
/// page size, and where the page starts.
struct TicketPage {
    id: TicketId,
    limit: u32,
    after: i64,
    hash: u64,
}

impl TicketPage {
    fn parse<M: Message + Clone>(
        message: &M,
        ticket_id: &str,
        size: i32,
        token: &str,
        clear_paging: impl FnOnce(&mut M),
    ) -> Result<Self, Status> {
        let mut v = Violations::default();
        let id = v.take(TicketId::parse("ticket_id", ticket_id));
        let limit = v.take(page_size(
            size,
            DEFAULT_EVENT_PAGE_SIZE,
            MAX_EVENT_PAGE_SIZE,
        ));
        let hash = filter_hash(message, clear_paging);
        let token = v.take(PageToken::decode(token, hash));
        let (id, limit, token) = v
            .finish(|| Some((id?, limit?, token?)))
            .map_err(invalid_argument)?;
        Ok(Self {
            id,
            limit,
            after: token.map_or(0, |t| t.position),
            hash,
        })
    }

    /// Cuts rows read with one too many (`limit + 1`) to the page, and gives the next page's
    /// token (empty on the last page).
    fn cut<T>(&self, rows: &mut Vec<T>, position: impl Fn(&T) -> i64) -> String {
        if rows.len() <= self.limit as usize {
            return String::new();
        }
        rows.truncate(self.limit as usize);
        rows.last()
            .map(|row| {
                PageToken {
                    position: position(row),
                    filter_hash: self.hash,
                }
                .encode()
            })
            .unwrap_or_default()
    }
}

/// The fields every lifecycle request shares.
trait LifecycleRequest: Message + Clone + Default + Send + Sync + 'static {
    const OPERATION: &'static str;
    fn ticket_id(&self) -> &str;
    fn etag(&self) -> &str;
    fn request_id(&self) -> &str;
    fn clear_request_id(&mut self);
}

macro_rules! lifecycle_request {
    ($($name:ident => $op:literal),+ $(,)?) => {$(
        impl LifecycleRequest for proto::$name {
            const OPERATION: &'static str = $op;
            fn ticket_id(&self) -> &str { &self.ticket_id }
            fn etag(&self) -> &str { &self.etag }
            fn request_id(&self) -> &str { &self.request_id }
            fn clear_request_id(&mut self) { self.request_id.clear(); }
        }
    )+};
}

lifecycle_request!(
    AssignTicketRequest => "AssignTicket",
    StartWorkRequest => "StartWork",
    WaitOnBeneficiaryRequest => "WaitOnBeneficiary",
    ResolveTicketRequest => "ResolveTicket",
    CloseTicketRequest => "CloseTicket",
    ReopenTicketRequest => "ReopenTicket",
    RejectTicketRequest => "RejectTicket",
    TransferTicketRequest => "TransferTicket",
    MergeTicketRequest => "MergeTicket",
    AddCommentRequest => "AddComment",
    EscalateTicketRequest => "EscalateTicket",
    RateTicketRequest => "RateTicket",
);

fn note(v: &mut Violations, field: &str, value: &str) -> Option<Option<String>> {
    let before = v.0.len();
    let parsed = optional_text(v, field, value, MAX_NOTE_CHARS, true);
    (v.0.len() == before).then_some(parsed)
}

fn reason(v: &mut Violations, value: &str) -> Option<String> {
    required_text(v, "reason", value, MAX_NOTE_CHARS, true)
}

/// Parses repeated filter values, refusing more than [`MAX_FILTER_VALUES`].
fn filter_values<T>(
    v: &mut Violations,
    field: &str,
    values: &[impl AsRef<str>],
    parse: impl Fn(&str, &str) -> Result<T, crate::domain::FieldViolation>,
) -> Vec<T> {
    if values.len() > MAX_FILTER_VALUES {
        v.push(field, format!("at most {MAX_FILTER_VALUES} values"));
        return Vec::new();
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| v.take(parse(&format!("{field}[{i}]"), value.as_ref())))
        .collect()
}

fn enum_filter<T: EnumInput>(v: &mut Violations, field: &str, values: &[i32]) -> Vec<T> {
    if values.len() > MAX_FILTER_VALUES {
        v.push(field, format!("at most {MAX_FILTER_VALUES} values"));
        return Vec::new();
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| v.take(T::from_proto(&format!("{field}[{i}]"), *value)))
        .collect()
}

/// The query of a ListTickets request, and the hash of its filters that page tokens carry.
fn parse_list_query(
    req: &proto::ListTicketsRequest,
) -> Result<(TicketQuery, u64), Vec<crate::domain::FieldViolation>> {
    let mut v = Violations::default();
    let limit = v.take(page_size(req.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE));
    let hash = filter_hash(req, |r| {
        r.page_size = 0;
        r.page_token.clear();
    });
    let token = v.take(PageToken::decode(&req.page_token, hash));
    let time = |v: &mut Violations, field: &str, t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| v.take(timestamp_from_proto(field, t)))
    };
    // A reference number typed into the search box finds that ticket by its unique key.
    let reference = ReferenceNumber::parse("text", &req.text).ok();
    let words = if req.text.is_empty() || reference.is_some() {
        Vec::new()
    } else {
        match parse_text("text", &req.text, 1, MAX_NAME_CHARS, false) {
            Ok(text) => {
                let words = search_words(&text, MAX_SEARCH_WORDS);
                if words.is_empty() {
                    v.push("text", "has no letters or digits to search for");
                }
                words
            }
            Err(violation) => {
                v.0.push(violation);
                Vec::new()
            }
        }
    };
    let query = TicketQuery {
        filter: TicketFilter {
            statuses: enum_filter::<TicketStatus>(&mut v, "statuses", &req.statuses),
            types: enum_filter::<TicketType>(&mut v, "types", &req.types),
            categories: filter_values(&mut v, "categories", &req.categories, Code::parse),
            directorates: filter_values(&mut v, "directorates", &req.directorates, Code::parse),
            outlets: filter_values(&mut v, "outlets", &req.outlets, Code::parse),
            wilayats: filter_values(&mut v, "wilayats", &req.wilayats, Code::parse),
            assignees: filter_values(&mut v, "assignees", &req.assignees, EmployeeId::parse),
            support_lines: enum_filter::<SupportLine>(&mut v, "support_lines", &req.support_lines),
            creators: Vec::new(),
        },
        channels: enum_filter::<Channel>(&mut v, "channels", &req.channels),
        priorities: enum_filter::<Priority>(&mut v, "priorities", &req.priorities),
        create_time_from: time(&mut v, "create_time_from", &req.create_time_from),
        create_time_to: time(&mut v, "create_time_to", &req.create_time_to),
        update_time_from: time(&mut v, "update_time_from", &req.update_time_from),
        update_time_to: time(&mut v, "update_time_to", &req.update_time_to),
        words,
        reference,
        before_position: token.flatten().map(|t| t.position),
        limit: 0,
    };
    // One more than asked tells whether a next page exists.
    v.finish(|| {
        Some((
            TicketQuery {
                limit: limit? + 1,
                ..query
            },
            hash,
        ))
    })
}

/// The filter of a watch; violations are named `filter.<field>`.
fn parse_watch_filter(v: &mut Violations, filter: Option<&proto::TicketFilter>) -> TicketFilter {
    let Some(f) = filter else {
        return TicketFilter::default();
    };
    TicketFilter {
        directorates: filter_values(v, "filter.directorates", &f.directorates, Code::parse),
        outlets: filter_values(v, "filter.outlets", &f.outlets, Code::parse),
        categories: filter_values(v, "filter.categories", &f.categories, Code::parse),
        types: enum_filter::<TicketType>(v, "filter.types", &f.types),
        statuses: enum_filter::<TicketStatus>(v, "filter.statuses", &f.statuses),
        wilayats: filter_values(v, "filter.wilayats", &f.wilayats, Code::parse),
        assignees: filter_values(v, "filter.assignees", &f.assignees, EmployeeId::parse),
        support_lines: enum_filter::<SupportLine>(v, "filter.support_lines", &f.support_lines),
        creators: Vec::new(),
    }
}

/// The paths UpdateTicket may change.
const MUTABLE_PATHS: [&str; 8] = [
    "type",
    "category",
    "priority",
    "subject",
    "description",
    "reporter",
    "location",
    "attachments",
];

fn parse_patch(
    req: &proto::UpdateTicketRequest,
) -> Result<(TicketId, Option<i64>, TicketPatch), Vec<crate::domain::FieldViolation>> {
    let mut v = Violations::default();
    let Some(t) = req.ticket.as_ref() else {
        return Err(vec![crate::domain::FieldViolation::new(
            "ticket",
            "is required",
        )]);
    };
    let id = v.take(TicketId::parse("ticket.id", &t.id));
    let version = v.take(parse_etag("ticket.etag", &t.etag));
    let mask: Vec<String> = match req.update_mask.as_ref().map(|m| m.paths.as_slice()) {
        Some(paths) if paths.iter().any(|p| p == "*") => {
            MUTABLE_PATHS.iter().map(|p| (*p).to_owned()).collect()
        }
        Some(paths) if !paths.is_empty() => paths.to_vec(),
        // AIP-134: no mask means every mutable field that is set.
        _ => {
            let populated = [
                t.r#type != 0,
                !t.category.is_empty(),
                t.priority != 0,
                !t.subject.is_empty(),
                !t.description.is_empty(),
                t.reporter.is_some(),
                t.location.is_some(),
                !t.attachments.is_empty(),
            ];
            MUTABLE_PATHS
                .iter()
                .zip(populated)
                .filter(|(_, set)| *set)
                .map(|(p, _)| (*p).to_owned())
                .collect()
        }
    };
    let mut patch = TicketPatch::default();
    for path in &mask {
        match path.as_str() {
            "type" => patch.ticket_type = v.take(TicketType::from_proto("ticket.type", t.r#type)),
            "category" => patch.category = v.take(Code::parse("ticket.category", &t.category)),
            "priority" => {
                patch.priority = v.take(Priority::from_proto("ticket.priority", t.priority));
            }
            "subject" => {
                patch.subject = required_text(
                    &mut v,
                    "ticket.subject",
                    &t.subject,
                    MAX_SUBJECT_CHARS,
                    false,
                );
            }
            "description" => {
                patch.description = v.take(parse_text(
                    "ticket.description",
                    &t.description,
                    0,
                    MAX_DESCRIPTION_CHARS,
                    true,
                ));
            }
            "reporter" => {
                patch.reporter = parse_reporter(&mut v, "ticket.reporter", t.reporter.as_ref());
            }
            "location" => {
                patch.location = Some(parse_location(
                    &mut v,
                    "ticket.location",
                    t.location.as_ref(),
                ));
            }
            "attachments" => {
                patch.attachments = Some(parse_attachments(
                    &mut v,
                    "ticket.attachments",
                    &t.attachments,
                ));
            }
            other => v.push(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; mutable paths are {}",
                    MUTABLE_PATHS.join(", ")
                ),
            ),
        }
    }
    if mask.is_empty() {
        v.push("update_mask", "names no field to update");
    }
    v.finish(|| Some((id?, version?, patch)))
}

#[tonic::async_trait]
impl TicketService for TicketServiceImpl {
    type WatchTicketsStream = WatchStream;

    async fn watch_tickets(
        &self,
        request: Request<proto::WatchTicketsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        // The server serves WatchTickets through `watch::route`, which sends each change's
        // bytes as they are; this path decodes them again, for callers of the trait itself.
        let stream = self
            .open_watch(&Principal::of(&request), request.get_ref())
            .await?;
        Ok(Response::new(stream.decoded()))
    }

    async fn create_ticket(
        &self,
        request: Request<proto::CreateTicketRequest>,
    ) -> Result<Response<proto::CreateTicketResponse>, Status> {
        let message = request.get_ref();
        let key = request_key("CreateTicket", &message.request_id, message, |r| {
            r.request_id.clear()
        });
        let new = parse_new_ticket(message);
        let (key, new) = match (key, new) {
            (Ok(key), Ok(new)) => (key, new),
            (key, new) => {
                let violations = key.err().into_iter().chain(new.err().into_iter().flatten());
                return Err(invalid_argument(violations.collect()));
            }
        };
        let principal = Principal::of(&request);
        let ticket = self
            .store
            .create_ticket(write_context(&request, key), new)
            .await?;
        tracing::info!(
            ticket_id = %ticket.id,
            reference = %ticket.reference,
            r#type = %ticket.ticket_type,
            category = %ticket.category,
            "ticket created"
        );
        Ok(Response::new(proto::CreateTicketResponse {
            ticket: Some(answer(&principal, &ticket)),
        }))
    }

    async fn get_ticket(
        &self,
        request: Request<proto::GetTicketRequest>,
    ) -> Result<Response<proto::GetTicketResponse>, Status> {
        use proto::get_ticket_request::Lookup;
        let principal = Principal::of(&request);
        let reveal = request.get_ref().reveal_personal_data;
        if reveal
            && let Some(caller) = principal.caller()
            && !caller.role.may_reveal_personal_data()
        {
            return Err(super::error::status(
                tonic::Code::PermissionDenied,
                "PERSONAL_DATA_NOT_PERMITTED",
                format!(
                    "the role {} may not see reporters' personal data",
                    caller.role
                ),
                std::collections::HashMap::new(),
                &[],
            ));
        }
        let lookup = match &request.get_ref().lookup {
            Some(Lookup::Id(id)) => {
                TicketLookup::Id(TicketId::parse("id", id).map_err(|v| invalid_argument(vec![v]))?)
            }
            Some(Lookup::Reference(reference)) => TicketLookup::Reference(
                ReferenceNumber::parse("reference", reference)
                    .map_err(|v| invalid_argument(vec![v]))?,
            ),
            None => {
                return Err(invalid_argument(vec![crate::domain::FieldViolation::new(
                    "lookup",
                    "set id or reference",
                )]));
            }
        };
        let (ticket, events) = self
            .store
            .get_ticket_with_events(lookup, crate::sla::MAX_EVENTS_PER_TICKET)
            .await?
            .filter(|(ticket, _)| principal.ticket_scope().admits(ticket))
            .ok_or(StoreError::TicketNotFound)?;
        let clock = self.sla.ticket_sla_of(&ticket, &events).await?;
        let mut message = ticket_to_proto(&ticket);
        match principal.caller() {
            Some(caller) if reveal => {
                // Recorded before the data leaves: no unrecorded reveal.
                self.store
                    .record_personal_data_access(
                        PersonalDataAccess {
                            actor: caller.id.clone(),
                            role: caller.role.as_str().to_owned(),
                            method: "GetTicket".to_owned(),
                        },
                        vec![ticket.id],
                    )
                    .await?;
                tracing::info!(ticket_id = %ticket.id, caller = %caller.id, "personal data revealed");
            }
            Some(_) => super::convert::mask_personal_data(&mut message),
            None => {}
        }
        message.sla = Some(super::sla_service::ticket_sla_to_proto(&ticket, &clock));
        Ok(Response::new(proto::GetTicketResponse {
            ticket: Some(message),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<proto::ListTicketsRequest>,
    ) -> Result<Response<proto::ListTicketsResponse>, Status> {
        let principal = Principal::of(&request);
        let encoded = self
            .list_tickets_encoded(&principal, request.get_ref())
            .await?;
        let message = proto::ListTicketsResponse::decode(encoded).map_err(|error| {
            tracing::error!(%error, "an encoded ListTickets answer does not decode");
            Status::internal("internal error")
        })?;
        Ok(Response::new(message))
    }

    async fn update_ticket(
        &self,
        request: Request<proto::UpdateTicketRequest>,
    ) -> Result<Response<proto::UpdateTicketResponse>, Status> {
        let message = request.get_ref();
        let key = request_key("UpdateTicket", &message.request_id, message, |r| {
            r.request_id.clear()
        });
        let parsed = parse_patch(message);
        let (key, (id, version, patch)) = match (key, parsed) {
            (Ok(key), Ok(parsed)) => (key, parsed),
            (key, parsed) => {
                let violations = key
                    .err()
                    .into_iter()
                    .chain(parsed.err().into_iter().flatten());
                return Err(invalid_argument(violations.collect()));
            }
        };
        let principal = Principal::of(&request);
        self.check_scope(&principal, id).await?;
        let ticket = self
            .store
            .update_ticket(write_context(&request, key), id, version, patch)
            .await
            .map_err(|e| match e {
                StoreError::Lifecycle(LifecycleError::Invalid(v)) => {
                    invalid_argument(prefixed("ticket.", v))
                }
                other => Status::from(other),
            })?;
        tracing::info!(ticket_id = %ticket.id, reference = %ticket.reference, "ticket edited");
        Ok(Response::new(proto::UpdateTicketResponse {
            ticket: Some(answer(&principal, &ticket)),
        }))
    }

    async fn assign_ticket(
        &self,
        request: Request<proto::AssignTicketRequest>,
    ) -> Result<Response<proto::AssignTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                let assignment =
                    parse_assignment(v, &r.directorate, &r.outlet, &r.assignee, r.support_line);
                let note = note(v, "note", &r.note);
                Some(Action::Assign {
                    assignment: assignment?,
                    note: note?,
                })
            })
            .await?;
        Ok(Response::new(proto::AssignTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn start_work(
        &self,
        request: Request<proto::StartWorkRequest>,
    ) -> Result<Response<proto::StartWorkResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::StartWork {
                    note: note(v, "note", &r.note)?,
                })
            })
            .await?;
        Ok(Response::new(proto::StartWorkResponse {
            ticket: Some(ticket),
        }))
    }

    async fn wait_on_beneficiary(
        &self,
        request: Request<proto::WaitOnBeneficiaryRequest>,
    ) -> Result<Response<proto::WaitOnBeneficiaryResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::WaitOnBeneficiary {
                    reason: reason(v, &r.reason)?,
                })
            })
            .await?;
        Ok(Response::new(proto::WaitOnBeneficiaryResponse {
            ticket: Some(ticket),
        }))
    }

    async fn resolve_ticket(
        &self,
        request: Request<proto::ResolveTicketRequest>,
    ) -> Result<Response<proto::ResolveTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::Resolve {
                    resolution: parse_resolution(v, r.resolution.as_ref())?,
                })
            })
            .await?;
        Ok(Response::new(proto::ResolveTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn close_ticket(
        &self,
        request: Request<proto::CloseTicketRequest>,
    ) -> Result<Response<proto::CloseTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::Close {
                    note: note(v, "note", &r.note)?,
                })
            })
            .await?;
        Ok(Response::new(proto::CloseTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn reopen_ticket(
        &self,
        request: Request<proto::ReopenTicketRequest>,
    ) -> Result<Response<proto::ReopenTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::Reopen {
                    reason: reason(v, &r.reason)?,
                })
            })
            .await?;
        Ok(Response::new(proto::ReopenTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn reject_ticket(
        &self,
        request: Request<proto::RejectTicketRequest>,
    ) -> Result<Response<proto::RejectTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                Some(Action::Reject {
                    reason: reason(v, &r.reason)?,
                })
            })
            .await?;
        Ok(Response::new(proto::RejectTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn transfer_ticket(
        &self,
        request: Request<proto::TransferTicketRequest>,
    ) -> Result<Response<proto::TransferTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                let entity = required_text(v, "entity", &r.entity, MAX_NAME_CHARS, false);
                let reason = note(v, "reason", &r.reason);
                Some(Action::Transfer {
                    entity: entity?,
                    reason: reason?,
                })
            })
            .await?;
        Ok(Response::new(proto::TransferTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn merge_ticket(
        &self,
        request: Request<proto::MergeTicketRequest>,
    ) -> Result<Response<proto::MergeTicketResponse>, Status> {
        let (ticket, _) = self
            .act(request, |r, v| {
                let original = v.take(TicketId::parse(
                    "duplicate_of_ticket_id",
                    &r.duplicate_of_ticket_id,
                ));
                Some(Action::Merge {
                    duplicate_of: original?,
                })
            })
            .await?;
        Ok(Response::new(proto::MergeTicketResponse {
            ticket: Some(ticket),
        }))
    }

    async fn add_comment(
        &self,
        request: Request<proto::AddCommentRequest>,
    ) -> Result<Response<proto::AddCommentResponse>, Status> {
        let (ticket, event) = self
            .act(request, |r, v| {
                let text = required_text(v, "text", &r.text, MAX_NOTE_CHARS, true);
                let visibility = v
                    .take(optional_enum::<Visibility>("visibility", r.visibility))
                    .map(|vis| vis.unwrap_or(Visibility::Internal));
                Some(Action::Comment {
                    text: text?,
                    visibility: visibility?,
                })
            })
            .await?;
        Ok(Response::new(proto::AddCommentResponse {
            ticket: Some(ticket),
            event: Some(event_to_proto(&event)),
        }))
    }

    /// A call-back's rating: parsed as every lifecycle request, but written with its survey
    /// ledger entry and under the survey policy (`Store::rate_on_call_back`).
    async fn rate_ticket(
        &self,
        request: Request<proto::RateTicketRequest>,
    ) -> Result<Response<proto::RateTicketResponse>, Status> {
        let now = self.sla.now();
        let message = request.get_ref();
        let mut v = Violations::default();
        let id = v.take(TicketId::parse("ticket_id", &message.ticket_id));
        let version = v.take(parse_etag("etag", &message.etag));
        let key = v.take(request_key(
            proto::RateTicketRequest::OPERATION,
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let comment = (!message.comment.is_empty()).then_some(message.comment.as_str());
        let satisfaction = v.take_many(Satisfaction::parse(
            "",
            i64::from(message.score),
            comment,
            now,
        ));
        let (id, version, key, satisfaction) = v
            .finish(|| Some((id?, version?, key?, satisfaction?)))
            .map_err(invalid_argument)?;
        let principal = Principal::of(&request);
        self.check_scope(&principal, id).await?;
        let ctx = write_context(&request, key);
        let (ticket, event) = self
            .store
            .rate_on_call_back(ctx, id, version, satisfaction, self.survey_policy)
            .await?;
        tracing::info!(
            ticket_id = %ticket.id,
            reference = %ticket.reference,
            operation = proto::RateTicketRequest::OPERATION,
            status = %ticket.status,
            cursor = event.cursor,
            "ticket rated on a call-back"
        );
        Ok(Response::new(proto::RateTicketResponse {
            ticket: Some(answer(&principal, &ticket)),
            event: Some(event_to_proto(&event)),
        }))
    }

    async fn escalate_ticket(
        &self,
        request: Request<proto::EscalateTicketRequest>,
    ) -> Result<Response<proto::EscalateTicketResponse>, Status> {
        let message = request.get_ref();
        let target = match optional_enum::<EscalationTarget>("target", message.target) {
            Err(violation) => return Err(invalid_argument(vec![violation])),
            Ok(Some(target)) => target,
            // The matrix's next step above where the ticket stands now. Should the ticket
            // move meanwhile, the lifecycle refuses a step that is no longer above it.
            Ok(None) => {
                let id = TicketId::parse("ticket_id", &message.ticket_id)
                    .map_err(|v| invalid_argument(vec![v]))?;
                let scope = Principal::of(&request).ticket_scope();
                let ticket = ticket_in_scope(self.store.as_ref(), &scope, id).await?;
                self.sla
                    .config()
                    .settings
                    .next_escalation(
                        ticket.assignment.support_line,
                        ticket.escalated_to_director_general,
                    )
                    .ok_or_else(super::sla_service::no_higher_step)?
            }
        };
        let (ticket, event) = self
            .act(request, |r, v| {
                Some(Action::Escalate {
                    to: target,
                    reason: reason(v, &r.reason)?,
                })
            })
            .await?;
        Ok(Response::new(proto::EscalateTicketResponse {
            ticket: Some(ticket),
            event: Some(event_to_proto(&event)),
        }))
    }

    async fn list_ticket_events(
        &self,
        request: Request<proto::ListTicketEventsRequest>,
    ) -> Result<Response<proto::ListTicketEventsResponse>, Status> {
        let message = request.get_ref();
        let page = TicketPage::parse(
            message,
            &message.ticket_id,
            message.page_size,
            &message.page_token,
            |r| {
                r.page_size = 0;
                r.page_token.clear();
            },
        )?;
        self.check_scope(&Principal::of(&request), page.id).await?;
        let mut events = self
            .store
            .list_ticket_events(page.id, page.after, page.limit + 1)
            .await?
            .ok_or(StoreError::TicketNotFound)?;
        let next_page_token = page.cut(&mut events, |e| e.cursor);
        Ok(Response::new(proto::ListTicketEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn erase_personal_data(
        &self,
        request: Request<proto::ErasePersonalDataRequest>,
    ) -> Result<Response<proto::ErasePersonalDataResponse>, Status> {
        let principal = Principal::of(&request);
        let message = request.get_ref();
        let mut v = Violations::default();
        let id = v.take(TicketId::parse("ticket_id", &message.ticket_id));
        let reason = reason(&mut v, &message.reason);
        let key = v.take(request_key(
            "ErasePersonalData",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let (id, reason, key) = v
            .finish(|| Some((id?, reason?, key?)))
            .map_err(invalid_argument)?;
        self.check_scope(&principal, id).await?;
        let ticket = self
            .store
            .erase_personal_data(write_context(&request, key), id, reason)
            .await?;
        tracing::info!(
            ticket_id = %ticket.id,
            reference = %ticket.reference,
            actor = principal.actor(),
            "personal data erased"
        );
        Ok(Response::new(proto::ErasePersonalDataResponse {
            ticket: Some(answer(&principal, &ticket)),
        }))
    }

    async fn list_personal_data_accesses(
        &self,
        request: Request<proto::ListPersonalDataAccessesRequest>,
    ) -> Result<Response<proto::ListPersonalDataAccessesResponse>, Status> {
        let message = request.get_ref();
        let page = TicketPage::parse(
            message,
            &message.ticket_id,
            message.page_size,
            &message.page_token,
            |r| {
                r.page_size = 0;
                r.page_token.clear();
            },
        )?;
        self.check_scope(&Principal::of(&request), page.id).await?;
        let mut rows = self
            .store
            .list_personal_data_accesses(page.id, page.after, page.limit + 1)
            .await?
            .ok_or(StoreError::TicketNotFound)?;
        let next_page_token = page.cut(&mut rows, |(position, _)| *position);
        Ok(Response::new(proto::ListPersonalDataAccessesResponse {
            accesses: rows
                .into_iter()
                .map(|(_, r)| proto::PersonalDataAccess {
                    ticket_id: r.ticket_id.to_string(),
                    actor: r.access.actor,
                    role: r.access.role,
                    method: r.access.method,
                    access_time: Some(super::convert::timestamp_to_proto(r.access_time)),
                })
                .collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(subject: &str) -> proto::Ticket {
        proto::Ticket {
            id: "0190d7a4-0000-7000-8000-000000000001".into(),
            subject: subject.into(),
            description: "ش".repeat(200),
            ..Default::default()
        }
    }

    #[test]
    fn a_page_from_encoded_tickets_is_the_bytes_prost_writes() {
        for (tickets, token) in [
            (vec![], ""),
            (vec![ticket("حفرة")], ""),
            (vec![ticket("a"), ticket(""), ticket("حفرة")], "next-page"),
            (vec![], "only-a-token"),
        ] {
            let encoded: Vec<Bytes> = tickets
                .iter()
                .map(|t| Bytes::from(t.encode_to_vec()))
                .collect();
            let message = proto::ListTicketsResponse {
                tickets,
                next_page_token: token.into(),
            };
            assert_eq!(
                encode_list_response(&encoded, token),
                message.encode_to_vec(),
                "{token:?}"
            );
        }
    }
}
