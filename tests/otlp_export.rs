//! Trace export over OTLP/HTTP, end to end: an in-process collector (axum on port 0, decoding
//! the protobuf `ExportTraceServiceRequest`s the exporter posts to `/v1/traces`), the real
//! server with the real telemetry set-up pointed at it, and gRPC calls that carry a reporter's
//! name, phone, e-mail and civil ID. After shutdown, the collector holds a span per call named
//! after its method, with its status code, under `service.name = balagh`; a call that came
//! with a `traceparent` continues its caller's trace; the sync worker's pushes are there; and
//! not one byte of what it received holds the reporter's personal data.
//!
//! The global subscriber is installed once per process, so this file holds one test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use balagh::config::{LogFormat, TraceExportConfig};
use balagh::grpc::proto;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;

/// A caller's trace, as a W3C `traceparent` would carry it (sampled).
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the collector was sent: each request's body (inflated when gzipped), decoded.
#[derive(Clone, Default)]
struct Collector {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Collector::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (collector, addr)
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.bodies()
            .iter()
            .map(|body| ExportTraceServiceRequest::decode(body.as_slice()).expect("decoded"))
            .collect()
    }
}

async fn receive(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new());
    }
    let body = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut inflated = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut inflated)
                .expect("gzip");
            inflated
        }
        None => body.to_vec(),
        Some(_) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new()),
    };
    if ExportTraceServiceRequest::decode(body.as_slice()).is_err() {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    }
    collector.bodies.lock().unwrap().push(body);
    (
        StatusCode::OK,
        protobuf,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(value: Option<&any_value::Value>) -> Option<&str> {
    match value {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_named_after_their_calls_without_personal_data() {
    let (collector, collector_addr) = Collector::start().await;
    let traces = TraceExportConfig::new(
        &format!("http://{collector_addr}"),
        "the test's endpoint",
        "balagh",
        1.0,
    )
    .expect("valid");
    let telemetry = balagh::telemetry::init_with_traces(LogFormat::Text, Some(&traces))
        .expect("telemetry starts");
    assert!(
        telemetry.is_exporting(),
        "this test process's only subscriber"
    );

    let (mut app, _) = spawn_app_beside_simulator().await;
    let calls = async {
        let ticket = create(&mut app, identified_complaint()).await;
        let mut get = tonic::Request::new(proto::GetTicketRequest {
            reveal_personal_data: true,
            lookup: Some(proto::get_ticket_request::Lookup::Id(ticket.id.clone())),
        });
        get.metadata_mut().insert(
            "traceparent",
            format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01")
                .parse()
                .unwrap(),
        );
        let got = app.tickets.get_ticket(get).await.expect("get").into_inner();
        assert_eq!(got.ticket.unwrap().reporter.unwrap().name, REPORTER_NAME);
        let missing = app
            .tickets
            .get_ticket(proto::GetTicketRequest {
                reveal_personal_data: false,
                lookup: Some(proto::get_ticket_request::Lookup::Id(
                    uuid::Uuid::now_v7().to_string(),
                )),
            })
            .await
            .expect_err("no such ticket");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        // Bad input that carries personal data is refused; the refusal is traced without it.
        let mut bad = identified_complaint();
        bad.reporter.as_mut().unwrap().phone = format!("{REPORTER_PHONE_DIGITS}x");
        bad.reporter.as_mut().unwrap().email = format!("{REPORTER_NAME}@");
        app.tickets
            .create_ticket(bad)
            .await
            .expect_err("an invalid phone and e-mail");
        // The push reaches the simulated platform, in a span of its own.
        wait_for_sync_status(&app, |s| s.delivered >= 1 && s.pending == 0).await;
        ticket
    };
    let ticket = tokio::time::timeout(Duration::from_secs(30), calls)
        .await
        .expect("the calls and the push in time");
    app.stop().await;
    tokio::time::timeout(Duration::from_secs(30), telemetry.shutdown())
        .await
        .expect("the last spans leave in time");

    let requests = collector.requests();
    assert!(!requests.is_empty(), "the collector received spans");
    let resources: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .collect();
    assert!(resources.iter().all(|resource| {
        text(attribute(&resource.attributes, "service.name")) == Some("balagh")
            && text(attribute(&resource.attributes, "service.version"))
                == Some(env!("CARGO_PKG_VERSION"))
    }));
    let spans: Vec<&Span> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let calls_of = |method: &str| -> Vec<&Span> {
        spans
            .iter()
            .copied()
            .filter(|s| s.name == format!("balagh.v1.TicketService/{method}"))
            .collect()
    };
    let code = |span: &Span| match attribute(&span.attributes, "rpc.grpc.status_code") {
        Some(any_value::Value::IntValue(code)) => *code,
        other => panic!("{}: rpc.grpc.status_code {other:?}", span.name),
    };

    let created = calls_of("CreateTicket");
    assert_eq!(created.len(), 2, "two CreateTicket calls, two spans");
    let accepted = created.iter().find(|s| code(s) == 0).expect("an OK create");
    assert_eq!(accepted.kind, SpanKind::Server as i32);
    assert_eq!(
        text(attribute(&accepted.attributes, "rpc.system")),
        Some("grpc")
    );
    assert_eq!(
        text(attribute(&accepted.attributes, "rpc.service")),
        Some("balagh.v1.TicketService")
    );
    assert_eq!(
        text(attribute(&accepted.attributes, "rpc.method")),
        Some("CreateTicket")
    );
    assert!(
        accepted.events.iter().any(|e| e.name == "ticket created"),
        "the handler's event is in its call's span: {:?}",
        accepted.events
    );
    assert!(
        created
            .iter()
            .any(|s| code(s) == tonic::Code::InvalidArgument as i64),
        "the refused create"
    );

    let got = calls_of("GetTicket");
    assert_eq!(got.len(), 2);
    let continued = got.iter().find(|s| code(s) == 0).expect("the OK get");
    assert_eq!(hex(&continued.trace_id), CALLER_TRACE_ID);
    assert_eq!(hex(&continued.parent_span_id), CALLER_SPAN_ID);
    let not_found = got.iter().find(|s| code(s) != 0).expect("the missing get");
    assert_eq!(code(not_found), tonic::Code::NotFound as i64);
    assert_ne!(
        hex(&not_found.trace_id),
        CALLER_TRACE_ID,
        "a call without traceparent starts a trace"
    );

    let pushes: Vec<&Span> = spans.iter().copied().filter(|s| s.name == "push").collect();
    assert!(
        pushes.iter().any(|s| {
            text(attribute(&s.attributes, "reference")) == Some(ticket.reference.as_str())
        }),
        "the push of the ticket, by reference: {pushes:?}"
    );

    // Not one byte of what the collector received holds personal data.
    let bodies = collector.bodies();
    for needle in [
        REPORTER_NAME,
        "Zainab",
        "Testiya",
        REPORTER_PHONE_DIGITS,
        "9123 4567",
        "+96891234567",
        REPORTER_EMAIL,
        REPORTER_CIVIL_ID,
    ] {
        let found = bodies
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle.as_bytes()));
        let in_spans: Vec<&str> = spans
            .iter()
            .filter(|s| format!("{s:?}").contains(needle))
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            !found,
            "personal data {needle:?} sent to the collector (in the spans {in_spans:?})"
        );
    }
}
