//! The catalog: directorates, outlets, categories and wilayats that tickets point at.
//!
//! The default catalog is the reviewable data file `catalog/default.toml`, compiled into the
//! binary and loaded into an empty database on first start. After that the database is the
//! truth and administrators change it with the upsert RPCs.

use serde::{Deserialize, Serialize};

use super::FieldViolation;
use super::ticket::Priority;
use super::values::{Code, parse_text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directorate {
    pub code: Code,
    pub name_ar: String,
    pub name_en: String,
    #[serde(default = "yes")]
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outlet {
    pub code: Code,
    pub directorate_code: Code,
    pub wilayat_code: Code,
    pub name_ar: String,
    pub name_en: String,
    #[serde(default = "yes")]
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub code: Code,
    pub name_ar: String,
    pub name_en: String,
    pub default_directorate_code: Code,
    pub default_priority: Priority,
    pub sla_policy_code: Code,
    #[serde(default = "yes")]
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wilayat {
    pub code: Code,
    pub name_ar: String,
    pub name_en: String,
}

fn yes() -> bool {
    true
}

/// Parses the pair of names every catalog entry carries; `prefix` is the request path.
pub fn parse_names(
    prefix: &str,
    name_ar: &str,
    name_en: &str,
) -> Result<(String, String), Vec<FieldViolation>> {
    let ar = parse_text(&format!("{prefix}.name_ar"), name_ar, 1, 200, false);
    let en = parse_text(&format!("{prefix}.name_en"), name_en, 1, 200, false);
    match (ar, en) {
        (Ok(ar), Ok(en)) => Ok((ar, en)),
        (ar, en) => Err(ar.err().into_iter().chain(en.err()).collect()),
    }
}

/// The whole catalog, as the default data file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogData {
    pub wilayats: Vec<Wilayat>,
    pub directorates: Vec<Directorate>,
    pub outlets: Vec<Outlet>,
    pub categories: Vec<Category>,
}

/// The default catalog shipped with balagh.
pub const DEFAULT_CATALOG_TOML: &str = include_str!("../../catalog/default.toml");

impl CatalogData {
    pub fn default_catalog() -> Result<Self, String> {
        Self::from_toml(DEFAULT_CATALOG_TOML)
    }

    /// Parses a catalog file and checks that every reference in it resolves.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let data: CatalogData = toml::from_str(text).map_err(|e| e.to_string())?;
        for entry in data
            .wilayats
            .iter()
            .map(|w| (&w.code, &w.name_ar, &w.name_en))
            .chain(
                data.directorates
                    .iter()
                    .map(|d| (&d.code, &d.name_ar, &d.name_en)),
            )
            .chain(
                data.outlets
                    .iter()
                    .map(|o| (&o.code, &o.name_ar, &o.name_en)),
            )
            .chain(
                data.categories
                    .iter()
                    .map(|c| (&c.code, &c.name_ar, &c.name_en)),
            )
        {
            Code::parse("code", entry.0.as_str()).map_err(|e| e.to_string())?;
            parse_names(entry.0.as_str(), entry.1, entry.2)
                .map_err(|v| format!("{}: {}", entry.0, v[0]))?;
        }
        let has_directorate = |c: &Code| data.directorates.iter().any(|d| &d.code == c);
        let has_wilayat = |c: &Code| data.wilayats.iter().any(|w| &w.code == c);
        for outlet in &data.outlets {
            if !has_directorate(&outlet.directorate_code) || !has_wilayat(&outlet.wilayat_code) {
                return Err(format!(
                    "outlet {} points at an unknown directorate or wilayat",
                    outlet.code
                ));
            }
        }
        for category in &data.categories {
            if !has_directorate(&category.default_directorate_code) {
                return Err(format!(
                    "category {} points at an unknown directorate",
                    category.code
                ));
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_parses_and_covers_muscat() {
        let catalog = CatalogData::default_catalog().expect("default catalog");
        let wilayats: Vec<_> = catalog.wilayats.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(
            wilayats,
            [
                "muscat",
                "muttrah",
                "bawshar",
                "as_seeb",
                "al_amerat",
                "qurayyat"
            ]
        );
        assert!(catalog.categories.len() >= 10);
        assert!(
            catalog
                .outlets
                .iter()
                .all(|o| wilayats.contains(&o.wilayat_code.as_str()))
        );
    }
}
