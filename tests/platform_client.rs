//! The platform client against the platform simulator, over real HTTP on loopback: every
//! endpoint's happy path, then one test per fault kind proving the client classifies it the
//! way the sync worker needs, and that the same seed gives the same faults.
//!
//! Every simulator here is started in-process on port 0 with the fault-free test config, and
//! faults are queued by kind (`force`) so each test sees exactly the fault it is about. Time
//! bounds are short (client timeouts of a few hundred milliseconds where a timeout is the
//! point), so the whole file runs in a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use balagh::domain::{Clock, ManualClock, SystemClock, Timestamp};
use balagh::platform::contract::{
    CaseUpdate, ChangeKind, NewCase, NewReply, NewResolution, PlatformTime, ProblemType, Receipt,
};
use balagh::platform::simulator::{
    CitizenAction, FaultKind, FaultSettings, SimState, Simulator, SimulatorConfig, SimulatorHandle,
    TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use balagh::platform::{
    ClientSecret, IdempotencyKey, PlatformClient, PlatformClientConfig, PlatformError, RetryCause,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Harness {
    sim: SimulatorHandle,
    client: PlatformClient,
    http: reqwest::Client,
    _stop: StopOnDrop,
}

/// Stops the simulator when a test ends, passed or failed.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn start(config: SimulatorConfig) -> Harness {
    start_with_timeout(config, Duration::from_secs(5)).await
}

async fn start_with_timeout(config: SimulatorConfig, request_timeout: Duration) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = CancellationToken::new();
    let entity = config.entity.clone();
    let sim = Simulator::start(config, listener, shutdown.clone()).expect("simulator starts");
    let client = client_for(
        &sim.base_url(),
        &entity,
        TEST_CLIENT_SECRET,
        request_timeout,
    );
    Harness {
        sim,
        client,
        http: reqwest::Client::new(),
        _stop: StopOnDrop(shutdown),
    }
}

fn client_for(base_url: &str, entity: &str, secret: &str, timeout: Duration) -> PlatformClient {
    let mut config =
        PlatformClientConfig::new(base_url, entity, TEST_CLIENT_ID, ClientSecret::new(secret));
    config.request_timeout = timeout;
    config.connect_timeout = Duration::from_secs(2);
    // One token at a time: a standby's background fetch would take token faults forced for
    // the call under test, and change the token counts. Standbys have their own tests.
    config.standby_tokens = 0;
    PlatformClient::new(config).expect("client")
}

impl Harness {
    async fn admin_get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.sim.base_url()))
            .send()
            .await
            .expect("admin call")
            .json()
            .await
            .expect("admin json")
    }

    async fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("admin json")
    }

    fn state(&self) -> SimState {
        self.sim.state()
    }

    /// Makes sure the client holds a token, so a forced fault hits the call under test.
    async fn warm_up(&self) {
        self.client.changes(None, 1).await.expect("warm-up call");
    }
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).expect("key")
}

fn now() -> PlatformTime {
    PlatformTime::new(SystemClock.now())
}

fn complaint(reference: &str) -> NewCase {
    NewCase {
        case_type: "SHK".into(),
        category: "MUN-HLTH-010".into(),
        status: "ST20".into(),
        subject: "لم تجمع النفايات".into(),
        description: "الحاوية ممتلئة منذ ثلاثة أيام".into(),
        wilayat: Some("OM-MA-04".into()),
        area: None,
        location: None,
        entity_reference: reference.into(),
        // Fixed, as the sync worker's would be (the ticket's creation time): a retry must
        // send the very same body under the same key.
        filed_at: PlatformTime::new(Timestamp::from_micros(1_780_000_000_000_000)),
    }
}

fn in_progress() -> CaseUpdate {
    CaseUpdate {
        status: Some("ST30".into()),
        ..CaseUpdate::default()
    }
}

fn retry_cause(result: &PlatformError) -> Option<(RetryCause, Option<u16>, Option<Duration>)> {
    match result {
        PlatformError::Retryable {
            cause,
            status,
            retry_after,
        } => Some((*cause, *status, *retry_after)),
        _ => None,
    }
}

#[tokio::test]
async fn every_endpoint_answers_as_the_contract_says() {
    let h = start(SimulatorConfig::for_tests()).await;
    let c = &h.client;

    let created = c
        .create_case(&key("create-1"), &complaint("MCT-2026-000001"))
        .await
        .expect("create");
    assert!(!created.replayed);
    let case = created.case;
    assert_eq!((case.version, case.status.as_str()), (1, "ST20"));
    assert_eq!(case.entity_reference.as_deref(), Some("MCT-2026-000001"));

    let read = c.get_case(&case.case_id).await.expect("get");
    assert_eq!(read, case);

    let updated = c
        .update_case(&key("update-1"), &case.case_id, 1, &in_progress())
        .await
        .expect("update");
    assert_eq!(
        (updated.case.version, updated.case.status.as_str()),
        (2, "ST30")
    );

    let reply = NewReply {
        text: "تم تحويل البلاغ إلى فريق النظافة".into(),
        replied_at: now(),
    };
    let replied = c
        .add_reply(&key("reply-1"), &case.case_id, None, &reply)
        .await
        .expect("reply");
    assert_eq!(replied.case.version, 3);
    assert_eq!(replied.case.replies.len(), 1);

    let resolution = NewResolution {
        outcome: "OC10".into(),
        text: "تم جمع النفايات".into(),
        resolved_at: now(),
    };
    let resolved = c
        .resolve_case(&key("resolve-1"), &case.case_id, 3, &resolution)
        .await
        .expect("resolve");
    assert_eq!(
        (resolved.case.version, resolved.case.status.as_str()),
        (4, "ST40")
    );

    // A citizen files on the platform (through the admin API); the municipality receives it.
    let filed = h
        .admin_post(
            "/admin/citizens/act",
            serde_json::json!({"action": "file", "count": 1}),
        )
        .await;
    let citizen_case_id = filed[0]["case_id"].as_str().expect("case id").to_owned();
    let citizen_case = c
        .get_case(&citizen_case_id)
        .await
        .expect("get citizen case");
    assert_eq!(citizen_case.status, "ST10");
    let receipt = Receipt {
        entity_reference: "MCT-2026-000002".into(),
        received_at: now(),
    };
    let received = c
        .acknowledge_receipt(&key("receipt-1"), &citizen_case_id, &receipt)
        .await
        .expect("receipt");
    assert_eq!(received.case.status, "ST20");
    assert_eq!(
        received.case.entity_reference.as_deref(),
        Some("MCT-2026-000002")
    );

    let page = c.changes(None, 100).await.expect("changes");
    let kinds: Vec<_> = page.changes.iter().map(|ch| ch.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::ReplyAdded,
            ChangeKind::Resolved,
            ChangeKind::Filed,
            ChangeKind::Received,
        ]
    );
    assert!(!page.has_more);

    // The admin state holds both cases with their whole history.
    let state = h.admin_get("/admin/state").await;
    assert_eq!(state["cases"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        state["cases"][0]["history"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(state["idempotency_keys"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_answer_and_a_different_body_is_refused() {
    let h = start(SimulatorConfig::for_tests()).await;
    let first = h
        .client
        .create_case(&key("k-1"), &complaint("MCT-2026-000010"))
        .await
        .expect("create");
    let again = h
        .client
        .create_case(&key("k-1"), &complaint("MCT-2026-000010"))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.case, first.case);

    let reused = h
        .client
        .create_case(&key("k-1"), &complaint("MCT-2026-000011"))
        .await
        .expect_err("a different body with the same key");
    assert!(matches!(
        reused,
        PlatformError::Rejected { status: 422, .. }
    ));
    assert_eq!(
        reused.problem_type(),
        Some(ProblemType::IdempotencyKeyReused)
    );

    // The same reference under a new key is a duplicate: 409 names the existing case.
    let duplicate = h
        .client
        .create_case(&key("k-2"), &complaint("MCT-2026-000010"))
        .await
        .expect_err("a second case with the same reference");
    let PlatformError::Rejected {
        status: 409,
        problem: Some(problem),
    } = &duplicate
    else {
        panic!("expected 409, got {duplicate:?}");
    };
    assert_eq!(
        problem.case_id.as_deref(),
        Some(first.case.case_id.as_str())
    );
    assert_eq!(h.state().cases.len(), 1);
}

#[tokio::test]
async fn citizens_file_add_details_rate_and_reopen_and_it_all_reaches_the_feed() {
    let h = start(SimulatorConfig::for_tests()).await;
    let c = &h.client;
    let filed = h
        .sim
        .citizen_act(Some(CitizenAction::File), None)
        .expect("file");
    let id = filed.case_id.as_str();
    h.sim
        .citizen_act(Some(CitizenAction::Detail), Some(id))
        .expect("detail");
    // Rating needs a resolution first.
    assert!(
        h.sim
            .citizen_act(Some(CitizenAction::Rate), Some(id))
            .is_err()
    );
    let case = c.get_case(id).await.expect("get");
    let resolution = NewResolution {
        outcome: "OC10".into(),
        text: "done".into(),
        resolved_at: now(),
    };
    c.resolve_case(&key("r"), id, case.version, &resolution)
        .await
        .expect("resolve");
    h.sim
        .citizen_act(Some(CitizenAction::Rate), Some(id))
        .expect("rate");
    let reopened = h
        .sim
        .citizen_act(Some(CitizenAction::Reopen), Some(id))
        .expect("reopen");

    let page = c.changes(None, 10).await.expect("changes");
    let kinds: Vec<_> = page.changes.iter().map(|ch| ch.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Filed,
            ChangeKind::DetailAdded,
            ChangeKind::Resolved,
            ChangeKind::Rated,
            ChangeKind::ReopenRequested,
        ]
    );
    let last = page.changes.last().expect("a change");
    assert_eq!(last.case.status, "ST80");
    assert_eq!(last.case_version, reopened.case_version);
    assert!(last.reopen_request.is_some());
    let rated = &page.changes[3];
    let score = rated.rating.as_ref().map(|r| r.score).unwrap_or(0);
    assert!((1..=5).contains(&score));
    // Each change carries the case as it was right after it.
    let versions: Vec<_> = page.changes.iter().map(|ch| ch.case.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn the_feed_resumes_from_a_cursor_and_says_plainly_when_it_expired() {
    let mut config = SimulatorConfig::for_tests();
    config.feed_retention = Some(5);
    let h = start(config).await;
    for i in 0..3 {
        h.sim
            .citizen_act(Some(CitizenAction::File), None)
            .expect("file");
        let _ = i;
    }
    let first = h.client.changes(None, 2).await.expect("page 1");
    assert_eq!(first.changes.len(), 2);
    assert!(first.has_more);
    let cursor = first.next_cursor.clone().expect("cursor");
    let second = h.client.changes(Some(&cursor), 2).await.expect("page 2");
    assert_eq!(second.changes.len(), 1);
    assert!(!second.has_more);
    assert_ne!(second.changes[0].change_id, first.changes[1].change_id);
    // Nothing new: the same cursor comes back, so a poller never loses its place.
    let idle = h
        .client
        .changes(second.next_cursor.as_deref(), 2)
        .await
        .expect("idle page");
    assert!(idle.changes.is_empty());
    assert_eq!(idle.next_cursor, second.next_cursor);

    // Ten more changes push the first cursor out of the five the feed keeps.
    for _ in 0..10 {
        h.sim
            .citizen_act(Some(CitizenAction::File), None)
            .expect("file");
    }
    let expired = h
        .client
        .changes(Some(&cursor), 2)
        .await
        .expect_err("expired cursor");
    assert!(expired.is_cursor_expired(), "{expired:?}");
    assert!(matches!(
        expired,
        PlatformError::Rejected { status: 410, .. }
    ));
    let garbage = h
        .client
        .changes(Some("not-a-cursor"), 2)
        .await
        .expect_err("invalid cursor");
    assert_eq!(garbage.problem_type(), Some(ProblemType::InvalidCursor));
}

#[tokio::test]
async fn other_client_errors_are_rejected_and_bad_credentials_unauthorized() {
    let h = start(SimulatorConfig::for_tests()).await;
    let missing = h.client.get_case("CASE-99999999").await.expect_err("404");
    assert!(matches!(
        missing,
        PlatformError::Rejected { status: 404, .. }
    ));
    assert_eq!(missing.problem_type(), Some(ProblemType::CaseNotFound));

    let mut invalid = complaint("MCT-2026-000020");
    invalid.category = "NOT-A-CODE".into();
    let refused = h
        .client
        .create_case(&key("bad"), &invalid)
        .await
        .expect_err("400");
    let PlatformError::Rejected {
        status: 400,
        problem: Some(problem),
    } = &refused
    else {
        panic!("expected 400, got {refused:?}");
    };
    assert_eq!(problem.errors[0].field, "category");

    // An update without If-Match cannot be made through the typed client; 428 is tested in
    // the simulator's unit tests. A stale version is a conflict, not a rejection:
    let case = h
        .client
        .create_case(&key("c"), &complaint("MCT-2026-000021"))
        .await
        .expect("create")
        .case;
    let stale = h
        .client
        .update_case(&key("u"), &case.case_id, 9, &in_progress())
        .await
        .expect_err("412");
    assert!(matches!(
        stale,
        PlatformError::Conflict {
            current_version: Some(1),
            ..
        }
    ));

    let wrong = client_for(
        &h.sim.base_url(),
        "muscat-municipality",
        "wrong-secret",
        Duration::from_secs(5),
    );
    let unauthorized = wrong.changes(None, 1).await.expect_err("bad secret");
    assert!(matches!(unauthorized, PlatformError::Unauthorized { .. }));

    let other_entity = client_for(
        &h.sim.base_url(),
        "another-entity",
        TEST_CLIENT_SECRET,
        Duration::from_secs(5),
    );
    let forbidden = other_entity.changes(None, 1).await.expect_err("403");
    assert!(matches!(
        forbidden,
        PlatformError::Rejected { status: 403, .. }
    ));
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = client_for(
        &format!("http://{addr}"),
        "muscat-municipality",
        TEST_CLIENT_SECRET,
        Duration::from_secs(2),
    );
    let error = client.changes(None, 1).await.expect_err("refused");
    assert_eq!(retry_cause(&error).map(|r| r.0), Some(RetryCause::Connect));
}

#[tokio::test]
async fn fault_server_errors_are_retryable() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::ServerError; 6]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let error = h.client.changes(None, 1).await.expect_err("5xx");
        let (cause, status, _) = retry_cause(&error).expect("retryable");
        assert_eq!(cause, RetryCause::ServerError, "{error:?}");
        statuses.push(status.expect("a status"));
    }
    // 500 with a problem, 502 as an HTML gateway page, 504 without a body: all the same here.
    assert!(
        statuses.iter().all(|s| [500, 502, 504].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(h.state().faults.counts[&FaultKind::ServerError], 6);
    h.client.changes(None, 1).await.expect("served again");
}

#[tokio::test]
async fn fault_rate_limited_is_retryable_after_the_retry_after() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    let settings = FaultSettings {
        retry_after_seconds: 7,
        ..FaultSettings::default()
    };
    h.admin_post(
        "/admin/faults",
        serde_json::to_value(&settings).expect("json"),
    )
    .await;
    h.admin_post(
        "/admin/faults/force",
        serde_json::json!({"kinds": ["rate_limited"]}),
    )
    .await;
    let error = h
        .client
        .create_case(&key("rl"), &complaint("MCT-2026-000030"))
        .await
        .expect_err("429");
    assert_eq!(
        retry_cause(&error),
        Some((
            RetryCause::RateLimited,
            Some(429),
            Some(Duration::from_secs(7))
        ))
    );
    // Refused before it was applied: nothing exists, and the retry creates it once.
    assert!(h.state().cases.is_empty());
    h.client
        .create_case(&key("rl"), &complaint("MCT-2026-000030"))
        .await
        .expect("retry");
    assert_eq!(h.state().cases.len(), 1);
}

#[tokio::test]
async fn fault_maintenance_is_503_with_retry_after_until_the_window_ends() {
    let mut config = SimulatorConfig::for_tests();
    // A clock that stands still: the window lasts until the test ends it.
    config.clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_780_000_000_000_000,
    )));
    config.faults.maintenance_seconds = 120;
    let h = start(config).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::Maintenance]);
    let error = h.client.changes(None, 1).await.expect_err("503");
    assert_eq!(
        retry_cause(&error),
        Some((
            RetryCause::Unavailable,
            Some(503),
            Some(Duration::from_secs(120))
        ))
    );
    // Every request inside the window gets the same, token requests included.
    let fresh = client_for(
        &h.sim.base_url(),
        "muscat-municipality",
        TEST_CLIENT_SECRET,
        Duration::from_secs(5),
    );
    let error = fresh.changes(None, 1).await.expect_err("503 on the token");
    assert_eq!(
        retry_cause(&error).map(|r| r.0),
        Some(RetryCause::Unavailable)
    );
    h.admin_post("/admin/maintenance", serde_json::json!({"seconds": 0}))
        .await;
    h.client.changes(None, 1).await.expect("after the window");
}

#[tokio::test]
async fn fault_slow_answers_arrive_late_or_time_out() {
    let mut config = SimulatorConfig::for_tests();
    config.faults.slow_ms = 400;
    let h = start_with_timeout(config, Duration::from_secs(3)).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::Slow]);
    let started = Instant::now();
    h.client.changes(None, 1).await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Slower than the client is willing to wait: a timeout.
    h.sim
        .set_faults(FaultSettings {
            slow_ms: 5_000,
            ..FaultSettings::default()
        })
        .expect("settings");
    let impatient = client_for(
        &h.sim.base_url(),
        "muscat-municipality",
        TEST_CLIENT_SECRET,
        Duration::from_millis(600),
    );
    impatient.changes(None, 1).await.expect("warm-up");
    h.sim.force_faults(&[FaultKind::Slow]);
    let error = impatient.changes(None, 1).await.expect_err("too slow");
    assert_eq!(retry_cause(&error).map(|r| r.0), Some(RetryCause::Timeout));
}

#[tokio::test]
async fn fault_timeout_is_retryable_and_the_write_was_not_applied() {
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 5_000;
    let h = start_with_timeout(config, Duration::from_millis(600)).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::Timeout]);
    let started = Instant::now();
    let error = h
        .client
        .create_case(&key("to"), &complaint("MCT-2026-000040"))
        .await
        .expect_err("timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the client"
    );
    assert_eq!(retry_cause(&error), Some((RetryCause::Timeout, None, None)));
    assert!(h.state().cases.is_empty());
    let created = h
        .client
        .create_case(&key("to"), &complaint("MCT-2026-000040"))
        .await
        .expect("retry");
    assert!(!created.replayed);
    assert_eq!(h.state().cases.len(), 1);
}

#[tokio::test]
async fn fault_connection_reset_is_retryable_and_nothing_was_applied() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::Reset]);
    let error = h
        .client
        .create_case(&key("reset"), &complaint("MCT-2026-000050"))
        .await
        .expect_err("reset");
    assert_eq!(
        retry_cause(&error),
        Some((RetryCause::Transport, None, None))
    );
    assert!(h.state().cases.is_empty());
    h.client
        .create_case(&key("reset"), &complaint("MCT-2026-000050"))
        .await
        .expect("retry");
    assert_eq!(h.state().cases.len(), 1);
}

#[tokio::test]
async fn fault_lost_answer_then_a_retry_with_the_same_key_makes_exactly_one_case() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::LostAnswer]);
    let error = h
        .client
        .create_case(&key("lost-1"), &complaint("MCT-2026-000060"))
        .await
        .expect_err("answer lost");
    assert_eq!(
        retry_cause(&error).map(|r| r.0),
        Some(RetryCause::Transport)
    );
    // The write happened although the client could not know.
    assert_eq!(h.state().cases.len(), 1);

    let retried = h
        .client
        .create_case(&key("lost-1"), &complaint("MCT-2026-000060"))
        .await
        .expect("retry");
    assert!(retried.replayed);
    let state = h.state();
    assert_eq!(state.cases.len(), 1);
    assert_eq!(state.cases[0].case.case_id, retried.case.case_id);
    assert_eq!(state.cases[0].history.len(), 1);
    assert_eq!(state.feed.total, 1);
    assert_eq!(state.faults.counts[&FaultKind::LostAnswer], 1);
}

#[tokio::test]
async fn fault_token_expired_is_handled_with_one_refresh() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    assert_eq!(h.state().tokens_issued, 1);
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    h.client
        .create_case(&key("tok"), &complaint("MCT-2026-000070"))
        .await
        .expect("one refresh, then success");
    assert_eq!(h.state().tokens_issued, 2);
    assert_eq!(h.state().cases.len(), 1);

    // Refused again after the refresh: the client gives up at once and says so.
    h.sim
        .force_faults(&[FaultKind::TokenExpired, FaultKind::TokenExpired]);
    let error = h.client.changes(None, 1).await.expect_err("unauthorized");
    assert!(
        matches!(error, PlatformError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_eq!(h.state().tokens_issued, 3);
}

/// The test credentials, and API calls that may take 20 s: what ends a test's wait early is
/// the mechanism under test, not the request timeout.
fn patient_config(base_url: &str) -> PlatformClientConfig {
    let mut config = PlatformClientConfig::new(
        base_url,
        "muscat-municipality",
        TEST_CLIENT_ID,
        ClientSecret::new(TEST_CLIENT_SECRET),
    );
    config.request_timeout = Duration::from_secs(20);
    config
}

/// A client whose token path is tuned for a test, without a standby token: API calls may
/// take 20 s, so whatever bounds a test's wait is the token path's own timeout or its second
/// request.
fn token_client(h: &Harness, hedge_delay: Duration, token_timeout: Duration) -> PlatformClient {
    let mut config = patient_config(&h.sim.base_url());
    config.token_request_timeout = token_timeout;
    config.token_hedge_delay = hedge_delay;
    // One token at a time, so that the token requests counted are the ones the test causes.
    config.standby_tokens = 0;
    PlatformClient::new(config).expect("client")
}

/// Every test of the token path is bounded, whatever the client does wrong.
async fn within<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, work)
        .await
        .expect("the token path kept the call waiting")
}

#[tokio::test]
async fn a_hung_token_request_is_outrun_by_a_second_one() {
    // The first token request is held 30 s and then dropped; the client's own token timeout
    // (20 s) is no help here, only the second request sent after 100 ms.
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 30_000;
    let h = start(config).await;
    let client = token_client(&h, Duration::from_millis(100), Duration::from_secs(20));
    h.sim
        .force_token_faults(&[FaultKind::Timeout])
        .expect("applies to the token endpoint");
    let started = Instant::now();
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("served with the second token");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let state = h.state();
    assert_eq!(state.faults.token_requests, 2);
    assert_eq!(state.faults.counts[&FaultKind::Timeout], 1);
    assert_eq!(state.tokens_issued, 1, "the hung request never got a token");
}

#[tokio::test]
async fn a_hung_token_request_is_abandoned_after_its_own_timeout_and_asked_again() {
    // No second request beside the first (its delay is a minute): the token timeout (300 ms)
    // ends the hung request, and the one more request a timeout earns gets the token.
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 30_000;
    let h = start(config).await;
    let client = token_client(&h, Duration::from_secs(60), Duration::from_millis(300));
    h.sim
        .force_token_faults(&[FaultKind::Timeout])
        .expect("applies to the token endpoint");
    let started = Instant::now();
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("served after the token timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(h.state().faults.token_requests, 2);
}

#[tokio::test]
async fn callers_that_need_a_token_during_a_fetch_share_it() {
    // The token request answers after 400 ms, before the second request would go (10 s):
    // sixteen calls made meanwhile wait for that one request.
    let mut config = SimulatorConfig::for_tests();
    config.faults.slow_ms = 400;
    let h = start(config).await;
    let client = token_client(&h, Duration::from_secs(10), Duration::from_secs(5));
    h.sim
        .force_token_faults(&[FaultKind::Slow])
        .expect("applies to the token endpoint");
    let calls = (0..16).map(|_| client.changes(None, 1));
    let outcomes = within(Duration::from_secs(10), futures::future::join_all(calls)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let state = h.state();
    assert_eq!(state.faults.token_requests, 1);
    assert_eq!(state.tokens_issued, 1);
}

#[tokio::test]
async fn a_late_token_fetch_sends_one_more_request_not_one_per_caller() {
    let mut config = SimulatorConfig::for_tests();
    config.faults.slow_ms = 5_000;
    let h = start(config).await;
    let client = token_client(&h, Duration::from_millis(100), Duration::from_secs(10));
    h.sim
        .force_token_faults(&[FaultKind::Slow])
        .expect("applies to the token endpoint");
    let started = Instant::now();
    let calls = (0..16).map(|_| client.changes(None, 1));
    let outcomes = within(Duration::from_secs(10), futures::future::join_all(calls)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the late answer (5 s) was not awaited: {:?}",
        started.elapsed()
    );
    assert_eq!(h.state().faults.token_requests, 2);
}

#[tokio::test]
async fn a_failed_token_fetch_is_asked_once_more_and_its_failure_shared_by_its_waiters() {
    let h = start(SimulatorConfig::for_tests()).await;
    let client = token_client(&h, Duration::from_secs(10), Duration::from_secs(5));

    // A broken connection earns one more request at once, and the call succeeds.
    h.sim
        .force_token_faults(&[FaultKind::Reset])
        .expect("applies to the token endpoint");
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("the second token request answered");
    assert_eq!(h.state().faults.token_requests, 2);

    // Both requests of a fetch fail: the eight calls of a client without a token, which
    // waited for that fetch, get its failure, retryable, and send no token request of their own.
    let client = token_client(&h, Duration::from_secs(10), Duration::from_secs(5));
    h.sim
        .force_token_faults(&[FaultKind::Reset, FaultKind::Reset])
        .expect("applies to the token endpoint");
    let calls = (0..8).map(|_| client.changes(None, 1));
    let outcomes = within(Duration::from_secs(10), futures::future::join_all(calls)).await;
    for outcome in &outcomes {
        let error = outcome.as_ref().expect_err("the fetch failed");
        assert_eq!(
            retry_cause(error).map(|r| r.0),
            Some(RetryCause::Transport),
            "{error:?}"
        );
    }
    assert_eq!(h.state().faults.token_requests, 2 + 2);

    // A 429 asks for a pause: no second request, the call carries the Retry-After.
    h.sim
        .force_token_faults(&[FaultKind::RateLimited])
        .expect("applies to the token endpoint");
    let error = client.changes(None, 1).await.expect_err("rate limited");
    assert_eq!(
        retry_cause(&error),
        Some((
            RetryCause::RateLimited,
            Some(429),
            Some(Duration::from_secs(1))
        ))
    );
    assert_eq!(h.state().faults.token_requests, 5);

    // The next call starts a fresh fetch, which succeeds.
    client.changes(None, 1).await.expect("a fresh fetch");
    assert_eq!(h.state().faults.token_requests, 6);
}

#[tokio::test]
async fn only_the_refused_token_is_forgotten_when_many_calls_are_refused_at_once() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    // The first of the eight calls gets 401 and the token is revoked; the others, sent with
    // the same token, are refused too or not, depending on when they arrive. Every one that is
    // refused finds either the fetch of the new token under way, or the new token: one new
    // token in all, and no call fails.
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    let calls = (0..8).map(|_| h.client.changes(None, 1));
    let outcomes = within(Duration::from_secs(10), futures::future::join_all(calls)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let state = h.state();
    assert_eq!(state.tokens_issued, 2);
    assert_eq!(state.faults.token_requests, 2);
}

/// A client with `n` standby tokens whose token path would hold a call 20 s: a call that is
/// answered sooner did not wait for a token request.
fn standby_client(h: &Harness, n: usize) -> PlatformClient {
    let mut config = patient_config(&h.sim.base_url());
    config.token_request_timeout = Duration::from_secs(20);
    config.token_hedge_delay = Duration::from_secs(60);
    config.standby_tokens = n;
    PlatformClient::new(config).expect("client")
}

/// Waits (bounded) until the platform has received `n` token requests: the standby fetches
/// run on tasks of their own.
async fn until_token_requests(h: &Harness, n: u64) {
    within(Duration::from_secs(10), async {
        while h.state().faults.token_requests < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(h.state().faults.token_requests, n);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_standby_without_waiting_for_a_token_request() {
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 30_000;
    let h = start(config).await;
    let client = standby_client(&h, 1);
    client.changes(None, 1).await.expect("first call");
    // The first token and its standby.
    until_token_requests(&h, 2).await;
    assert_eq!(h.state().tokens_issued, 2);

    // From now on a token request hangs for 30 s; the call's token is revoked under it.
    h.sim
        .force_token_faults(&[FaultKind::Timeout])
        .expect("applies to the token endpoint");
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    let started = Instant::now();
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("sent again with the standby token");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the call waited for a token request: {:?}",
        started.elapsed()
    );
    // The standby taken over was issued before the revocation; its replacement is the
    // request that hangs.
    until_token_requests(&h, 3).await;
    let state = h.state();
    assert_eq!(state.faults.counts[&FaultKind::TokenExpired], 1);
    assert_eq!(state.tokens_issued, 2);
}

#[tokio::test]
async fn a_standby_whose_fetch_failed_is_dropped_not_used() {
    let h = start(SimulatorConfig::for_tests()).await;
    let client = standby_client(&h, 1);
    client.changes(None, 1).await.expect("first call");
    until_token_requests(&h, 2).await;

    // A revocation: the standby takes over, and the fetch of its replacement gets 429.
    h.sim
        .force_token_faults(&[FaultKind::RateLimited])
        .expect("applies to the token endpoint");
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    client
        .changes(None, 1)
        .await
        .expect("served with the standby");
    until_token_requests(&h, 3).await;
    assert_eq!(h.state().tokens_issued, 2, "the 429 issued no token");

    // Another revocation: the only standby failed, so the client fetches afresh (and starts
    // a new standby beside it) rather than failing the call with the standby's 429.
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("served with a fresh token");
    until_token_requests(&h, 5).await;
    let state = h.state();
    assert_eq!(state.faults.counts[&FaultKind::TokenExpired], 2);
    assert_eq!(state.tokens_issued, 4);
}

#[tokio::test]
async fn without_standbys_a_revoked_token_waits_for_one_token_request() {
    // The same revocation as above with standbys off: the call waits for the hung token
    // request until its timeout ends it and one more request gets the token.
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 30_000;
    let h = start(config).await;
    let client = token_client(&h, Duration::from_secs(60), Duration::from_millis(500));
    client.changes(None, 1).await.expect("first call");
    h.sim
        .force_token_faults(&[FaultKind::Timeout])
        .expect("applies to the token endpoint");
    h.sim.force_faults(&[FaultKind::TokenExpired]);
    let started = Instant::now();
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("served after the token timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.state().faults.token_requests, 3);
}

#[tokio::test]
async fn a_token_that_expired_on_the_platforms_clock_is_refreshed_once() {
    let clock = ManualClock::new(Timestamp::from_micros(1_780_000_000_000_000));
    let mut config = SimulatorConfig::for_tests();
    config.clock = Arc::new(clock.clone());
    let h = start(config).await;
    h.warm_up().await;
    // The platform's clock runs ahead of ours: the cached token is already dead there.
    clock.advance_micros(301 * 1_000_000);
    h.client.changes(None, 1).await.expect("refreshed");
    assert_eq!(h.state().tokens_issued, 2);
}

#[tokio::test]
async fn standby_tokens_that_died_on_the_platforms_clock_are_passed_over() {
    // The token in use and both standbys were issued before the platform's clock jumped past
    // their lifetime: each is refused in turn, and the call goes on to a token fetched after
    // the jump (the standbys started at each take-over) instead of failing as Unauthorized.
    let clock = ManualClock::new(Timestamp::from_micros(1_780_000_000_000_000));
    let mut config = SimulatorConfig::for_tests();
    config.clock = Arc::new(clock.clone());
    let h = start(config).await;
    let client = standby_client(&h, 2);
    client.changes(None, 1).await.expect("first call");
    until_token_requests(&h, 3).await;
    clock.advance_micros(301 * 1_000_000);
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("served with a token issued after the jump");
    // The call is answered, and the platform refused only tokens issued before the jump.
    let state = h.state();
    assert!(state.tokens_issued >= 4, "{}", state.tokens_issued);
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let mut config = SimulatorConfig::for_tests();
    config.token_ttl = Duration::from_secs(1);
    // The simulator's clock stands still, so it never refuses the old token: a second token
    // can only come from the client refreshing ahead of expiry (at 80% of the lifetime).
    config.clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_780_000_000_000_000,
    )));
    let h = start(config).await;
    h.warm_up().await;
    h.client.changes(None, 1).await.expect("cached token");
    assert_eq!(h.state().tokens_issued, 1);
    tokio::time::sleep(Duration::from_millis(850)).await;
    h.client.changes(None, 1).await.expect("refreshed token");
    assert_eq!(h.state().tokens_issued, 2);
}

#[tokio::test]
async fn fault_version_conflict_then_a_refetch_and_the_same_key_succeeds() {
    let h = start(SimulatorConfig::for_tests()).await;
    let case = h
        .client
        .create_case(&key("c"), &complaint("MCT-2026-000080"))
        .await
        .expect("create")
        .case;
    h.sim.force_faults(&[FaultKind::Conflict]);
    let error = h
        .client
        .update_case(&key("u-1"), &case.case_id, case.version, &in_progress())
        .await
        .expect_err("412");
    let PlatformError::Conflict {
        current_version, ..
    } = error
    else {
        panic!("expected a conflict, got {error:?}");
    };
    assert_eq!(current_version, Some(2));

    // The sync worker re-fetches, merges (the platform's detail is not its field) and retries
    // under the same key: a refused write was not recorded against it.
    let fresh = h.client.get_case(&case.case_id).await.expect("re-fetch");
    assert_eq!(fresh.version, 2);
    assert_eq!(fresh.details.len(), 1);
    let updated = h
        .client
        .update_case(&key("u-1"), &case.case_id, fresh.version, &in_progress())
        .await
        .expect("retry");
    assert_eq!(
        (updated.case.version, updated.case.status.as_str()),
        (3, "ST30")
    );
}

#[tokio::test]
async fn fault_malformed_bodies_are_told_apart_and_a_write_retried_is_replayed() {
    let h = start(SimulatorConfig::for_tests()).await;
    h.warm_up().await;
    h.sim.force_faults(&[FaultKind::Malformed]);
    let error = h.client.changes(None, 1).await.expect_err("malformed read");
    assert!(
        matches!(error, PlatformError::Malformed { status: 200, .. }),
        "{error:?}"
    );

    h.sim.force_faults(&[FaultKind::Malformed]);
    let error = h
        .client
        .create_case(&key("m"), &complaint("MCT-2026-000090"))
        .await
        .expect_err("malformed write answer");
    assert!(
        matches!(error, PlatformError::Malformed { status: 201, .. }),
        "{error:?}"
    );
    let retried = h
        .client
        .create_case(&key("m"), &complaint("MCT-2026-000090"))
        .await
        .expect("retry");
    assert!(retried.replayed);
    assert_eq!(h.state().cases.len(), 1);
}

#[tokio::test]
async fn fault_duplicate_changes_repeat_ids_already_seen() {
    let h = start(SimulatorConfig::for_tests()).await;
    for _ in 0..4 {
        h.sim
            .citizen_act(Some(CitizenAction::File), None)
            .expect("file");
    }
    let first = h.client.changes(None, 3).await.expect("page 1");
    h.sim.force_faults(&[FaultKind::DuplicateChanges]);
    let second = h
        .client
        .changes(first.next_cursor.as_deref(), 10)
        .await
        .expect("page 2");
    let seen: Vec<_> = first.changes.iter().map(|c| &c.change_id).collect();
    let repeated = second
        .changes
        .iter()
        .filter(|c| seen.contains(&&c.change_id))
        .count();
    assert!(repeated >= 1, "at-least-once: some changes come again");
    assert_eq!(
        second.changes.last().map(|c| c.change_id.as_str()),
        Some("CHG-0000000004")
    );
}

/// The same seed and the same requests give the same faults; another seed does not.
#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    async fn run(seed: u64) -> (Vec<(u64, FaultKind)>, Vec<String>) {
        let mut config = SimulatorConfig::for_tests();
        config.seed = seed;
        // Every kind that does not depend on time, 40% of requests in all.
        config.faults = FaultSettings::uniform(0.4)
            .with_rate(FaultKind::Maintenance, 0.0)
            .with_rate(FaultKind::Slow, 0.0)
            .with_rate(FaultKind::Timeout, 0.0);
        let h = start(config).await;
        let mut outcomes = Vec::new();
        for i in 0..40 {
            let result = match i % 3 {
                0 => h
                    .client
                    .create_case(
                        &key(&format!("k-{i}")),
                        &complaint(&format!("MCT-2026-{i:06}")),
                    )
                    .await
                    .map(|_| ()),
                1 => h.client.changes(None, 5).await.map(|_| ()),
                _ => h.client.get_case("CASE-00000001").await.map(|_| ()),
            };
            outcomes.push(match result {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{:?}", std::mem::discriminant(&e)),
            });
        }
        let faults = h
            .state()
            .faults
            .recent
            .iter()
            .map(|f| (f.request, f.kind))
            .collect();
        (faults, outcomes)
    }
    let (faults_a, outcomes_a) = run(42).await;
    let (faults_b, outcomes_b) = run(42).await;
    let (faults_c, _) = run(43).await;
    assert!(faults_a.len() >= 5, "{faults_a:?}");
    assert_eq!(faults_a, faults_b);
    assert_eq!(outcomes_a, outcomes_b);
    assert_ne!(faults_a, faults_c);
}

#[tokio::test]
async fn the_simulators_citizens_play_by_themselves_at_a_rate() {
    let mut config = SimulatorConfig::for_tests();
    config.citizen_rate = 200.0;
    let h = start(config).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = h.client.changes(None, 1000).await.expect("changes");
        if page.changes.len() >= 10 {
            assert!(page.changes.iter().any(|c| c.kind == ChangeKind::Filed));
            break;
        }
        assert!(Instant::now() < deadline, "citizens did not act");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client whose writes are hedged after `hedge_delay`; calls may take 20 s, so whatever
/// ends a test's wait early is the second request.
fn hedging_client(base_url: &str, hedge_delay: Option<Duration>) -> PlatformClient {
    let mut config = patient_config(base_url);
    config.hedge_delay = hedge_delay;
    PlatformClient::new(config).expect("client")
}

#[tokio::test]
async fn a_hung_write_is_outrun_by_the_same_write_sent_again_with_its_key() {
    let mut config = SimulatorConfig::for_tests();
    config.faults.timeout_hold_ms = 30_000;
    let h = start(config).await;
    let client = hedging_client(&h.sim.base_url(), Some(Duration::from_millis(100)));
    client.changes(None, 1).await.expect("warm-up");
    h.sim.force_faults(&[FaultKind::Timeout]);
    let started = Instant::now();
    let created = within(
        Duration::from_secs(10),
        client.create_case(&key("hung-1"), &complaint("MCT-2026-000090")),
    )
    .await
    .expect("the second request answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!created.replayed, "the hung request applied nothing");
    let state = h.state();
    assert_eq!(state.cases.len(), 1);
    assert_eq!(state.faults.counts[&FaultKind::Timeout], 1);
    let stats = client.hedge_stats();
    assert_eq!((stats.sent, stats.won, stats.refused), (1, 1, 0));
}

#[tokio::test]
async fn a_slow_write_and_its_second_copy_are_one_write_at_the_platform() {
    // The first request waits 1.5 s before the platform handles it; the second, sent after
    // 100 ms, is applied first. Whatever becomes of the first (handled late and answered from
    // the idempotency record, or dropped with its connection), the platform has one case with
    // one version.
    let mut config = SimulatorConfig::for_tests();
    config.faults.slow_ms = 1_500;
    let h = start(config).await;
    let client = hedging_client(&h.sim.base_url(), Some(Duration::from_millis(100)));
    client.changes(None, 1).await.expect("warm-up");
    h.sim.force_faults(&[FaultKind::Slow]);
    let started = Instant::now();
    let created = within(
        Duration::from_secs(10),
        client.create_case(&key("slow-1"), &complaint("MCT-2026-000091")),
    )
    .await
    .expect("created");
    assert!(started.elapsed() < Duration::from_millis(1_400));
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let state = h.state();
    assert_eq!(state.cases.len(), 1);
    assert_eq!(state.cases[0].case.case_id, created.case.case_id);
    assert_eq!(state.cases[0].history.len(), 1);
    assert_eq!(state.feed.total, 1);
    assert_eq!(client.hedge_stats().won, 1);
}

#[tokio::test]
async fn hedging_is_bounded_by_its_budget_and_never_touches_the_feed() {
    // Every request is slow (300 ms) and hedged after 30 ms: thirty writes at once may send
    // at most the saved-up burst (10) plus a tenth of the calls (3) second requests.
    let mut config = SimulatorConfig::for_tests();
    config.faults = FaultSettings {
        slow_ms: 300,
        ..FaultSettings::default()
    }
    .with_rate(FaultKind::Slow, 1.0);
    let h = start(config).await;
    let client = hedging_client(&h.sim.base_url(), Some(Duration::from_millis(30)));
    within(Duration::from_secs(10), client.changes(None, 1))
        .await
        .expect("the feed, slow");
    assert_eq!(
        client.hedge_stats(),
        Default::default(),
        "the feed is not hedged"
    );
    let writes = (0..30).map(|i| {
        let client = &client;
        async move {
            client
                .create_case(
                    &key(&format!("budget-{i}")),
                    &complaint(&format!("MCT-2026-{:06}", 100 + i)),
                )
                .await
        }
    });
    let outcomes = within(Duration::from_secs(10), futures::future::join_all(writes)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let stats = client.hedge_stats();
    assert!(stats.sent >= 10 && stats.sent <= 13, "{stats:?}");
    assert_eq!(stats.sent + stats.refused, 30, "{stats:?}");
    assert_eq!(h.state().cases.len(), 30);

    // Hedging off: the same slow writes, never a second request.
    let plain = hedging_client(&h.sim.base_url(), None);
    within(
        Duration::from_secs(10),
        plain.create_case(&key("plain-1"), &complaint("MCT-2026-000200")),
    )
    .await
    .expect("slow but fine");
    assert_eq!(plain.hedge_stats(), Default::default());
}

/// A stand-in platform for answers the simulator never gives: every case write is answered
/// by `answer(n)` for the n-th write (from 0), after its delay.
async fn stub_platform(
    answer: fn(usize) -> (Duration, u16, String),
) -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    CancellationToken,
) {
    use axum::routing::post;
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = writes.clone();
    let app = axum::Router::new()
        .route(
            "/oauth2/token",
            post(|| async {
                axum::Json(serde_json::json!({
                    "access_token": "stub-token",
                    "token_type": "Bearer",
                    "expires_in": 300
                }))
            }),
        )
        .route(
            "/v1/entities/{entity}/cases",
            post(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let (delay, status, body) = answer(n);
                    tokio::time::sleep(delay).await;
                    let content_type = if status < 300 {
                        "application/json"
                    } else {
                        "application/problem+json"
                    };
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        [
                            (axum::http::header::CONTENT_TYPE, content_type),
                            (axum::http::header::RETRY_AFTER, "2"),
                        ],
                        body,
                    )
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
    });
    (url, writes, stop)
}

fn key_in_use_problem() -> String {
    serde_json::json!({
        "type": ProblemType::IdempotencyKeyInUse.uri(),
        "title": ProblemType::IdempotencyKeyInUse.title(),
        "status": 409,
        "retry_after_seconds": 2
    })
    .to_string()
}

/// A case as the platform answers it, taken from the simulator.
static STUB_CASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[tokio::test]
async fn a_second_request_told_the_key_is_in_use_waits_for_the_first() {
    let h = start(SimulatorConfig::for_tests()).await;
    let case = h
        .client
        .create_case(&key("model"), &complaint("MCT-2026-000300"))
        .await
        .expect("a case to answer with");
    STUB_CASE.get_or_init(|| serde_json::to_string(&case.case).expect("json"));
    let (url, writes, stop) = stub_platform(|n| match n {
        // The first request is slow, and is the one applied.
        0 => (
            Duration::from_millis(400),
            201,
            STUB_CASE.get().expect("set").clone(),
        ),
        // Its twin finds the key still being processed.
        _ => (Duration::ZERO, 409, key_in_use_problem()),
    })
    .await;
    let client = hedging_client(&url, Some(Duration::from_millis(50)));
    let started = Instant::now();
    let created = within(
        Duration::from_secs(10),
        client.create_case(&key("in-use-1"), &complaint("MCT-2026-000300")),
    )
    .await
    .expect("the first request's answer");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(created.case, case.case);
    assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(client.hedge_stats().won, 0);
    stop.cancel();
}

#[tokio::test]
async fn a_key_in_use_alone_is_retryable_after_its_retry_after() {
    let (url, writes, stop) = stub_platform(|_| (Duration::ZERO, 409, key_in_use_problem())).await;
    let client = hedging_client(&url, Some(Duration::from_millis(50)));
    let error = client
        .create_case(&key("in-use-2"), &complaint("MCT-2026-000301"))
        .await
        .expect_err("in use");
    assert_eq!(
        retry_cause(&error),
        Some((
            RetryCause::KeyInUse,
            Some(409),
            Some(Duration::from_secs(2))
        ))
    );
    assert_eq!(
        writes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "answered before the second request was due"
    );
    stop.cancel();
}
