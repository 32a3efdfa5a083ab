//! The HTTP route of `balagh.v1.TicketService`: the generated service for every method but
//! WatchTickets, which is served here with [`PreEncodedCodec`], so each change's message is
//! encoded once by the feed and copied as it is into every stream's frames.
//!
//! This is what the generated code does for a server-streaming method, with another codec:
//! the generated trait fixes the response type to `WatchTicketsResponse`, which would mean a
//! clone and an encode per stream and per change.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use super::ChangeStream;
use crate::grpc::codec::PreEncodedCodec;
use crate::grpc::proto;
use crate::grpc::proto::ticket_service_server::{SERVICE_NAME, TicketServiceServer};
use crate::grpc::ticket_service::TicketServiceImpl;

pub const WATCH_TICKETS_PATH: &str = "/balagh.v1.TicketService/WatchTickets";

/// `TicketServiceServer`, with WatchTickets sending pre-encoded changes.
#[derive(Clone)]
pub struct TicketServiceRoute {
    generated: TicketServiceServer<TicketServiceImpl>,
    service: Arc<TicketServiceImpl>,
    max_decoding_message_size: usize,
}

impl TicketServiceRoute {
    pub fn new(service: TicketServiceImpl, max_decoding_message_size: usize) -> Self {
        let service = Arc::new(service);
        Self {
            generated: TicketServiceServer::from_arc(service.clone())
                .max_decoding_message_size(max_decoding_message_size),
            service,
            max_decoding_message_size,
        }
    }
}

impl NamedService for TicketServiceRoute {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for TicketServiceRoute
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_TICKETS_PATH {
            return self.generated.call(request);
        }
        let method = WatchTickets(self.service.clone());
        let max_decoding_message_size = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(PreEncodedCodec::<proto::WatchTicketsRequest>::default())
                .apply_max_message_size_config(Some(max_decoding_message_size), None);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

struct WatchTickets(Arc<TicketServiceImpl>);

impl ServerStreamingService<proto::WatchTicketsRequest> for WatchTickets {
    type Response = crate::grpc::codec::EncodedMessage;
    type ResponseStream = ChangeStream;
    type Future = BoxFuture<Response<ChangeStream>, Status>;

    fn call(&mut self, request: Request<proto::WatchTicketsRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let principal = crate::auth::Principal::of(&request);
            let stream = service.open_watch(&principal, request.get_ref()).await?;
            Ok(Response::new(stream))
        })
    }
}
