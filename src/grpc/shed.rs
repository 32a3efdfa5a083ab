//! Load shedding: at most `[limits] max_in_flight` calls are worked on at once; a call that
//! arrives while all are taken is answered at once with `RESOURCE_EXHAUSTED`, reason
//! `OVERLOADED` and a `RetryInfo` saying when to try again, instead of queueing behind the
//! others until every caller times out.
//!
//! Server streams (`WatchTickets`) are long-lived and are not counted here: their number is
//! bounded by HTTP/2's `max_concurrent_streams` per connection and by the change feed's
//! own per-stream buffers. Health and reflection calls are never shed, so an overloaded
//! server still answers its probes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::error::ERROR_DOMAIN;

/// The reason in the `ErrorInfo` of a shed call.
pub const OVERLOADED: &str = "OVERLOADED";

/// Sheds calls beyond `max_in_flight` at once (see the module docs).
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    retry_after: Duration,
}

impl LoadShedLayer {
    pub fn new(max_in_flight: usize, retry_after: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            retry_after,
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            retry_after: self.retry_after,
        }
    }
}

#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    retry_after: Duration,
}

/// Calls that are never shed: streams (bounded elsewhere), probes and reflection.
fn exempt(path: &str) -> bool {
    path == "/balagh.v1.TicketService/WatchTickets"
        || path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
}

/// The answer to a shed call.
fn overloaded(retry_after: Duration) -> tonic::Status {
    let mut details = ErrorDetails::with_error_info(OVERLOADED, ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(retry_after));
    tonic::Status::with_error_details(
        Code::ResourceExhausted,
        "the server is at its limit of calls in flight; retry after the RetryInfo delay",
        details,
    )
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let response = overloaded(self.retry_after).into_http();
            return Box::pin(async move { Ok(response) });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            // The slot is held until the answer is ready (unary answers are one message).
            let response = future.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use tower::{Layer, Service, ServiceExt};

    type Body = String;

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(path)
            .body(String::new())
            .expect("a valid request")
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<i32> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_with_retry_info_and_the_slot_comes_back() {
        // The inner service answers each call when the test says so.
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let inner = tower::service_fn(move |_request: http::Request<Body>| {
            let release = release.clone();
            async move {
                // Only the first call waits; the lock is not held while it does.
                let wait = release.lock().await.take();
                if let Some(wait) = wait {
                    wait.await.ok();
                }
                Ok::<_, std::convert::Infallible>(http::Response::new("ok".to_owned()))
            }
        });
        let mut service = LoadShedLayer::new(1, Duration::from_secs(2)).layer(inner);

        // The one slot is taken by a call that waits.
        let first = tokio::spawn(
            service
                .ready()
                .await
                .unwrap()
                .call(request("/balagh.v1.TicketService/GetTicket")),
        );
        tokio::task::yield_now().await;

        // The next is shed at once, with the reason and when to retry.
        let shed = service
            .ready()
            .await
            .unwrap()
            .call(request("/balagh.v1.TicketService/ListTickets"))
            .await
            .unwrap();
        assert_eq!(grpc_status(&shed), Some(Code::ResourceExhausted as i32));
        let status = tonic::Status::from_header_map(shed.headers()).expect("a status");
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, OVERLOADED);
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(2))
        );

        // Probes and streams are never shed.
        for exempt in [
            "/grpc.health.v1.Health/Check",
            "/balagh.v1.TicketService/WatchTickets",
        ] {
            let answer = service
                .ready()
                .await
                .unwrap()
                .call(request(exempt))
                .await
                .unwrap();
            assert_eq!(grpc_status(&answer), None, "{exempt} was shed");
        }

        // Once the first call is answered, its slot serves the next one.
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().body(), "ok");
        let next = service
            .ready()
            .await
            .unwrap()
            .call(request("/balagh.v1.TicketService/GetTicket"))
            .await
            .unwrap();
        assert_eq!(next.body(), "ok");
    }
}
