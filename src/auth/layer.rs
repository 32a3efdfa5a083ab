//! The auth layer in front of every gRPC service: authenticate, authorize by the policy
//! table, apply the caller's rate limit, and hand the [`Principal`] to the services.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic_types::{ErrorDetails, StatusExt};

use super::jwt::JwtVerifier;
use super::policy::{self, Access};
use super::rate::CallerLimits;
use super::tls::CertificateCallers;
use super::{AuthError, Caller, Principal};
use crate::grpc::error::ERROR_DOMAIN;

/// How callers are authenticated on this server.
#[derive(Clone, Debug)]
pub struct Authenticator {
    pub jwt: Option<JwtVerifier>,
    pub certificates: CertificateCallers,
}

impl Authenticator {
    /// Whether any way to authenticate is configured.
    pub fn is_configured(&self) -> bool {
        self.jwt.is_some() || !self.certificates.is_empty()
    }

    /// The caller of a request, from its bearer token or else its client certificate.
    pub fn authenticate<B>(&self, request: &http::Request<B>) -> Result<Arc<Caller>, AuthError> {
        if let Some(header) = request.headers().get(http::header::AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(AuthError::Malformed)?;
            let verifier = self.jwt.as_ref().ok_or(AuthError::KeyUnknown)?;
            return verifier.verify(token);
        }
        let leaf = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        match leaf {
            Some(der) => self.certificates.caller_for(&der),
            None => Err(AuthError::Missing),
        }
    }
}

/// The layer; `authenticator: None` runs open (loopback development only, see `app.rs`).
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    limits: Arc<CallerLimits>,
}

impl AuthLayer {
    pub fn new(authenticator: Option<Authenticator>, limits: Arc<CallerLimits>) -> Self {
        Self {
            authenticator: authenticator.map(Arc::new),
            limits,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    limits: Arc<CallerLimits>,
}

fn refusal(code: Code, reason: &str, message: String) -> tonic::Status {
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// The decision for one call: the principal to hand on, or the refusal to answer with.
fn decide<B>(
    authenticator: &Authenticator,
    limits: &CallerLimits,
    request: &http::Request<B>,
) -> Result<Option<Principal>, tonic::Status> {
    let path = request.uri().path();
    let access = policy::access(path);
    if access == Access::Public {
        return Ok(None);
    }
    let caller = authenticator.authenticate(request).map_err(|error| {
        tracing::info!(
            reason = error.reason(),
            method = path,
            "call refused: not authenticated"
        );
        refusal(
            Code::Unauthenticated,
            error.reason(),
            error.message().to_owned(),
        )
    })?;
    if let Access::Roles(roles) = access
        && !roles.contains(&caller.role)
    {
        tracing::info!(caller = %caller.id, role = %caller.role, method = path, "call refused: role not permitted");
        return Err(refusal(
            Code::PermissionDenied,
            "ROLE_NOT_PERMITTED",
            format!("the role {} may not call {path}", caller.role),
        ));
    }
    if let Err(retry_after) = limits.take(&caller.id, Instant::now()) {
        tracing::info!(caller = %caller.id, method = path, "call refused: caller over its rate limit");
        let mut details =
            ErrorDetails::with_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
        details.set_retry_info(Some(retry_after));
        return Err(tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "this caller is over its rate limit; retry after the RetryInfo delay",
            details,
        ));
    }
    Ok(Some(Principal::Caller(caller)))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Auth<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(authenticator) = &self.authenticator else {
            return Box::pin(self.inner.call(request));
        };
        match decide(authenticator, &self.limits, &request) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
