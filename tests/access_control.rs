//! Access control over real gRPC: every cell of the role table (docs/security.md), every
//! authentication failure, the scope of directorate staff and external systems, masking and
//! audited reveals of personal data, per-caller rate limits and watch caps, and the refusal to
//! listen openly on a non-loopback address.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use balagh::auth::jwt::{JwtVerifier, VerificationKey};
use balagh::auth::layer::Authenticator;
use balagh::auth::policy::{RPC_ROLES, allows};
use balagh::auth::{Role, tls::CertificateCallers};
use balagh::config::Config;
use balagh::domain::SystemClock;
use balagh::grpc::proto;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use bytes::{Buf, BufMut};
use common::{TestApp, TestDb, pothole_report, reason, spawn_app_with};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ISSUER: &str = "https://sso.test.invalid";
const AUDIENCE: &str = "balagh";

/// Signs tokens as the identity provider would, with an Ed25519 key made for the test run.
struct IdentityProvider {
    key: EncodingKey,
    public: DecodingKey,
}

impl IdentityProvider {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key pair");
        Self {
            key: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("private key"),
            public: DecodingKey::from_ed_pem(pair.public_key_pem().as_bytes()).expect("public"),
        }
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("test-key".into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }

    /// A valid token for a caller of `role`; directorate staff work for `roads`.
    fn token(&self, sub: &str, role: Role) -> String {
        self.sign(self.claims(sub, role))
    }

    fn claims(&self, sub: &str, role: Role) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "sub": sub, "role": role.as_str(), "iss": ISSUER, "aud": AUDIENCE,
            "exp": jsonwebtoken::get_current_timestamp() + 600,
        });
        if role.is_directorate_scoped() {
            claims["directorate"] = "roads".into();
        }
        claims
    }

    fn authenticator(&self) -> Authenticator {
        Authenticator {
            jwt: Some(
                JwtVerifier::new(
                    ISSUER,
                    AUDIENCE,
                    5,
                    vec![VerificationKey {
                        kid: "test-key".into(),
                        algorithm: Algorithm::EdDSA,
                        key: self.public.clone(),
                    }],
                )
                .expect("verifier"),
            ),
            certificates: CertificateCallers::default(),
        }
    }
}

async fn spawn_secured(idp: &IdentityProvider, configure: impl FnOnce(&mut Config)) -> TestApp {
    let authenticator = idp.authenticator();
    spawn_app_with(
        TestDb::fresh().await,
        move |config| {
            config.auth = Some(authenticator);
            config.limits.caller_rate_per_second = 10_000;
            config.limits.caller_burst = 10_000;
            configure(config);
        },
        Arc::new(SystemClock),
    )
    .await
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// Sends an already encoded message to any method path and reads the answer as bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Calls `path` with an empty request message (every field at its default).
async fn call_empty(channel: Channel, path: &str, token: &str) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = with_token(Vec::new(), token);
    request.set_timeout(Duration::from_secs(10));
    let method = http::uri::PathAndQuery::from_str(path).expect("path");
    if path.ends_with("/WatchTickets") {
        grpc.server_streaming(request, method, RawCodec)
            .await
            .map(|_| ())
    } else {
        grpc.unary(request, method, RawCodec).await.map(|_| ())
    }
}

#[tokio::test]
async fn every_cell_of_the_role_table_is_enforced_over_grpc() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let mut failures = Vec::new();
    let mut cells = 0;
    for (path, _) in RPC_ROLES {
        for role in Role::ALL {
            cells += 1;
            let token = idp.token(&format!("caller-{}", role.as_str()), *role);
            let outcome = call_empty(app.channel.clone(), path, &token).await;
            let denied = matches!(&outcome, Err(s) if s.code() == Code::PermissionDenied
                && reason(s) == "ROLE_NOT_PERMITTED");
            let unauthenticated = matches!(&outcome, Err(s) if s.code() == Code::Unauthenticated);
            if allows(path, *role) == denied || unauthenticated {
                failures.push(format!(
                    "{path} as {role}: table says {}, got {outcome:?}",
                    if allows(path, *role) { "yes" } else { "no" }
                ));
            }
        }
    }
    assert_eq!(cells, RPC_ROLES.len() * Role::ALL.len());
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn each_authentication_failure_has_its_reason_and_reveals_nothing() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let now = jsonwebtoken::get_current_timestamp();
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = idp.claims("emp-1", Role::Agent);
        claims[key] = value;
        idp.sign(claims)
    };
    let stranger = IdentityProvider::new();
    let mut unknown_kid = Header::new(Algorithm::EdDSA);
    unknown_kid.kid = Some("retired-key".into());
    let cases: Vec<(&str, Option<String>)> = vec![
        ("CREDENTIALS_MISSING", None),
        ("TOKEN_MALFORMED", Some("Bearer not-a-jwt".into())),
        ("TOKEN_MALFORMED", Some("Basic dXNlcjpwYXNz".into())),
        (
            "TOKEN_EXPIRED",
            Some(format!("Bearer {}", with("exp", (now - 120).into()))),
        ),
        (
            "TOKEN_NOT_YET_VALID",
            Some(format!("Bearer {}", with("nbf", (now + 600).into()))),
        ),
        (
            "TOKEN_AUDIENCE_INVALID",
            Some(format!("Bearer {}", with("aud", "another-service".into()))),
        ),
        (
            "TOKEN_ISSUER_INVALID",
            Some(format!(
                "Bearer {}",
                with("iss", "https://evil.invalid".into())
            )),
        ),
        (
            "TOKEN_CLAIMS_INVALID",
            Some(format!("Bearer {}", with("role", "root".into()))),
        ),
        (
            "TOKEN_SIGNATURE_INVALID",
            Some(format!("Bearer {}", stranger.token("emp-1", Role::Agent))),
        ),
        (
            "TOKEN_KEY_UNKNOWN",
            Some(format!(
                "Bearer {}",
                jsonwebtoken::encode(&unknown_kid, &idp.claims("emp-1", Role::Agent), &idp.key)
                    .unwrap()
            )),
        ),
    ];
    for (expected, header) in cases {
        let mut request = Request::new(proto::ListTicketsRequest::default());
        if let Some(header) = &header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        let status = app.tickets.list_tickets(request).await.expect_err(expected);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{expected}: {status:?}"
        );
        assert_eq!(reason(&status), expected);
        if let Some(header) = header {
            let token = header.trim_start_matches("Bearer ");
            assert!(
                !status.message().contains(token),
                "the message repeats the token"
            );
        }
    }
    // Health answers without credentials: probes need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is public");
    app.stop().await;
}

fn report_in(category: &str, citizen: u32) -> proto::CreateTicketRequest {
    let mut request = pothole_report();
    request.category = category.into();
    let reporter = request.reporter.as_mut().unwrap();
    reporter.name = format!("Citizen {citizen}");
    reporter.phone = format!("+968 9100 {citizen:04}");
    reporter.email = format!("citizen{citizen}@mail.example.om");
    reporter.civil_id = format!("1{citizen:07}");
    request
}

#[tokio::test]
async fn directorate_staff_and_external_systems_reach_only_their_tickets() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let agent = idp.token("agent-1", Role::Agent);
    let roads = idp.token("liaison-roads", Role::LiaisonOfficer);
    let system = idp.token("rop-cases", Role::ExternalSystem);
    let other_system = idp.token("mol-cases", Role::ExternalSystem);

    let pothole = create_as(&mut app, &agent, report_in("pothole", 1)).await;
    let waste = create_as(&mut app, &agent, report_in("waste_collection", 2)).await;
    let filed = create_as(&mut app, &system, report_in("waste_collection", 3)).await;
    assert_eq!(filed.created_by, "rop-cases");
    assert_eq!(
        pothole.created_by, "agent-1",
        "the actor is the token's subject"
    );

    let get = |id: &str| proto::GetTicketRequest {
        reveal_personal_data: false,
        lookup: Some(proto::get_ticket_request::Lookup::Id(id.to_owned())),
    };
    // The roads liaison officer: its directorate's ticket, not health affairs'.
    app.tickets
        .get_ticket(with_token(get(&pothole.id), &roads))
        .await
        .expect("a roads ticket");
    let status = app
        .tickets
        .get_ticket(with_token(get(&waste.id), &roads))
        .await
        .expect_err("another directorate's ticket");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let listed = app
        .tickets
        .list_tickets(with_token(proto::ListTicketsRequest::default(), &roads))
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec![pothole.id.as_str()]
    );
    let foreign = proto::ListTicketsRequest {
        directorates: vec!["health_affairs".into()],
        ..Default::default()
    };
    let listed = app
        .tickets
        .list_tickets(with_token(foreign, &roads))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tickets.is_empty(),
        "asking for another directorate shows nothing"
    );
    for status in [
        app.tickets
            .list_ticket_events(with_token(
                proto::ListTicketEventsRequest {
                    ticket_id: waste.id.clone(),
                    ..Default::default()
                },
                &roads,
            ))
            .await
            .expect_err("events of another directorate's ticket"),
        app.tickets
            .start_work(with_token(
                proto::StartWorkRequest {
                    ticket_id: waste.id.clone(),
                    ..Default::default()
                },
                &roads,
            ))
            .await
            .expect_err("working another directorate's ticket"),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // A watch of the roads liaison officer: its snapshot holds the roads ticket only, and a
    // filter on another directorate is refused.
    let mut stream = app
        .tickets
        .watch_tickets(with_token(
            proto::WatchTicketsRequest {
                send_snapshot: true,
                ..Default::default()
            },
            &roads,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("snapshot in time")
            .unwrap()
            .unwrap();
        if message.kind == proto::ChangeKind::SnapshotEnd as i32 {
            break;
        }
        snapshot.push(message.ticket.unwrap().id);
    }
    assert_eq!(snapshot, vec![pothole.id.clone()]);
    // Live changes: another directorate's new ticket is not carried, the next roads one is.
    app.tickets
        .create_ticket(with_token(report_in("waste_collection", 10), &agent))
        .await
        .unwrap();
    let lamp = create_as(&mut app, &agent, report_in("street_lighting", 11)).await;
    let next = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a change in time")
            .unwrap()
            .unwrap();
        if message.kind != proto::ChangeKind::Heartbeat as i32 {
            break message;
        }
    };
    let carried = next.ticket.unwrap();
    assert_eq!(carried.id, lamp.id, "the health affairs ticket was skipped");
    assert!(
        carried.reporter.unwrap().masked,
        "streams carry masked reporters"
    );
    let status = app
        .tickets
        .watch_tickets(with_token(
            proto::WatchTicketsRequest {
                filter: Some(proto::TicketFilter {
                    directorates: vec!["health_affairs".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &roads,
        ))
        .await
        .expect_err("a watch of another directorate");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "FILTER_OUTSIDE_SCOPE");

    // An external system: what it filed, and nothing else.
    app.tickets
        .get_ticket(with_token(get(&filed.id), &system))
        .await
        .expect("its own ticket");
    for (id, token) in [(&waste.id, &system), (&filed.id, &other_system)] {
        let status = app
            .tickets
            .get_ticket(with_token(get(id), token))
            .await
            .expect_err("a ticket it did not file");
        assert_eq!(status.code(), Code::NotFound);
    }
    let listed = app
        .tickets
        .list_tickets(with_token(proto::ListTicketsRequest::default(), &system))
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec![filed.id.as_str()]
    );
    app.stop().await;
}

#[tokio::test]
async fn personal_data_is_masked_and_each_reveal_is_recorded() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let agent = idp.token("agent-7", Role::Agent);
    let supervisor = idp.token("supervisor-1", Role::Supervisor);
    let auditor = idp.token("auditor-1", Role::Auditor);
    let created = create_as(&mut app, &agent, report_in("pothole", 42)).await;
    let reporter = created.reporter.clone().unwrap();
    assert!(reporter.masked, "even the answer to its creator is masked");
    assert_eq!(reporter.name, "C•••");
    assert_eq!(reporter.phone, "••••••42");
    assert_eq!(reporter.email, "c•••@mail.example.om");
    assert_eq!(reporter.civil_id, "••••••42");

    let get = |reveal: bool| proto::GetTicketRequest {
        reveal_personal_data: reveal,
        lookup: Some(proto::get_ticket_request::Lookup::Id(created.id.clone())),
    };
    let masked = get_as(&mut app, &supervisor, get(false)).await;
    assert!(masked.reporter.unwrap().masked);
    // ListTickets keeps the messages it made (grpc::encoded_tickets): read twice, the answer is
    // masked both times, and the same as GetTicket's but for the SLA clock.
    for _ in 0..2 {
        let listed = app
            .tickets
            .list_tickets(with_token(
                proto::ListTicketsRequest::default(),
                &supervisor,
            ))
            .await
            .expect("list")
            .into_inner()
            .tickets;
        let mut expected = get_as(&mut app, &supervisor, get(false)).await;
        expected.sla = None;
        assert_eq!(listed, vec![expected]);
        assert_eq!(listed[0].reporter.as_ref().unwrap().name, "C•••");
    }
    let status = app
        .tickets
        .get_ticket(with_token(get(true), &supervisor))
        .await
        .expect_err("supervisors do not see personal data");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "PERSONAL_DATA_NOT_PERMITTED");
    let revealed = get_as(&mut app, &agent, get(true)).await.reporter.unwrap();
    assert!(!revealed.masked);
    assert_eq!(revealed.name, "Citizen 42");
    assert_eq!(revealed.civil_id, "10000042");

    let accesses = app
        .tickets
        .list_personal_data_accesses(with_token(
            proto::ListPersonalDataAccessesRequest {
                ticket_id: created.id.clone(),
                ..Default::default()
            },
            &auditor,
        ))
        .await
        .unwrap()
        .into_inner()
        .accesses;
    assert_eq!(accesses.len(), 1, "{accesses:?}");
    assert_eq!(
        (
            accesses[0].actor.as_str(),
            accesses[0].role.as_str(),
            accesses[0].method.as_str()
        ),
        ("agent-7", "agent", "GetTicket")
    );

    // A masked reporter read back and sent again is refused, not stored.
    let mut ticket = masked_ticket(&mut app, &agent, &created.id).await;
    ticket.subject = "changed".into();
    let status = app
        .tickets
        .update_ticket(with_token(
            proto::UpdateTicketRequest {
                ticket: Some(ticket),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["subject".into(), "reporter".into()],
                }),
                ..Default::default()
            },
            &agent,
        ))
        .await
        .expect_err("a masked reporter written back");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(common::violated_fields(&status).contains(&"ticket.reporter.masked".to_owned()));
    let still = get_as(&mut app, &agent, get(true)).await;
    assert_eq!(still.subject, created.subject, "nothing was half-written");
    app.stop().await;
}

async fn create_as(
    app: &mut TestApp,
    token: &str,
    request: proto::CreateTicketRequest,
) -> proto::Ticket {
    app.tickets
        .create_ticket(with_token(request, token))
        .await
        .expect("create")
        .into_inner()
        .ticket
        .expect("a ticket")
}

async fn get_as(app: &mut TestApp, token: &str, request: proto::GetTicketRequest) -> proto::Ticket {
    app.tickets
        .get_ticket(with_token(request, token))
        .await
        .expect("get")
        .into_inner()
        .ticket
        .expect("a ticket")
}

async fn masked_ticket(app: &mut TestApp, token: &str, id: &str) -> proto::Ticket {
    let request = proto::GetTicketRequest {
        reveal_personal_data: false,
        lookup: Some(proto::get_ticket_request::Lookup::Id(id.to_owned())),
    };
    get_as(app, token, request).await
}

#[tokio::test]
async fn request_ids_belong_to_their_caller() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let first = idp.token("agent-1", Role::Agent);
    let second = idp.token("agent-2", Role::Agent);
    let mut a = report_in("pothole", 5);
    a.request_id = "shared-request-id".into();
    let mut b = report_in("street_lighting", 6);
    b.request_id = "shared-request-id".into();
    let one = app
        .tickets
        .create_ticket(with_token(a.clone(), &first))
        .await
        .unwrap();
    let two = app
        .tickets
        .create_ticket(with_token(b, &second))
        .await
        .expect("another caller's id is not a reuse");
    assert_ne!(
        one.into_inner().ticket.unwrap().id,
        two.into_inner().ticket.unwrap().id
    );
    let replay = app
        .tickets
        .create_ticket(with_token(a, &first))
        .await
        .unwrap();
    assert_eq!(replay.into_inner().ticket.unwrap().created_by, "agent-1");
    app.stop().await;
}

#[tokio::test]
async fn a_caller_over_its_rate_is_told_when_to_retry_and_others_are_served() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |config| {
        config.limits.caller_rate_per_second = 1;
        config.limits.caller_burst = 3;
    })
    .await;
    let greedy = idp.token("greedy", Role::Auditor);
    let polite = idp.token("polite", Role::Auditor);
    for _ in 0..3 {
        app.tickets
            .list_tickets(with_token(proto::ListTicketsRequest::default(), &greedy))
            .await
            .expect("within the burst");
    }
    let status = app
        .tickets
        .list_tickets(with_token(proto::ListTicketsRequest::default(), &greedy))
        .await
        .expect_err("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "RATE_LIMITED");
    use tonic_types::StatusExt;
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    app.tickets
        .list_tickets(with_token(proto::ListTicketsRequest::default(), &polite))
        .await
        .expect("another caller has its own budget");
    app.stop().await;
}

#[tokio::test]
async fn watch_streams_are_capped_per_caller() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |config| {
        config.limits.max_watch_streams_per_caller = 2;
    })
    .await;
    let app_token = idp.token("roads-app", Role::LiaisonOfficer);
    let other = idp.token("agent-1", Role::Agent);
    let watch = |token: &str| with_token(proto::WatchTicketsRequest::default(), token);
    let mut client = TicketServiceClient::new(app.channel.clone());
    let one = client
        .watch_tickets(watch(&app_token))
        .await
        .expect("first");
    let _two = client
        .watch_tickets(watch(&app_token))
        .await
        .expect("second");
    let status = client
        .watch_tickets(watch(&app_token))
        .await
        .expect_err("a third stream");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "TOO_MANY_STREAMS");
    client
        .watch_tickets(watch(&other))
        .await
        .expect("another caller's stream");
    drop(one);
    // The slot comes back once the server sees the stream end.
    let mut reopened = false;
    for _ in 0..50 {
        if client.watch_tickets(watch(&app_token)).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "a closed stream gives its slot back");
    app.stop().await;
}

#[tokio::test]
async fn an_open_server_refuses_a_non_loopback_address() {
    let db = TestDb::fresh().await;
    let mut config = Config::for_tests(db.url.clone());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = balagh::app::Application::build(config)
        .await
        .err()
        .expect("no authentication on 0.0.0.0");
    assert!(
        format!("{error:#}").contains("without authentication"),
        "{error:#}"
    );

    let idp = IdentityProvider::new();
    let mut config = Config::for_tests(db.url.clone());
    config.listen = "0.0.0.0:0".parse().unwrap();
    config.auth = Some(idp.authenticator());
    let app = balagh::app::Application::build(config)
        .await
        .expect("with authentication, any address");
    drop(app);
}

/// Mutual TLS: a registered certificate is its caller; an unregistered one, signed by the same
/// CA, is refused; so is a TLS client with no certificate and no token.
#[tokio::test]
async fn registered_client_certificates_are_callers_and_others_are_refused() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "balagh test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Royal Oman Police");
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()], "balagh");
    let (rop_cert, rop_key) = leaf(vec![], "rop-case-system");
    let (stray_cert, stray_key) = leaf(vec![], "stray-system");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let tls = balagh::auth::tls::TlsConfig {
        cert_file: write("server.crt", &server_cert),
        key_file: write("server.key", &server_key),
        client_ca_file: Some(write("ca.crt", &ca_cert.pem())),
    };
    let callers = CertificateCallers::from_config(&[balagh::auth::tls::CertificateCallerConfig {
        subject: "CN=rop-case-system,O=Royal Oman Police".into(),
        id: "rop-case-system".into(),
        role: "external_system".into(),
        directorate: None,
        outlets: vec![],
    }])
    .unwrap();
    let mut app = spawn_app_with(
        TestDb::fresh().await,
        move |config| {
            config.tls = Some(tls);
            config.auth = Some(Authenticator {
                jwt: None,
                certificates: callers,
            });
        },
        Arc::new(SystemClock),
    )
    .await;
    let connect = |identity: Option<(String, String)>| {
        let ca = Certificate::from_pem(ca_cert.pem());
        let addr = app.addr;
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost");
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            Channel::from_shared(format!("https://localhost:{}", addr.port()))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .expect("TLS connection")
        }
    };
    let mut rop = TicketServiceClient::new(connect(Some((rop_cert, rop_key))).await);
    let filed = rop
        .create_ticket(report_in("pothole", 9))
        .await
        .expect("a registered system files a ticket")
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(filed.created_by, "rop-case-system");
    assert!(filed.reporter.unwrap().masked);
    let mut stray = TicketServiceClient::new(connect(Some((stray_cert, stray_key))).await);
    let status = stray
        .list_tickets(proto::ListTicketsRequest::default())
        .await
        .expect_err("a certificate signed by the CA but not registered");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "CLIENT_CERTIFICATE_UNKNOWN");
    let mut anonymous = TicketServiceClient::new(connect(None).await);
    let status = anonymous
        .list_tickets(proto::ListTicketsRequest::default())
        .await
        .expect_err("no certificate, no token");
    assert_eq!(reason(&status), "CREDENTIALS_MISSING");
    app.stop().await;
}

/// A loopback flood: an abusive caller (and an unauthenticated one) hammer the server from
/// many connections while a well-behaved caller and the health probe keep calling. Every
/// probe and every authorised call of the well-behaved caller is answered; the abuser is
/// refused with RATE_LIMITED (or shed) rather than served. Bounded: 2 s of flooding.
#[tokio::test]
async fn the_service_keeps_answering_while_an_abusive_caller_floods_it() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |config| {
        config.limits.caller_rate_per_second = 50;
        config.limits.caller_burst = 50;
        config.limits.max_in_flight = 64;
    })
    .await;
    let abuser = idp.token("abuser", Role::Auditor);
    let polite = idp.token("polite", Role::Agent);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, limited, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flooders = Vec::new();
    for i in 0..16 {
        let channel = common::connect(app.addr).await;
        let (stop, served, limited, other) =
            (stop.clone(), served.clone(), limited.clone(), other.clone());
        let token = if i % 4 == 0 {
            "not-a-token".to_owned()
        } else {
            abuser.clone()
        };
        flooders.push(tokio::spawn(async move {
            let mut client = TicketServiceClient::new(channel);
            while !stop.load(Ordering::Relaxed) {
                let request = with_token(proto::ListTicketsRequest::default(), &token);
                match client.list_tickets(request).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let mut polite_client = TicketServiceClient::new(common::connect(app.addr).await);
    let started = std::time::Instant::now();
    let mut probes = 0;
    let mut polite_calls = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let mut check = Request::new(tonic_health::pb::HealthCheckRequest::default());
        check.set_timeout(Duration::from_secs(5));
        let answer = health
            .check(check)
            .await
            .expect("health answers under the flood");
        assert_eq!(answer.into_inner().status, 1, "SERVING");
        probes += 1;
        polite_client
            .create_ticket(with_token(report_in("pothole", polite_calls), &polite))
            .await
            .expect("the well-behaved caller is served under the flood");
        polite_calls += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let flooded_seconds = started.elapsed().as_secs_f64() + 1.0;
    let (served, limited, other) = (
        served.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    println!(
        "flood: {served} served, {limited} refused as RESOURCE_EXHAUSTED, {other} UNAUTHENTICATED; \
         {probes} probes and {polite_calls} polite calls all answered"
    );
    assert!(
        limited > served,
        "the abuser is mostly refused: {served} served, {limited} limited"
    );
    assert!(
        served as f64 <= 50.0 + 50.0 * flooded_seconds,
        "the abuser got at most its burst plus its rate over {flooded_seconds:.1} s: {served}"
    );
    assert!(other > 0, "the unauthenticated flood was refused");
    assert!(probes >= 10 && polite_calls >= 10);
    app.stop().await;
}

#[tokio::test]
async fn an_administrator_erases_personal_data_and_the_ticket_stays() {
    let idp = IdentityProvider::new();
    let mut app = spawn_secured(&idp, |_| {}).await;
    let agent = idp.token("agent-1", Role::Agent);
    let admin = idp.token("dpo-1", Role::Administrator);
    let auditor = idp.token("auditor-1", Role::Auditor);
    let created = create_as(&mut app, &agent, report_in("pothole", 77)).await;
    let erase = |ticket_id: &str, reason: &str| proto::ErasePersonalDataRequest {
        ticket_id: ticket_id.to_owned(),
        reason: reason.to_owned(),
        request_id: String::new(),
    };
    let status = app
        .tickets
        .erase_personal_data(with_token(erase(&created.id, "DP-2026-14"), &agent))
        .await
        .expect_err("agents do not erase");
    assert_eq!(reason(&status), "ROLE_NOT_PERMITTED");
    let status = app
        .tickets
        .erase_personal_data(with_token(erase(&created.id, ""), &admin))
        .await
        .expect_err("a reason is required");
    assert_eq!(common::violated_fields(&status), vec!["reason".to_owned()]);
    let status = app
        .tickets
        .erase_personal_data(with_token(
            erase("0190b5a0-0000-7000-8000-000000000000", "DP-2026-14"),
            &admin,
        ))
        .await
        .expect_err("no such ticket");
    assert_eq!(status.code(), Code::NotFound);
    let before = masked_ticket(&mut app, &agent, &created.id).await;
    assert!(
        before.reporter.unwrap().masked,
        "nothing erased by the refusals"
    );

    let erased = app
        .tickets
        .erase_personal_data(with_token(erase(&created.id, "DP-2026-14"), &admin))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let reporter = erased.reporter.unwrap();
    assert!(reporter.erased && reporter.name.is_empty() && reporter.phone.is_empty());
    let revealed = app
        .tickets
        .get_ticket(with_token(
            proto::GetTicketRequest {
                reveal_personal_data: true,
                lookup: Some(proto::get_ticket_request::Lookup::Id(created.id.clone())),
            },
            &agent,
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert!(
        revealed.reporter.unwrap().erased,
        "a reveal shows nothing any more"
    );
    assert_eq!(revealed.subject, created.subject, "the ticket itself stays");
    let events = app
        .tickets
        .list_ticket_events(with_token(
            proto::ListTicketEventsRequest {
                ticket_id: created.id.clone(),
                ..Default::default()
            },
            &auditor,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.note.as_str(),
            last.changed_fields.clone()
        ),
        ("dpo-1", "DP-2026-14", vec!["reporter".to_owned()])
    );
    app.stop().await;
}

/// The retention policy runs at start and then hourly: a ticket settled longer ago than
/// `privacy.anonymise_closed_after_years` loses its reporter's personal data, an open one
/// and a recently settled one keep it.
#[tokio::test]
async fn the_retention_policy_anonymises_long_settled_tickets() {
    use balagh::domain::lifecycle::Action;
    use balagh::domain::{Clock, ManualClock, Timestamp};
    use balagh::store::WriteContext;
    const YEAR: i64 = 365 * 24 * 3600 * 1_000_000;
    let db = TestDb::fresh().await;
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let store = common::open_store(&db, &clock).await;
    let ctx = || WriteContext {
        actor: "agent-1".into(),
        request: None,
        reach: None,
    };
    let new = || {
        balagh::grpc::convert::parse_new_ticket(&report_in("pothole", 3)).expect("a valid ticket")
    };
    let old = store.create_ticket(ctx(), new()).await.unwrap();
    let reject = || Action::Reject {
        reason: "a private road".into(),
    };
    store
        .apply_action(ctx(), old.id, None, reject())
        .await
        .unwrap();
    let open = store.create_ticket(ctx(), new()).await.unwrap();
    clock.advance_micros(4 * YEAR);
    let recent = store.create_ticket(ctx(), new()).await.unwrap();
    store
        .apply_action(ctx(), recent.id, None, reject())
        .await
        .unwrap();
    store.close().await;
    clock.advance_micros(2 * YEAR);

    let app_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut app = spawn_app_with(
        db,
        |config| config.privacy.anonymise_closed_after_years = 5,
        app_clock,
    )
    .await;
    let reporter_of = |ticket: &proto::Ticket| ticket.reporter.clone().unwrap();
    let mut erased = false;
    for _ in 0..100 {
        let ticket = masked_ticket(&mut app, "", &old.id.to_string()).await;
        if reporter_of(&ticket).erased {
            assert_eq!(ticket.status, proto::TicketStatus::Rejected as i32);
            erased = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(erased, "the ticket settled 6 years ago was anonymised");
    for kept in [open.id, recent.id] {
        let ticket = masked_ticket(&mut app, "", &kept.to_string()).await;
        assert_eq!(
            reporter_of(&ticket).name,
            "Citizen 3",
            "{kept} keeps its data"
        );
    }
    let events = app
        .tickets
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: old.id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.last().unwrap().actor, "retention-policy");
    app.stop().await;
}
