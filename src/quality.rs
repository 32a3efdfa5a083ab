//! The rubric of staff quality reviews in force: a versioned settings document
//! ([`SettingKey::QualityRubric`]), stored from `catalog/quality_rubric.toml` the first time
//! it is read, and changed only as a whole with an etag (the settings audit trail keeps every
//! version).
//!
//! Architecture invariant: a stored rubric is always one [`Rubric::parse`] accepts; a review
//! is checked against the version read for it and keeps that version's weights.

use crate::domain::FieldViolation;
use crate::domain::quality::{Rubric, RubricSpec};
use crate::store::{SettingKey, Store, StoreError, StoredSetting, WriteContext};

/// Who the default rubric stored on first read is recorded as.
const DEFAULTS_ACTOR: &str = "balagh (defaults)";

/// Why a rubric call failed.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid rubric")]
    Invalid(Vec<FieldViolation>),
}

/// The rubric and the setting version it came from.
#[derive(Debug, Clone)]
pub struct RubricInForce {
    pub rubric: Rubric,
    pub setting: StoredSetting,
}

impl RubricInForce {
    fn from_setting(setting: StoredSetting) -> Result<Self, QualityError> {
        let spec: RubricSpec = serde_json::from_str(&setting.value).map_err(corrupt)?;
        let rubric = Rubric::parse(spec)
            .map_err(|v| StoreError::Corrupt(format!("stored quality rubric: {}", v[0])))?;
        Ok(Self { rubric, setting })
    }
}

/// The rubric in force, storing the default the first time (when another replica stored it
/// first, theirs is read).
pub async fn rubric(store: &dyn Store) -> Result<RubricInForce, QualityError> {
    if let Some(setting) = store.get_setting(SettingKey::QualityRubric).await? {
        return RubricInForce::from_setting(setting);
    }
    let spec = Rubric::default_rubric().spec().clone();
    let value = serde_json::to_string(&spec).map_err(corrupt)?;
    let ctx = WriteContext {
        actor: DEFAULTS_ACTOR.to_owned(),
        request: None,
        reach: None,
    };
    let setting = match store
        .put_setting(ctx, SettingKey::QualityRubric, value, Some(0))
        .await
    {
        Ok(stored) => stored,
        Err(StoreError::SettingVersionMismatch { .. }) => store
            .get_setting(SettingKey::QualityRubric)
            .await?
            .ok_or_else(|| StoreError::Corrupt("setting vanished".into()))?,
        Err(error) => return Err(error.into()),
    };
    RubricInForce::from_setting(setting)
}

/// Replaces the rubric. `expected_version` guards against a lost update; the rubric must be
/// stored already (read it first), so version 0 is refused as a mismatch by the store.
pub async fn update_rubric(
    store: &dyn Store,
    ctx: WriteContext,
    spec: RubricSpec,
    expected_version: Option<i64>,
) -> Result<RubricInForce, QualityError> {
    Rubric::parse(spec.clone()).map_err(QualityError::Invalid)?;
    // Makes sure the default is stored, so the first update's etag names a real version.
    rubric(store).await?;
    let value = serde_json::to_string(&spec).map_err(corrupt)?;
    let setting = store
        .put_setting(ctx, SettingKey::QualityRubric, value, expected_version)
        .await?;
    RubricInForce::from_setting(setting)
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("quality rubric document: {error}"))
}
