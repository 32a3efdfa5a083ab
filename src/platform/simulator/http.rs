//! The simulator's HTTP side: the accept loop, the contract's routes, the fault layer and the
//! admin routes.
//!
//! Connections are served one by one with hyper (not `axum::serve`) so that a fault can do what
//! a broken network does: drop a connection without an answer. Each connection gets a kill
//! switch in its request extensions; pulling it makes the connection task drop the connection
//! with `SO_LINGER` 0, so the client sees a reset, not a polite close.
//!
//! Admin routes (`/admin/...`) are never faulted and need no token: the simulator listens on
//! loopback by default and is not the platform.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::citizens::{self, CitizenAction, CitizenActivity};
use super::faults::{FaultKind, FaultSettings, Injection, RequestClass};
use super::state::{Applied, IdempotencyRecord, Platform, TokenRecord};
use crate::platform::contract::{
    self, CaseUpdate, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, NewCase, NewReply, NewResolution,
    PROBLEM_JSON, Problem, ProblemType, Receipt, TokenError, TokenResponse,
};

/// Pulled to drop this request's connection without an answer.
#[derive(Clone)]
struct ConnectionKill(CancellationToken);

/// Set by the fault layer: the platform changes the case before the write is checked.
#[derive(Clone)]
struct InjectConflict;

/// Set by the fault layer: the feed page repeats this many changes from before the cursor.
#[derive(Clone)]
struct RepeatChanges(u64);

/// Accepts connections until `shutdown`, then lets open ones finish for a moment.
pub(super) async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %error, "platform-sim cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let kill = CancellationToken::new();
    let io = TokioIo::new(KillableStream {
        inner: stream,
        kill: kill.clone(),
    });
    let switch = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(switch.clone());
        let mut router = router.clone();
        async move {
            let request: Request = request.map(Body::new);
            tower::Service::call(&mut router, request).await
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // Dropping the connection drops the stream, which resets it (see KillableStream).
        _ = kill.cancelled() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.as_mut()).await;
        }
    }
}

/// A TCP stream that closes with a reset (`SO_LINGER` 0) when its kill switch was pulled.
struct KillableStream {
    inner: TcpStream,
    kill: CancellationToken,
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        if self.kill.is_cancelled() {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/oauth2/token", post(token))
        .route("/v1/entities/{entity}/cases", post(create_case))
        .route(
            "/v1/entities/{entity}/cases/{case_id}",
            get(get_case).patch(update_case),
        )
        .route(
            "/v1/entities/{entity}/cases/{case_id}/replies",
            post(add_reply),
        )
        .route(
            "/v1/entities/{entity}/cases/{case_id}/resolution",
            post(resolve_case),
        )
        .route(
            "/v1/entities/{entity}/cases/{case_id}/receipt",
            post(receive_case),
        )
        .route("/v1/entities/{entity}/changes", get(changes))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_faults,
        ));
    let admin = Router::new()
        .route("/admin/state", get(admin_state))
        .route("/admin/faults", get(admin_faults).post(admin_set_faults))
        .route("/admin/faults/force", post(admin_force_faults))
        .route("/admin/maintenance", post(admin_maintenance))
        .route("/admin/citizens/act", post(admin_citizens_act));
    api.merge(admin)
        .fallback(|| async {
            let mut p = Problem::new(ProblemType::CaseNotFound, "no such resource");
            p.problem_type = "about:blank".to_owned();
            p.title = "Not found".to_owned();
            problem_response(&p)
        })
        .with_state(shared)
}

fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
    if let Some(version) = problem.current_version
        && let Ok(etag) = HeaderValue::from_str(&contract::etag_of(version))
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if let Some(seconds) = problem.retry_after_seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if problem.status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="national-platform", error="invalid_token""#),
        );
    }
    response
}

fn json_response(status: u16, body: Vec<u8>, version: Option<i64>, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(version) = version
        && let Ok(etag) = HeaderValue::from_str(&contract::etag_of(version))
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Platform> {
        // A panic while holding the lock leaves the state as consistent as the last
        // completed operation; the simulator keeps serving rather than poisoning every call.
        self.platform
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> contract::PlatformTime {
        contract::PlatformTime::new(self.clock.now())
    }

    /// The client id of a valid bearer token allowed to act for `entity`.
    fn authenticate(&self, headers: &HeaderMap, entity: &str) -> Result<String, Box<Problem>> {
        let token = bearer_token(headers).ok_or_else(|| {
            Problem::new(
                ProblemType::Unauthorized,
                "send Authorization: Bearer <token>",
            )
        })?;
        let now = self.clock.now().as_micros();
        let platform = self.lock();
        let record = platform
            .tokens
            .get(token)
            .filter(|t| !t.revoked && now < t.expires_at_micros)
            .ok_or_else(|| {
                Problem::new(
                    ProblemType::Unauthorized,
                    "the token is unknown, expired or revoked",
                )
            })?;
        if entity != platform.entity {
            return Err(Box::new(Problem::new(
                ProblemType::Forbidden,
                "this client may not act for that entity",
            )));
        }
        Ok(record.client_id.clone())
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The fault layer: decides per request, then answers in place of the route, delays it,
/// breaks its connection, or lets it through marked.
async fn inject_faults(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let class = classify(&request);
    let route = format!(
        "{} {}",
        request.method(),
        route_template(request.uri().path())
    );
    let now = shared.clock.now().as_micros();
    let injection = shared.lock().faults.decide(shared.seed, class, &route, now);
    let Some(injection) = injection else {
        return next.run(request).await;
    };
    tracing::debug!(fault = %injection.kind(), route = %route, "platform-sim injects a fault");
    let kill = request.extensions().get::<ConnectionKill>().cloned();
    match injection {
        Injection::ServerError { status } => match status {
            502 => (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
            504 => StatusCode::GATEWAY_TIMEOUT.into_response(),
            _ => problem_response(&Problem::new(
                ProblemType::InternalError,
                "the platform failed (simulated)",
            )),
        },
        Injection::RateLimited {
            retry_after_seconds,
        } => {
            let mut p = Problem::new(ProblemType::RateLimited, "too many requests (simulated)");
            p.retry_after_seconds = Some(retry_after_seconds);
            problem_response(&p)
        }
        Injection::Maintenance {
            retry_after_seconds,
        } => {
            let mut p = Problem::new(
                ProblemType::Unavailable,
                "planned maintenance (simulated); try again after Retry-After",
            );
            p.retry_after_seconds = Some(retry_after_seconds);
            problem_response(&p)
        }
        Injection::Slow { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(request).await
        }
        Injection::Timeout { hold_millis } => {
            tokio::time::sleep(Duration::from_millis(hold_millis)).await;
            drop_connection(kill).await
        }
        Injection::Reset => drop_connection(kill).await,
        Injection::LostAnswer => {
            // The write is applied (and its idempotency record kept); only the answer is lost.
            let _answer = next.run(request).await;
            drop_connection(kill).await
        }
        Injection::TokenExpired => {
            if let Some(token) = bearer_token(request.headers())
                && let Some(record) = shared.lock().tokens.get_mut(token)
            {
                record.revoked = true;
            }
            problem_response(&Problem::new(
                ProblemType::Unauthorized,
                "the token has expired",
            ))
        }
        Injection::Conflict => {
            request.extensions_mut().insert(InjectConflict);
            next.run(request).await
        }
        Injection::Malformed => {
            let answer = next.run(request).await;
            let (mut parts, body) = answer.into_parts();
            let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
                .await
                .unwrap_or_default();
            let cut = if bytes.len() > 1 {
                bytes.slice(..bytes.len() / 2)
            } else {
                Bytes::from_static(b"{")
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(cut))
        }
        Injection::DuplicateChanges { n_repeated } => {
            request.extensions_mut().insert(RepeatChanges(n_repeated));
            next.run(request).await
        }
    }
}

/// Pulls the kill switch and never answers; the connection task drops the connection.
async fn drop_connection(kill: Option<ConnectionKill>) -> Response {
    match kill {
        Some(ConnectionKill(kill)) => {
            kill.cancel();
            std::future::pending::<Response>().await
        }
        // Not served by our accept loop (cannot happen): answer as a dead gateway would.
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn classify(request: &Request) -> RequestClass {
    let path = request.uri().path();
    if path == "/oauth2/token" {
        RequestClass::Token
    } else if request.method() == Method::GET {
        if path.ends_with("/changes") {
            RequestClass::Changes
        } else {
            RequestClass::Read
        }
    } else {
        RequestClass::Write {
            if_match: request.headers().contains_key(header::IF_MATCH),
        }
    }
}

/// The route without ids, for the fault log: `/v1/entities/{entity}/cases/{case_id}/receipt`.
fn route_template(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| match (i, segments.get(i.wrapping_sub(1))) {
            (_, Some(&"entities")) => "{entity}",
            (_, Some(&"cases")) => "{case_id}",
            _ => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let token_error = |status: StatusCode, error: &str, description: &str| {
        let body = TokenError {
            error: error.to_owned(),
            error_description: Some(description.to_owned()),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="national-platform""#),
            );
        }
        response
    };
    let form: HashMap<String, String> = match serde_urlencoded_form(&body) {
        Some(form) => form,
        None => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let credentials = basic_credentials(&headers).or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    let valid = credentials
        .as_ref()
        .is_some_and(|(id, secret)| *id == shared.client_id && *secret == shared.client_secret);
    if !valid {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let now = shared.clock.now().as_micros();
    let ttl = shared.token_ttl.as_secs().max(1);
    let mut platform = shared.lock();
    let n = platform.n_tokens_issued;
    platform.n_tokens_issued += 1;
    let access_token = format!(
        "sim-{:016x}{:016x}",
        super::faults::mix(shared.seed, n, 0x70CE),
        super::faults::mix(shared.seed, n, 0x70CF)
    );
    platform.tokens.insert(
        access_token.clone(),
        TokenRecord {
            client_id: shared.client_id.clone(),
            expires_at_micros: now.saturating_add(i64::try_from(ttl).unwrap_or(3600) * 1_000_000),
            revoked: false,
        },
    );
    drop(platform);
    let body = TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: ttl,
        scope: Some("cases".to_owned()),
    };
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Parses a form body without pulling in another crate: `a=b&c=d`, `+` and `%XX` decoded.
fn serde_urlencoded_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut form = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        form.insert(percent_decode(key)?, percent_decode(value)?);
    }
    Some(form)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id)?, percent_decode(secret)?))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Problem>> {
    serde_json::from_slice(body).map_err(|e| {
        let mut p = Problem::new(
            ProblemType::InvalidRequest,
            "the body is not valid JSON for this request",
        );
        p.errors.push(contract::ProblemField {
            field: String::new(),
            detail: format!("{e}"),
        });
        Box::new(p)
    })
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Box<Problem>> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(contract::parse_etag)
            .map(Some)
            .ok_or_else(|| {
                Box::new(Problem::new(
                    ProblemType::InvalidRequest,
                    "If-Match must be an ETag this platform issued, like \"7\"",
                ))
            }),
    }
}

/// Everything a write shares: authentication, the idempotency key, replay or 422, then the
/// operation, and the stored answer, all under one lock.
#[allow(clippy::too_many_arguments)]
fn write(
    shared: &Shared,
    entity: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    conflict_on: Option<&str>,
    operation: impl FnOnce(&mut Platform, contract::PlatformTime) -> Result<Applied, Box<Problem>>,
) -> Response {
    let client_id = match shared.authenticate(headers, entity) {
        Ok(client_id) => client_id,
        Err(p) => return problem_response(&p),
    };
    let key = match headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()) {
        Some(key)
            if !key.is_empty()
                && key.len() <= contract::MAX_IDEMPOTENCY_KEY_BYTES
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            key.to_owned()
        }
        _ => {
            return problem_response(&Problem::new(
                ProblemType::IdempotencyKeyMissing,
                "every write needs an Idempotency-Key of 1 to 255 printable characters",
            ));
        }
    };
    let fingerprint = {
        let mut hash = Sha256::new();
        hash.update(method.as_str().as_bytes());
        hash.update([0]);
        hash.update(uri.path().as_bytes());
        hash.update([0]);
        hash.update(canonical_json(body));
        hash.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let now = shared.now();
    let mut platform = shared.lock();
    if let Some(first) = platform.idempotency_record(&client_id, &key) {
        if first.fingerprint == fingerprint {
            let mut response =
                json_response(first.status, first.body.clone(), Some(first.version), true);
            set_location(&mut response, uri, &first.case_id);
            return response;
        }
        return problem_response(&Problem::new(
            ProblemType::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        ));
    }
    if let Some(case_id) = conflict_on {
        platform.platform_touches(case_id, now);
    }
    match operation(&mut platform, now) {
        Ok(applied) => {
            let body = serde_json::to_vec(&applied.case).unwrap_or_default();
            tracing::debug!(
                case_id = %applied.case.case_id,
                version = applied.case.version,
                status = %applied.case.status,
                "platform-sim applied a write"
            );
            platform.store_idempotency(
                &client_id,
                &key,
                IdempotencyRecord {
                    fingerprint,
                    status: applied.status,
                    body: body.clone(),
                    version: applied.case.version,
                    case_id: applied.case.case_id.clone(),
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                },
            );
            let mut response =
                json_response(applied.status, body, Some(applied.case.version), false);
            set_location(&mut response, uri, &applied.case.case_id);
            response
        }
        Err(p) => problem_response(&p),
    }
}

/// The body as compared for idempotency: parsed and written back with object members sorted,
/// so whitespace and member order do not make a different request. A body that is not JSON
/// is compared byte for byte.
fn canonical_json(body: &[u8]) -> Vec<u8> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let members: std::collections::BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(members.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => serde_json::to_vec(&sorted(value)).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
}

/// A 201 names the new case in `Location`.
fn set_location(response: &mut Response, uri: &Uri, case_id: &str) {
    if response.status() == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("{}/{case_id}", uri.path()))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
}

async fn create_case(
    State(shared): State<Arc<Shared>>,
    Path(entity): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_body::<NewCase>(&body);
    write(
        &shared,
        &entity,
        &method,
        &uri,
        &headers,
        &body,
        None,
        |p, now| p.create_case(parsed?, now),
    )
}

async fn get_case(
    State(shared): State<Arc<Shared>>,
    Path((entity, case_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = shared.authenticate(&headers, &entity) {
        return problem_response(&p);
    }
    let platform = shared.lock();
    match platform.case(&case_id) {
        Ok(case) => json_response(
            200,
            serde_json::to_vec(case).unwrap_or_default(),
            Some(case.version),
            false,
        ),
        Err(p) => problem_response(&p),
    }
}

async fn update_case(
    State(shared): State<Arc<Shared>>,
    Path((entity, case_id)): Path<(String, String)>,
    conflict: Option<axum::Extension<InjectConflict>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_body::<CaseUpdate>(&body);
    let version = if_match(&headers);
    let conflict_on = conflict.map(|_| case_id.as_str());
    write(
        &shared,
        &entity,
        &method,
        &uri,
        &headers,
        &body,
        conflict_on,
        |p, now| p.update_case(&case_id, version?, parsed?, now),
    )
}

async fn add_reply(
    State(shared): State<Arc<Shared>>,
    Path((entity, case_id)): Path<(String, String)>,
    conflict: Option<axum::Extension<InjectConflict>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_body::<NewReply>(&body);
    let version = if_match(&headers);
    let conflict_on = conflict.map(|_| case_id.as_str());
    write(
        &shared,
        &entity,
        &method,
        &uri,
        &headers,
        &body,
        conflict_on,
        |p, now| p.add_reply(&case_id, version?, parsed?, now),
    )
}

async fn resolve_case(
    State(shared): State<Arc<Shared>>,
    Path((entity, case_id)): Path<(String, String)>,
    conflict: Option<axum::Extension<InjectConflict>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_body::<NewResolution>(&body);
    let version = if_match(&headers);
    let conflict_on = conflict.map(|_| case_id.as_str());
    write(
        &shared,
        &entity,
        &method,
        &uri,
        &headers,
        &body,
        conflict_on,
        |p, now| p.resolve(&case_id, version?, parsed?, now),
    )
}

async fn receive_case(
    State(shared): State<Arc<Shared>>,
    Path((entity, case_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_body::<Receipt>(&body);
    write(
        &shared,
        &entity,
        &method,
        &uri,
        &headers,
        &body,
        None,
        |p, now| p.receive(&case_id, parsed?, now),
    )
}

async fn changes(
    State(shared): State<Arc<Shared>>,
    Path(entity): Path<String>,
    repeat: Option<axum::Extension<RepeatChanges>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = shared.authenticate(&headers, &entity) {
        return problem_response(&p);
    }
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => contract::DEFAULT_CHANGES_LIMIT,
        Some(Ok(limit)) if (1..=contract::MAX_CHANGES_LIMIT).contains(&limit) => limit,
        Some(_) => {
            let mut p = Problem::new(ProblemType::InvalidRequest, "limit must be from 1 to 1000");
            p.errors.push(contract::ProblemField {
                field: "limit".to_owned(),
                detail: "must be from 1 to 1000".to_owned(),
            });
            return problem_response(&p);
        }
    };
    let n_repeated = repeat.map(|r| r.0.0).unwrap_or(0);
    let platform = shared.lock();
    match platform.changes_page(query.get("after").map(String::as_str), limit, n_repeated) {
        Ok(page) => json_response(
            200,
            serde_json::to_vec(&page).unwrap_or_default(),
            None,
            false,
        ),
        Err(p) => problem_response(&p),
    }
}

async fn admin_state(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.state()).into_response()
}

async fn admin_faults(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.state().faults).into_response()
}

async fn admin_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let settings = match parse_body::<FaultSettings>(&body) {
        Ok(settings) => settings,
        Err(p) => return problem_response(&p),
    };
    match shared.set_faults(settings) {
        Ok(()) => axum::Json(shared.state().faults).into_response(),
        Err(message) => problem_response(&Problem::new(ProblemType::InvalidRequest, message)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    /// For the next API requests each applies to.
    #[serde(default)]
    kinds: Vec<FaultKind>,
    /// For the next token requests, in order.
    #[serde(default)]
    token_kinds: Vec<FaultKind>,
}

async fn admin_force_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let force = match parse_body::<ForceRequest>(&body) {
        Ok(force) => force,
        Err(p) => return problem_response(&p),
    };
    // The token kinds are checked first, so a refused request queues nothing.
    if let Err(message) = shared.force_token_faults(&force.token_kinds) {
        return problem_response(&Problem::new(ProblemType::InvalidRequest, message));
    }
    shared.force_faults(&force.kinds);
    axum::Json(shared.state().faults).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRequest {
    /// 0 ends the current window.
    seconds: u64,
}

async fn admin_maintenance(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<MaintenanceRequest>(&body) {
        Ok(request) => {
            shared.set_maintenance(request.seconds);
            axum::Json(shared.state().faults).into_response()
        }
        Err(p) => problem_response(&p),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActRequest {
    #[serde(default)]
    action: Option<CitizenAction>,
    #[serde(default)]
    case_id: Option<String>,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn admin_citizens_act(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match parse_body::<ActRequest>(&body) {
        Ok(request) => request,
        Err(p) => return problem_response(&p),
    };
    let mut done: Vec<CitizenActivity> = Vec::new();
    for _ in 0..request.count.min(10_000) {
        match shared.citizens_act(request.action, request.case_id.as_deref()) {
            Ok(activity) => done.push(activity),
            Err(p) => return problem_response(&p),
        }
    }
    axum::Json(done).into_response()
}

impl Shared {
    pub(super) fn citizens_act(
        &self,
        action: Option<CitizenAction>,
        case_id: Option<&str>,
    ) -> Result<CitizenActivity, Box<Problem>> {
        let now = self.now();
        let mut platform = self.lock();
        citizens::act(&mut platform, self.seed, action, case_id, now)
    }

    pub(super) fn state(&self) -> super::state::SimState {
        self.lock().snapshot(self.seed)
    }

    pub(super) fn set_faults(&self, settings: FaultSettings) -> Result<(), String> {
        settings.validate()?;
        self.lock().faults.settings = settings;
        Ok(())
    }

    pub(super) fn force_faults(&self, kinds: &[FaultKind]) {
        self.lock().faults.forced.extend(kinds.iter().copied());
    }

    pub(super) fn force_token_faults(&self, kinds: &[FaultKind]) -> Result<(), String> {
        self.lock().faults.force_token(kinds)
    }

    pub(super) fn set_maintenance(&self, seconds: u64) {
        let now = self.clock.now().as_micros();
        self.lock().faults.set_maintenance(seconds, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_logged_without_ids() {
        assert_eq!(
            route_template("/v1/entities/muscat/cases/CASE-1/receipt"),
            "/v1/entities/{entity}/cases/{case_id}/receipt"
        );
        assert_eq!(route_template("/oauth2/token"), "/oauth2/token");
    }

    #[test]
    fn idempotency_compares_json_not_bytes() {
        assert_eq!(
            canonical_json(br#"{"b": 1, "a": [ {"y":2,"x":1} ]}"#),
            canonical_json(br#"{"a":[{"x":1,"y":2}],"b":1}"#)
        );
        assert_ne!(canonical_json(br#"{"a":1}"#), canonical_json(br#"{"a":2}"#));
    }

    #[test]
    fn form_bodies_decode() {
        let form =
            serde_urlencoded_form(b"grant_type=client_credentials&client_id=a%2Bb&x=1+2").unwrap();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], "a+b");
        assert_eq!(form["x"], "1 2");
        assert!(serde_urlencoded_form(b"a=%zz").is_none());
    }
}
