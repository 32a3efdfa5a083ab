//! What every request carries besides its payload: the AIP-155 request id and its
//! fingerprint, the actor, AIP-154 etags, and AIP-158 page tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Request;

use crate::domain::FieldViolation;
use crate::store::{RequestKey, WriteContext};

/// The metadata key naming who acts on a server without authentication (local development),
/// recorded in the audit trail. An authenticated server ignores it: the caller is who acts.
pub const ACTOR_METADATA_KEY: &str = "x-balagh-actor";

/// Parses an AIP-155 request id (1 to 128 printable ASCII characters, a UUID is best) and
/// fingerprints the request it came with: the operation and the payload without the id.
pub fn request_key<M: Message + Clone>(
    operation: &str,
    request_id: &str,
    message: &M,
    clear_request_id: impl FnOnce(&mut M),
) -> Result<Option<RequestKey>, FieldViolation> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let valid = request_id.len() <= 128 && request_id.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(FieldViolation::new(
            "request_id",
            "must be 1 to 128 printable ASCII characters without spaces (a UUID is best)",
        ));
    }
    let mut payload = message.clone();
    clear_request_id(&mut payload);
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(payload.encode_to_vec());
    Ok(Some(RequestKey {
        request_id: request_id.to_owned(),
        fingerprint: hasher.finalize().into(),
    }))
}

/// The actor named in the request metadata, or `anonymous`.
pub fn actor<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(ACTOR_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        })
        .unwrap_or("anonymous")
        .to_owned()
}

/// Who writes (the authenticated caller, or on an open server the metadata's actor), the
/// tickets the caller may change (checked by the store inside the write), and the request
/// key. An authenticated caller's request ids are its own: another caller reusing
/// one neither replays the first caller's answer nor collides with it.
pub fn write_context<T>(request: &Request<T>, key: Option<RequestKey>) -> WriteContext {
    let principal = crate::auth::Principal::of(request);
    let key = match (principal.caller(), key) {
        (Some(caller), Some(mut key)) => {
            key.request_id = format!("{}/{}", caller.id, key.request_id);
            Some(key)
        }
        (_, key) => key,
    };
    let scope = principal.ticket_scope();
    let reach = (scope != crate::auth::TicketScope::All)
        .then(|| crate::store::Reach::new(move |ticket| scope.admits(ticket)));
    WriteContext {
        actor: principal.actor().to_owned(),
        request: key,
        reach,
    }
}

/// Parses an etag (`"7"`) into the version it names; empty means no precondition.
pub fn parse_etag(field: &str, etag: &str) -> Result<Option<i64>, FieldViolation> {
    if etag.is_empty() {
        return Ok(None);
    }
    etag.strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .and_then(|e| e.parse::<i64>().ok())
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| FieldViolation::new(field, "is not an etag this server issued"))
}

/// The etag a change of a settings document (calendar, SLA settings, KPI targets, rubric) must
/// carry: required, so no administrator overwrites a version they never read. `"0"` names
/// the document before its first stored version.
pub fn parse_setting_etag(field: &str, etag: &str, what: &str) -> Result<i64, FieldViolation> {
    if etag.is_empty() {
        return Err(FieldViolation::new(
            field,
            format!("is required: send the etag of the {what} you changed"),
        ));
    }
    if etag == crate::domain::ticket::etag_of(0) {
        return Ok(0);
    }
    parse_etag(field, etag).map(|v| v.unwrap_or(0))
}

/// An opaque AIP-158 page token: where the previous page ended, and a hash of the request's
/// other parameters so a token is refused when they change between pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    #[serde(rename = "p")]
    pub position: i64,
    #[serde(rename = "f")]
    pub filter_hash: u64,
}

impl PageToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes `token`, checking it was issued for the same `filter_hash`.
    pub fn decode(token: &str, filter_hash: u64) -> Result<Option<Self>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let parsed: Option<PageToken> = (token.len() <= 256)
            .then(|| URL_SAFE_NO_PAD.decode(token).ok())
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match parsed {
            Some(t) if t.filter_hash == filter_hash => Ok(Some(t)),
            Some(_) => Err(FieldViolation::new(
                "page_token",
                "was issued for other filters; keep the filters unchanged between pages",
            )),
            None => Err(FieldViolation::new(
                "page_token",
                "is not a page token this server issued",
            )),
        }
    }
}

/// A hash of a request's filters (the message with its paging fields cleared).
pub fn filter_hash<M: Message + Clone>(message: &M, clear_paging: impl FnOnce(&mut M)) -> u64 {
    let mut filters = message.clone();
    clear_paging(&mut filters);
    let digest = Sha256::digest(filters.encode_to_vec());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// AIP-158 page size: 0 means `default`, above `max` is lowered to it, negative is refused.
pub fn page_size(value: i32, default: u32, max: u32) -> Result<u32, FieldViolation> {
    match value {
        v if v < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        0 => Ok(default),
        v => Ok(u32::try_from(v).unwrap_or(max).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bind_to_filters() {
        let token = PageToken {
            position: 42,
            filter_hash: 7,
        };
        assert_eq!(PageToken::decode(&token.encode(), 7).unwrap(), Some(token));
        assert!(PageToken::decode(&token.encode(), 8).is_err());
        assert!(PageToken::decode("not a token", 7).is_err());
        assert_eq!(PageToken::decode("", 7).unwrap(), None);
    }

    #[test]
    fn etags_and_page_sizes() {
        assert_eq!(parse_etag("etag", "\"3\"").unwrap(), Some(3));
        assert_eq!(parse_etag("etag", "").unwrap(), None);
        assert!(parse_etag("etag", "3").is_err());
        assert_eq!(parse_setting_etag("etag", "\"0\"", "calendar").unwrap(), 0);
        assert_eq!(parse_setting_etag("etag", "\"4\"", "calendar").unwrap(), 4);
        assert!(parse_setting_etag("etag", "", "calendar").is_err());
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert!(page_size(-1, 50, 500).is_err());
    }

    #[test]
    fn a_scoped_callers_writes_carry_its_reach_to_the_store() {
        use std::sync::Arc;

        use crate::auth::{Caller, Principal, Role};
        use crate::domain::Timestamp;
        use crate::domain::ticket::{Assignment, Ticket, sample_ticket};
        use crate::domain::values::Code;

        let code = |c: &str| Code::parse("code", c).expect("code");
        let ticket_of = |directorate: &str| Ticket {
            assignment: Assignment {
                directorate: Some(code(directorate)),
                ..Assignment::default()
            },
            ..sample_ticket(Timestamp::from_micros(0))
        };
        let with = |caller: Caller| {
            let mut request = Request::new(());
            request
                .extensions_mut()
                .insert(Principal::Caller(Arc::new(caller)));
            write_context(&request, None)
        };
        let liaison = with(Caller {
            id: "emp-1".into(),
            role: Role::LiaisonOfficer,
            directorate: Some(code("roads_directorate")),
            outlets: Vec::new(),
        });
        let reach = liaison.reach.expect("a scoped caller's write has a reach");
        assert!(reach.admits(&ticket_of("roads_directorate")));
        assert!(!reach.admits(&ticket_of("health_directorate")));

        let supervisor = with(Caller {
            id: "emp-2".into(),
            role: Role::Supervisor,
            directorate: None,
            outlets: Vec::new(),
        });
        assert!(
            supervisor.reach.is_none(),
            "a supervisor reaches every ticket"
        );
        assert!(write_context(&Request::new(()), None).reach.is_none());
    }
}
