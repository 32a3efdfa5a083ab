//! Who calls, and what they may reach.
//!
//! - [`layer`]: every gRPC call passes through [`layer::AuthLayer`], which authenticates the
//!   caller (a client certificate of a registered system, or a signed JWT), checks the RPC
//!   against [`policy`], applies the caller's rate limit, and leaves the [`Principal`] in the
//!   request's extensions for the services.
//! - [`Principal::ticket_scope`]: which tickets a caller reaches. Services narrow every read
//!   and check every write with it; a ticket outside the scope is `NOT_FOUND`.
//! - Personal data (the reporter's name, phone, e-mail and civil ID) is masked in every answer
//!   of an authenticated server unless a caller allowed to see it asks for it on one ticket;
//!   that reveal is recorded (see `docs/security.md`).
//!
//! Invariant: on a server with authentication configured, no call reaches a service without a
//! `Principal::Caller`; `Principal::Open` exists only on a loopback server started without
//! authentication (local development), and in calls made in-process without the layer.

pub mod jwt;
pub mod layer;
pub mod policy;
pub mod rate;
pub mod tls;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::filter::TicketFilter;
use crate::domain::ticket::Ticket;
use crate::domain::values::Code;

macro_rules! roles {
    ($($(#[$meta:meta])* $variant:ident => $text:literal),+ $(,)?) => {
        /// The roles of callers. A role is given by the caller's token (claim `role`) or by the
        /// registration of its client certificate.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Role { $($(#[$meta])* $variant),+ }

        impl Role {
            pub const ALL: &'static [Role] = &[$(Role::$variant),+];

            /// The name used in tokens, in the configuration and in `docs/security.md`.
            pub fn as_str(self) -> &'static str {
                match self { $(Role::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Role> {
                match text { $($text => Some(Role::$variant),)+ _ => None }
            }
        }
    };
}

roles!(
    /// Contact-centre agent (line 1): takes in tickets and answers citizens about any ticket.
    Agent => "agent",
    /// Directorate liaison officer (line 2): works the tickets of one directorate.
    LiaisonOfficer => "liaison_officer",
    /// Directorate specialist (line 3): works the tickets of one directorate (and, when the
    /// token names them, only of some of its outlets).
    Specialist => "specialist",
    /// Supervisor: KPIs, quality reviews, escalations; reads every ticket.
    Supervisor => "supervisor",
    /// Another government system: files tickets and reads those it filed.
    ExternalSystem => "external_system",
    /// Auditor: reads everything, changes nothing.
    Auditor => "auditor",
    /// Administrator: the catalog, calendars, policies and dead letters.
    Administrator => "administrator",
);

impl Role {
    /// Roles whose work is one directorate's tickets: their token must name the directorate.
    pub fn is_directorate_scoped(self) -> bool {
        matches!(self, Role::LiaisonOfficer | Role::Specialist)
    }

    /// Roles that may see a reporter's personal data on one ticket when they ask for it
    /// (`reveal_personal_data`), within their scope; the reveal is recorded.
    pub fn may_reveal_personal_data(self) -> bool {
        matches!(
            self,
            Role::Agent
                | Role::LiaisonOfficer
                | Role::Specialist
                | Role::ExternalSystem
                | Role::Auditor
        )
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call was not authenticated. Each is one `UNAUTHENTICATED` reason; the message says
/// what to fix and nothing about the server's keys or registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Neither a bearer token nor a registered client certificate.
    Missing,
    /// Not a JWT, or an `authorization` header that is not `Bearer <token>`.
    Malformed,
    /// The token names a key this server does not have.
    KeyUnknown,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    /// The subject, role, directorate or outlets claims are missing or invalid.
    ClaimsInvalid,
    /// A client certificate that is not registered as a caller.
    CertificateUnknown,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "CREDENTIALS_MISSING",
            AuthError::Malformed => "TOKEN_MALFORMED",
            AuthError::KeyUnknown => "TOKEN_KEY_UNKNOWN",
            AuthError::BadSignature => "TOKEN_SIGNATURE_INVALID",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
            AuthError::WrongAudience => "TOKEN_AUDIENCE_INVALID",
            AuthError::WrongIssuer => "TOKEN_ISSUER_INVALID",
            AuthError::ClaimsInvalid => "TOKEN_CLAIMS_INVALID",
            AuthError::CertificateUnknown => "CLIENT_CERTIFICATE_UNKNOWN",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "authentication required: send `authorization: Bearer <token>` or a registered client certificate"
            }
            AuthError::Malformed => "the bearer token is not a well-formed JWT",
            AuthError::KeyUnknown => "the token is signed with a key this server does not accept",
            AuthError::BadSignature => "the token's signature does not verify",
            AuthError::Expired => "the token has expired; get a new one",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::WrongAudience => "the token is not meant for this service",
            AuthError::WrongIssuer => "the token is not from an issuer this service trusts",
            AuthError::ClaimsInvalid => {
                "the token's sub, role, directorate or outlets claims are missing or invalid"
            }
            AuthError::CertificateUnknown => {
                "the client certificate is not registered as a caller of this service"
            }
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject or the registered name of the client certificate; recorded as the
    /// actor of every change the caller makes. Never personal data by convention: staff are
    /// named by their employee id.
    pub id: String,
    pub role: Role,
    /// The directorate of a directorate-scoped role.
    pub directorate: Option<Code>,
    /// For a specialist, the outlets of the directorate it works for; empty: all of them.
    pub outlets: Vec<Code>,
}

/// Who a call is made by, as the services see it.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A loopback server without authentication (local development), or a call made
    /// in-process without the auth layer: no scope, no masking. `actor` is what the caller
    /// named in the `x-balagh-actor` metadata, for the audit trail.
    Open {
        actor: String,
    },
    Caller(Arc<Caller>),
}

impl Principal {
    /// The principal the auth layer left on the request; `Open` (with the metadata's actor)
    /// when there is none, that is when the server runs without authentication.
    pub fn of<T>(request: &tonic::Request<T>) -> Principal {
        match request.extensions().get::<Principal>() {
            Some(principal) => principal.clone(),
            None => Principal::Open {
                actor: crate::grpc::request::actor(request),
            },
        }
    }

    /// Who acts, for the audit trail.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Open { actor } => actor,
            Principal::Caller(caller) => &caller.id,
        }
    }

    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Principal::Open { .. } => None,
            Principal::Caller(caller) => Some(caller),
        }
    }

    /// The tickets this principal reaches.
    pub fn ticket_scope(&self) -> TicketScope {
        let Some(caller) = self.caller() else {
            return TicketScope::All;
        };
        match caller.role {
            Role::LiaisonOfficer | Role::Specialist => match &caller.directorate {
                Some(directorate) => TicketScope::Directorate {
                    directorate: directorate.clone(),
                    outlets: caller.outlets.clone(),
                },
                // The layer refuses such a token; should one get here, it reaches nothing.
                None => TicketScope::Nothing,
            },
            Role::ExternalSystem => TicketScope::CreatedBy(caller.id.clone()),
            Role::Agent | Role::Supervisor | Role::Auditor | Role::Administrator => {
                TicketScope::All
            }
        }
    }

    /// Whether answers to this principal carry personal data masked (every authenticated
    /// caller, unless it reveals one ticket's).
    pub fn masks_personal_data(&self) -> bool {
        self.caller().is_some()
    }
}

/// The tickets a caller reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketScope {
    All,
    /// The tickets assigned to the directorate (and, when `outlets` is not empty, to one of
    /// those outlets).
    Directorate {
        directorate: Code,
        outlets: Vec<Code>,
    },
    /// The tickets the caller filed.
    CreatedBy(String),
    Nothing,
}

impl TicketScope {
    pub fn admits(&self, ticket: &Ticket) -> bool {
        match self {
            TicketScope::All => true,
            TicketScope::Directorate {
                directorate,
                outlets,
            } => {
                let a = &ticket.assignment;
                a.directorate.as_ref() == Some(directorate)
                    && (outlets.is_empty()
                        || a.outlet.as_ref().is_some_and(|o| outlets.contains(o)))
            }
            TicketScope::CreatedBy(id) => ticket.created_by.as_deref() == Some(id.as_str()),
            TicketScope::Nothing => false,
        }
    }

    /// The directorate a per-directorate list may show: the asked one (or all, `None`) when
    /// the scope is everything, the caller's own for a directorate scope; `None` when the
    /// caller asked for another directorate or its scope is not a directorate.
    pub fn restrict_directorate(&self, asked: Option<Code>) -> Option<Option<Code>> {
        match self {
            TicketScope::All => Some(asked),
            TicketScope::Directorate { directorate, .. } => match asked {
                None => Some(Some(directorate.clone())),
                Some(a) if &a == directorate => Some(Some(a)),
                Some(_) => None,
            },
            TicketScope::CreatedBy(_) | TicketScope::Nothing => None,
        }
    }

    /// The filter narrowed to the scope, or `None` when nothing in the scope can match it
    /// (the caller asked for another directorate's tickets: an empty answer, not an error).
    pub fn restrict(&self, mut filter: TicketFilter) -> Option<TicketFilter> {
        match self {
            TicketScope::All => {}
            TicketScope::Directorate {
                directorate,
                outlets,
            } => {
                filter.directorates =
                    narrow(filter.directorates, std::slice::from_ref(directorate))?;
                if !outlets.is_empty() {
                    filter.outlets = narrow(filter.outlets, outlets)?;
                }
            }
            TicketScope::CreatedBy(id) => {
                filter.creators = narrow(filter.creators, std::slice::from_ref(id))?;
            }
            TicketScope::Nothing => return None,
        }
        Some(filter)
    }
}

/// The asked values that the scope allows (all the allowed ones when none were asked);
/// `None` when none is left.
fn narrow<T: Clone + PartialEq>(asked: Vec<T>, allowed: &[T]) -> Option<Vec<T>> {
    let narrowed: Vec<T> = if asked.is_empty() {
        allowed.to_vec()
    } else {
        asked.into_iter().filter(|v| allowed.contains(v)).collect()
    };
    (!narrowed.is_empty()).then_some(narrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Code {
        Code::parse("code", s).unwrap()
    }

    #[test]
    fn a_directorate_scope_narrows_filters_and_empties_foreign_ones() {
        let scope = TicketScope::Directorate {
            directorate: code("roads"),
            outlets: vec![],
        };
        let open = scope.restrict(TicketFilter::default()).unwrap();
        assert_eq!(open.directorates, vec![code("roads")]);
        let foreign = TicketFilter {
            directorates: vec![code("health")],
            ..TicketFilter::default()
        };
        assert_eq!(scope.restrict(foreign), None);
        let mixed = TicketFilter {
            directorates: vec![code("health"), code("roads")],
            ..TicketFilter::default()
        };
        assert_eq!(
            scope.restrict(mixed).unwrap().directorates,
            vec![code("roads")]
        );
        let creator = TicketScope::CreatedBy("rop".into());
        assert_eq!(
            creator.restrict(TicketFilter::default()).unwrap().creators,
            vec!["rop".to_owned()]
        );
        assert_eq!(TicketScope::Nothing.restrict(TicketFilter::default()), None);
    }

    #[test]
    fn roles_round_trip_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(*role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
