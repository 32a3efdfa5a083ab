//! Which attached streams a change may concern, found without looking at the others.
//!
//! Each stream is listed under the values of one field of its filter (the most selective field
//! it sets: an assignee before an outlet before a category, and so on); a stream whose filter
//! sets no field is listed as unindexed and considered for every change. A change is looked up
//! under its ticket's value of every field.
//!
//! Invariant: a ticket has at most one value per field, and a stream's keys are distinct
//! values of a single field, so a change meets a stream through at most one key: it is never
//! delivered twice. The index only narrows the candidates; the filter decides.

use std::collections::HashMap;

use crate::domain::filter::TicketFilter;
use crate::domain::ticket::{Status, SupportLine, Ticket, TicketType};
use crate::domain::values::{Code, EmployeeId};

/// One value of one filter field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum IndexKey {
    Assignee(EmployeeId),
    Outlet(Code),
    Category(Code),
    Directorate(Code),
    Wilayat(Code),
    Status(Status),
    Type(TicketType),
    SupportLine(SupportLine),
}

/// The keys a stream with this filter is listed under; empty: every change is a candidate.
pub(super) fn filter_keys(filter: &TicketFilter) -> Vec<IndexKey> {
    let keys: Vec<IndexKey> = if !filter.assignees.is_empty() {
        keys_of(&filter.assignees, IndexKey::Assignee)
    } else if !filter.outlets.is_empty() {
        keys_of(&filter.outlets, IndexKey::Outlet)
    } else if !filter.categories.is_empty() {
        keys_of(&filter.categories, IndexKey::Category)
    } else if !filter.directorates.is_empty() {
        keys_of(&filter.directorates, IndexKey::Directorate)
    } else if !filter.wilayats.is_empty() {
        keys_of(&filter.wilayats, IndexKey::Wilayat)
    } else if !filter.statuses.is_empty() {
        keys_of(&filter.statuses, IndexKey::Status)
    } else if !filter.types.is_empty() {
        keys_of(&filter.types, IndexKey::Type)
    } else {
        keys_of(&filter.support_lines, IndexKey::SupportLine)
    };
    // A value repeated in the request must not list the stream twice under one key.
    let mut distinct: Vec<IndexKey> = Vec::with_capacity(keys.len());
    for key in keys {
        if !distinct.contains(&key) {
            distinct.push(key);
        }
    }
    distinct
}

fn keys_of<T: Clone>(values: &[T], key: fn(T) -> IndexKey) -> Vec<IndexKey> {
    values.iter().cloned().map(key).collect()
}

/// The ticket's value of every field, as keys.
pub(super) fn ticket_keys(ticket: &Ticket) -> Vec<IndexKey> {
    let a = &ticket.assignment;
    let mut keys = Vec::with_capacity(8);
    keys.extend(a.assignee.clone().map(IndexKey::Assignee));
    keys.extend(a.outlet.clone().map(IndexKey::Outlet));
    keys.push(IndexKey::Category(ticket.category.clone()));
    keys.extend(a.directorate.clone().map(IndexKey::Directorate));
    keys.extend(ticket.location.wilayat.clone().map(IndexKey::Wilayat));
    keys.push(IndexKey::Status(ticket.status));
    keys.push(IndexKey::Type(ticket.ticket_type));
    keys.extend(a.support_line.map(IndexKey::SupportLine));
    keys
}

/// Stream ids by key. The streams themselves live in the feed's map.
#[derive(Default)]
pub(super) struct StreamIndex {
    by_key: HashMap<IndexKey, Vec<u64>>,
    unindexed: Vec<u64>,
}

impl StreamIndex {
    pub(super) fn insert(&mut self, id: u64, keys: &[IndexKey]) {
        if keys.is_empty() {
            self.unindexed.push(id);
        }
        for key in keys {
            self.by_key.entry(key.clone()).or_default().push(id);
        }
    }

    pub(super) fn remove(&mut self, id: u64, keys: &[IndexKey]) {
        if keys.is_empty() {
            remove_id(&mut self.unindexed, id);
        }
        for key in keys {
            if let Some(ids) = self.by_key.get_mut(key) {
                remove_id(ids, id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }

    /// Calls `visit` with every stream the ticket may concern, each once.
    pub(super) fn candidates(&self, ticket: &Ticket, mut visit: impl FnMut(u64)) {
        if !self.by_key.is_empty() {
            for key in ticket_keys(ticket) {
                if let Some(ids) = self.by_key.get(&key) {
                    ids.iter().copied().for_each(&mut visit);
                }
            }
        }
        self.unindexed.iter().copied().for_each(visit);
    }
}

fn remove_id(ids: &mut Vec<u64>, id: u64) {
    if let Some(at) = ids.iter().position(|i| *i == id) {
        ids.swap_remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Code {
        Code::parse("test", text).unwrap()
    }

    #[test]
    fn a_stream_is_listed_under_its_most_selective_field_once_per_value() {
        let filter = TicketFilter {
            directorates: vec![code("roads")],
            categories: vec![code("pothole"), code("pothole"), code("streetlight")],
            ..Default::default()
        };
        assert_eq!(
            filter_keys(&filter),
            vec![
                IndexKey::Category(code("pothole")),
                IndexKey::Category(code("streetlight"))
            ]
        );
        assert!(filter_keys(&TicketFilter::default()).is_empty());
    }

    #[test]
    fn removing_a_stream_leaves_the_others() {
        let mut index = StreamIndex::default();
        let roads = [IndexKey::Directorate(code("roads"))];
        index.insert(1, &roads);
        index.insert(2, &roads);
        index.insert(3, &[]);
        index.remove(1, &roads);
        index.remove(3, &[]);
        assert_eq!(index.by_key[&roads[0]], vec![2]);
        assert!(index.unindexed.is_empty());
        index.remove(2, &roads);
        assert!(index.by_key.is_empty());
    }
}
