//! The public edge: who may call (JWT), what they may do (roles and namespaces), how much
//! (rate limits, long-poll caps, deadlines), and over what (TLS). Every gRPC call and every
//! HTTP route but health passes through one [`Edge`] before the engine sees it, so a refused
//! request changes nothing.

pub mod auth;
pub mod conns;
pub mod limits;
pub mod tls;

pub use auth::{AuthConfig, Op, Principal, Role};
pub use limits::{LimitsConfig, Rate};

use auth::{Authenticator, Denied, Unauthenticated};
use limits::{Limited, Limiter, PollSlot};
use std::net::IpAddr;
use std::time::Duration;

/// How the edge checks callers.
#[derive(Clone, Debug, Default)]
pub struct EdgeConfig {
    /// `None`: no authentication (`martix dev`, or `martix server --insecure`).
    pub auth: Option<AuthConfig>,
    pub limits: LimitsConfig,
}

/// Why a request was refused before reaching the engine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(transparent)]
    Unauthenticated(#[from] Unauthenticated),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Limited(#[from] Limited),
}

/// Metadata key (gRPC) carrying how long to wait after RESOURCE_EXHAUSTED, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        match &r {
            Refusal::Unauthenticated(_) => tonic::Status::unauthenticated(r.to_string()),
            Refusal::Denied(_) => tonic::Status::permission_denied(r.to_string()),
            Refusal::Limited(l) => {
                let mut s = tonic::Status::resource_exhausted(r.to_string());
                if let Ok(v) = l.retry_after.as_millis().to_string().parse() {
                    s.metadata_mut().insert(RETRY_AFTER_MS, v);
                }
                s
            }
        }
    }
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Denied(_) => 403,
            Refusal::Limited(_) => 429,
        }
    }

    /// Seconds to wait (HTTP `Retry-After`), for rate-limit refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Limited(l) => Some(l.retry_after),
            _ => None,
        }
    }

    /// The stable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "UNAUTHENTICATED",
            Refusal::Denied(_) => "PERMISSION_DENIED",
            Refusal::Limited(_) => "RESOURCE_EXHAUSTED",
        }
    }
}

/// What a request holds while it runs (a long poll's slot).
#[must_use]
pub struct Admission {
    _poll: Option<PollSlot>,
}

/// The guard of one node's public API.
pub struct Edge {
    auth: Option<Authenticator>,
    limits: Limiter,
}

impl Edge {
    /// Loads keys and sets limits; an unusable key file is an error naming it.
    pub fn new(config: &EdgeConfig) -> Result<Self, String> {
        Ok(Self {
            auth: config.auth.as_ref().map(Authenticator::new).transpose()?,
            limits: Limiter::new(&config.limits),
        })
    }

    /// Connections each port holds at once (0: no cap).
    pub fn max_connections(&self) -> usize {
        self.limits.max_connections
    }

    /// Concurrent calls on one gRPC connection.
    pub fn max_streams_per_connection(&self) -> u32 {
        self.limits.max_streams_per_connection
    }

    /// Whether callers must present a token.
    pub fn requires_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// The subject `principal` was authenticated as; `None` with authentication off, where
    /// the subject is only the caller's address and names no one.
    pub fn caller(&self, principal: &Principal) -> Option<String> {
        self.requires_auth().then(|| principal.subject.clone())
    }

    /// The deadline of requests that do not wait by design (`None`: none).
    pub fn request_timeout(&self) -> Option<Duration> {
        Some(self.limits.request_timeout).filter(|d| !d.is_zero())
    }

    /// Who sent a request with this `authorization` header from `peer`. With authentication
    /// off every caller is an admin, told apart by address for the rate limits.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Refusal> {
        match &self.auth {
            Some(a) => {
                if let Some(ip) = peer {
                    self.limits.auth_allowed(ip)?;
                }
                a.authenticate(authorization).map_err(|refused| {
                    // A peer guessing tokens is slowed down, then not listened to for a while.
                    match peer.map(|ip| self.limits.auth_failed(ip)) {
                        Some(Err(limited)) => Refusal::from(limited),
                        _ => Refusal::from(refused),
                    }
                })
            }
            None => Ok(Principal::unauthenticated(
                peer.map_or_else(|| "local".to_owned(), |ip| ip.to_string()),
            )),
        }
    }

    /// Lets `principal` perform `op` on `namespace`, counting it against the limits.
    pub fn admit(
        &self,
        principal: &Principal,
        op: Op,
        namespace: &str,
    ) -> Result<Admission, Refusal> {
        principal.authorize(op, namespace)?;
        if op.is_long_poll() {
            return Ok(Admission {
                _poll: Some(self.limits.poll(&principal.subject)?),
            });
        }
        self.limits.request(&principal.subject)?;
        if op.waits() {
            // A result wait is a request (counted above) that holds a long-poll slot while it
            // waits: an identity cannot open more waits than polls.
            return Ok(Admission {
                _poll: Some(self.limits.poll(&principal.subject)?),
            });
        }
        if op == Op::StartWorkflow {
            let ns = if namespace.is_empty() {
                "default"
            } else {
                namespace
            };
            self.limits.start(&principal.subject, ns)?;
        }
        Ok(Admission { _poll: None })
    }
}

/// Authenticates a gRPC call from its metadata before tonic decodes its body, so an
/// unauthenticated caller costs no decoding of a message up to the payload limit; the
/// [`Principal`] rides in the request's extensions to [`crate::api::handle`].
#[derive(Clone)]
pub struct Authenticate(pub std::sync::Arc<Edge>);

impl tonic::service::Interceptor for Authenticate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let principal = self.0.authenticate(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
            request.remote_addr().map(|a| a.ip()),
        )?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}
