//! KPI targets per year, for the whole municipality, a directorate or an employee, and the
//! actuals measured against them.
//!
//! The source article reviews one year's statistics and sets the next year's KPIs: a target
//! names a year, a scope, one KPI and the value to reach. Each KPI has a direction: a
//! compliance or satisfaction figure must be *at least* its target, a duration or a reopen
//! rate *at most*. Targets are data (a versioned setting, managed over gRPC and audited).
//!
//! Invariant: a [`KpiTargets`] value is valid once it exists: known KPIs, values in their
//! range, no two targets for the same year, scope and KPI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FieldViolation;
use super::kpi::{KpiFigures, KpiGrouping};
use super::values::{Code, EmployeeId};

/// The most targets one document may hold.
pub const MAX_TARGETS: usize = 5_000;

/// A KPI a target can be set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKpi {
    FirstResponseCompliancePercent,
    ResolutionCompliancePercent,
    FirstResponseHoursMedian,
    ResolutionHoursMedian,
    ResolutionHoursP90,
    FirstContactResolutionPercent,
    ReopenPercent,
    SatisfactionAverage,
    SatisfiedPercent,
    RatingResponsePercent,
    QualityScoreAverage,
}

/// Whether the actual must reach the target from below or stay under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    AtLeast,
    AtMost,
}

impl TargetKpi {
    pub const ALL: [TargetKpi; 11] = [
        TargetKpi::FirstResponseCompliancePercent,
        TargetKpi::ResolutionCompliancePercent,
        TargetKpi::FirstResponseHoursMedian,
        TargetKpi::ResolutionHoursMedian,
        TargetKpi::ResolutionHoursP90,
        TargetKpi::FirstContactResolutionPercent,
        TargetKpi::ReopenPercent,
        TargetKpi::SatisfactionAverage,
        TargetKpi::SatisfiedPercent,
        TargetKpi::RatingResponsePercent,
        TargetKpi::QualityScoreAverage,
    ];

    /// The name used in the targets document and the API: the KPI field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKpi::FirstResponseCompliancePercent => "first_response_compliance_percent",
            TargetKpi::ResolutionCompliancePercent => "resolution_compliance_percent",
            TargetKpi::FirstResponseHoursMedian => "first_response_hours_median",
            TargetKpi::ResolutionHoursMedian => "resolution_hours_median",
            TargetKpi::ResolutionHoursP90 => "resolution_hours_p90",
            TargetKpi::FirstContactResolutionPercent => "first_contact_resolution_percent",
            TargetKpi::ReopenPercent => "reopen_percent",
            TargetKpi::SatisfactionAverage => "satisfaction_average",
            TargetKpi::SatisfiedPercent => "satisfied_percent",
            TargetKpi::RatingResponsePercent => "rating_response_percent",
            TargetKpi::QualityScoreAverage => "quality_score_average",
        }
    }

    pub fn from_str_opt(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn direction(self) -> Direction {
        match self {
            TargetKpi::FirstResponseHoursMedian
            | TargetKpi::ResolutionHoursMedian
            | TargetKpi::ResolutionHoursP90
            | TargetKpi::ReopenPercent => Direction::AtMost,
            _ => Direction::AtLeast,
        }
    }

    /// The values a target may take.
    fn range(self) -> (f64, f64) {
        match self {
            TargetKpi::SatisfactionAverage => (1.0, 5.0),
            TargetKpi::FirstResponseHoursMedian
            | TargetKpi::ResolutionHoursMedian
            | TargetKpi::ResolutionHoursP90 => (0.0, 10_000.0),
            _ => (0.0, 100.0),
        }
    }

    /// The measured value of this KPI in a group's figures (`None`: nothing to measure).
    pub fn actual(self, f: &KpiFigures) -> Option<f64> {
        match self {
            TargetKpi::FirstResponseCompliancePercent => f.first_response_compliance_percent,
            TargetKpi::ResolutionCompliancePercent => f.resolution_compliance_percent,
            TargetKpi::FirstResponseHoursMedian => f.first_response_hours_median,
            TargetKpi::ResolutionHoursMedian => f.resolution_hours_median,
            TargetKpi::ResolutionHoursP90 => f.resolution_hours_p90,
            TargetKpi::FirstContactResolutionPercent => f.first_contact_resolution_percent,
            TargetKpi::ReopenPercent => f.reopen_percent,
            TargetKpi::SatisfactionAverage => f.satisfaction_average,
            TargetKpi::SatisfiedPercent => f.satisfied_percent,
            TargetKpi::RatingResponsePercent => f.rating_response_percent,
            TargetKpi::QualityScoreAverage => f.quality_score_average,
        }
    }
}

/// Whom a target is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetScope {
    /// The whole municipality: `"all"`.
    All,
    /// `"directorate:<code>"`.
    Directorate(Code),
    /// `"employee:<id>"`.
    Employee(EmployeeId),
}

impl TargetScope {
    fn parse(field: &str, text: &str) -> Result<Self, FieldViolation> {
        if text == "all" {
            return Ok(TargetScope::All);
        }
        if let Some(code) = text.strip_prefix("directorate:") {
            return Code::parse(field, code).map(TargetScope::Directorate);
        }
        if let Some(id) = text.strip_prefix("employee:") {
            return EmployeeId::parse(field, id).map(TargetScope::Employee);
        }
        Err(FieldViolation::new(
            field,
            "must be \"all\", \"directorate:<code>\" or \"employee:<id>\"",
        ))
    }

    /// Whether this scope is the group `key` of figures grouped by `grouping`.
    fn is_group(&self, grouping: KpiGrouping, key: &str) -> bool {
        match (self, grouping) {
            (TargetScope::All, KpiGrouping::None) => true,
            (TargetScope::Directorate(code), KpiGrouping::Directorate) => code.as_str() == key,
            (TargetScope::Employee(id), KpiGrouping::Employee) => id.as_str() == key,
            _ => false,
        }
    }
}

/// One target as written in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiTargetSpec {
    pub year: i32,
    pub scope: String,
    pub kpi: String,
    pub target: f64,
}

/// The targets document, as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiTargetsSpec {
    pub targets: Vec<KpiTargetSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpiTarget {
    pub year: i32,
    pub scope: TargetScope,
    pub kpi: TargetKpi,
    pub target: f64,
}

/// A target beside what was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub kpi: TargetKpi,
    pub target: f64,
    pub actual: Option<f64>,
    /// `None` when there is nothing to measure yet.
    pub met: Option<bool>,
}

/// Validated targets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KpiTargets {
    spec: KpiTargetsSpec,
    targets: Vec<KpiTarget>,
}

impl KpiTargets {
    pub fn parse(spec: KpiTargetsSpec) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if spec.targets.len() > MAX_TARGETS {
            violations.push(FieldViolation::new(
                "targets",
                format!("at most {MAX_TARGETS} targets"),
            ));
            return Err(violations);
        }
        let mut seen: BTreeMap<(i32, TargetScope, TargetKpi), usize> = BTreeMap::new();
        let mut targets = Vec::with_capacity(spec.targets.len());
        for (i, t) in spec.targets.iter().enumerate() {
            let field = format!("targets[{i}]");
            let before = violations.len();
            if !(2000..=2100).contains(&t.year) {
                violations.push(FieldViolation::new(
                    &format!("{field}.year"),
                    "must be from 2000 to 2100",
                ));
            }
            let scope = TargetScope::parse(&format!("{field}.scope"), &t.scope)
                .map_err(|v| violations.push(v))
                .ok();
            let kpi = TargetKpi::from_str_opt(&t.kpi);
            match kpi {
                None => violations.push(FieldViolation::new(
                    &format!("{field}.kpi"),
                    "is not a KPI a target can be set for",
                )),
                Some(kpi) => {
                    let (low, high) = kpi.range();
                    if !(t.target.is_finite() && (low..=high).contains(&t.target)) {
                        violations.push(FieldViolation::new(
                            &format!("{field}.target"),
                            format!("must be from {low} to {high} for {}", kpi.as_str()),
                        ));
                    }
                }
            }
            if violations.len() > before {
                continue;
            }
            let (Some(scope), Some(kpi)) = (scope, kpi) else {
                continue;
            };
            if let Some(first) = seen.insert((t.year, scope.clone(), kpi), i) {
                violations.push(FieldViolation::new(
                    &field,
                    format!("sets the same year, scope and KPI as targets[{first}]"),
                ));
                continue;
            }
            targets.push(KpiTarget {
                year: t.year,
                scope,
                kpi,
                target: t.target,
            });
        }
        if violations.is_empty() {
            Ok(Self { spec, targets })
        } else {
            Err(violations)
        }
    }

    pub fn spec(&self) -> &KpiTargetsSpec {
        &self.spec
    }

    /// The targets of `year` for the group `key` of figures grouped by `grouping`, each
    /// beside its actual.
    pub fn evaluate(
        &self,
        year: i32,
        grouping: KpiGrouping,
        key: &str,
        figures: &KpiFigures,
    ) -> Vec<TargetResult> {
        self.targets
            .iter()
            .filter(|t| t.year == year && t.scope.is_group(grouping, key))
            .map(|t| {
                let actual = t.kpi.actual(figures);
                TargetResult {
                    kpi: t.kpi,
                    target: t.target,
                    actual,
                    met: actual.map(|a| match t.kpi.direction() {
                        Direction::AtLeast => a >= t.target,
                        Direction::AtMost => a <= t.target,
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(year: i32, scope: &str, kpi: &str, value: f64) -> KpiTargetSpec {
        KpiTargetSpec {
            year,
            scope: scope.into(),
            kpi: kpi.into(),
            target: value,
        }
    }

    #[test]
    fn targets_are_met_in_their_direction() {
        let targets = KpiTargets::parse(KpiTargetsSpec {
            targets: vec![
                target(2027, "all", "first_response_compliance_percent", 90.0),
                target(2027, "all", "resolution_hours_median", 10.0),
                target(2027, "directorate:roads", "satisfaction_average", 4.0),
                target(2026, "all", "reopen_percent", 5.0),
            ],
        })
        .expect("valid");
        let figures = KpiFigures {
            first_response_compliance_percent: Some(92.5),
            resolution_hours_median: Some(12.0),
            satisfaction_average: Some(4.2),
            ..KpiFigures::default()
        };
        let all = targets.evaluate(2027, KpiGrouping::None, "all", &figures);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].met, Some(true), "92.5% reaches at least 90%");
        assert_eq!(all[1].met, Some(false), "12 h is over at most 10 h");
        let roads = targets.evaluate(2027, KpiGrouping::Directorate, "roads", &figures);
        assert_eq!(roads.len(), 1);
        assert_eq!(roads[0].met, Some(true));
        assert!(
            targets
                .evaluate(2027, KpiGrouping::Directorate, "parks", &figures)
                .is_empty()
        );
        // Nothing measured: the outcome is unknown, not a failure.
        let reopen = targets.evaluate(2026, KpiGrouping::None, "all", &figures);
        assert_eq!((reopen[0].actual, reopen[0].met), (None, None));
    }

    #[test]
    fn every_mistake_is_named() {
        let violations = KpiTargets::parse(KpiTargetsSpec {
            targets: vec![
                target(1999, "all", "reopen_percent", 5.0),
                target(2027, "everyone", "reopen_percent", 5.0),
                target(2027, "all", "happiness", 5.0),
                target(2027, "all", "satisfaction_average", 6.0),
                target(2027, "all", "reopen_percent", f64::NAN),
                target(2027, "employee:e-1", "reopen_percent", 5.0),
                target(2027, "employee:e-1", "reopen_percent", 4.0),
            ],
        })
        .expect_err("invalid");
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "targets[0].year",
                "targets[1].scope",
                "targets[2].kpi",
                "targets[3].target",
                "targets[4].target",
                "targets[6]"
            ]
        );
    }
}
