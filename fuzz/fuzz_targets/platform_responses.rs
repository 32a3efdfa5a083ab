//! The national platform's answers as balagh's platform client reads them, and the conversions
//! that follow (`src/platform/contract.rs`, `convert.rs`, `src/sync/pull.rs`).
//!
//! Input: the first byte picks what the rest is (`KINDS[byte % KINDS.len()]`, so append new
//! kinds at the end and the checked-in seeds keep their meaning):
//! - a JSON body, read with `serde_json::from_slice` as the type the client reads it as (the
//!   client's `interpret` and `parse_problem` do no more than that, and are private): a token
//!   answer, a token error, a case, a change-feed page, one change, a problem;
//! - a header value the client reads: `Retry-After` (`client::parse_retry_after`) or `ETag`
//!   (`contract::parse_etag`).
//!
//! When a body parses, what the client does next runs on it: a feed page's changes become
//! `InboundChange`s (`sync::pull::inbound_change`, with the v1 code mapping the sync worker
//! loads), a case becomes a ticket (`new_ticket_from_case`, as the pull and the reconcile sweep
//! do) and a resolution (`resolution_from_case`), citizens' texts become notes
//! (`note_from_citizen`), and each code goes through the mapping on its own.
//!
//! Properties: no panic; what balagh writes of a parsed value parses again (the simulator and
//! the tests write these types with the same `Serialize`); token answers, token errors and
//! problems (no floating point in them) come back equal.

#![no_main]

use std::sync::OnceLock;

use balagh::platform::Mapping;
use balagh::platform::contract::{
    Case, Change, ChangePage, Problem, TokenError, TokenResponse, parse_etag,
};
use balagh::platform::convert::{new_ticket_from_case, note_from_citizen, resolution_from_case};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the input after the first byte is, in selector order.
const KINDS: &[&str] = &[
    "token_response",
    "token_error",
    "case",
    "change_page",
    "change",
    "problem",
    "retry_after",
    "etag",
];

fn mapping() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| Mapping::v1().expect("the v1 mapping loads"))
}

/// Parses `bytes` as `T`; when it parses, checks that balagh's own JSON of it parses again.
fn parse<T: DeserializeOwned + Serialize>(kind: &str, bytes: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(bytes).ok()?;
    let written = serde_json::to_vec(&value)
        .unwrap_or_else(|e| panic!("{kind}: a parsed value does not serialize: {e}"));
    if let Err(e) = serde_json::from_slice::<T>(&written) {
        panic!(
            "{kind}: balagh's JSON of a parsed value does not parse: {e}\n{}",
            String::from_utf8_lossy(&written)
        );
    }
    Some(value)
}

/// Parses, and requires the value to come back equal from balagh's own JSON.
fn parse_exact<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    kind: &str,
    bytes: &[u8],
) -> Option<T> {
    let value: T = parse(kind, bytes)?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).expect("serializes"))
        .expect("parses (checked)");
    assert_eq!(value, again, "{kind}: does not survive balagh's JSON");
    Some(value)
}

/// What the pull, the reconcile sweep and the mapping do with a case.
fn take_in_case(case: &Case) {
    let mapping = mapping();
    let _ = new_ticket_from_case(case, mapping);
    let _ = resolution_from_case(case, mapping);
    let _ = mapping.type_from_platform(&case.case_type);
    let _ = mapping.status_from_platform(&case.status);
    let _ = mapping.category_from_platform(&case.category);
    if let Some(wilayat) = &case.wilayat {
        let _ = mapping.wilayat_from_platform(wilayat);
    }
    if let Some(resolution) = &case.resolution {
        let _ = mapping.outcome_from_platform(&resolution.outcome);
    }
    for detail in &case.details {
        let _ = note_from_citizen("detail.text", &detail.text);
    }
    for request in &case.reopen_requests {
        let _ = note_from_citizen("reopen_request.reason", &request.reason);
    }
    for rating in &case.ratings {
        if let Some(comment) = &rating.comment {
            let _ = note_from_citizen("rating.comment", comment);
        }
    }
}

fn take_in_change(change: &Change) {
    let inbound = balagh::sync::pull::inbound_change(change, mapping());
    assert_eq!(inbound.change_id, change.change_id);
    take_in_case(&change.case);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    match kind {
        "token_response" => {
            let _ = parse_exact::<TokenResponse>(kind, bytes);
        }
        "token_error" => {
            let _ = parse_exact::<TokenError>(kind, bytes);
        }
        "case" => {
            if let Some(case) = parse::<Case>(kind, bytes) {
                take_in_case(&case);
            }
        }
        "change_page" => {
            if let Some(page) = parse::<ChangePage>(kind, bytes) {
                for change in &page.changes {
                    take_in_change(change);
                }
            }
        }
        "change" => {
            if let Some(change) = parse::<Change>(kind, bytes) {
                take_in_change(&change);
            }
        }
        "problem" => {
            if let Some(problem) = parse_exact::<Problem>(kind, bytes) {
                let _ = problem.kind();
            }
        }
        "retry_after" => {
            if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
                // A fixed "now", so a crash replays.
                let now = chrono::DateTime::from_timestamp(1_773_547_200, 0).expect("a date");
                let _ = balagh::platform::client::parse_retry_after(&value, now);
            }
        }
        "etag" => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = parse_etag(text);
            }
        }
        _ => unreachable!("every kind has an arm"),
    }
});
