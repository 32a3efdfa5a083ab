//! `balagh.v1.SatisfactionService`: the contact centre's call-back list, call-backs that
//! brought no rating, and a ticket's survey history. Requests are parsed into domain values
//! here (every violation named); the survey policy is checked by the store, in the writing
//! transaction (a call-back's rating is `TicketService.RateTicket`).
//!
//! Log lines name tickets by id and reference, never the beneficiary's phone or civil ID.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{Violations, ticket_to_proto_masked, timestamp_to_proto};
use super::error::invalid_argument;
use super::proto::{self, satisfaction_service_server::SatisfactionService};
use super::request::{request_key, write_context};
use crate::domain::satisfaction::{
    CallBackQuery, SurveyChannel, SurveyOutcome, SurveyPolicy, SurveyRequest, UnratedCallBack,
};
use crate::domain::values::{Code, TicketId};
use crate::domain::{Clock, Timestamp};
use crate::store::{Store, StoreError};

const DEFAULT_SETTLED_WITHIN_DAYS: u32 = 30;
const MAX_SETTLED_WITHIN_DAYS: u32 = 365;
const DEFAULT_MAX_CANDIDATES: u32 = 50;
const MAX_CANDIDATES: u32 = 500;
/// Most ledger entries ListSurveyRequests answers for one ticket.
const MAX_SURVEY_REQUESTS: u32 = 1000;
const DAY_MICROS: i64 = 86_400 * 1_000_000;

pub struct SatisfactionServiceImpl {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: SurveyPolicy,
}

impl SatisfactionServiceImpl {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: SurveyPolicy) -> Self {
        Self {
            store,
            clock,
            policy,
        }
    }
}

fn channel_to_proto(channel: SurveyChannel) -> proto::SurveyChannel {
    match channel {
        SurveyChannel::CallBack => proto::SurveyChannel::CallBack,
        SurveyChannel::NationalPlatform => proto::SurveyChannel::NationalPlatform,
    }
}

fn outcome_to_proto(outcome: SurveyOutcome) -> proto::SurveyOutcome {
    match outcome {
        SurveyOutcome::Rated => proto::SurveyOutcome::Rated,
        SurveyOutcome::Declined => proto::SurveyOutcome::Declined,
        SurveyOutcome::NoAnswer => proto::SurveyOutcome::NoAnswer,
    }
}

fn survey_request_to_proto(r: &SurveyRequest) -> proto::SurveyRequest {
    proto::SurveyRequest {
        ticket_id: r.ticket_id.to_string(),
        ask_time: Some(timestamp_to_proto(r.ask_time)),
        channel: channel_to_proto(r.channel).into(),
        outcome: outcome_to_proto(r.outcome).into(),
        actor: r.actor.clone(),
    }
}

/// A count field where 0 means `default` and anything outside 1..=`max` is refused.
fn bounded(v: &mut Violations, field: &str, value: i32, default: u32, max: u32) -> Option<u32> {
    match value {
        0 => Some(default),
        n if n > 0 && n as u32 <= max => Some(n as u32),
        _ => {
            v.push(field, format!("must be from 1 to {max} (0: {default})"));
            None
        }
    }
}

/// The outcome of a call-back that brought no rating.
fn unrated_outcome(value: i32) -> Result<UnratedCallBack, crate::domain::FieldViolation> {
    let violation = |description: &str| crate::domain::FieldViolation::new("outcome", description);
    match proto::SurveyOutcome::try_from(value) {
        Ok(proto::SurveyOutcome::Declined) => Ok(UnratedCallBack::Declined),
        Ok(proto::SurveyOutcome::NoAnswer) => Ok(UnratedCallBack::NoAnswer),
        Ok(proto::SurveyOutcome::Rated) => Err(violation(
            "a call-back that brought a rating is recorded with TicketService.RateTicket",
        )),
        Ok(proto::SurveyOutcome::Unspecified) => Err(violation(
            "is required: SURVEY_OUTCOME_DECLINED or SURVEY_OUTCOME_NO_ANSWER",
        )),
        Err(_) => Err(violation("is not a known survey outcome")),
    }
}

#[tonic::async_trait]
impl SatisfactionService for SatisfactionServiceImpl {
    async fn list_call_back_candidates(
        &self,
        request: Request<proto::ListCallBackCandidatesRequest>,
    ) -> Result<Response<proto::ListCallBackCandidatesResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let directorate = if message.directorate.is_empty() {
            Some(None)
        } else {
            v.take(Code::parse("directorate", &message.directorate))
                .map(Some)
        };
        let days = bounded(
            &mut v,
            "settled_within_days",
            message.settled_within_days,
            DEFAULT_SETTLED_WITHIN_DAYS,
            MAX_SETTLED_WITHIN_DAYS,
        );
        let limit = bounded(
            &mut v,
            "max_candidates",
            message.max_candidates,
            DEFAULT_MAX_CANDIDATES,
            MAX_CANDIDATES,
        );
        let (directorate, days, limit) = v
            .finish(|| Some((directorate?, days?, limit?)))
            .map_err(invalid_argument)?;
        let now = self.clock.now();
        let query = CallBackQuery {
            directorate,
            settled_from: Timestamp::from_micros(now.as_micros() - i64::from(days) * DAY_MICROS),
            now,
            policy: self.policy,
            limit,
        };
        let candidates = self.store.call_back_candidates(&query).await?;
        // Agents call the beneficiaries back: they get the phone numbers, and that is
        // recorded as a reveal. Everyone else sees the list masked.
        let principal = crate::auth::Principal::of(&request);
        let reveal = principal
            .caller()
            .filter(|c| c.role == crate::auth::Role::Agent);
        if let Some(caller) = reveal
            && !candidates.is_empty()
        {
            self.store
                .record_personal_data_access(
                    crate::store::PersonalDataAccess {
                        actor: caller.id.clone(),
                        role: caller.role.as_str().to_owned(),
                        method: "ListCallBackCandidates".to_owned(),
                    },
                    candidates.iter().map(|c| c.ticket.id).collect(),
                )
                .await?;
        }
        let mask = principal.masks_personal_data() && reveal.is_none();
        Ok(Response::new(proto::ListCallBackCandidatesResponse {
            candidates: candidates
                .iter()
                .map(|c| proto::CallBackCandidate {
                    ticket: Some(ticket_to_proto_masked(&c.ticket, mask)),
                    settle_time: Some(timestamp_to_proto(c.settle_time)),
                    previous_attempt_count: i32::try_from(c.n_previous_attempts)
                        .unwrap_or(i32::MAX),
                    last_attempt_time: c.last_attempt_time.map(timestamp_to_proto),
                })
                .collect(),
        }))
    }

    async fn record_call_back_attempt(
        &self,
        request: Request<proto::RecordCallBackAttemptRequest>,
    ) -> Result<Response<proto::RecordCallBackAttemptResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let id = v.take(TicketId::parse("ticket_id", &message.ticket_id));
        let outcome = v.take(unrated_outcome(message.outcome));
        let key = v.take(request_key(
            "RecordCallBackAttempt",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        let (id, outcome, key) = v
            .finish(|| Some((id?, outcome?, key?)))
            .map_err(invalid_argument)?;
        let ctx = write_context(&request, key);
        let recorded = self
            .store
            .record_unrated_call_back(ctx, id, outcome, self.policy)
            .await?;
        tracing::info!(
            ticket_id = %recorded.ticket_id,
            outcome = recorded.outcome.as_str(),
            "call-back without a rating recorded"
        );
        Ok(Response::new(proto::RecordCallBackAttemptResponse {
            survey_request: Some(survey_request_to_proto(&recorded)),
        }))
    }

    async fn list_survey_requests(
        &self,
        request: Request<proto::ListSurveyRequestsRequest>,
    ) -> Result<Response<proto::ListSurveyRequestsResponse>, Status> {
        let id = TicketId::parse("ticket_id", &request.get_ref().ticket_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        let requests = self
            .store
            .list_survey_requests(id, MAX_SURVEY_REQUESTS)
            .await?
            .ok_or(StoreError::TicketNotFound)?;
        Ok(Response::new(proto::ListSurveyRequestsResponse {
            survey_requests: requests.iter().map(survey_request_to_proto).collect(),
        }))
    }
}
