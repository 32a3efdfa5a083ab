//! ListTickets' encoded tickets, kept by the stored JSON they were made from.
//!
//! A directorate's inbox is read again and again, by many agents, page after page. About half
//! of a page's server time went to decoding each ticket's JSON, converting it and encoding the
//! message (docs/benchmarks.md). The `Ticket` message a caller receives is a function of the
//! stored JSON and of whether personal data is masked for the caller, and of nothing else
//! (`convert::ticket_to_proto_masked`), so it is kept under exactly that key. A changed ticket
//! has another body and is simply not found: nothing is ever invalidated, and no rule
//! elsewhere (that every change raises the version, say) is relied on.
//!
//! Memory is bounded by two generations, shared by both answer shapes. New messages go into
//! the young one; when it holds half the budget it becomes the old one and the previous old
//! one is dropped (after the lock is released). A message found in the old generation moves to
//! the young one, so what is read keeps its place and what is not read is gone after two
//! turns. A page answered holds its messages by reference (`Bytes`), so a turn never frees one
//! that is being sent.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use foldhash::fast::RandomState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What one kept message costs besides its key and its bytes: the two allocations' headers,
/// the table's slot with its spare capacity, and the shared header of `Bytes`. An estimate; it
/// keeps a budget of many small entries honest.
const ENTRY_OVERHEAD: usize = 192;

/// Bodies and their messages, one map per answer shape: `[unmasked, masked]`.
type Shapes = [HashMap<Box<[u8]>, Bytes, RandomState>; 2];

/// The kept messages, and counters of how often one was found or had to be made.
pub struct EncodedTickets {
    /// Bytes each generation may hold; 0 keeps nothing.
    generation_budget: usize,
    kept: Mutex<Generations>,
    reused: Counter,
    made: Counter,
    kept_bytes: Gauge,
}

#[derive(Default)]
struct Generations {
    young: Shapes,
    old: Shapes,
    young_bytes: usize,
    old_bytes: usize,
}

fn cost(body: &[u8], message: &Bytes) -> usize {
    body.len() + message.len() + ENTRY_OVERHEAD
}

impl Generations {
    /// The message kept for `body`, moved to the young generation when found in the old one.
    /// A generation this displaces goes to `dropped`, to be freed outside the lock.
    fn find(
        &mut self,
        shape: usize,
        body: &[u8],
        generation_budget: usize,
        dropped: &mut Vec<Shapes>,
    ) -> Option<Bytes> {
        if let Some(message) = self.young[shape].get(body) {
            return Some(message.clone());
        }
        let (key, message) = self.old[shape].remove_entry(body)?;
        self.old_bytes -= cost(&key, &message);
        self.keep(shape, key, message.clone(), generation_budget, dropped);
        Some(message)
    }

    fn keep(
        &mut self,
        shape: usize,
        body: Box<[u8]>,
        message: Bytes,
        generation_budget: usize,
        dropped: &mut Vec<Shapes>,
    ) {
        let cost = cost(&body, &message);
        if cost > generation_budget || self.young[shape].contains_key(&body) {
            return;
        }
        if self.young_bytes + cost > generation_budget {
            dropped.push(std::mem::replace(
                &mut self.old,
                std::mem::take(&mut self.young),
            ));
            self.old_bytes = self.young_bytes;
            self.young_bytes = 0;
        }
        self.young[shape].insert(body, message);
        self.young_bytes += cost;
    }

    fn bytes(&self) -> usize {
        self.young_bytes + self.old_bytes
    }
}

impl EncodedTickets {
    /// Keeps at most about `budget_bytes` of bodies and messages (both generations, both
    /// shapes); 0 keeps nothing and makes every message anew. `kept_bytes` follows the bytes
    /// kept.
    pub fn new(budget_bytes: usize, reused: Counter, made: Counter, kept_bytes: Gauge) -> Self {
        Self {
            generation_budget: budget_bytes / 2,
            kept: Mutex::default(),
            reused,
            made,
            kept_bytes,
        }
    }

    /// The encoded `Ticket` message of each body, in order: a kept one where there is one,
    /// otherwise the one `make` makes, which is then kept. `make` runs outside the lock, and
    /// so does freeing a displaced generation: concurrent pages wait for each other only
    /// while they look up and store.
    pub fn messages<E>(
        &self,
        bodies: Vec<Vec<u8>>,
        masked: bool,
        make: impl Fn(&[u8]) -> Result<Bytes, E>,
    ) -> Result<Vec<Bytes>, E> {
        let shape = usize::from(masked);
        let mut dropped = Vec::new();
        let found: Vec<Option<Bytes>> = if self.generation_budget == 0 {
            vec![None; bodies.len()]
        } else {
            let mut kept = self.lock();
            let found = bodies
                .iter()
                .map(|body| kept.find(shape, body, self.generation_budget, &mut dropped))
                .collect();
            if !dropped.is_empty() {
                self.show(&kept);
            }
            found
        };
        drop(dropped);
        let mut messages = Vec::with_capacity(bodies.len());
        let mut new = Vec::new();
        for (body, found) in bodies.into_iter().zip(found) {
            match found {
                Some(message) => {
                    self.reused.inc();
                    messages.push(message);
                }
                None => {
                    self.made.inc();
                    let message = make(&body)?;
                    messages.push(message.clone());
                    new.push((body.into_boxed_slice(), message));
                }
            }
        }
        if !new.is_empty() && self.generation_budget > 0 {
            let mut dropped = Vec::new();
            let mut kept = self.lock();
            for (body, message) in new {
                kept.keep(shape, body, message, self.generation_budget, &mut dropped);
            }
            self.show(&kept);
            drop(kept);
            drop(dropped);
        }
        Ok(messages)
    }

    fn show(&self, kept: &Generations) {
        self.kept_bytes
            .set(i64::try_from(kept.bytes()).unwrap_or(i64::MAX));
    }

    /// Bytes kept now (keys, messages and the estimated overhead), both shapes.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while the lock was held left at worst a message kept or not: both are
        // correct states of a cache.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn cache(budget: usize) -> EncodedTickets {
        EncodedTickets::new(
            budget,
            Counter::default(),
            Counter::default(),
            Gauge::default(),
        )
    }

    /// A message that names its body and whether it was masked, counting the calls.
    fn maker(calls: &Cell<u32>, masked: bool) -> impl Fn(&[u8]) -> Result<Bytes, ()> + '_ {
        move |body| {
            calls.set(calls.get() + 1);
            let mut message = body.to_vec();
            message.push(u8::from(masked));
            Ok(Bytes::from(message))
        }
    }

    fn bodies(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_body_read_again_is_not_made_again_and_order_is_kept() {
        let cache = cache(1 << 20);
        let calls = Cell::new(0);
        let first = cache
            .messages(bodies(&["a", "b", "c"]), false, maker(&calls, false))
            .unwrap();
        assert_eq!(calls.get(), 3);
        let again = cache
            .messages(bodies(&["c", "d", "a"]), false, maker(&calls, false))
            .unwrap();
        assert_eq!(calls.get(), 4, "only d is new");
        assert_eq!(again[0], first[2]);
        assert_eq!(again[1], Bytes::from_static(b"d\0"));
        assert_eq!(again[2], first[0]);
        assert_eq!(cache.reused.get(), 2);
        assert_eq!(cache.made.get(), 4);
    }

    #[test]
    fn masked_and_unmasked_answers_are_kept_apart() {
        let cache = cache(1 << 20);
        let calls = Cell::new(0);
        let plain = cache
            .messages(bodies(&["a"]), false, maker(&calls, false))
            .unwrap();
        let masked = cache
            .messages(bodies(&["a"]), true, maker(&calls, true))
            .unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(plain[0], Bytes::from_static(b"a\0"));
        assert_eq!(masked[0], Bytes::from_static(b"a\x01"));
        let masked_again = cache
            .messages(bodies(&["a"]), true, maker(&calls, true))
            .unwrap();
        assert_eq!(masked_again[0], masked[0]);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn memory_stays_within_the_budget_and_what_is_read_stays() {
        // Each entry costs 100 bytes of body, 101 of message and the overhead; both shapes
        // share the budget.
        let entry = 100 + 101 + ENTRY_OVERHEAD;
        let budget = 20 * entry;
        let cache = cache(budget);
        let calls = Cell::new(0);
        let body = |i: u32| format!("{i:0>100}").into_bytes();
        let hot = body(0);
        for i in 1..=500 {
            let masked = i % 2 == 0;
            cache
                .messages(vec![hot.clone(), body(i)], masked, maker(&calls, masked))
                .unwrap();
            let counted = cache.kept_bytes();
            let actual: usize = {
                let kept = cache.lock();
                [&kept.young, &kept.old]
                    .iter()
                    .flat_map(|shapes| shapes.iter())
                    .flat_map(|map| map.iter())
                    .map(|(k, v)| cost(k, v))
                    .sum()
            };
            assert_eq!(counted, actual, "the running count is exact");
            assert!(counted <= budget, "{counted} > {budget}");
        }
        assert_eq!(
            calls.get(),
            502,
            "the hot body was made once per shape, each other body once"
        );
        assert!(cache.kept_bytes() > budget / 2, "the cache is in use");
    }

    #[test]
    fn a_zero_budget_keeps_nothing_and_an_error_is_passed_on() {
        let cache = cache(0);
        let calls = Cell::new(0);
        cache
            .messages(bodies(&["a"]), false, maker(&calls, false))
            .unwrap();
        cache
            .messages(bodies(&["a"]), false, maker(&calls, false))
            .unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(cache.kept_bytes(), 0);
        let failed = cache.messages(bodies(&["x"]), false, |_| Err::<Bytes, _>("corrupt"));
        assert_eq!(failed, Err("corrupt"));
    }
}
