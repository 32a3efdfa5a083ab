//! balagh's platform client against a platform that answers with fuzzed bytes, over real HTTP
//! on loopback: what `platform_responses` cannot reach because it is private to
//! `src/platform/client.rs` (`interpret`, `parse_problem`, `classify_status`, the token
//! request and its cache, the retry after a refused token).
//!
//! Input: four bytes, then up to four fields separated by NUL (which valid JSON never holds):
//!
//! ```text
//! [call] [token status] [API status] [flags] token body \0 API body \0 Retry-After \0 ETag
//! ```
//!
//! - `call % 3`: `get_case`, `changes`, `acknowledge_receipt` (a write: it reads the
//!   `Idempotent-Replayed` header too);
//! - the statuses index `STATUSES`; the token endpoint answers the token status and body, the
//!   API the API status, body and headers (`Retry-After` and `ETag` when their field is a valid
//!   header value and not empty);
//! - flags: bit 0 the API body is `application/problem+json`, bit 1 `Idempotent-Replayed:
//!   true`, bit 2 the API refuses the first token (401) and answers the second call.
//!
//! A fresh client per input (so every input fetches a token), the server started once. The
//! client's own timeouts are short and the server answers at once, so no input waits.
//!
//! Properties: no panic; a call succeeds only when both answers were 2xx; a version conflict
//! comes only from a 412.
//!
//! `BALAGH_FUZZ_WRITE_SEEDS=DIR` writes the seed inputs into DIR and exits before fuzzing
//! (`fuzz/README.md`).

#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use balagh::platform::contract::{PlatformTime, Receipt};
use balagh::platform::{
    ClientSecret, IdempotencyKey, PlatformClient, PlatformClientConfig, PlatformError,
};
use libfuzzer_sys::fuzz_target;

/// The statuses an answer can have (index modulo the length).
const STATUSES: &[u16] = &[
    200, 201, 204, 400, 401, 403, 404, 408, 409, 410, 412, 422, 429, 500, 502, 503, 504, 302, 418,
];

/// What the fake platform answers to the current input.
#[derive(Default)]
struct Script {
    token_status: u16,
    token_body: Vec<u8>,
    api_status: u16,
    api_body: Vec<u8>,
    problem_json: bool,
    replayed: bool,
    retry_after: Option<http::HeaderValue>,
    etag: Option<http::HeaderValue>,
    /// Answer 401 to the next API call (then the scripted answer).
    refuse_token_once: bool,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let script = Arc::new(Mutex::new(Script::default()));
        let address = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let address = listener.local_addr().expect("an address");
            let answers = script.clone();
            let app = axum::Router::new().fallback(move |uri: http::Uri| {
                let answers = answers.clone();
                async move { answer(&answers, &uri) }
            });
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .await
                    .expect("the fake platform serves");
            });
            address
        });
        Harness {
            runtime,
            address,
            script,
        }
    })
}

fn answer(script: &Mutex<Script>, uri: &http::Uri) -> Response {
    let mut script = script.lock().unwrap_or_else(|e| e.into_inner());
    let json = "application/json";
    if uri.path().ends_with("/oauth2/token") {
        return respond(script.token_status, json, &[], script.token_body.clone());
    }
    if script.refuse_token_once {
        script.refuse_token_once = false;
        return respond(401, json, &[], Vec::new());
    }
    let mut headers = Vec::new();
    if let Some(value) = &script.retry_after {
        headers.push((http::header::RETRY_AFTER, value.clone()));
    }
    if let Some(value) = &script.etag {
        headers.push((http::header::ETAG, value.clone()));
    }
    if script.replayed {
        headers.push((
            http::HeaderName::from_static("idempotent-replayed"),
            http::HeaderValue::from_static("true"),
        ));
    }
    let content_type = if script.problem_json {
        "application/problem+json"
    } else {
        json
    };
    respond(
        script.api_status,
        content_type,
        &headers,
        script.api_body.clone(),
    )
}

fn respond(
    status: u16,
    content_type: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body: Vec<u8>,
) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body)).expect("a valid response")
}

fn header(field: Option<&[u8]>) -> Option<http::HeaderValue> {
    field
        .filter(|f| !f.is_empty())
        .and_then(|f| http::HeaderValue::from_bytes(f).ok())
}

fn client(address: SocketAddr) -> PlatformClient {
    let mut config = PlatformClientConfig::new(
        format!("http://{address}"),
        "muscat-municipality",
        "balagh",
        ClientSecret::new("fuzz-secret"),
    );
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    config.token_request_timeout = Duration::from_secs(5);
    // Never hedge: the fake platform answers at once, and a hedge would only add a timer
    // (or, for an answer cut short, a second request and its wait).
    config.token_hedge_delay = Duration::from_secs(10);
    config.hedge_delay = None;
    // One token request per call sequence: the fake platform answers from the fuzz input in
    // order, and a standby fetch would take an answer meant for a call.
    config.standby_tokens = 0;
    PlatformClient::new(config).expect("a valid client configuration")
}

/// The seed inputs: a good token, then each call with a good answer and with a problem.
fn seeds() -> Vec<Vec<u8>> {
    let token =
        br#"{"access_token":"t-123","token_type":"Bearer","expires_in":3600,"scope":"cases"}"#;
    let case = br#"{"case_id":"C-2026-000042","case_type":"BLG","category":"MUN-ROAD-010","status":"ST20","subject":"Pothole","description":"A deep one","wilayat":"OM-MA-03","area":"Al Khuwair","location":{"latitude":23.588,"longitude":58.4059},"attachments":[],"source":"citizen","entity_reference":"MCT-2026-000001","citizen":{"citizen_ref":"CZ-1","name":"Citizen","phone":"+96890000001"},"details":[],"replies":[],"ratings":[],"reopen_requests":[],"version":3,"filed_at":"2026-03-15T04:00:00.000000Z","updated_at":"2026-03-15T05:00:00.000000Z"}"#;
    let page = format!(
        r#"{{"changes":[{{"change_id":"ch-1","cursor":"c1","kind":"case.filed","actor":"citizen","occurred_at":"2026-03-15T04:00:00Z","case_id":"C-2026-000042","case_version":1,"case":{}}}],"next_cursor":"c1","has_more":false}}"#,
        String::from_utf8_lossy(case)
    );
    let problem = br#"{"type":"urn:national-platform:problem:version-mismatch","title":"Version mismatch","status":412,"detail":"the case is at version 4","current_version":4}"#;
    let index = |status: u16| {
        u8::try_from(
            STATUSES
                .iter()
                .position(|s| *s == status)
                .expect("a listed status"),
        )
        .expect("small")
    };
    let input = |call: u8,
                 token_status: u16,
                 api_status: u16,
                 flags: u8,
                 api: &[u8],
                 retry: &str,
                 etag: &str| {
        let mut input = vec![call, index(token_status), index(api_status), flags];
        input.extend_from_slice(token);
        input.push(0);
        input.extend_from_slice(api);
        input.push(0);
        input.extend_from_slice(retry.as_bytes());
        input.push(0);
        input.extend_from_slice(etag.as_bytes());
        input
    };
    vec![
        input(0, 200, 200, 0, case, "", "\"3\""),
        input(1, 200, 200, 0, page.as_bytes(), "", ""),
        input(2, 200, 201, 2, case, "", "\"3\""),
        input(2, 200, 200, 4, case, "", ""),
        input(0, 200, 412, 1, problem, "", "\"4\""),
        input(
            1,
            200,
            429,
            1,
            br#"{"type":"about:blank","status":429,"retry_after_seconds":2}"#,
            "2",
            "",
        ),
        input(2, 200, 503, 0, b"", "Sun, 15 Mar 2026 04:00:05 GMT", ""),
        input(
            1,
            200,
            410,
            1,
            br#"{"type":"urn:national-platform:problem:cursor-expired","status":410}"#,
            "",
            "",
        ),
        input(0, 401, 200, 0, br#"{"error":"invalid_client"}"#, "", ""),
        input(0, 200, 200, 0, b"{\"case_id\": 1", "", ""),
    ]
}

fn write_seeds_if_asked() {
    let Some(dir) = std::env::var_os("BALAGH_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("the seed folder");
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("a seed file");
    }
    eprintln!("wrote {} seeds into {}", seeds.len(), dir.display());
    std::process::exit(0);
}

fuzz_target!(init: {
    write_seeds_if_asked();
    harness();
}, |data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let [call, token_status, api_status, flags] = *head;
    let mut fields = rest.splitn(4, |b| *b == 0);
    let token_body = fields.next().unwrap_or_default().to_vec();
    let api_body = fields.next().unwrap_or_default().to_vec();
    let retry_after = header(fields.next());
    let etag = header(fields.next());
    let token_status = STATUSES[usize::from(token_status) % STATUSES.len()];
    let api_status = STATUSES[usize::from(api_status) % STATUSES.len()];
    let h = harness();
    *h.script.lock().unwrap_or_else(|e| e.into_inner()) = Script {
        token_status,
        token_body,
        api_status,
        api_body,
        problem_json: flags & 1 != 0,
        replayed: flags & 2 != 0,
        retry_after,
        etag,
        refuse_token_once: flags & 4 != 0,
    };
    let client = client(h.address);
    let outcome: Result<(), PlatformError> = h.runtime.block_on(async {
        match call % 3 {
            0 => client.get_case("C-2026-000042").await.map(|_| ()),
            1 => client.changes(Some("c1"), 100).await.map(|_| ()),
            _ => {
                let key = IdempotencyKey::parse("outbox-1").expect("a valid key");
                let receipt = Receipt {
                    entity_reference: "MCT-2026-000001".into(),
                    received_at: PlatformTime::parse("2026-03-15T04:00:00Z").expect("a time"),
                };
                client
                    .acknowledge_receipt(&key, "C-2026-000042", &receipt)
                    .await
                    .map(|_| ())
            }
        }
    });
    match &outcome {
        Ok(()) => assert!(
            (200..300).contains(&token_status) && (200..300).contains(&api_status),
            "a call succeeded on token HTTP {token_status}, API HTTP {api_status}"
        ),
        Err(PlatformError::Conflict { .. }) => assert_eq!(
            api_status, 412,
            "a version conflict on API HTTP {api_status}: {outcome:?}"
        ),
        Err(_) => {}
    }
});
