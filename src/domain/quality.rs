//! Quality evaluation of staff: the rubric supervisors score sampled tickets on, and the
//! reviews they record.
//!
//! A review scores every criterion of the rubric in force exactly once, from 1 (poor) to 5
//! (excellent); its overall score is the weighted mean mapped onto 0..100 (all ones give 0,
//! all fives give 100). The review keeps the criteria names and weights it was scored on, so
//! a later change of the rubric never changes a recorded score.
//!
//! The sample proposed for review is chosen deterministically: candidates are ordered by a
//! hash of the seed and the ticket id ([`sample_rank`]), so the same seed proposes the same
//! tickets, and another seed another sample.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lifecycle::EventRecord;
use super::ticket::{Status, Ticket};
use super::values::{Code, EmployeeId, TicketId};
use super::{FieldViolation, Timestamp};

/// The rubric shipped with balagh, stored on first start.
pub const DEFAULT_RUBRIC_TOML: &str = include_str!("../../catalog/quality_rubric.toml");

pub const MIN_SCORE: u8 = 1;
pub const MAX_SCORE: u8 = 5;
pub const MAX_CRITERIA: usize = 20;
pub const MAX_WEIGHT: u32 = 100;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_NOTE_CHARS: usize = 4000;

/// A rubric as written (TOML, JSON in the settings store, or from a request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RubricSpec {
    pub criteria: Vec<CriterionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionSpec {
    pub code: String,
    pub name_ar: String,
    pub name_en: String,
    pub weight: u32,
}

/// A validated rubric: 1 to [`MAX_CRITERIA`] criteria with distinct codes, bilingual names
/// and weights from 1 to [`MAX_WEIGHT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rubric {
    spec: RubricSpec,
}

impl Rubric {
    pub fn default_rubric() -> Self {
        let spec: RubricSpec =
            toml::from_str(DEFAULT_RUBRIC_TOML).expect("catalog/quality_rubric.toml is valid TOML");
        Self::parse(spec).expect("catalog/quality_rubric.toml holds a valid rubric")
    }

    /// Validates a rubric, collecting every violation (paths within the spec).
    pub fn parse(spec: RubricSpec) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if spec.criteria.is_empty() {
            violations.push(FieldViolation::new(
                "criteria",
                "needs at least one criterion",
            ));
        }
        if spec.criteria.len() > MAX_CRITERIA {
            violations.push(FieldViolation::new(
                "criteria",
                format!("at most {MAX_CRITERIA} criteria"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in spec.criteria.iter().enumerate() {
            let field = format!("criteria[{i}]");
            match Code::parse(&format!("{field}.code"), &c.code) {
                Ok(code) => {
                    if !seen.insert(code) {
                        violations.push(FieldViolation::new(
                            &format!("{field}.code"),
                            "is listed twice",
                        ));
                    }
                }
                Err(v) => violations.push(v),
            }
            for (name, value) in [("name_ar", &c.name_ar), ("name_en", &c.name_en)] {
                let n = value.trim().chars().count();
                if n == 0 || n > MAX_NAME_CHARS {
                    violations.push(FieldViolation::new(
                        &format!("{field}.{name}"),
                        format!("is required, at most {MAX_NAME_CHARS} characters"),
                    ));
                }
            }
            if !(1..=MAX_WEIGHT).contains(&c.weight) {
                violations.push(FieldViolation::new(
                    &format!("{field}.weight"),
                    format!("must be from 1 to {MAX_WEIGHT}"),
                ));
            }
        }
        if violations.is_empty() {
            Ok(Self { spec })
        } else {
            Err(violations)
        }
    }

    pub fn spec(&self) -> &RubricSpec {
        &self.spec
    }

    pub fn criteria(&self) -> &[CriterionSpec] {
        &self.spec.criteria
    }
}

/// A score as given, before it is checked against the rubric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreInput {
    pub criterion: String,
    pub score: i64,
}

/// One criterion's score in a review, with the weight it counted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionScore {
    pub criterion: Code,
    pub weight: u32,
    pub score: u8,
}

/// A review as a supervisor submits it, checked against the rubric in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewQualityReview {
    pub ticket_id: TicketId,
    pub employee_id: EmployeeId,
    /// In the rubric's order.
    pub scores: Vec<CriterionScore>,
    pub note: Option<String>,
    /// The version of the rubric setting the review was scored on.
    pub rubric_version: i64,
}

impl NewQualityReview {
    /// Parses a review: every criterion of `rubric` is scored exactly once, from 1 to 5, and
    /// nothing else is scored. Field paths are the request's (`scores[2].score`).
    pub fn parse(
        rubric: &Rubric,
        rubric_version: i64,
        ticket_id: &str,
        employee_id: &str,
        scores: &[ScoreInput],
        note: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let ticket_id = TicketId::parse("ticket_id", ticket_id)
            .map_err(|v| violations.push(v))
            .ok();
        let employee_id = EmployeeId::parse("employee_id", employee_id)
            .map_err(|v| violations.push(v))
            .ok();
        let mut given: BTreeMap<&str, u8> = BTreeMap::new();
        for (i, s) in scores.iter().enumerate() {
            let field = format!("scores[{i}]");
            let known = rubric.criteria().iter().any(|c| c.code == s.criterion);
            if s.criterion.is_empty() {
                violations.push(FieldViolation::new(
                    &format!("{field}.criterion"),
                    "is required",
                ));
            } else if !known {
                violations.push(FieldViolation::new(
                    &format!("{field}.criterion"),
                    format!(
                        "is not a criterion of the rubric (one of: {})",
                        rubric
                            .criteria()
                            .iter()
                            .map(|c| c.code.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            } else if given.contains_key(s.criterion.as_str()) {
                violations.push(FieldViolation::new(
                    &format!("{field}.criterion"),
                    "is scored twice",
                ));
            }
            let score = u8::try_from(s.score)
                .ok()
                .filter(|s| (MIN_SCORE..=MAX_SCORE).contains(s));
            match score {
                Some(score) if known => {
                    given.entry(s.criterion.as_str()).or_insert(score);
                }
                Some(_) => {}
                None => violations.push(FieldViolation::new(
                    &format!("{field}.score"),
                    format!("must be from {MIN_SCORE} to {MAX_SCORE}"),
                )),
            }
        }
        let mut out = Vec::with_capacity(rubric.criteria().len());
        for c in rubric.criteria() {
            let listed = scores.iter().any(|s| s.criterion == c.code);
            match given.get(c.code.as_str()) {
                Some(score) => out.push(CriterionScore {
                    criterion: Code::parse("criterion", &c.code)
                        .expect("rubric codes are valid codes"),
                    weight: c.weight,
                    score: *score,
                }),
                // A listed criterion with a bad score is already reported at its index.
                None if listed => {}
                None => violations.push(FieldViolation::new(
                    "scores",
                    format!("is missing `{}`", c.code),
                )),
            }
        }
        let note = note.trim();
        if note.chars().count() > MAX_NOTE_CHARS {
            violations.push(FieldViolation::new(
                "note",
                format!("at most {MAX_NOTE_CHARS} characters"),
            ));
        }
        match (ticket_id, employee_id) {
            (Some(ticket_id), Some(employee_id)) if violations.is_empty() => Ok(Self {
                ticket_id,
                employee_id,
                scores: out,
                note: (!note.is_empty()).then(|| note.to_owned()),
                rubric_version,
            }),
            _ => Err(violations),
        }
    }

    /// The weighted score on 0..100, rounded to two decimals.
    pub fn weighted_score(&self) -> f64 {
        weighted_score(&self.scores)
    }
}

/// The weighted mean of the scores mapped from 1..5 onto 0..100, rounded to two decimals.
pub fn weighted_score(scores: &[CriterionScore]) -> f64 {
    let total_weight: u64 = scores.iter().map(|s| u64::from(s.weight)).sum();
    if total_weight == 0 {
        return 0.0;
    }
    let points: u64 = scores
        .iter()
        .map(|s| u64::from(s.weight) * u64::from(s.score.saturating_sub(MIN_SCORE)))
        .sum();
    let span = total_weight * u64::from(MAX_SCORE - MIN_SCORE);
    let score = points as f64 * 100.0 / span as f64;
    (score * 100.0).round() / 100.0
}

/// A recorded review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReview {
    pub ticket_id: TicketId,
    pub employee_id: EmployeeId,
    /// Who recorded it (the caller's actor name).
    pub reviewer: String,
    pub scores: Vec<CriterionScore>,
    pub note: Option<String>,
    pub rubric_version: i64,
    /// On 0..100.
    pub weighted_score: f64,
    pub review_time: Timestamp,
}

impl QualityReview {
    pub fn from_new(new: NewQualityReview, reviewer: String, review_time: Timestamp) -> Self {
        Self {
            weighted_score: new.weighted_score(),
            ticket_id: new.ticket_id,
            employee_id: new.employee_id,
            reviewer,
            scores: new.scores,
            note: new.note,
            rubric_version: new.rubric_version,
            review_time,
        }
    }
}

/// Whether `employee` handled the ticket: it is the assignee now, or was in any assignment
/// its history records.
pub fn handled_by<'a>(
    ticket: &Ticket,
    history: impl IntoIterator<Item = &'a EventRecord>,
    employee: &EmployeeId,
) -> bool {
    ticket.assignment.assignee.as_ref() == Some(employee)
        || history.into_iter().any(|record| {
            record
                .assignment
                .as_ref()
                .is_some_and(|a| a.assignee.as_ref() == Some(employee))
        })
}

/// When a settled ticket was settled: its resolution, or its closing when it was closed
/// without one. `None` for a ticket that is neither resolved nor closed.
pub fn settle_time(ticket: &Ticket) -> Option<Timestamp> {
    match ticket.status {
        Status::Resolved | Status::Closed => ticket.resolve_time.or(ticket.close_time),
        _ => None,
    }
}

/// The place of a ticket in the sample of `seed`: the first 8 bytes of
/// SHA-256(seed, ticket id). Stable across runs, platforms and backends.
pub fn sample_rank(seed: u64, ticket_id: TicketId) -> u64 {
    let mut hash = Sha256::new();
    hash.update(seed.to_be_bytes());
    hash.update(ticket_id.to_string().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Picks `n` of the candidates in the seed's order (ties, which need a hash collision, by id).
pub fn choose_sample(seed: u64, mut candidates: Vec<Ticket>, n: usize) -> Vec<Ticket> {
    candidates.sort_by_cached_key(|t| (sample_rank(seed, t.id), t.id.to_string()));
    candidates.truncate(n);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(scores: &[(&str, i64)]) -> Vec<ScoreInput> {
        scores
            .iter()
            .map(|(c, s)| ScoreInput {
                criterion: (*c).to_owned(),
                score: *s,
            })
            .collect()
    }

    const TICKET: &str = "0190f5c2-7a3b-7c4d-8e5f-60718293a4b5";

    fn parse(scores: &[(&str, i64)]) -> Result<NewQualityReview, Vec<FieldViolation>> {
        NewQualityReview::parse(
            &Rubric::default_rubric(),
            1,
            TICKET,
            "emp-1",
            &inputs(scores),
            " fine work ",
        )
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn the_default_rubric_has_four_equal_criteria() {
        let rubric = Rubric::default_rubric();
        let codes: Vec<&str> = rubric.criteria().iter().map(|c| c.code.as_str()).collect();
        assert_eq!(
            codes,
            ["accuracy", "completeness", "courtesy", "timeliness"]
        );
        assert!(rubric.criteria().iter().all(|c| c.weight == 1));
    }

    #[test]
    fn a_rubric_is_checked_field_by_field() {
        let spec = RubricSpec {
            criteria: vec![
                CriterionSpec {
                    code: "accuracy".into(),
                    name_ar: "الدقة".into(),
                    name_en: "Accuracy".into(),
                    weight: 2,
                },
                CriterionSpec {
                    code: "accuracy".into(),
                    name_ar: " ".into(),
                    name_en: "Again".into(),
                    weight: 0,
                },
                CriterionSpec {
                    code: "Bad Code".into(),
                    name_ar: "x".into(),
                    name_en: "x".into(),
                    weight: 101,
                },
            ],
        };
        let violations = Rubric::parse(spec).unwrap_err();
        assert_eq!(
            fields(&violations),
            [
                "criteria[1].code",
                "criteria[1].name_ar",
                "criteria[1].weight",
                "criteria[2].code",
                "criteria[2].weight"
            ]
        );
        let empty = Rubric::parse(RubricSpec { criteria: vec![] }).unwrap_err();
        assert_eq!(fields(&empty), ["criteria"]);
    }

    #[test]
    fn a_complete_review_is_scored_on_0_to_100() {
        let review = parse(&[
            ("timeliness", 5),
            ("accuracy", 5),
            ("courtesy", 5),
            ("completeness", 5),
        ])
        .unwrap();
        assert_eq!(review.weighted_score(), 100.0);
        assert_eq!(review.note.as_deref(), Some("fine work"));
        // Kept in the rubric's order, whatever the order given.
        assert_eq!(review.scores[0].criterion.as_str(), "accuracy");
        let low = parse(&[
            ("accuracy", 1),
            ("completeness", 1),
            ("courtesy", 1),
            ("timeliness", 1),
        ])
        .unwrap();
        assert_eq!(low.weighted_score(), 0.0);
        let mixed = parse(&[
            ("accuracy", 4),
            ("completeness", 3),
            ("courtesy", 5),
            ("timeliness", 2),
        ])
        .unwrap();
        // (3 + 2 + 4 + 1) / 16 = 62.5 %.
        assert_eq!(mixed.weighted_score(), 62.5);
    }

    #[test]
    fn weights_count() {
        let scores = vec![
            CriterionScore {
                criterion: Code::parse("c", "accuracy").unwrap(),
                weight: 3,
                score: 5,
            },
            CriterionScore {
                criterion: Code::parse("c", "courtesy").unwrap(),
                weight: 1,
                score: 1,
            },
        ];
        assert_eq!(weighted_score(&scores), 75.0);
        let thirds = vec![
            CriterionScore {
                criterion: Code::parse("c", "accuracy").unwrap(),
                weight: 1,
                score: 2,
            },
            CriterionScore {
                criterion: Code::parse("c", "courtesy").unwrap(),
                weight: 2,
                score: 1,
            },
        ];
        assert_eq!(weighted_score(&thirds), 8.33);
    }

    #[test]
    fn every_criterion_must_be_scored_once_from_1_to_5() {
        let missing = parse(&[("accuracy", 3), ("completeness", 3), ("timeliness", 3)]);
        let missing = missing.unwrap_err();
        assert_eq!(fields(&missing), ["scores"]);
        assert!(missing[0].description.contains("courtesy"));

        let bad = parse(&[
            ("accuracy", 3),
            ("completeness", 3),
            ("courtesy", 6),
            ("timeliness", 0),
            ("accuracy", 2),
            ("speed", 3),
        ])
        .unwrap_err();
        assert_eq!(
            fields(&bad),
            [
                "scores[2].score",
                "scores[3].score",
                "scores[4].criterion",
                "scores[5].criterion"
            ]
        );
    }

    #[test]
    fn ids_and_note_are_checked() {
        let violations = NewQualityReview::parse(
            &Rubric::default_rubric(),
            1,
            "not-a-uuid",
            "",
            &inputs(&[
                ("accuracy", 3),
                ("completeness", 3),
                ("courtesy", 3),
                ("timeliness", 3),
            ]),
            &"x".repeat(MAX_NOTE_CHARS + 1),
        )
        .unwrap_err();
        assert_eq!(fields(&violations), ["ticket_id", "employee_id", "note"]);
    }

    #[test]
    fn the_sample_order_depends_only_on_the_seed() {
        let a = TicketId::parse("t", TICKET).unwrap();
        let b = TicketId::parse("t", "0190f5c2-7a3b-7c4d-8e5f-60718293a4b6").unwrap();
        assert_eq!(sample_rank(7, a), sample_rank(7, a));
        assert_ne!(sample_rank(7, a), sample_rank(8, a));
        assert_ne!(sample_rank(7, a), sample_rank(7, b));
    }
}
