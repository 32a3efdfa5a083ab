//! Prometheus metrics of the process, and the tower layer that counts every gRPC call and
//! opens its span (`crate::telemetry::grpc_call_span`), which lasts until the call's status
//! is known.
//!
//! Labels are bounded: gRPC method paths (a fixed set), status codes, and nothing a caller
//! can choose freely. Personal data never reaches a label.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// Every metric balagh exports. Cheap to clone (the metrics are shared handles).
#[derive(Clone)]
pub struct Metrics {
    pub grpc_requests: Family<RpcLabels, Counter>,
    pub grpc_duration: Family<MethodLabels, Histogram>,
    pub watch_streams_open: Gauge,
    /// The newest event committed, and the newest one the change feed has published.
    pub event_log_latest: Gauge,
    pub change_feed_published: Gauge,
    pub db_pool_connections: Gauge,
    pub db_pool_idle: Gauge,
    /// The outbox of pushes owed to the national platform, by state.
    pub outbox_entries: Family<StateLabels, Gauge>,
    /// Age of the oldest push still waiting, in seconds (0 when none waits).
    pub outbox_oldest_pending_seconds: Gauge,
    /// Changes of the platform's feed taken in so far, and seconds since a page was applied.
    pub platform_pulled_changes: Gauge,
    pub platform_last_pull_age_seconds: Gauge,
    /// 1 for each role this replica leads now (see `crate::leader`), 0 otherwise.
    pub leader: Family<RoleLabels, Gauge>,
    /// ListTickets' tickets answered from a message kept from before, and made anew.
    pub list_tickets_reused: Counter,
    pub list_tickets_made: Counter,
    pub list_tickets_kept_bytes: Gauge,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let grpc_requests = Family::<RpcLabels, Counter>::default();
        let grpc_duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~52 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        let watch_streams_open = Gauge::default();
        let event_log_latest = Gauge::default();
        let change_feed_published = Gauge::default();
        let db_pool_connections = Gauge::default();
        let db_pool_idle = Gauge::default();
        let outbox_entries = Family::<StateLabels, Gauge>::default();
        let outbox_oldest_pending_seconds = Gauge::default();
        let platform_pulled_changes = Gauge::default();
        let platform_last_pull_age_seconds = Gauge::default();
        let leader = Family::<RoleLabels, Gauge>::default();
        let list_tickets_reused = Counter::default();
        let list_tickets_made = Counter::default();
        let list_tickets_kept_bytes = Gauge::default();
        let mut registry = Registry::with_prefix("balagh");
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by method and status code",
            grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call (for streams: to open it), by method",
            grpc_duration.clone(),
        );
        registry.register(
            "watch_streams_open",
            "WatchTickets streams open now",
            watch_streams_open.clone(),
        );
        registry.register(
            "event_log_latest_cursor",
            "The newest committed event's cursor",
            event_log_latest.clone(),
        );
        registry.register(
            "change_feed_published_cursor",
            "The newest event the change feed has published to streams",
            change_feed_published.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Read pool connections open",
            db_pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle",
            "Read pool connections idle",
            db_pool_idle.clone(),
        );
        registry.register(
            "outbox_entries",
            "Pushes owed to the national platform, by state (pending, leased, dead, delivered)",
            outbox_entries.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest push still waiting for the national platform",
            outbox_oldest_pending_seconds.clone(),
        );
        registry.register(
            "platform_pulled_changes",
            "Changes of the national platform's feed taken in so far (duplicates included)",
            platform_pulled_changes.clone(),
        );
        registry.register(
            "platform_last_pull_age_seconds",
            "Seconds since a page of the national platform's feed was last applied (-1: never)",
            platform_last_pull_age_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica plays the role (escalation_scheduler, platform_pull), else 0",
            leader.clone(),
        );
        registry.register(
            "list_tickets_reused_tickets",
            "ListTickets' tickets answered with a message kept from an earlier page",
            list_tickets_reused.clone(),
        );
        registry.register(
            "list_tickets_made_tickets",
            "ListTickets' tickets decoded and encoded anew (not kept, changed, or first read)",
            list_tickets_made.clone(),
        );
        registry.register(
            "list_tickets_kept_bytes",
            "Memory ListTickets keeps encoded tickets in, with their bodies (an estimate)",
            list_tickets_kept_bytes.clone(),
        );
        Self {
            grpc_requests,
            grpc_duration,
            watch_streams_open,
            event_log_latest,
            change_feed_published,
            db_pool_connections,
            db_pool_idle,
            outbox_entries,
            outbox_oldest_pending_seconds,
            platform_pulled_changes,
            platform_last_pull_age_seconds,
            leader,
            list_tickets_reused,
            list_tickets_made,
            list_tickets_kept_bytes,
            registry: Arc::new(registry),
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %error, "encoding metrics failed");
        }
        text
    }

    /// The gauge saying whether this replica leads `role`.
    pub fn leading(&self, role: crate::store::LeaderRole) -> Gauge {
        self.leader
            .get_or_create(&RoleLabels {
                role: role.as_str(),
            })
            .clone()
    }
}

/// Counts every gRPC call by method and final status, times it, and runs it in its span.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Metrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = known_method(request.uri().path());
        let span = crate::telemetry::grpc_call_span(&method, request.headers());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        let call_span = span.clone();
        let answered = async move {
            let response = future.await?;
            metrics
                .grpc_duration
                .get_or_create(&MethodLabels {
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            // A trailers-only answer (most errors) carries the status in the headers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(parse_code);
            let (parts, body) = response.into_parts();
            let mut counted = CountedBody {
                inner: body,
                record: Some(Recorder {
                    metrics,
                    method,
                    span: call_span,
                }),
            };
            if let Some(code) = code
                && let Some(recorder) = counted.record.take()
            {
                recorder.count(code);
            }
            Ok(http::Response::from_parts(parts, counted))
        };
        Box::pin(answered.instrument(span))
    }
}

/// Only balagh's and the standard services' methods become label values; anything else is
/// "other", so a caller cannot grow the label set.
fn known_method(path: &str) -> String {
    let known = path.starts_with("/balagh.v1.")
        || path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.v1.");
    let valid = path.len() <= 96
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'.' || b == b'_');
    if known && valid {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

fn parse_code(value: &str) -> tonic::Code {
    value
        .parse::<i32>()
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Unknown)
}

/// Counts the call once its status is known, and ends its span.
struct Recorder {
    metrics: Metrics,
    method: String,
    span: tracing::Span,
}

impl Recorder {
    fn count(self, code: tonic::Code) {
        crate::telemetry::record_grpc_status(&self.span, code);
        self.metrics
            .grpc_requests
            .get_or_create(&RpcLabels {
                method: self.method,
                code: format!("{code:?}"),
            })
            .inc();
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status when its trailers go by (or, if the
    /// client leaves first, as `Cancelled`).
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        record: Option<Recorder>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(recorder) = this.project().record.take() {
                recorder.count(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(recorder) = this.record.take()
        {
            let code = trailers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map_or(tonic::Code::Unknown, parse_code);
            recorder.count(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
