//! Which attached streams a change may concern, found without looking at the others.
//!
//! Each stream is listed under keys made of the values of the one or two most selective fields
//! its filter sets (an assignee before an outlet, a category, a directorate, a wilayat, a
//! status, a type, a support line): with `directorates = [roads]` and `wilayats = [muscat,
//! bawshar]` the keys are (roads, muscat) and (roads, bawshar). A stream whose filter sets no
//! field is unindexed and considered for every change. A change is looked up under its
//! ticket's values, in every key shape (pair of fields) that some stream uses.
//!
//! Invariant: a ticket has at most one value per field, and a stream's keys are distinct and
//! all of one shape, so a change meets a stream through at most one key: it is never
//! delivered twice. The index only narrows the candidates; the filter decides.

use std::collections::HashMap;

use crate::domain::filter::TicketFilter;
use crate::domain::ticket::{Status, SupportLine, Ticket, TicketType};
use crate::domain::values::{Code, EmployeeId};

/// A stream whose two most selective fields would need more keys than this is listed under
/// the values of the first field only.
const MAX_PAIR_KEYS: usize = 64;

/// The fields a stream can be listed by, most selective first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Assignee,
    Outlet,
    Category,
    Directorate,
    Wilayat,
    Status,
    Type,
    SupportLine,
}

/// One value of one filter field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FieldValue {
    Assignee(EmployeeId),
    Outlet(Code),
    Category(Code),
    Directorate(Code),
    Wilayat(Code),
    Status(Status),
    Type(TicketType),
    SupportLine(SupportLine),
}

impl FieldValue {
    fn field(&self) -> Field {
        match self {
            FieldValue::Assignee(_) => Field::Assignee,
            FieldValue::Outlet(_) => Field::Outlet,
            FieldValue::Category(_) => Field::Category,
            FieldValue::Directorate(_) => Field::Directorate,
            FieldValue::Wilayat(_) => Field::Wilayat,
            FieldValue::Status(_) => Field::Status,
            FieldValue::Type(_) => Field::Type,
            FieldValue::SupportLine(_) => Field::SupportLine,
        }
    }
}

/// The value of one field, or of two fields (the more selective first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct IndexKey {
    first: FieldValue,
    second: Option<FieldValue>,
}

/// Which fields a key is made of.
type Shape = (Field, Option<Field>);

impl IndexKey {
    fn shape(&self) -> Shape {
        (
            self.first.field(),
            self.second.as_ref().map(FieldValue::field),
        )
    }
}

/// The keys a stream with this filter is listed under; empty: every change is a candidate.
pub(super) fn filter_keys(filter: &TicketFilter) -> Vec<IndexKey> {
    let fields = filter_values(filter);
    match fields.as_slice() {
        [] => Vec::new(),
        [first, second, ..] if first.len() * second.len() <= MAX_PAIR_KEYS => first
            .iter()
            .flat_map(|a| {
                second.iter().map(|b| IndexKey {
                    first: a.clone(),
                    second: Some(b.clone()),
                })
            })
            .collect(),
        [first, ..] => first
            .iter()
            .map(|a| IndexKey {
                first: a.clone(),
                second: None,
            })
            .collect(),
    }
}

/// The distinct values of every field the filter sets, most selective field first.
fn filter_values(f: &TicketFilter) -> Vec<Vec<FieldValue>> {
    let fields = [
        values_of(&f.assignees, FieldValue::Assignee),
        values_of(&f.outlets, FieldValue::Outlet),
        values_of(&f.categories, FieldValue::Category),
        values_of(&f.directorates, FieldValue::Directorate),
        values_of(&f.wilayats, FieldValue::Wilayat),
        values_of(&f.statuses, FieldValue::Status),
        values_of(&f.types, FieldValue::Type),
        values_of(&f.support_lines, FieldValue::SupportLine),
    ];
    fields.into_iter().filter(|v| !v.is_empty()).collect()
}

/// The values, each once: a value repeated in the request must not list a stream twice.
fn values_of<T: Clone>(values: &[T], value: fn(T) -> FieldValue) -> Vec<FieldValue> {
    let mut distinct: Vec<FieldValue> = Vec::with_capacity(values.len());
    for v in values.iter().cloned().map(value) {
        if !distinct.contains(&v) {
            distinct.push(v);
        }
    }
    distinct
}

/// The ticket's value of every field it has one for.
fn ticket_values(ticket: &Ticket) -> Vec<FieldValue> {
    let a = &ticket.assignment;
    let mut values = Vec::with_capacity(8);
    values.extend(a.assignee.clone().map(FieldValue::Assignee));
    values.extend(a.outlet.clone().map(FieldValue::Outlet));
    values.push(FieldValue::Category(ticket.category.clone()));
    values.extend(a.directorate.clone().map(FieldValue::Directorate));
    values.extend(ticket.location.wilayat.clone().map(FieldValue::Wilayat));
    values.push(FieldValue::Status(ticket.status));
    values.push(FieldValue::Type(ticket.ticket_type));
    values.extend(a.support_line.map(FieldValue::SupportLine));
    values
}

/// The ticket's key of this shape, if it has a value for each of its fields.
fn ticket_key(values: &[FieldValue], (first, second): Shape) -> Option<IndexKey> {
    let value_of = |field: Field| values.iter().find(|v| v.field() == field).cloned();
    Some(IndexKey {
        first: value_of(first)?,
        second: match second {
            Some(field) => Some(value_of(field)?),
            None => None,
        },
    })
}

/// Stream ids by key. The streams themselves live in the feed's map.
#[derive(Default)]
pub(super) struct StreamIndex {
    by_key: HashMap<IndexKey, Vec<u64>>,
    /// How many keys of each shape are listed: a change is looked up in these shapes only.
    shapes: HashMap<Shape, usize>,
    unindexed: Vec<u64>,
}

impl StreamIndex {
    pub(super) fn insert(&mut self, id: u64, keys: &[IndexKey]) {
        if keys.is_empty() {
            self.unindexed.push(id);
        }
        for key in keys {
            *self.shapes.entry(key.shape()).or_default() += 1;
            self.by_key.entry(key.clone()).or_default().push(id);
        }
    }

    pub(super) fn remove(&mut self, id: u64, keys: &[IndexKey]) {
        if keys.is_empty() {
            remove_id(&mut self.unindexed, id);
        }
        for key in keys {
            let Some(ids) = self.by_key.get_mut(key) else {
                continue;
            };
            if !remove_id(ids, id) {
                continue;
            }
            if ids.is_empty() {
                self.by_key.remove(key);
            }
            if let Some(n) = self.shapes.get_mut(&key.shape()) {
                *n -= 1;
                if *n == 0 {
                    self.shapes.remove(&key.shape());
                }
            }
        }
    }

    /// Calls `visit` with every stream the ticket may concern, each once.
    pub(super) fn candidates(&self, ticket: &Ticket, mut visit: impl FnMut(u64)) {
        if !self.shapes.is_empty() {
            let values = ticket_values(ticket);
            for shape in self.shapes.keys() {
                let ids = ticket_key(&values, *shape).and_then(|key| self.by_key.get(&key));
                ids.into_iter().flatten().copied().for_each(&mut visit);
            }
        }
        self.unindexed.iter().copied().for_each(visit);
    }
}

/// Whether the id was listed.
fn remove_id(ids: &mut Vec<u64>, id: u64) -> bool {
    match ids.iter().position(|i| *i == id) {
        Some(at) => {
            ids.swap_remove(at);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Code {
        Code::parse("test", text).unwrap()
    }

    fn key(first: FieldValue, second: Option<FieldValue>) -> IndexKey {
        IndexKey { first, second }
    }

    #[test]
    fn a_stream_is_listed_under_its_two_most_selective_fields_once_per_pair_of_values() {
        let filter = TicketFilter {
            directorates: vec![code("roads")],
            categories: vec![code("pothole"), code("pothole"), code("streetlight")],
            wilayats: vec![code("muscat")],
            ..Default::default()
        };
        assert_eq!(
            filter_keys(&filter),
            vec![
                key(
                    FieldValue::Category(code("pothole")),
                    Some(FieldValue::Directorate(code("roads")))
                ),
                key(
                    FieldValue::Category(code("streetlight")),
                    Some(FieldValue::Directorate(code("roads")))
                ),
            ]
        );
        assert!(filter_keys(&TicketFilter::default()).is_empty());
    }

    #[test]
    fn too_many_pairs_fall_back_to_the_first_field() {
        let many: Vec<Code> = (0..9).map(|i| code(&format!("c{i}"))).collect();
        let filter = TicketFilter {
            categories: many.clone(),
            wilayats: many,
            ..Default::default()
        };
        let keys = filter_keys(&filter);
        assert_eq!(keys.len(), 9);
        assert!(keys.iter().all(|k| k.second.is_none()));
    }

    #[test]
    fn removing_a_stream_leaves_the_others() {
        let mut index = StreamIndex::default();
        let roads = [key(FieldValue::Directorate(code("roads")), None)];
        index.insert(1, &roads);
        index.insert(2, &roads);
        index.insert(3, &[]);
        index.remove(1, &roads);
        index.remove(3, &[]);
        assert_eq!(index.by_key[&roads[0]], vec![2]);
        assert_eq!(index.shapes[&roads[0].shape()], 1);
        assert!(index.unindexed.is_empty());
        index.remove(2, &roads);
        assert!(index.by_key.is_empty());
        assert!(index.shapes.is_empty());
    }
}
