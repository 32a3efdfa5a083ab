//! Setting up the business calendar and the SLA settings over SlaService, for the tests that
//! drive deadlines with a clock they move.

use balagh::grpc::proto;
use balagh::grpc::proto::sla_service_client::SlaServiceClient;
use tonic::transport::Channel;

/// Sunday to Thursday, each day one working range (`"08:00-16:00"`), no holidays.
pub fn working_week(hours: &str) -> proto::BusinessCalendar {
    proto::BusinessCalendar {
        week: ["sunday", "monday", "tuesday", "wednesday", "thursday"]
            .into_iter()
            .map(|day| proto::DayHours {
                day: day.into(),
                hours: vec![hours.into()],
            })
            .collect(),
        ..Default::default()
    }
}

/// One policy, `standard` (the default), with the same targets for every priority; lines hold
/// 120, 240 and 480 business minutes; warnings at 75%; the matrix line 2, line 3, director
/// general; breaches of `escalate_on` escalate.
pub fn one_policy(
    first_response: u32,
    update_interval: u32,
    resolution: u32,
    escalate_on: &[proto::DeadlineKind],
) -> proto::SlaSettings {
    let targets = [
        proto::Priority::Low,
        proto::Priority::Normal,
        proto::Priority::High,
        proto::Priority::Urgent,
    ]
    .into_iter()
    .map(|priority| proto::PriorityTargets {
        priority: priority.into(),
        first_response_minutes: first_response,
        update_interval_minutes: update_interval,
        resolution_minutes: resolution,
    })
    .collect();
    proto::SlaSettings {
        warn_at_percent: 75,
        default_policy: "standard".into(),
        escalation_steps: vec![
            proto::EscalationTarget::Line2.into(),
            proto::EscalationTarget::Line3.into(),
            proto::EscalationTarget::DirectorGeneral.into(),
        ],
        escalate_on: escalate_on.iter().map(|k| (*k).into()).collect(),
        line_1_hold_minutes: 120,
        line_2_hold_minutes: 240,
        line_3_hold_minutes: 480,
        policies: vec![proto::SlaPolicy {
            code: "standard".into(),
            name: "Standard".into(),
            targets,
        }],
        ..Default::default()
    }
}

/// Replaces the calendar and the SLA settings, each from the etag it reads first.
pub async fn replace_calendar_and_settings(
    sla: &mut SlaServiceClient<Channel>,
    calendar: proto::BusinessCalendar,
    settings: proto::SlaSettings,
) {
    let current = sla
        .get_calendar(proto::GetCalendarRequest {})
        .await
        .expect("calendar")
        .into_inner()
        .calendar
        .expect("calendar");
    sla.update_calendar(proto::UpdateCalendarRequest {
        calendar: Some(calendar),
        etag: current.etag,
        request_id: String::new(),
    })
    .await
    .expect("update calendar");
    let current = sla
        .get_sla_settings(proto::GetSlaSettingsRequest {})
        .await
        .expect("settings")
        .into_inner()
        .settings
        .expect("settings");
    sla.update_sla_settings(proto::UpdateSlaSettingsRequest {
        settings: Some(settings),
        etag: current.etag,
        request_id: String::new(),
    })
    .await
    .expect("update settings");
}
