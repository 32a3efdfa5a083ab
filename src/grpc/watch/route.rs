//! The HTTP route of `balagh.v1.TicketService`: the generated service for every method but
//! two, which are served here with [`PreEncodedCodec`]:
//!
//! - WatchTickets, so each change's message is encoded once by the feed and copied as it is
//!   into every stream's frames;
//! - ListTickets, so a page is made of tickets' messages encoded once and kept
//!   (`grpc::encoded_tickets`).
//!
//! This is what the generated code does for these methods, with another codec: the generated
//! trait fixes the response types to the message structs, which would mean decoding or
//! cloning and then encoding again.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

use super::ChangeStream;
use crate::grpc::codec::PreEncodedCodec;
use crate::grpc::proto;
use crate::grpc::proto::ticket_service_server::{SERVICE_NAME, TicketServiceServer};
use crate::grpc::ticket_service::TicketServiceImpl;

pub const WATCH_TICKETS_PATH: &str = "/balagh.v1.TicketService/WatchTickets";
pub const LIST_TICKETS_PATH: &str = "/balagh.v1.TicketService/ListTickets";

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
        let max = self.max_decoding_message_size;
        match request.uri().path() {
            WATCH_TICKETS_PATH => {
                let method = WatchTickets(self.service.clone());
                Box::pin(
                    async move { Ok(pre_encoded(max).server_streaming(method, request).await) },
                )
            }
            LIST_TICKETS_PATH => {
                let method = ListTickets(self.service.clone());
                Box::pin(async move { Ok(pre_encoded(max).unary(method, request).await) })
            }
            _ => self.generated.call(request),
        }
    }
}

/// What the generated service would build for a method, with [`PreEncodedCodec`].
fn pre_encoded<T>(max_decoding_message_size: usize) -> Grpc<PreEncodedCodec<T>>
where
    T: prost::Message + Default + Send + 'static,
{
    Grpc::new(PreEncodedCodec::<T>::default())
        .apply_max_message_size_config(Some(max_decoding_message_size), None)
}

struct ListTickets(Arc<TicketServiceImpl>);

impl UnaryService<proto::ListTicketsRequest> for ListTickets {
    type Response = crate::grpc::codec::EncodedMessage;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<proto::ListTicketsRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let principal = crate::auth::Principal::of(&request);
            let encoded = service
                .list_tickets_encoded(&principal, request.get_ref())
                .await?;
            Ok(Response::new(crate::grpc::codec::EncodedMessage::new(
                encoded,
            )))
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
