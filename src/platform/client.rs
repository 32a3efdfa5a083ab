//! `PlatformClient`: the national platform's API over HTTP, with every outcome classified.
//!
//! The sync worker decides what to do after each call (retry later, fetch and merge, dead
//! letter, alert) from one thing: the [`PlatformError`] variant. So this client does no
//! retrying of its own, with one exception the contract asks for: an access token the platform
//! refuses (401) is dropped, a new one fetched, and the call repeated exactly once.
//!
//! Invariants:
//! - Every write carries the caller's `Idempotency-Key`. The caller derives it from what it
//!   sends (an outbox entry), so a retry after any failure, even one where the write was
//!   applied and the answer lost, repeats the same key and has the effect once.
//! - Tokens are cached and refreshed shortly before they expire. One fetch at a time: every
//!   caller that needs a token while a fetch is under way awaits that fetch and gets its
//!   outcome, success or failure, so no caller waits for more than one fetch.
//! - A fetch is bounded: each token request has its own timeout, shorter than an API call's,
//!   and a fetch sends a second request beside the first when the first has not answered in
//!   `token_hedge_delay` (or failed in passing); the first good answer wins. Never more than two
//!   token requests for one fetch: the identity provider sees at most one extra request, and
//!   only when it is already late.
//! - A write (and a read of one case) that has not answered within `hedge_delay` gets the
//!   same request sent again beside it (same key and body, the token held then); the first answer
//!   that settles the call wins and the other request is abandoned. The key makes the pair
//!   one write at the platform, which answers a key still being processed with 409
//!   `idempotency-key-in-use` (retryable). At most about one call in ten is hedged over time
//!   ([`HEDGE_SHARE_PERCENT`]), so a platform that is slow for everyone does not get twice
//!   the load.
//! - Nothing personal reaches a log line: logs carry the method, the route, case ids, statuses
//!   and problem types, never a body.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::contract::{
    self, Case, CaseUpdate, ChangePage, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, NewCase, NewReply,
    NewResolution, Problem, ProblemType, Receipt, TokenError, TokenResponse,
};
use crate::domain::FieldViolation;

/// A client secret: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// How long one request may take by default ([`PlatformClientConfig::request_timeout`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one token request may take by default.
pub const DEFAULT_TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// After how long without an answer a second token request goes out by default.
pub const DEFAULT_TOKEN_HEDGE_DELAY: Duration = Duration::from_millis(500);
/// After how long without an answer a write (or a read of one case) is sent a second time
/// beside the first, by default.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_secs(1);
/// The share of calls that may be hedged over time, in percent.
pub const HEDGE_SHARE_PERCENT: u32 = 10;
/// How many hedges may go out in a burst before the share above limits them.
pub const HEDGE_BURST: u32 = 10;
/// How many tokens are kept fetched ahead of need, by default: three, so that one has
/// arrived even when tokens are replaced faster than a token request answers (in
/// `balagh bench-sync` with 20% faults, a token every 8 ms: with two standbys 20 of about
/// 1,160 take-overs still waited for a request under way, with three 2 or 3).
pub const DEFAULT_STANDBY_TOKENS: usize = 3;
/// The most standby tokens a client keeps, whatever its configuration says.
pub const MAX_STANDBY_TOKENS: usize = 8;

/// Where the platform is and who balagh is to it.
#[derive(Debug, Clone)]
pub struct PlatformClientConfig {
    /// The platform's base URL, e.g. `http://127.0.0.1:8080` for the simulator.
    pub base_url: String,
    /// The municipality's entity id on the platform.
    pub entity: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// How long one request (including reading its answer) may take before it is a timeout.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long one token request may take before it is abandoned; `request_timeout` when that
    /// is shorter. Short, because every call that needs a token waits for it.
    pub token_request_timeout: Duration,
    /// When a token request has not answered in this time, a second one is sent beside it and
    /// the first good answer is used. At or above `token_request_timeout`, two are never in
    /// flight at once (a request that timed out is still followed by one more).
    pub token_hedge_delay: Duration,
    /// When a write, or a read of one case, has not answered in this time, the same request
    /// is sent again beside it and the first answer that settles the call is used; `None`
    /// never sends a second. The change feed is never hedged (a page is large and the pull
    /// waits for it anyway).
    pub hedge_delay: Option<Duration>,
    /// How many tokens to keep fetched ahead, each by a task of its own, to take over at once
    /// when the one in use is refused (401) or due for renewal, so that calls do not wait
    /// for a token request then. Costs this many token requests more per client, at its
    /// first call; after that one token request per token replaced, as without standbys.
    pub standby_tokens: usize,
}

impl PlatformClientConfig {
    /// Defaults for everything but where and who: 10 s per request, 3 s to connect, 3 s per
    /// token request, a second token request after 500 ms without an answer, a second write
    /// after 1 s without an answer, [`DEFAULT_STANDBY_TOKENS`] standby tokens.
    pub fn new(
        base_url: impl Into<String>,
        entity: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            entity: entity.into(),
            client_id: client_id.into(),
            client_secret,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            token_request_timeout: DEFAULT_TOKEN_REQUEST_TIMEOUT,
            token_hedge_delay: DEFAULT_TOKEN_HEDGE_DELAY,
            hedge_delay: Some(DEFAULT_HEDGE_DELAY),
            standby_tokens: DEFAULT_STANDBY_TOKENS,
        }
    }
}

/// A stable key for one write: printable ASCII without spaces, 1 to 255 characters.
/// Derive it from the thing being delivered (e.g. `outbox-<id>`), never from the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, FieldViolation> {
        let valid = !value.is_empty()
            && value.len() <= contract::MAX_IDEMPOTENCY_KEY_BYTES
            && value.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldViolation::new(
                "idempotency_key",
                "must be 1 to 255 printable ASCII characters without spaces",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a call may succeed if made again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// No connection could be made.
    Connect,
    /// No complete answer within the request timeout. A write's outcome is unknown.
    Timeout,
    /// The connection broke (reset, closed mid-answer). A write's outcome is unknown.
    Transport,
    /// 408.
    RequestTimeout,
    /// 429: slow down.
    RateLimited,
    /// 503: maintenance or overload.
    Unavailable,
    /// 409 `idempotency-key-in-use`: another request with the same key is still being
    /// processed (a hedged call's twin, or an attempt the platform has not finished).
    KeyInUse,
    /// Any other 5xx.
    ServerError,
}

impl fmt::Display for RetryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetryCause::Connect => "cannot connect",
            RetryCause::Timeout => "timed out",
            RetryCause::Transport => "connection broken",
            RetryCause::RequestTimeout => "request timeout (408)",
            RetryCause::RateLimited => "rate limited (429)",
            RetryCause::Unavailable => "unavailable (503)",
            RetryCause::KeyInUse => "idempotency key in use (409)",
            RetryCause::ServerError => "server error",
        })
    }
}

/// Every outcome of a call that is not a success, classified by what the caller should do.
/// `Clone` because the outcome of one token fetch is given to every caller that awaited it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlatformError {
    /// Try again later with the same idempotency key, no sooner than `retry_after` if given.
    #[error("the platform call may succeed later: {cause}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Retryable {
        cause: RetryCause,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// 412: the case changed since the version sent in `If-Match`. Fetch it, merge, retry.
    #[error("version conflict: the case is now at version {current_version:?}")]
    Conflict {
        current_version: Option<i64>,
        problem: Option<Box<Problem>>,
    },
    /// Any other 4xx: sending the same request again will fail the same way (dead letter).
    #[error("the platform refused the request: HTTP {status} {}", problem.as_ref().map(|p| p.problem_type.as_str()).unwrap_or("(no problem body)"))]
    Rejected {
        status: u16,
        problem: Option<Box<Problem>>,
    },
    /// The answer does not follow the contract (an unparseable body, a wrong content). For a
    /// write the outcome is unknown; a retry with the same key is safe.
    #[error("malformed answer from the platform (HTTP {status}): {detail}")]
    Malformed { status: u16, detail: String },
    /// The platform refused our credentials, or refused a fresh token after one refresh.
    #[error("not authorised by the platform: {detail}")]
    Unauthorized { detail: String },
    /// The client cannot be built from its configuration.
    #[error("the platform client is misconfigured: {0}")]
    Config(String),
}

impl PlatformError {
    /// The platform's problem type, when the answer carried one of its problems.
    pub fn problem_type(&self) -> Option<ProblemType> {
        match self {
            PlatformError::Conflict { problem, .. } | PlatformError::Rejected { problem, .. } => {
                problem.as_ref().and_then(|p| p.kind())
            }
            _ => None,
        }
    }

    /// 410 on the change feed: the cursor is older than the feed keeps. Start again from the
    /// beginning and reconcile.
    pub fn is_cursor_expired(&self) -> bool {
        self.problem_type() == Some(ProblemType::CursorExpired)
    }
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub case: Case,
    /// The platform answered from its idempotency store: the write had been applied before.
    pub replayed: bool,
}

/// The national platform's API.
pub struct PlatformClient {
    http: reqwest::Client,
    base_url: Url,
    config: PlatformClientConfig,
    token_endpoint: Arc<TokenEndpoint>,
    /// Held only to read or replace the slot, never across an await.
    token: Mutex<TokenState>,
    hedges: HedgeBudget,
}

/// How many calls were hedged, for benchmarks and the operator's eye.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HedgeStats {
    /// Calls that got a second request beside the first.
    pub sent: u64,
    /// Of those, calls settled by the second request.
    pub won: u64,
    /// Calls late enough for a second request that did not get one: the budget was spent.
    pub refused: u64,
}

/// Limits hedging to [`HEDGE_SHARE_PERCENT`] of calls over time: every hedgeable call earns
/// that many hundredths of a hedge, a hedge spends a whole one, and at most [`HEDGE_BURST`]
/// are saved up (the budget starts full).
struct HedgeBudget {
    /// Hundredths of a hedge.
    credit: AtomicU32,
    sent: AtomicU64,
    won: AtomicU64,
    refused: AtomicU64,
}

impl HedgeBudget {
    const ONE: u32 = 100;
    const CAP: u32 = HEDGE_BURST * Self::ONE;

    fn new() -> Self {
        Self {
            credit: AtomicU32::new(Self::CAP),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A hedgeable call went out.
    fn earn(&self) {
        let _ = self
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < Self::CAP).then(|| (c + HEDGE_SHARE_PERCENT).min(Self::CAP))
            });
    }

    /// Takes one hedge's credit, if there is one.
    fn spend(&self) -> bool {
        let spent = self
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_sub(Self::ONE)
            })
            .is_ok();
        if spent {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        spent
    }

    fn stats(&self) -> HedgeStats {
        HedgeStats {
            sent: self.sent.load(Ordering::Relaxed),
            won: self.won.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    access_token: String,
    refresh_at: Instant,
    /// Fetched as a standby, before anyone needed it.
    fetched_ahead: bool,
}

/// One token fetch, awaited by every caller that needs a token while it runs.
type TokenFetch = Shared<BoxFuture<'static, Result<CachedToken, PlatformError>>>;

struct TokenState {
    slot: TokenSlot,
    /// Numbers the fetches, so a caller replaces the slot only with the outcome of the fetch
    /// that is still in it.
    n_fetches: u64,
    /// The next tokens, oldest first, each fetched by a task of its own while the one in the
    /// slot is in use (`PlatformClientConfig::standby_tokens`). When the slot's token is
    /// refused or due for renewal, the first standby that has its token takes its place (or,
    /// when none has yet, the oldest still being fetched), and another standby fetch starts.
    standby: VecDeque<Standby>,
}

struct Standby {
    fetch: TokenFetch,
    task: tokio::task::AbortHandle,
}

impl Standby {
    /// Whether its token has arrived and is not yet due for renewal.
    fn ready(&self) -> bool {
        matches!(self.fetch.peek(), Some(Ok(token)) if Instant::now() < token.refresh_at)
    }

    /// Whether its fetch failed or its token is due for renewal: of no use any more.
    fn spent(&self) -> bool {
        self.fetch.peek().is_some() && !self.ready()
    }
}

impl TokenState {
    /// The fetch that takes the slot's place: the first standby whose token has arrived, else
    /// the oldest still being fetched. Spent standbys are dropped on the way.
    fn take_standby(&mut self) -> Option<TokenFetch> {
        self.standby.retain(|standby| {
            let keep = !standby.spent();
            if !keep {
                standby.task.abort();
            }
            keep
        });
        let position = self
            .standby
            .iter()
            .position(Standby::ready)
            .or((!self.standby.is_empty()).then_some(0))?;
        self.standby.remove(position).map(|standby| standby.fetch)
    }
}

enum TokenSlot {
    Empty,
    Ready(CachedToken),
    Fetching { fetch: TokenFetch, number: u64 },
}

/// What a token request needs, owned, so that a fetch does not borrow the client.
struct TokenEndpoint {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    client_secret: ClientSecret,
    request_timeout: Duration,
    hedge_delay: Duration,
}

/// One request, kept so it can be sent again after a token refresh.
struct ApiRequest {
    method: Method,
    url: Url,
    /// The route for logs, without ids: `cases/{id}/resolution`.
    route: &'static str,
    case_id: Option<String>,
    body: Option<Vec<u8>>,
    idempotency_key: Option<IdempotencyKey>,
    if_match: Option<i64>,
}

impl ApiRequest {
    /// Writes carry a key, so a second copy is applied at most once; a case read is small.
    /// The change feed is not hedged.
    fn hedgeable(&self) -> bool {
        self.idempotency_key.is_some() || (self.method == Method::GET && self.route != "changes")
    }
}

/// Whether an outcome of one of two hedged requests ends the call, or the other request
/// should be waited for.
fn settles(outcome: &Result<Sent, PlatformError>) -> bool {
    match outcome {
        Err(PlatformError::Retryable { .. }) => false,
        Err(_) | Ok(Sent::TokenRefused(_)) => true,
        Ok(Sent::Answer(answer)) => classify_status(answer).is_none() && !is_key_in_use(answer),
    }
}

fn second_wins(
    hedges: &HedgeBudget,
    outcome: Result<Sent, PlatformError>,
) -> Result<Sent, PlatformError> {
    if settles(&outcome) {
        hedges.won.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// 409 `idempotency-key-in-use`: the platform is still processing this key.
fn is_key_in_use(answer: &Answer) -> bool {
    answer.status == StatusCode::CONFLICT
        && parse_problem(&answer.body).and_then(|p| p.kind())
            == Some(ProblemType::IdempotencyKeyInUse)
}

/// A complete HTTP answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Sent {
    Answer(Answer),
    /// 401 from the API: this token is no good.
    TokenRefused(String),
}

impl PlatformClient {
    pub fn new(config: PlatformClientConfig) -> Result<Self, PlatformError> {
        let base_url = Url::parse(&config.base_url)
            .map_err(|e| PlatformError::Config(format!("base_url: {e}")))?;
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(PlatformError::Config(
                "base_url must be an http(s) URL".to_owned(),
            ));
        }
        if config.entity.is_empty() || config.client_id.is_empty() {
            return Err(PlatformError::Config(
                "entity and client_id are required".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("balagh/", env!("CARGO_PKG_VERSION")))
            // The system's trust store is read only for an https platform (reading it takes
            // milliseconds, which a client built per test or fuzz input would pay each time).
            .tls_built_in_root_certs(base_url.scheme() == "https")
            .build()
            .map_err(|e| PlatformError::Config(format!("http client: {e}")))?;
        let token_endpoint = Arc::new(TokenEndpoint {
            http: http.clone(),
            url: token_url(&base_url),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            // Never longer than any other request.
            request_timeout: config.token_request_timeout.min(config.request_timeout),
            hedge_delay: config.token_hedge_delay,
        });
        Ok(Self {
            http,
            base_url,
            config,
            token_endpoint,
            token: Mutex::new(TokenState {
                slot: TokenSlot::Empty,
                n_fetches: 0,
                standby: VecDeque::new(),
            }),
            hedges: HedgeBudget::new(),
        })
    }

    pub fn config(&self) -> &PlatformClientConfig {
        &self.config
    }

    /// How many calls were hedged so far.
    pub fn hedge_stats(&self) -> HedgeStats {
        self.hedges.stats()
    }

    /// Shares a case the municipality registered (`POST .../cases`).
    pub async fn create_case(
        &self,
        key: &IdempotencyKey,
        case: &NewCase,
    ) -> Result<WriteOutcome, PlatformError> {
        let request = ApiRequest {
            method: Method::POST,
            url: self.entity_url(&["cases"]),
            route: "cases",
            case_id: None,
            body: Some(to_json(case)?),
            idempotency_key: Some(key.clone()),
            if_match: None,
        };
        self.write(request).await
    }

    /// Reads a case (`GET .../cases/{id}`).
    pub async fn get_case(&self, case_id: &str) -> Result<Case, PlatformError> {
        let request = ApiRequest {
            method: Method::GET,
            url: self.entity_url(&["cases", case_id]),
            route: "cases/{id}",
            case_id: Some(case_id.to_owned()),
            body: None,
            idempotency_key: None,
            if_match: None,
        };
        let (case, _) = self.call::<Case>(request).await?;
        Ok(case)
    }

    /// Changes the fields the municipality owns (`PATCH .../cases/{id}`, `If-Match`).
    pub async fn update_case(
        &self,
        key: &IdempotencyKey,
        case_id: &str,
        if_match: i64,
        update: &CaseUpdate,
    ) -> Result<WriteOutcome, PlatformError> {
        let request = ApiRequest {
            method: Method::PATCH,
            url: self.entity_url(&["cases", case_id]),
            route: "cases/{id}",
            case_id: Some(case_id.to_owned()),
            body: Some(to_json(update)?),
            idempotency_key: Some(key.clone()),
            if_match: Some(if_match),
        };
        self.write(request).await
    }

    /// Adds a public reply (`POST .../cases/{id}/replies`). `If-Match` is optional here: a
    /// reply appends and overwrites nothing.
    pub async fn add_reply(
        &self,
        key: &IdempotencyKey,
        case_id: &str,
        if_match: Option<i64>,
        reply: &NewReply,
    ) -> Result<WriteOutcome, PlatformError> {
        let request = ApiRequest {
            method: Method::POST,
            url: self.entity_url(&["cases", case_id, "replies"]),
            route: "cases/{id}/replies",
            case_id: Some(case_id.to_owned()),
            body: Some(to_json(reply)?),
            idempotency_key: Some(key.clone()),
            if_match,
        };
        self.write(request).await
    }

    /// Resolves the case (`POST .../cases/{id}/resolution`, `If-Match`).
    pub async fn resolve_case(
        &self,
        key: &IdempotencyKey,
        case_id: &str,
        if_match: i64,
        resolution: &NewResolution,
    ) -> Result<WriteOutcome, PlatformError> {
        let request = ApiRequest {
            method: Method::POST,
            url: self.entity_url(&["cases", case_id, "resolution"]),
            route: "cases/{id}/resolution",
            case_id: Some(case_id.to_owned()),
            body: Some(to_json(resolution)?),
            idempotency_key: Some(key.clone()),
            if_match: Some(if_match),
        };
        self.write(request).await
    }

    /// Acknowledges receipt of a case a citizen filed (`POST .../cases/{id}/receipt`).
    pub async fn acknowledge_receipt(
        &self,
        key: &IdempotencyKey,
        case_id: &str,
        receipt: &Receipt,
    ) -> Result<WriteOutcome, PlatformError> {
        let request = ApiRequest {
            method: Method::POST,
            url: self.entity_url(&["cases", case_id, "receipt"]),
            route: "cases/{id}/receipt",
            case_id: Some(case_id.to_owned()),
            body: Some(to_json(receipt)?),
            idempotency_key: Some(key.clone()),
            if_match: None,
        };
        self.write(request).await
    }

    /// One page of the change feed after `after` (`None`: from the oldest change kept).
    pub async fn changes(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ChangePage, PlatformError> {
        let mut url = self.entity_url(&["changes"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(after) = after {
                query.append_pair("after", after);
            }
            query.append_pair("limit", &limit.to_string());
        }
        let request = ApiRequest {
            method: Method::GET,
            url,
            route: "changes",
            case_id: None,
            body: None,
            idempotency_key: None,
            if_match: None,
        };
        let (page, _) = self.call::<ChangePage>(request).await?;
        Ok(page)
    }

    fn entity_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["v1", "entities", self.config.entity.as_str()])
                .extend(segments);
        }
        url
    }

    async fn write(&self, request: ApiRequest) -> Result<WriteOutcome, PlatformError> {
        let (case, headers) = self.call::<Case>(request).await?;
        let replayed = headers
            .get(IDEMPOTENT_REPLAYED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(WriteOutcome { case, replayed })
    }

    /// Sends with a token; on 401 drops the token, gets the next one and sends again: once
    /// after a refusal, and once more after each refusal of a standby token (fetched ahead,
    /// it may have gone bad unseen, say on a platform clock ahead of ours), at most
    /// [`MAX_STANDBY_TOKENS`] times. A second refusal of a token fetched for this call's
    /// need is `Unauthorized`.
    async fn call<T: DeserializeOwned>(
        &self,
        request: ApiRequest,
    ) -> Result<(T, HeaderMap), PlatformError> {
        let mut token = self.access_token().await?;
        let mut refusals = 0;
        let answer = loop {
            match self.send_hedged(&request, &token.access_token).await? {
                Sent::Answer(answer) => break answer,
                Sent::TokenRefused(refused) => {
                    refusals += 1;
                    self.forget_token(&refused);
                    let again = refusals == 1
                        || (token.fetched_ahead && refusals <= 1 + MAX_STANDBY_TOKENS);
                    if !again {
                        return Err(PlatformError::Unauthorized {
                            detail: "a freshly issued token was refused".to_owned(),
                        });
                    }
                    tracing::info!(
                        route = request.route,
                        "the platform refused the access token; sending again with the next"
                    );
                    token = self.access_token().await?;
                }
            }
        };
        let result = interpret::<T>(answer);
        match &result {
            Ok(_) => tracing::debug!(
                method = %request.method,
                route = request.route,
                case_id = request.case_id.as_deref(),
                "platform call succeeded"
            ),
            Err(error) => tracing::debug!(
                method = %request.method,
                route = request.route,
                case_id = request.case_id.as_deref(),
                error = %error,
                "platform call failed"
            ),
        }
        result
    }

    /// Sends the request, and when it has not answered within the hedge delay, the same
    /// request again beside it while the budget allows. The first outcome that settles the
    /// call is returned and the other request abandoned (its connection closed). An outcome
    /// that may go differently on another try (a timeout, a broken connection, 408, 429, 5xx,
    /// 409 `idempotency-key-in-use`) does not settle it while the other request is still out;
    /// when both fail that way, the later failure is returned.
    ///
    /// Safe because both requests carry the same `Idempotency-Key` and body (a write is
    /// applied once, the other gets the replay or 409 in-use), or are reads. The second
    /// request carries the token held when it goes, which may be newer than the first's.
    async fn send_hedged(&self, request: &ApiRequest, token: &str) -> Result<Sent, PlatformError> {
        let Some(delay) = self.config.hedge_delay.filter(|_| request.hedgeable()) else {
            return self.send(request, token).await;
        };
        self.hedges.earn();
        let first = self.send(request, token);
        tokio::pin!(first);
        tokio::select! {
            outcome = &mut first => return outcome,
            () = tokio::time::sleep(delay) => {}
        }
        if !self.hedges.spend() {
            return first.await;
        }
        tracing::debug!(
            method = %request.method,
            route = request.route,
            case_id = request.case_id.as_deref(),
            hedge_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "the platform call is late; sending it again beside the first"
        );
        // The token held now: the first request's may have been replaced meanwhile.
        let second = async {
            let token = self.access_token().await?;
            self.send(request, &token.access_token).await
        };
        tokio::pin!(second);
        tokio::select! {
            outcome = &mut first => {
                if settles(&outcome) { outcome } else { second_wins(&self.hedges, second.await) }
            }
            outcome = &mut second => {
                if settles(&outcome) { second_wins(&self.hedges, outcome) } else { first.await }
            }
        }
    }

    async fn send(&self, request: &ApiRequest, token: &str) -> Result<Sent, PlatformError> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .timeout(self.config.request_timeout)
            .bearer_auth(token)
            .header(header::ACCEPT, "application/json");
        if let Some(key) = &request.idempotency_key {
            builder = builder.header(IDEMPOTENCY_KEY, key.as_str());
        }
        if let Some(version) = request.if_match {
            builder = builder.header(header::IF_MATCH, contract::etag_of(version));
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let answer = receive(builder).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            return Ok(Sent::TokenRefused(token.to_owned()));
        }
        Ok(Sent::Answer(answer))
    }

    /// The cached token, or the next one when there is none or it is about to expire: a
    /// standby's when one is kept (see [`TokenState::standby`]), else a new fetch. A caller
    /// that finds a fetch under way awaits that fetch instead of starting another, and gets
    /// its outcome; so a failed fetch fails every call that waited for it, once, and the next
    /// call starts a new one.
    async fn access_token(&self) -> Result<CachedToken, PlatformError> {
        let (fetch, number) = {
            let mut state = self.token_state();
            match &state.slot {
                TokenSlot::Ready(token) if Instant::now() < token.refresh_at => {
                    return Ok(token.clone());
                }
                TokenSlot::Fetching { fetch, number } => (fetch.clone(), *number),
                TokenSlot::Ready(_) | TokenSlot::Empty => {
                    state.n_fetches += 1;
                    let number = state.n_fetches;
                    let fetch = match state.take_standby() {
                        Some(fetch) => {
                            tracing::debug!("a standby platform token takes over");
                            fetch
                        }
                        None => self.token_endpoint.clone().fetch().boxed().shared(),
                    };
                    let wanted = self.config.standby_tokens.min(MAX_STANDBY_TOKENS);
                    while state.standby.len() < wanted {
                        let Some(standby) = self.start_standby_fetch() else {
                            break;
                        };
                        state.standby.push_back(standby);
                    }
                    state.slot = TokenSlot::Fetching {
                        fetch: fetch.clone(),
                        number,
                    };
                    (fetch, number)
                }
            }
        };
        let outcome = fetch.await;
        let mut state = self.token_state();
        // The first caller back puts the outcome in the slot; the others find it done. A
        // caller whose fetch was replaced meanwhile (forgotten, then fetched again) leaves the
        // newer one alone.
        if matches!(&state.slot, TokenSlot::Fetching { number: n, .. } if *n == number) {
            state.slot = match &outcome {
                Ok(token) => TokenSlot::Ready(token.clone()),
                Err(_) => TokenSlot::Empty,
            };
        }
        outcome
    }

    /// Starts fetching the next token on a task of its own, so that it arrives whether or not
    /// anyone awaits it. `None` outside a Tokio runtime (no standby then).
    fn start_standby_fetch(&self) -> Option<Standby> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let fetch = self
            .token_endpoint
            .clone()
            .fetch()
            .map(|outcome| {
                outcome.map(|token| CachedToken {
                    fetched_ahead: true,
                    ..token
                })
            })
            .boxed()
            .shared();
        // The task drives the shared fetch, so its outcome can be peeked at when it is done.
        let task = runtime.spawn(fetch.clone().map(drop)).abort_handle();
        Some(Standby { fetch, task })
    }

    /// Drops the cached token if it is still the one that was refused (another caller may
    /// already have replaced it, or be fetching its replacement).
    fn forget_token(&self, refused: &str) {
        let mut state = self.token_state();
        if matches!(&state.slot, TokenSlot::Ready(token) if token.access_token == refused) {
            state.slot = TokenSlot::Empty;
        }
    }

    fn token_state(&self) -> MutexGuard<'_, TokenState> {
        // Nothing panics while the lock is held; if something did, the slot is still whole.
        self.token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PlatformClient {
    fn drop(&mut self) {
        for standby in self.token_state().standby.drain(..) {
            standby.task.abort();
        }
    }
}

impl TokenEndpoint {
    /// One fetch: a token request, and a second one beside it when the first has not answered
    /// within the hedge delay or failed in a way another request may not (a timeout, a broken
    /// connection, a 5xx other than 503, a garbled answer). The first token that arrives wins;
    /// the request still in flight is then abandoned. When both fail, the later failure is the
    /// fetch's. A refusal of the credentials, 429 and 503 are not asked twice: the provider
    /// said no, or asked for a pause.
    async fn fetch(self: Arc<Self>) -> Result<CachedToken, PlatformError> {
        let mut requests = FuturesUnordered::new();
        requests.push(self.request());
        let mut n_sent = 1;
        let hedge = tokio::time::sleep(self.hedge_delay);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                Some(outcome) = requests.next() => match outcome {
                    Ok(token) => return Ok(token),
                    Err(error) if n_sent < 2 && worth_another_token_request(&error) => {
                        tracing::info!(error = %error, "a token request failed; sending one more");
                        requests.push(self.request());
                        n_sent += 1;
                    }
                    Err(error) if requests.is_empty() => return Err(error),
                    Err(error) => {
                        tracing::info!(error = %error, "a token request failed; the other may still answer");
                    }
                },
                () = &mut hedge, if n_sent < 2 => {
                    tracing::info!(
                        hedge_delay_ms = self.hedge_delay.as_millis() as u64,
                        "the token request is late; sending a second beside it"
                    );
                    requests.push(self.request());
                    n_sent += 1;
                }
            }
        }
    }

    /// One token request, bounded by the token request timeout.
    async fn request(&self) -> Result<CachedToken, PlatformError> {
        let started = Instant::now();
        let builder = self
            .http
            .post(self.url.clone())
            .timeout(self.request_timeout)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .header(header::ACCEPT, "application/json")
            .form(&[("grant_type", "client_credentials")]);
        let answer = receive(builder).await?;
        let status = answer.status;
        if status.is_success() {
            let token: TokenResponse =
                serde_json::from_slice(&answer.body).map_err(|e| PlatformError::Malformed {
                    status: status.as_u16(),
                    detail: format!("token answer: {e}"),
                })?;
            if !token.token_type.eq_ignore_ascii_case("bearer") || token.access_token.is_empty() {
                return Err(PlatformError::Malformed {
                    status: status.as_u16(),
                    detail: "token answer: not a bearer token".to_owned(),
                });
            }
            tracing::info!(
                expires_in_seconds = token.expires_in,
                "got a platform access token"
            );
            return Ok(CachedToken {
                access_token: token.access_token,
                refresh_at: token_refresh_at(started, token.expires_in),
                fetched_ahead: false,
            });
        }
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED) {
            let error = serde_json::from_slice::<TokenError>(&answer.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {}", status.as_u16()));
            tracing::warn!(error = %error, "the platform refused balagh's client credentials");
            return Err(PlatformError::Unauthorized {
                detail: format!("token request refused: {error}"),
            });
        }
        match classify_status(&answer) {
            Some(error) => Err(error),
            None => Err(PlatformError::Rejected {
                status: status.as_u16(),
                problem: parse_problem(&answer.body),
            }),
        }
    }
}

/// The longest a token is used, whatever `expires_in` the platform answers: a day.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// When a token got at `started` that expires in `expires_in` seconds is refreshed: a fifth
/// of its lifetime early, at most a minute early. An absurd `expires_in` (found by fuzzing:
/// `u64::MAX` overflowed the clock) is read as [`MAX_TOKEN_LIFETIME`].
fn token_refresh_at(started: Instant, expires_in: u64) -> Instant {
    let lifetime = Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME);
    let margin = (lifetime / 5).min(Duration::from_secs(60));
    started
        .checked_add(lifetime.saturating_sub(margin))
        .unwrap_or(started)
}

/// Whether a failed token request is worth one more at once: the failures of one connection
/// or one server, not an answer that says no or asks for a pause.
fn worth_another_token_request(error: &PlatformError) -> bool {
    match error {
        PlatformError::Retryable { cause, .. } => match cause {
            RetryCause::Connect
            | RetryCause::Timeout
            | RetryCause::Transport
            | RetryCause::RequestTimeout
            | RetryCause::ServerError => true,
            RetryCause::RateLimited | RetryCause::Unavailable | RetryCause::KeyInUse => false,
        },
        PlatformError::Malformed { .. } => true,
        PlatformError::Conflict { .. }
        | PlatformError::Rejected { .. }
        | PlatformError::Unauthorized { .. }
        | PlatformError::Config(_) => false,
    }
}

fn token_url(base_url: &Url) -> Url {
    let mut url = base_url.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["oauth2", "token"]);
    }
    url
}

impl fmt::Debug for PlatformClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformClient")
            .field("base_url", &self.base_url.as_str())
            .field("entity", &self.config.entity)
            .finish_non_exhaustive()
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, PlatformError> {
    serde_json::to_vec(value).map_err(|e| PlatformError::Config(format!("cannot encode: {e}")))
}

/// Sends and reads the whole answer; a transport failure at either step is retryable.
async fn receive(builder: reqwest::RequestBuilder) -> Result<Answer, PlatformError> {
    let response = builder.send().await.map_err(transport_error)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(transport_error)?.to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn transport_error(error: reqwest::Error) -> PlatformError {
    let cause = if error.is_timeout() {
        RetryCause::Timeout
    } else if error.is_connect() {
        RetryCause::Connect
    } else {
        RetryCause::Transport
    };
    PlatformError::Retryable {
        cause,
        status: None,
        retry_after: None,
    }
}

/// The retryable statuses: 408, 429 and every 5xx.
fn classify_status(answer: &Answer) -> Option<PlatformError> {
    let status = answer.status;
    let cause = match status {
        StatusCode::REQUEST_TIMEOUT => RetryCause::RequestTimeout,
        StatusCode::TOO_MANY_REQUESTS => RetryCause::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => RetryCause::Unavailable,
        s if s.is_server_error() => RetryCause::ServerError,
        _ => return None,
    };
    Some(PlatformError::Retryable {
        cause,
        status: Some(status.as_u16()),
        retry_after: retry_after(answer),
    })
}

fn retry_after(answer: &Answer) -> Option<Duration> {
    answer
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
}

fn interpret<T: DeserializeOwned>(answer: Answer) -> Result<(T, HeaderMap), PlatformError> {
    let status = answer.status;
    if status.is_success() {
        return match serde_json::from_slice::<T>(&answer.body) {
            Ok(value) => Ok((value, answer.headers)),
            Err(e) => Err(PlatformError::Malformed {
                status: status.as_u16(),
                detail: format!("cannot parse the body: {e}"),
            }),
        };
    }
    if let Some(error) = classify_status(&answer) {
        return Err(error);
    }
    if is_key_in_use(&answer) {
        return Err(PlatformError::Retryable {
            cause: RetryCause::KeyInUse,
            status: Some(status.as_u16()),
            retry_after: retry_after(&answer),
        });
    }
    if status == StatusCode::PRECONDITION_FAILED {
        let problem = parse_problem(&answer.body);
        let current_version = problem
            .as_ref()
            .and_then(|p| p.current_version)
            .or_else(|| {
                answer
                    .headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .and_then(contract::parse_etag)
            });
        return Err(PlatformError::Conflict {
            current_version,
            problem,
        });
    }
    if status.is_client_error() {
        return Err(PlatformError::Rejected {
            status: status.as_u16(),
            problem: parse_problem(&answer.body),
        });
    }
    // 1xx after the head, 3xx: not something the contract has.
    Err(PlatformError::Malformed {
        status: status.as_u16(),
        detail: "an answer status the contract does not have".to_owned(),
    })
}

fn parse_problem(body: &[u8]) -> Option<Box<Problem>> {
    serde_json::from_slice::<Problem>(body).ok().map(Box::new)
}

/// `Retry-After` is either a number of seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means "now".
pub fn parse_retry_after(
    value: &HeaderValue,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_token_lifetime_gives_a_refresh_time_without_overflow() {
        let now = Instant::now();
        assert_eq!(token_refresh_at(now, 0), now);
        assert_eq!(token_refresh_at(now, 300), now + Duration::from_secs(240));
        assert_eq!(token_refresh_at(now, 3600), now + Duration::from_secs(3540));
        let longest = now + MAX_TOKEN_LIFETIME - Duration::from_secs(60);
        assert_eq!(token_refresh_at(now, u64::MAX), longest);
        assert_eq!(token_refresh_at(now, 10 * 365 * 24 * 3600), longest);
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(&v("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&v("Sun, 01 Mar 2026 08:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&v("Sun, 01 Mar 2026 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&v("soon"), now), None);
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Every status the sync worker must tell apart, including those the simulator never
    /// sends (408, 3xx).
    #[test]
    fn statuses_are_classified_for_the_sync_worker() {
        let retry = |status, headers: &[(&str, &str)]| match interpret::<serde_json::Value>(answer(
            status, headers, "",
        )) {
            Err(PlatformError::Retryable {
                cause, retry_after, ..
            }) => Some((cause, retry_after)),
            _ => None,
        };
        assert_eq!(retry(408, &[]), Some((RetryCause::RequestTimeout, None)));
        assert_eq!(
            retry(429, &[("retry-after", "3")]),
            Some((RetryCause::RateLimited, Some(Duration::from_secs(3))))
        );
        assert_eq!(retry(503, &[]), Some((RetryCause::Unavailable, None)));
        assert_eq!(retry(500, &[]), Some((RetryCause::ServerError, None)));
        assert_eq!(retry(599, &[]), Some((RetryCause::ServerError, None)));
        assert!(matches!(
            interpret::<serde_json::Value>(answer(412, &[("etag", "\"4\"")], "not json")),
            Err(PlatformError::Conflict {
                current_version: Some(4),
                ..
            })
        ));
        assert!(matches!(
            interpret::<serde_json::Value>(answer(404, &[], "")),
            Err(PlatformError::Rejected {
                status: 404,
                problem: None
            })
        ));
        assert!(matches!(
            interpret::<serde_json::Value>(answer(302, &[], "")),
            Err(PlatformError::Malformed { status: 302, .. })
        ));
        assert!(matches!(
            interpret::<Case>(answer(200, &[], "{\"case_id\": 1")),
            Err(PlatformError::Malformed { status: 200, .. })
        ));
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("outbox-42").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let config = PlatformClientConfig::new(
            "http://127.0.0.1:1",
            "muscat-municipality",
            "balagh",
            ClientSecret::new("hunter2"),
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn urls_are_built_from_segments() {
        let config = PlatformClientConfig::new(
            "http://127.0.0.1:9/api/",
            "muscat-municipality",
            "balagh",
            ClientSecret::new("s"),
        );
        let client = PlatformClient::new(config).unwrap();
        assert_eq!(
            client.entity_url(&["cases", "A/B"]).as_str(),
            "http://127.0.0.1:9/api/v1/entities/muscat-municipality/cases/A%2FB"
        );
        assert_eq!(
            client.token_endpoint.url.as_str(),
            "http://127.0.0.1:9/api/oauth2/token"
        );
    }
}
