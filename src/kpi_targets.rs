//! The KPI targets in force: one versioned settings document ([`SettingKey::KpiTargets`]),
//! read by `ReportingService` (targets beside a year's actuals) and by the yearly report.
//!
//! Architecture invariant: a stored targets document is always one [`KpiTargets::parse`]
//! accepts (`UpdateKpiTargets` stores nothing else); one that is not is reported as corrupt,
//! never silently read as "no targets".

use crate::domain::kpi_targets::{KpiTargets, KpiTargetsSpec};
use crate::store::{SettingKey, Store, StoreError, StoredSetting};

/// The stored targets and the setting they came from; empty (and `None`) before the first
/// change.
pub async fn kpi_targets(
    store: &dyn Store,
) -> Result<(Option<StoredSetting>, KpiTargets), StoreError> {
    let Some(stored) = store.get_setting(SettingKey::KpiTargets).await? else {
        return Ok((None, KpiTargets::default()));
    };
    let spec: KpiTargetsSpec = serde_json::from_str(&stored.value)
        .map_err(|e| StoreError::Corrupt(format!("stored KPI targets: {e}")))?;
    let targets = KpiTargets::parse(spec)
        .map_err(|v| StoreError::Corrupt(format!("stored KPI targets: {}", v[0])))?;
    Ok((Some(stored), targets))
}
