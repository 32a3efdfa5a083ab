//! The versioned tables that translate balagh's codes into the national platform's and back:
//! types, statuses, resolution outcomes, wilayats and categories.
//!
//! The tables are data (`mapping_v1.toml`, compiled in) so that a change is a reviewed diff of
//! a table, not of code. Loading checks them against the domain's enums and the platform's
//! published code lists, so a [`Mapping`] that exists is complete in both directions for
//! everything fixed at compile time. Catalog codes (categories, wilayats) can grow at run time,
//! so their lookups return an error for a code without a row rather than guess.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::contract::{self, PlatformCode};
use crate::domain::ticket::{ResolutionCode, Status, TicketType};
use crate::domain::values::Code;

/// The tables in force.
pub const MAPPING_V1_TOML: &str = include_str!("mapping_v1.toml");

/// A code that a table has no row for, or a table that does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the platform's {table} code {code:?} has no row in mapping v{version}")]
    UnknownPlatformCode {
        table: &'static str,
        code: String,
        version: u32,
    },
    #[error("balagh's {table} code {code:?} has no row in mapping v{version}")]
    UnmappedLocalCode {
        table: &'static str,
        code: String,
        version: u32,
    },
    #[error("the mapping file is invalid: {0}")]
    InvalidFile(String),
}

/// A platform category taken in: the local category, and whether it came through the
/// fallback row because the platform's code is not in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCategory {
    pub code: Code,
    pub via_fallback: bool,
}

/// The loaded tables of one version.
#[derive(Debug, Clone)]
pub struct Mapping {
    version: u32,
    types: Table<TicketType>,
    statuses: Table<Status>,
    outcomes: Table<ResolutionCode>,
    wilayats: Table<Code>,
    categories: Table<Code>,
    category_fallback: Code,
}

#[derive(Debug, Clone)]
struct Table<L: Ord> {
    name: &'static str,
    outbound: BTreeMap<L, String>,
    inbound: BTreeMap<String, L>,
}

impl<L: Ord + Clone + std::fmt::Display> Table<L> {
    fn outbound(&self, local: &L, version: u32) -> Result<&str, MappingError> {
        self.outbound.get(local).map(String::as_str).ok_or_else(|| {
            MappingError::UnmappedLocalCode {
                table: self.name,
                code: local.to_string(),
                version,
            }
        })
    }

    fn inbound(&self, code: &str, version: u32) -> Result<L, MappingError> {
        self.inbound
            .get(code)
            .cloned()
            .ok_or_else(|| MappingError::UnknownPlatformCode {
                table: self.name,
                code: code.to_owned(),
                version,
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    types: RawTable,
    statuses: RawTable,
    outcomes: RawTable,
    wilayats: RawTable,
    categories: RawCategories,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    outbound: BTreeMap<String, String>,
    inbound: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategories {
    inbound_fallback: String,
    outbound: BTreeMap<String, String>,
    inbound: BTreeMap<String, String>,
}

impl Mapping {
    /// The tables of `mapping_v1.toml`.
    pub fn v1() -> Result<Self, MappingError> {
        Self::from_toml(MAPPING_V1_TOML)
    }

    /// Parses and checks a mapping file.
    pub fn from_toml(text: &str) -> Result<Self, MappingError> {
        let file: File =
            toml::from_str(text).map_err(|e| MappingError::InvalidFile(e.to_string()))?;
        let types = load_table(
            "type",
            file.types,
            contract::CASE_TYPES,
            TicketType::from_str_opt,
            Some(TicketType::ALL),
        )?;
        let statuses = load_table(
            "status",
            file.statuses,
            contract::CASE_STATUSES,
            Status::from_str_opt,
            Some(Status::ALL),
        )?;
        let outcomes = load_table(
            "outcome",
            file.outcomes,
            contract::OUTCOMES,
            ResolutionCode::from_str_opt,
            Some(ResolutionCode::ALL),
        )?;
        let parse_code = |text: &str| Code::parse("code", text).ok();
        let wilayats = load_table(
            "wilayat",
            file.wilayats,
            contract::WILAYATS,
            parse_code,
            None,
        )?;
        let categories = load_table(
            "category",
            RawTable {
                outbound: file.categories.outbound,
                inbound: file.categories.inbound,
            },
            contract::CATEGORIES,
            parse_code,
            None,
        )?;
        let category_fallback = Code::parse("inbound_fallback", &file.categories.inbound_fallback)
            .map_err(|e| MappingError::InvalidFile(e.to_string()))?;
        if !categories.outbound.contains_key(&category_fallback) {
            return Err(MappingError::InvalidFile(format!(
                "categories.inbound_fallback {category_fallback} has no outbound row"
            )));
        }
        Ok(Self {
            version: file.version,
            types,
            statuses,
            outcomes,
            wilayats,
            categories,
            category_fallback,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn type_to_platform(&self, local: TicketType) -> Result<&str, MappingError> {
        self.types.outbound(&local, self.version)
    }

    pub fn type_from_platform(&self, code: &str) -> Result<TicketType, MappingError> {
        self.types.inbound(code, self.version)
    }

    pub fn status_to_platform(&self, local: Status) -> Result<&str, MappingError> {
        self.statuses.outbound(&local, self.version)
    }

    pub fn status_from_platform(&self, code: &str) -> Result<Status, MappingError> {
        self.statuses.inbound(code, self.version)
    }

    pub fn outcome_to_platform(&self, local: ResolutionCode) -> Result<&str, MappingError> {
        self.outcomes.outbound(&local, self.version)
    }

    pub fn outcome_from_platform(&self, code: &str) -> Result<ResolutionCode, MappingError> {
        self.outcomes.inbound(code, self.version)
    }

    pub fn wilayat_to_platform(&self, local: &Code) -> Result<&str, MappingError> {
        self.wilayats.outbound(local, self.version)
    }

    pub fn wilayat_from_platform(&self, code: &str) -> Result<Code, MappingError> {
        self.wilayats.inbound(code, self.version)
    }

    pub fn category_to_platform(&self, local: &Code) -> Result<&str, MappingError> {
        self.categories.outbound(local, self.version)
    }

    /// Never fails: a code the table does not know comes in under the fallback category,
    /// marked so the caller can report it.
    pub fn category_from_platform(&self, code: &str) -> InboundCategory {
        match self.categories.inbound(code, self.version) {
            Ok(code) => InboundCategory {
                code,
                via_fallback: false,
            },
            Err(_) => InboundCategory {
                code: self.category_fallback.clone(),
                via_fallback: true,
            },
        }
    }
}

/// Builds one table and checks it: every outbound key is a local code (all of them, when the
/// local side is an enum), every outbound value is a published platform code, and the inbound
/// rows are exactly the published platform codes, each leading to a local code.
fn load_table<L: Ord + Clone + std::fmt::Display>(
    name: &'static str,
    raw: RawTable,
    platform_codes: &[PlatformCode],
    parse_local: impl Fn(&str) -> Option<L>,
    all_local: Option<&[L]>,
) -> Result<Table<L>, MappingError> {
    let invalid = |what: String| MappingError::InvalidFile(format!("{name}: {what}"));
    let mut outbound = BTreeMap::new();
    for (local, platform) in raw.outbound {
        let parsed = parse_local(&local)
            .ok_or_else(|| invalid(format!("outbound row {local:?} is not a balagh code")))?;
        if !contract::is_known(platform_codes, &platform) {
            return Err(invalid(format!(
                "outbound {local} -> {platform:?} is not a published platform code"
            )));
        }
        outbound.insert(parsed, platform);
    }
    if let Some(all) = all_local
        && let Some(missing) = all.iter().find(|v| !outbound.contains_key(*v))
    {
        return Err(invalid(format!("no outbound row for {missing}")));
    }
    let mut inbound = BTreeMap::new();
    for (platform, local) in raw.inbound {
        if !contract::is_known(platform_codes, &platform) {
            return Err(invalid(format!(
                "inbound row {platform:?} is not a published platform code"
            )));
        }
        let parsed = parse_local(&local).ok_or_else(|| {
            invalid(format!(
                "inbound {platform} -> {local:?} is not a balagh code"
            ))
        })?;
        inbound.insert(platform, parsed);
    }
    if let Some(missing) = platform_codes
        .iter()
        .find(|c| !inbound.contains_key(c.code))
    {
        return Err(invalid(format!("no inbound row for {}", missing.code)));
    }
    Ok(Table {
        name,
        outbound,
        inbound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::CatalogData;

    fn mapping() -> Mapping {
        Mapping::v1().expect("mapping v1 loads")
    }

    #[test]
    fn version_one_loads() {
        assert_eq!(mapping().version(), 1);
    }

    #[test]
    fn types_and_outcomes_are_one_to_one() {
        let m = mapping();
        for t in TicketType::ALL {
            let code = m.type_to_platform(*t).unwrap();
            assert_eq!(m.type_from_platform(code).unwrap(), *t);
        }
        for o in ResolutionCode::ALL {
            let code = m.outcome_to_platform(*o).unwrap();
            assert_eq!(m.outcome_from_platform(code).unwrap(), *o);
        }
        for c in contract::CASE_TYPES {
            assert_eq!(
                m.type_to_platform(m.type_from_platform(c.code).unwrap())
                    .unwrap(),
                c.code
            );
        }
    }

    /// Statuses are many-to-one both ways; a round trip from either side must settle after
    /// one step, and the only platform codes that do not come back as themselves are the two
    /// the table says (ST10, the platform's own "submitted", comes back as ST20).
    #[test]
    fn status_round_trips_are_stable() {
        let m = mapping();
        for s in Status::ALL {
            let out = m.status_to_platform(*s).unwrap();
            let back = m.status_from_platform(out).unwrap();
            assert_eq!(m.status_to_platform(back).unwrap(), out, "{s}");
        }
        let mut not_identity = Vec::new();
        for c in contract::CASE_STATUSES {
            let local = m.status_from_platform(c.code).unwrap();
            let out = m.status_to_platform(local).unwrap();
            if out != c.code {
                not_identity.push((c.code, out));
            }
        }
        assert_eq!(not_identity, [("ST10", "ST20")]);
        // The statuses balagh folds together on the way out.
        assert_eq!(m.status_to_platform(Status::Assigned).unwrap(), "ST30");
        assert_eq!(m.status_to_platform(Status::InProgress).unwrap(), "ST30");
    }

    #[test]
    fn every_catalog_category_and_wilayat_has_rows_both_ways() {
        let m = mapping();
        let catalog = CatalogData::default_catalog().unwrap();
        for category in &catalog.categories {
            let out = m.category_to_platform(&category.code).unwrap();
            let back = m.category_from_platform(out);
            assert_eq!(back.code, category.code);
            assert!(!back.via_fallback);
        }
        for wilayat in &catalog.wilayats {
            let out = m.wilayat_to_platform(&wilayat.code).unwrap();
            assert_eq!(m.wilayat_from_platform(out).unwrap(), wilayat.code);
        }
        let category_codes: Vec<_> = catalog.categories.iter().map(|c| &c.code).collect();
        for c in contract::CATEGORIES {
            let local = m.category_from_platform(c.code);
            assert!(!local.via_fallback, "{}", c.code);
            assert!(category_codes.contains(&&local.code), "{}", c.code);
        }
        assert_eq!(m.categories.outbound.len(), catalog.categories.len());
        assert_eq!(m.wilayats.outbound.len(), catalog.wilayats.len());
    }

    #[test]
    fn an_unknown_platform_category_comes_in_through_the_fallback() {
        let m = mapping();
        let got = m.category_from_platform("MUN-NEWS-777");
        assert_eq!(got.code.as_str(), "general_inquiry");
        assert!(got.via_fallback);
        assert!(matches!(
            m.status_from_platform("ST99"),
            Err(MappingError::UnknownPlatformCode {
                table: "status",
                ..
            })
        ));
        let unknown = Code::parse("c", "sand_dunes").unwrap();
        assert!(matches!(
            m.category_to_platform(&unknown),
            Err(MappingError::UnmappedLocalCode { .. })
        ));
    }

    #[test]
    fn an_incomplete_file_is_refused() {
        let without_reopened = MAPPING_V1_TOML.replace("reopened = \"ST80\"\n", "");
        let err = Mapping::from_toml(&without_reopened).unwrap_err();
        assert!(
            err.to_string().contains("no outbound row for reopened"),
            "{err}"
        );
        let without_st35 = MAPPING_V1_TOML.replace("ST35 = \"waiting_on_beneficiary\"\n", "");
        let err = Mapping::from_toml(&without_st35).unwrap_err();
        assert!(err.to_string().contains("no inbound row for ST35"), "{err}");
        let typo =
            MAPPING_V1_TOML.replace("pothole = \"MUN-ROAD-010\"", "pothole = \"MUN-RD-010\"");
        assert!(Mapping::from_toml(&typo).is_err());
    }
}
