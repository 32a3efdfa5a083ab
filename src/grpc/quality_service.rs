//! `balagh.v1.QualityService`: the rubric of staff quality reviews, recording and listing
//! reviews, and the sample of an employee's settled tickets proposed for review. Requests are
//! parsed into domain types here (every field checked, every violation named); the checks
//! that need the data (the ticket exists, the employee handled it, no review yet) are the
//! store's, inside the writing transaction.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{Violations, timestamp_from_proto, timestamp_to_proto};
use super::error::{invalid_argument, prefixed};
use super::proto::{self, quality_service_server::QualityService};
use super::reporting_service::MAX_PERIOD_DAYS;
use super::request::{
    PageToken, filter_hash, page_size, parse_setting_etag, request_key, write_context,
};
use crate::domain::Timestamp;
use crate::domain::quality::{
    self, CriterionSpec, NewQualityReview, QualityReview, RubricSpec, ScoreInput,
};
use crate::domain::values::EmployeeId;
use crate::quality::{QualityError, RubricInForce};
use crate::store::{QualityReviewQuery, Store};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_SAMPLE: u32 = 5;
const MAX_SAMPLE: u32 = 50;
/// More entries than any rubric may hold, refused before they are looked at.
const MAX_LIST_ENTRIES: usize = 200;
const DAY_MICROS: i64 = 86_400 * 1_000_000;

pub struct QualityServiceImpl {
    store: Arc<dyn Store>,
}

impl QualityServiceImpl {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl From<QualityError> for Status {
    fn from(error: QualityError) -> Self {
        match error {
            QualityError::Store(error) => error.into(),
            QualityError::Invalid(violations) => invalid_argument(violations),
        }
    }
}

fn rubric_to_proto(r: &RubricInForce) -> proto::Rubric {
    proto::Rubric {
        criteria: r
            .rubric
            .criteria()
            .iter()
            .map(|c| proto::RubricCriterion {
                code: c.code.clone(),
                name_ar: c.name_ar.clone(),
                name_en: c.name_en.clone(),
                weight: c.weight,
            })
            .collect(),
        etag: crate::domain::ticket::etag_of(r.setting.version),
        update_time: Some(timestamp_to_proto(r.setting.update_time)),
        updated_by: r.setting.actor.clone(),
    }
}

fn review_to_proto(r: QualityReview) -> proto::QualityReview {
    proto::QualityReview {
        ticket_id: r.ticket_id.to_string(),
        employee_id: r.employee_id.as_str().to_owned(),
        reviewer: r.reviewer,
        scores: r
            .scores
            .into_iter()
            .map(|s| proto::CriterionScore {
                criterion: s.criterion.as_str().to_owned(),
                score: i32::from(s.score),
                weight: s.weight,
            })
            .collect(),
        note: r.note.unwrap_or_default(),
        weighted_score: r.weighted_score,
        review_time: Some(timestamp_to_proto(r.review_time)),
        rubric_version: r.rubric_version,
    }
}

/// An optional time: unset is `None`.
fn optional_time(
    v: &mut Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<Option<Timestamp>> {
    match t {
        None => Some(None),
        Some(t) => v.take(timestamp_from_proto(field, t)).map(Some),
    }
}

#[tonic::async_trait]
impl QualityService for QualityServiceImpl {
    async fn get_rubric(
        &self,
        _request: Request<proto::GetRubricRequest>,
    ) -> Result<Response<proto::GetRubricResponse>, Status> {
        let rubric = crate::quality::rubric(self.store.as_ref()).await?;
        Ok(Response::new(proto::GetRubricResponse {
            rubric: Some(rubric_to_proto(&rubric)),
        }))
    }

    async fn update_rubric(
        &self,
        request: Request<proto::UpdateRubricRequest>,
    ) -> Result<Response<proto::UpdateRubricResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "UpdateRubric",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let version = v
            .take(parse_setting_etag("etag", &message.etag, "rubric"))
            .map(Some);
        let Some(rubric) = &message.rubric else {
            v.push("rubric", "is required");
            return Err(invalid_argument(v.0));
        };
        if rubric.criteria.len() > MAX_LIST_ENTRIES {
            v.push(
                "rubric.criteria",
                format!("at most {} criteria", quality::MAX_CRITERIA),
            );
        }
        let (key, version) = v
            .finish(|| Some((key?, version?)))
            .map_err(invalid_argument)?;
        let spec = RubricSpec {
            criteria: rubric
                .criteria
                .iter()
                .map(|c| CriterionSpec {
                    code: c.code.clone(),
                    name_ar: c.name_ar.clone(),
                    name_en: c.name_en.clone(),
                    weight: c.weight,
                })
                .collect(),
        };
        let ctx = write_context(&request, key);
        let updated = crate::quality::update_rubric(self.store.as_ref(), ctx, spec, version)
            .await
            .map_err(|error| match error {
                QualityError::Invalid(violations) => {
                    invalid_argument(prefixed("rubric.", violations))
                }
                other => other.into(),
            })?;
        tracing::info!(version = updated.setting.version, "quality rubric changed");
        Ok(Response::new(proto::UpdateRubricResponse {
            rubric: Some(rubric_to_proto(&updated)),
        }))
    }

    async fn record_quality_review(
        &self,
        request: Request<proto::RecordQualityReviewRequest>,
    ) -> Result<Response<proto::RecordQualityReviewResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "RecordQualityReview",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        if message.scores.len() > MAX_LIST_ENTRIES {
            v.push(
                "scores",
                "lists far more scores than the rubric has criteria",
            );
            return Err(invalid_argument(v.0));
        }
        let rubric = crate::quality::rubric(self.store.as_ref()).await?;
        let scores: Vec<ScoreInput> = message
            .scores
            .iter()
            .map(|s| ScoreInput {
                criterion: s.criterion.clone(),
                score: i64::from(s.score),
            })
            .collect();
        let review = v.take_many(NewQualityReview::parse(
            &rubric.rubric,
            rubric.setting.version,
            &message.ticket_id,
            &message.employee_id,
            &scores,
            &message.note,
        ));
        let (key, review) = v
            .finish(|| Some((key?, review?)))
            .map_err(invalid_argument)?;
        let ctx = write_context(&request, key);
        let recorded = self.store.record_quality_review(ctx, review).await?;
        tracing::info!(
            ticket_id = %recorded.ticket_id,
            weighted_score = recorded.weighted_score,
            "quality review recorded"
        );
        Ok(Response::new(proto::RecordQualityReviewResponse {
            review: Some(review_to_proto(recorded)),
        }))
    }

    async fn list_quality_reviews(
        &self,
        request: Request<proto::ListQualityReviewsRequest>,
    ) -> Result<Response<proto::ListQualityReviewsResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let employee = if message.employee_id.is_empty() {
            Some(None)
        } else {
            v.take(EmployeeId::parse("employee_id", &message.employee_id))
                .map(Some)
        };
        let from = optional_time(&mut v, "from", message.from.as_ref());
        let to = optional_time(&mut v, "to", message.to.as_ref());
        if let (Some(Some(from)), Some(Some(to))) = (from, to)
            && to <= from
        {
            v.push("to", "must be after `from`");
        }
        let size = v.take(page_size(
            message.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        ));
        let hash = filter_hash(message, |m| {
            m.page_size = 0;
            m.page_token.clear();
        });
        let token = v.take(PageToken::decode(&message.page_token, hash));
        let query = v
            .finish(|| {
                Some(QualityReviewQuery {
                    employee: employee?,
                    from: from?,
                    to: to?,
                    after_position: token?.map(|t| t.position),
                    limit: size?,
                })
            })
            .map_err(invalid_argument)?;
        let reviews = self.store.list_quality_reviews(&query).await?;
        let next_page_token = match reviews.last() {
            Some(last) if reviews.len() == query.limit as usize => PageToken {
                position: last.position,
                filter_hash: hash,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListQualityReviewsResponse {
            reviews: reviews
                .into_iter()
                .map(|r| review_to_proto(r.review))
                .collect(),
            next_page_token,
        }))
    }

    async fn sample_tickets_for_review(
        &self,
        request: Request<proto::SampleTicketsForReviewRequest>,
    ) -> Result<Response<proto::SampleTicketsForReviewResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let employee = v.take(EmployeeId::parse("employee_id", &message.employee_id));
        let from = match &message.from {
            Some(t) => v.take(timestamp_from_proto("from", t)),
            None => {
                v.push("from", "is required");
                None
            }
        };
        let to = match &message.to {
            Some(t) => v.take(timestamp_from_proto("to", t)),
            None => {
                v.push("to", "is required");
                None
            }
        };
        if let (Some(from), Some(to)) = (from, to) {
            if to <= from {
                v.push("to", "must be after `from`");
            } else if to.as_micros() - from.as_micros() > MAX_PERIOD_DAYS * DAY_MICROS {
                v.push(
                    "to",
                    format!("the period is at most {MAX_PERIOD_DAYS} days"),
                );
            }
        }
        let count = match message.count {
            0 => Some(DEFAULT_SAMPLE),
            n if n > 0 && n as u32 <= MAX_SAMPLE => Some(n as u32),
            _ => {
                v.push(
                    "count",
                    format!("must be from 1 to {MAX_SAMPLE} (0: {DEFAULT_SAMPLE})"),
                );
                None
            }
        };
        let (employee, from, to, count) = v
            .finish(|| Some((employee?, from?, to?, count?)))
            .map_err(invalid_argument)?;
        let tickets = self
            .store
            .sample_tickets_for_review(employee, from, to, count, message.seed)
            .await?;
        Ok(Response::new(proto::SampleTicketsForReviewResponse {
            tickets: tickets
                .into_iter()
                .map(|t| proto::SampledTicket {
                    ticket_id: t.id.to_string(),
                    reference: t.reference.to_string(),
                    category: t.category.to_string(),
                    directorate: t
                        .assignment
                        .directorate
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    settle_time: quality::settle_time(&t).map(timestamp_to_proto),
                })
                .collect(),
        }))
    }
}
