//! Fault injection on a fixed seed.
//!
//! Every API request gets an arrival number `n`; whether it gets a fault, and which, is a pure
//! function of `(seed, n)` and the request's class. So the same seed and the same sequence of
//! requests give the same faults, run after run, whatever else happens in between (citizens
//! draw from their own stream). Maintenance windows last wall-clock (or injected-clock) time,
//! so how many requests one catches depends on timing; everything else is counted.
//!
//! Besides the rates, a test can queue faults by kind (`force`): each is given to the first
//! API request it applies to, before any rate is drawn. That is how the tests prove one
//! outcome per kind without hoping for the dice. The token endpoint has a queue of its own
//! (`force_token`), so a test can make a token request late, hung or failed without touching
//! the API calls around it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 500, 502 or 504 (the last two as a gateway would send them: HTML, or no body).
    ServerError,
    /// 429 with `Retry-After`.
    RateLimited,
    /// Starts a maintenance window: every request, token requests included, gets 503 with
    /// `Retry-After` until it ends.
    Maintenance,
    /// The answer comes, late.
    Slow,
    /// No answer: the connection is held until the client gives up (bounded), then dropped.
    Timeout,
    /// The connection is dropped (RST) before the request is processed.
    Reset,
    /// A write is applied and its idempotency record kept, then the connection is dropped.
    LostAnswer,
    /// 401 as if the token expired; the token is revoked.
    TokenExpired,
    /// The platform changes the case just before an `If-Match` write is checked: 412.
    Conflict,
    /// The request is processed normally and the answer body arrives truncated.
    Malformed,
    /// The change feed repeats a few changes from before the cursor (at-least-once delivery).
    DuplicateChanges,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::ServerError,
        FaultKind::RateLimited,
        FaultKind::Maintenance,
        FaultKind::Slow,
        FaultKind::Timeout,
        FaultKind::Reset,
        FaultKind::LostAnswer,
        FaultKind::TokenExpired,
        FaultKind::Conflict,
        FaultKind::Malformed,
        FaultKind::DuplicateChanges,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ServerError => "server_error",
            FaultKind::RateLimited => "rate_limited",
            FaultKind::Maintenance => "maintenance",
            FaultKind::Slow => "slow",
            FaultKind::Timeout => "timeout",
            FaultKind::Reset => "reset",
            FaultKind::LostAnswer => "lost_answer",
            FaultKind::TokenExpired => "token_expired",
            FaultKind::Conflict => "conflict",
            FaultKind::Malformed => "malformed",
            FaultKind::DuplicateChanges => "duplicate_changes",
        }
    }

    /// Whether this kind makes sense for a request of `class`.
    pub fn applies_to(self, class: RequestClass) -> bool {
        use RequestClass as C;
        match self {
            FaultKind::ServerError
            | FaultKind::RateLimited
            | FaultKind::Maintenance
            | FaultKind::Slow
            | FaultKind::Timeout
            | FaultKind::Reset
            | FaultKind::Malformed => true,
            FaultKind::TokenExpired => class != C::Token,
            FaultKind::LostAnswer => matches!(class, C::Write { .. }),
            FaultKind::Conflict => matches!(class, C::Write { if_match: true }),
            FaultKind::DuplicateChanges => class == C::Changes,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

/// What a request is, for choosing faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// `POST /oauth2/token`.
    Token,
    /// `GET` of a case.
    Read,
    /// `GET` of the change feed.
    Changes,
    /// A write; `if_match` when it carries `If-Match`.
    Write { if_match: bool },
}

/// Rates and parameters of fault injection. The default injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Share of API requests that get each kind, from 0 to 1; the sum is at most 1.
    pub rates: BTreeMap<FaultKind, f64>,
    /// How late a slow answer is.
    pub slow_ms: u64,
    /// How long a timed-out request is held before its connection is dropped.
    pub timeout_hold_ms: u64,
    /// `Retry-After` of a 429.
    pub retry_after_seconds: u64,
    /// Length of a maintenance window (its 503s say how much of it is left).
    pub maintenance_seconds: u64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            rates: BTreeMap::new(),
            slow_ms: 1500,
            timeout_hold_ms: 30_000,
            retry_after_seconds: 1,
            maintenance_seconds: 5,
        }
    }
}

impl FaultSettings {
    /// `total` of all requests faulty, spread evenly over every kind.
    pub fn uniform(total: f64) -> Self {
        let each = total / FaultKind::ALL.len() as f64;
        Self {
            rates: FaultKind::ALL.iter().map(|k| (*k, each)).collect(),
            ..Self::default()
        }
    }

    pub fn with_rate(mut self, kind: FaultKind, rate: f64) -> Self {
        self.rates.insert(kind, rate);
        self
    }

    pub fn validate(&self) -> Result<(), String> {
        for (kind, rate) in &self.rates {
            if !rate.is_finite() || !(0.0..=1.0).contains(rate) {
                return Err(format!("the rate of {kind} must be from 0 to 1"));
            }
        }
        let total: f64 = self.rates.values().sum();
        if total > 1.0 + 1e-9 {
            return Err(format!("fault rates add up to {total}, more than 1"));
        }
        if self.timeout_hold_ms > 600_000 || self.slow_ms > 600_000 {
            return Err("slow_ms and timeout_hold_ms must be at most 600000".to_owned());
        }
        Ok(())
    }
}

/// A fault chosen for one request, with what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    ServerError { status: u16 },
    RateLimited { retry_after_seconds: u64 },
    Maintenance { retry_after_seconds: u64 },
    Slow { millis: u64 },
    Timeout { hold_millis: u64 },
    Reset,
    LostAnswer,
    TokenExpired,
    Conflict,
    Malformed,
    DuplicateChanges { n_repeated: u64 },
}

impl Injection {
    pub fn kind(self) -> FaultKind {
        match self {
            Injection::ServerError { .. } => FaultKind::ServerError,
            Injection::RateLimited { .. } => FaultKind::RateLimited,
            Injection::Maintenance { .. } => FaultKind::Maintenance,
            Injection::Slow { .. } => FaultKind::Slow,
            Injection::Timeout { .. } => FaultKind::Timeout,
            Injection::Reset => FaultKind::Reset,
            Injection::LostAnswer => FaultKind::LostAnswer,
            Injection::TokenExpired => FaultKind::TokenExpired,
            Injection::Conflict => FaultKind::Conflict,
            Injection::Malformed => FaultKind::Malformed,
            Injection::DuplicateChanges { .. } => FaultKind::DuplicateChanges,
        }
    }
}

/// One injected fault, for the admin state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The request's arrival number.
    pub request: u64,
    pub kind: FaultKind,
    /// `forced` when it came from the queue, `rate` when drawn, `window` inside maintenance.
    pub how: String,
    pub route: String,
}

/// Faults injected so far, kept for the admin state. The log keeps the latest entries.
#[derive(Debug, Default)]
pub struct FaultBook {
    pub settings: FaultSettings,
    pub forced: VecDeque<FaultKind>,
    /// Faults for the next token requests, in order.
    pub forced_token: VecDeque<FaultKind>,
    pub counts: BTreeMap<FaultKind, u64>,
    pub log: VecDeque<FaultRecord>,
    pub n_requests: u64,
    /// Token requests among `n_requests`, whatever became of them.
    pub n_token_requests: u64,
    /// Microseconds (on the simulator's clock) when the current maintenance window ends.
    pub maintenance_until_micros: Option<i64>,
}

/// How many fault records the admin state keeps.
pub const FAULT_LOG_CAPACITY: usize = 10_000;

impl FaultBook {
    /// Chooses the fault for the next request (if any) and records it.
    pub fn decide(
        &mut self,
        seed: u64,
        class: RequestClass,
        route: &str,
        now_micros: i64,
    ) -> Option<Injection> {
        let n = self.n_requests;
        self.n_requests += 1;
        if class == RequestClass::Token {
            self.n_token_requests += 1;
        }
        if let Some(until) = self.maintenance_until_micros {
            if now_micros < until {
                let left = remaining_seconds(until - now_micros);
                self.record(n, FaultKind::Maintenance, "window", route);
                return Some(Injection::Maintenance {
                    retry_after_seconds: left,
                });
            }
            self.maintenance_until_micros = None;
        }
        let (kind, how) = match self.take_forced(class) {
            Some(kind) => (kind, "forced"),
            None => (self.draw(seed, n, class)?, "rate"),
        };
        let injection = self.injection(seed, n, kind, now_micros);
        self.record(n, kind, how, route);
        Some(injection)
    }

    /// Starts (`seconds > 0`) or ends (`0`) a maintenance window now.
    pub fn set_maintenance(&mut self, seconds: u64, now_micros: i64) {
        self.maintenance_until_micros = (seconds > 0).then(|| {
            now_micros.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX / 2) * 1_000_000)
        });
    }

    /// Queues faults for the next token requests. Refuses kinds that never apply to one.
    pub fn force_token(&mut self, kinds: &[FaultKind]) -> Result<(), String> {
        if let Some(kind) = kinds.iter().find(|k| !k.applies_to(RequestClass::Token)) {
            return Err(format!("{kind} never applies to the token endpoint"));
        }
        self.forced_token.extend(kinds.iter().copied());
        Ok(())
    }

    fn take_forced(&mut self, class: RequestClass) -> Option<FaultKind> {
        // The API's queue never serves the token endpoint: a fault meant for a call must not
        // be spent on the token request that happens to come first.
        if class == RequestClass::Token {
            return self.forced_token.pop_front();
        }
        let position = self.forced.iter().position(|k| k.applies_to(class))?;
        self.forced.remove(position)
    }

    fn draw(&self, seed: u64, n: u64, class: RequestClass) -> Option<FaultKind> {
        let r = unit(mix(seed, n, 0));
        let mut upper = 0.0;
        for kind in FaultKind::ALL {
            upper += self.settings.rates.get(&kind).copied().unwrap_or(0.0);
            if r < upper {
                return kind.applies_to(class).then_some(kind);
            }
        }
        None
    }

    fn injection(&mut self, seed: u64, n: u64, kind: FaultKind, now_micros: i64) -> Injection {
        let s = &self.settings;
        match kind {
            FaultKind::ServerError => Injection::ServerError {
                status: [500, 502, 504][(mix(seed, n, 1) % 3) as usize],
            },
            FaultKind::RateLimited => Injection::RateLimited {
                retry_after_seconds: s.retry_after_seconds,
            },
            FaultKind::Maintenance => {
                let seconds = s.maintenance_seconds.max(1);
                self.set_maintenance(seconds, now_micros);
                Injection::Maintenance {
                    retry_after_seconds: seconds,
                }
            }
            FaultKind::Slow => Injection::Slow { millis: s.slow_ms },
            FaultKind::Timeout => Injection::Timeout {
                hold_millis: s.timeout_hold_ms,
            },
            FaultKind::Reset => Injection::Reset,
            FaultKind::LostAnswer => Injection::LostAnswer,
            FaultKind::TokenExpired => Injection::TokenExpired,
            FaultKind::Conflict => Injection::Conflict,
            FaultKind::Malformed => Injection::Malformed,
            FaultKind::DuplicateChanges => Injection::DuplicateChanges {
                n_repeated: 1 + mix(seed, n, 2) % 3,
            },
        }
    }

    fn record(&mut self, request: u64, kind: FaultKind, how: &str, route: &str) {
        *self.counts.entry(kind).or_default() += 1;
        if self.log.len() == FAULT_LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(FaultRecord {
            request,
            kind,
            how: how.to_owned(),
            route: route.to_owned(),
        });
    }
}

fn remaining_seconds(micros: i64) -> u64 {
    u64::try_from((micros + 999_999) / 1_000_000)
        .unwrap_or(1)
        .max(1)
}

/// SplitMix64's finaliser over `(seed, n, stream)`: a well-mixed 64-bit value that depends on
/// nothing else, so decisions do not shift when other draws are added or removed.
pub fn mix(seed: u64, n: u64, stream: u64) -> u64 {
    let mut z =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in `[0, 1)` from 53 random bits.
pub fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, settings: &FaultSettings, n: usize) -> Vec<Option<FaultKind>> {
        let mut book = FaultBook {
            settings: settings.clone(),
            ..FaultBook::default()
        };
        (0..n)
            .map(|i| {
                let class = if i % 2 == 0 {
                    RequestClass::Write { if_match: true }
                } else {
                    RequestClass::Read
                };
                // The clock stands still: a maintenance window, once started, holds.
                book.decide(seed, class, "r", 0)
                    .map(Injection::kind)
                    .filter(|k| *k != FaultKind::Maintenance)
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let settings = FaultSettings::uniform(0.5).with_rate(FaultKind::Maintenance, 0.0);
        let a = run(7, &settings, 2000);
        assert_eq!(a, run(7, &settings, 2000));
        assert_ne!(a, run(8, &settings, 2000));
        let n_faults = a.iter().filter(|f| f.is_some()).count();
        // About half, minus the kinds that do not apply to reads.
        assert!((600..=1100).contains(&n_faults), "{n_faults}");
    }

    #[test]
    fn forced_faults_wait_for_a_request_they_apply_to() {
        let mut book = FaultBook::default();
        book.forced
            .extend([FaultKind::LostAnswer, FaultKind::Reset]);
        assert_eq!(
            book.decide(1, RequestClass::Token, "token", 0),
            None,
            "never the token endpoint"
        );
        assert_eq!(
            book.decide(1, RequestClass::Read, "get", 0),
            Some(Injection::Reset)
        );
        assert_eq!(
            book.decide(1, RequestClass::Write { if_match: false }, "post", 0),
            Some(Injection::LostAnswer)
        );
        assert_eq!(book.decide(1, RequestClass::Read, "get", 0), None);
    }

    #[test]
    fn token_requests_have_their_own_queue() {
        let mut book = FaultBook::default();
        book.forced.push_back(FaultKind::Timeout);
        assert!(book.force_token(&[FaultKind::TokenExpired]).is_err());
        book.force_token(&[FaultKind::Slow, FaultKind::Reset])
            .unwrap();
        assert_eq!(
            book.decide(1, RequestClass::Token, "t", 0)
                .map(Injection::kind),
            Some(FaultKind::Slow)
        );
        assert_eq!(
            book.decide(1, RequestClass::Read, "r", 0)
                .map(Injection::kind),
            Some(FaultKind::Timeout)
        );
        assert_eq!(
            book.decide(1, RequestClass::Token, "t", 0)
                .map(Injection::kind),
            Some(FaultKind::Reset)
        );
        assert_eq!(book.decide(1, RequestClass::Token, "t", 0), None);
        assert_eq!((book.n_requests, book.n_token_requests), (4, 3));
    }

    #[test]
    fn a_maintenance_window_covers_every_request_until_it_ends() {
        let mut book = FaultBook::default();
        book.forced.push_back(FaultKind::Maintenance);
        assert_eq!(
            book.decide(1, RequestClass::Read, "r", 0),
            Some(Injection::Maintenance {
                retry_after_seconds: 5
            })
        );
        assert_eq!(
            book.decide(1, RequestClass::Token, "t", 3_500_000),
            Some(Injection::Maintenance {
                retry_after_seconds: 2
            })
        );
        assert_eq!(book.decide(1, RequestClass::Read, "r", 5_000_000), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(FaultSettings::uniform(1.0).validate().is_ok());
        assert!(FaultSettings::uniform(1.2).validate().is_err());
        assert!(
            FaultSettings::default()
                .with_rate(FaultKind::Reset, -0.1)
                .validate()
                .is_err()
        );
        assert_eq!(
            "lost_answer".parse::<FaultKind>(),
            Ok(FaultKind::LostAnswer)
        );
        assert!("gremlins".parse::<FaultKind>().is_err());
    }
}
