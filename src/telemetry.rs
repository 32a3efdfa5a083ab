//! Logs and traces, set up once.
//!
//! Logs: JSON in production, readable text for people; h2, hyper, tower and sqlx are quiet
//! unless asked for. `RUST_LOG` overrides the defaults.
//!
//! Traces: when an OTLP endpoint is configured (`[telemetry]`, docs/operations.md), spans at
//! INFO and above are exported to the collector over OTLP/HTTP (protobuf): the span of every
//! gRPC call (named after its method, with its status code), the sync worker's pushes and
//! pulls, and the events inside them. `RUST_LOG` changes what is logged, never what is
//! exported. A call that carries a W3C `traceparent` continues its caller's trace.
//!
//! Personal data (names, phone numbers, e-mail, civil IDs, free text) is never logged nor
//! exported: spans and events carry ticket ids, references, codes and statuses only
//! (`tests/personal_data_in_logs.rs` searches the logs, `tests/otlp_export.rs` what a
//! collector receives).
//!
//! Export never holds the service up: finished spans wait in the SDK's bounded queue (dropped
//! when it is full) and leave in batches from the SDK's own thread. A collector that is down
//! costs a warning a minute, nothing more.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, TraceExportConfig};

const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,tonic=info";

/// What is exported, whatever `RUST_LOG` says: INFO and above, the transport crates (among
/// them the exporter's own HTTP client) only when they warn.
const TRACE_FILTER: &str =
    "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,sqlx=warn,reqwest=warn";

/// How long one export may take, retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutting down waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Export failures are logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A collector's answer is a few bytes; more than this is refused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Installs the global subscriber, writing to stderr. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER);
}

/// Like [`init`], with another default filter (the load tools keep the server they drive
/// quiet, so its per-call lines do not cost what they measure).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    install(format, default_filter, None);
}

/// What `balagh serve` sets up: the logs of [`init`], and trace export when `traces` is
/// configured. Keep the answer until the end and call [`Telemetry::shutdown`], so the spans
/// still buffered leave. When a subscriber is already installed (a second call), nothing is
/// exported.
pub fn init_with_traces(
    format: LogFormat,
    traces: Option<&TraceExportConfig>,
) -> anyhow::Result<Telemetry> {
    let Some(config) = traces else {
        install(format, DEFAULT_FILTER, None);
        return Ok(Telemetry { export: None });
    };
    let export = TraceExport::start(config)?;
    if !install(format, DEFAULT_FILTER, Some(&export.provider)) {
        export.finish();
        return Ok(Telemetry { export: None });
    }
    tracing::info!(
        url = config.traces_url(),
        service_name = config.service_name(),
        sample_ratio = config.sample_ratio(),
        "exporting traces over OTLP/HTTP"
    );
    Ok(Telemetry {
        export: Some(export),
    })
}

/// Installs the logs, and the traces when given a provider; false when a global subscriber
/// was already there.
fn install(format: LogFormat, default_filter: &str, traces: Option<&SdkTracerProvider>) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let traces = traces.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("balagh"))
            .with_filter(
                TRACE_FILTER
                    .parse::<Targets>()
                    .expect("the trace filter is valid"),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok()
}

/// What [`init_with_traces`] set up. [`Telemetry::shutdown`], or dropping it, exports the
/// spans still buffered, waiting at most 5 s.
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    export: Option<TraceExport>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports the spans still buffered and stops exporting. It waits on a blocking thread,
    /// so the runtime keeps serving meanwhile (a collector may live on it, as in the tests).
    pub async fn shutdown(mut self) {
        if let Some(export) = self.export.take()
            && let Err(error) = tokio::task::spawn_blocking(move || export.finish()).await
        {
            tracing::warn!(error = %error, "shutting trace export down failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(export) = self.export.take() {
            export.finish();
        }
    }
}

/// The SDK's tracer provider with its batch processor and OTLP exporter, and the exporter's
/// HTTP client (which knows how exports fared).
struct TraceExport {
    provider: SdkTracerProvider,
    client: Arc<ExportClient>,
}

impl TraceExport {
    fn start(config: &TraceExportConfig) -> anyhow::Result<Self> {
        let client = Arc::new(ExportClient::new()?);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_shared_http_client(client.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.traces_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot build the OTLP trace exporter")?;
        let resource = Resource::builder()
            .with_service_name(config.service_name().to_owned())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        // The SDK's batch processor exports from a thread of its own, so neither a slow
        // collector nor a full queue ever waits on the runtime that serves calls. (The
        // processors that run on tokio, behind the SDK's rt-tokio feature, are still
        // experimental in 0.33.)
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio(),
            ))))
            .with_resource(resource)
            .build();
        Ok(Self { provider, client })
    }

    /// Exports what is buffered and shuts the provider down. Blocks for at most
    /// [`SHUTDOWN_TIMEOUT`].
    fn finish(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %error, "trace export did not shut down cleanly");
        }
        self.client.log_unlogged_failures();
    }
}

/// The span of one gRPC call. It is named after the method
/// (`balagh.v1.TicketService/CreateTicket`; `method` is the request path, or `other` for one
/// outside balagh's and the standard services), and it continues the caller's trace when the
/// call carries a W3C `traceparent`. Its attributes are the method and, once known, the status
/// code (see [`record_grpc_status`]): nothing from the request's body or other metadata.
/// Health checks get none: probes every few seconds would bury the calls that matter.
pub fn grpc_call_span(method: &str, headers: &http::HeaderMap) -> tracing::Span {
    if method.starts_with("/grpc.health.v1.") {
        return tracing::Span::none();
    }
    let method = method.trim_start_matches('/');
    let span = tracing::info_span!(
        "grpc",
        otel.name = method,
        otel.kind = "server",
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    // Exported, not logged: a log line names its call through `otel.name` already.
    let (service, name) = method.split_once('/').unwrap_or((method, method));
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_owned());
    span.set_attribute("rpc.method", name.to_owned());
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Refused only when the span has no OpenTelemetry side (no export configured).
        let _ = span.set_parent(parent);
    }
    span
}

/// Records a call's final status on its span; the codes that mean the server failed mark
/// the span as an error, as OpenTelemetry's conventions for gRPC servers ask.
pub fn record_grpc_status(span: &tracing::Span, code: tonic::Code) {
    use tonic::Code;
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The exporter's HTTP client: reqwest's blocking client, since the SDK's batch processor
/// exports from a thread of its own, outside the tokio runtime. It notes how each export
/// fared and logs failures at most once a [`FAILURE_LOG_INTERVAL`].
#[derive(Debug)]
struct ExportClient {
    http: reqwest::blocking::Client,
    failures: Mutex<FailureLog>,
}

#[derive(Debug, Default)]
struct FailureLog {
    /// Failed attempts since the last warning.
    n_unlogged: u64,
    last_warning: Option<Instant>,
    /// Whether the last attempt failed.
    failing: bool,
}

impl ExportClient {
    fn new() -> anyhow::Result<Self> {
        // The blocking client runs a runtime of its own, which may not be built inside
        // tokio's: it is built on a plain thread.
        let http = std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .user_agent(concat!("balagh/", env!("CARGO_PKG_VERSION")))
                .build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?
        .context("cannot build the OTLP HTTP client")?;
        Ok(Self {
            http,
            failures: Mutex::default(),
        })
    }

    fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let mut response = self.http.execute(request.try_into()?)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        response.take(MAX_ANSWER_BYTES + 1).read_to_end(&mut body)?;
        if body.len() as u64 > MAX_ANSWER_BYTES {
            return Err(format!("the collector's answer exceeds {MAX_ANSWER_BYTES} bytes").into());
        }
        let mut answer = http::Response::builder()
            .status(status)
            .body(Bytes::from(body))?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    /// Notes one attempt's outcome: a failure is logged when none was in the last interval,
    /// and a success after failures says export works again.
    fn note(&self, failure: Option<String>) {
        let Ok(mut log) = self.failures.lock() else {
            return;
        };
        let Some(error) = failure else {
            if log.failing {
                log.failing = false;
                tracing::info!("trace export to the OTLP collector works again");
            }
            return;
        };
        log.failing = true;
        log.n_unlogged += 1;
        if log
            .last_warning
            .is_none_or(|last| last.elapsed() >= FAILURE_LOG_INTERVAL)
        {
            tracing::warn!(
                error = %error,
                n_failed_attempts = log.n_unlogged,
                "trace export to the OTLP collector failed; the spans of failed exports are dropped (logged at most once a minute)"
            );
            log.n_unlogged = 0;
            log.last_warning = Some(Instant::now());
        }
    }

    /// At shutdown: the failures the interval kept quiet.
    fn log_unlogged_failures(&self) {
        if let Ok(log) = self.failures.lock()
            && log.n_unlogged > 0
        {
            tracing::warn!(
                n_failed_attempts = log.n_unlogged,
                "trace export attempts failed since the last warning; their spans were dropped"
            );
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let result = self.send(request);
        self.note(match &result {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("the collector answered {}", answer.status())),
            Err(error) => Some(cause_chain(error.as_ref())),
        });
        result
    }
}

/// An error and its causes, `: `-separated.
fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_filter_parses_and_keeps_info() {
        let targets: Targets = TRACE_FILTER.parse().expect("valid");
        assert!(targets.would_enable("balagh::sync", &tracing::Level::INFO));
        assert!(!targets.would_enable("balagh::sync", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("h2::proto", &tracing::Level::INFO));
        assert!(!targets.would_enable("reqwest::blocking", &tracing::Level::INFO));
    }

    #[test]
    fn failures_are_logged_once_an_interval_and_counted_in_between() {
        let client = ExportClient::new().expect("client");
        client.note(Some("connection refused".into()));
        client.note(Some("connection refused".into()));
        client.note(Some("connection refused".into()));
        {
            let log = client.failures.lock().unwrap();
            assert!(log.failing && log.last_warning.is_some());
            assert_eq!(log.n_unlogged, 2, "the first was logged, two kept quiet");
        }
        client.note(None);
        assert!(!client.failures.lock().unwrap().failing);
    }
}
