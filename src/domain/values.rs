//! Value types that parse, not validate: each has private fields and a constructor that
//! returns `Result`, so a value that exists is valid. The gRPC layer converts protobuf input
//! into these in one place; the store and the domain only ever see parsed values.
//!
//! Deserialisation (from the store's own JSON) trusts its input: those bytes were produced by
//! serialising values that had already been parsed.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FieldViolation;

fn violation(field: &str, description: impl Into<String>) -> FieldViolation {
    FieldViolation::new(field, description)
}

/// Checks free text and returns it unchanged: it is kept exactly as typed.
/// Control characters are refused (tabs and, when `multiline`, line breaks are allowed).
pub fn parse_text(
    field: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
    multiline: bool,
) -> Result<String, FieldViolation> {
    let n_chars = value.chars().count();
    if n_chars > max_chars {
        return Err(violation(
            field,
            format!("must be at most {max_chars} characters, got {n_chars}"),
        ));
    }
    if value.trim().chars().count() < min_chars {
        return Err(violation(
            field,
            if min_chars == 1 {
                "is required".to_owned()
            } else {
                format!("must be at least {min_chars} characters")
            },
        ));
    }
    let bad_control = value
        .chars()
        .any(|c| c.is_control() && !(c == '\t' || (multiline && (c == '\n' || c == '\r'))));
    if bad_control {
        return Err(violation(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A server-assigned ticket identifier (a UUIDv7, so ids sort roughly by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketId(uuid::Uuid);

impl TicketId {
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        if value.is_empty() {
            return Err(violation(field, "is required"));
        }
        uuid::Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| violation(field, "must be a ticket id (a UUID)"))
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The human-friendly reference of a ticket, `MCT-<year>-<number>`, numbered per year from 1,
/// without gaps, and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReferenceNumber {
    year: i32,
    number: u32,
}

impl ReferenceNumber {
    pub const PREFIX: &'static str = "MCT";

    pub fn new(year: i32, number: u32) -> Option<Self> {
        ((2000..=9999).contains(&year) && number >= 1).then_some(Self { year, number })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let invalid = || violation(field, "must look like MCT-2026-000123");
        let mut parts = value.trim().splitn(3, '-');
        let (Some(prefix), Some(year), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if !prefix.eq_ignore_ascii_case(Self::PREFIX)
            || year.len() != 4
            || number.is_empty()
            || number.len() > 9
            || !year
                .bytes()
                .chain(number.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let year = year.parse().map_err(|_| invalid())?;
        let number = number.parse().map_err(|_| invalid())?;
        Self::new(year, number).ok_or_else(invalid)
    }
}

impl fmt::Display for ReferenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{:06}", Self::PREFIX, self.year, self.number)
    }
}

impl Serialize for ReferenceNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReferenceNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse("reference", &text).map_err(serde::de::Error::custom)
    }
}

/// A catalog code (directorate, outlet, category, wilayat, SLA policy): lower-case ASCII
/// letters, digits and underscores, 1 to 64 characters, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Code(String);

impl Code {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        if value.is_empty() {
            return Err(violation(field, "is required"));
        }
        let valid = value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(violation(
                field,
                "must be a code of lower-case letters, digits and underscores (at most 64)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An employee identifier: ASCII letters, digits, `.`, `_` and `-`, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmployeeId(String);

impl EmployeeId {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(violation(
                field,
                "must be an employee id of letters, digits, '.', '_' or '-' (at most 64)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Omani phone number, kept as `+968` and 8 digits. Accepts the forms people write:
/// `9xxxxxxx`, `+968 9xxx xxxx`, `00968-9xxxxxxx`. Mobile numbers start with 7 or 9,
/// fixed lines with 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let invalid = || violation(field, "must be an Omani number: +968 and 8 digits");
        if value.len() > 32 {
            return Err(invalid());
        }
        let mut digits = String::with_capacity(16);
        let mut seen_plus = false;
        for c in value.trim().chars() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if digits.is_empty() && !seen_plus => seen_plus = true,
                ' ' | '-' | '(' | ')' => {}
                _ => return Err(invalid()),
            }
        }
        let national = if let Some(rest) = digits.strip_prefix("00968") {
            rest
        } else if digits.len() == 11 {
            digits.strip_prefix("968").ok_or_else(invalid)?
        } else {
            &digits
        };
        let valid = national.len() == 8 && matches!(national.as_bytes()[0], b'2' | b'7' | b'9');
        if valid {
            Ok(Self(format!("+968{national}")))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address: one `@`, a non-empty local part, a domain with a dot, no spaces,
/// at most 254 characters. Kept as typed except that surrounding spaces are trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let value = value.trim();
        let invalid = || violation(field, "must be an e-mail address like name@example.om");
        if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Omani civil ID number: 6 to 10 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CivilId(String);

impl CivilId {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let value = value.trim();
        if (6..=10).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(violation(
                field,
                "must be a civil ID number of 6 to 10 digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A WGS84 point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    latitude: f64,
    longitude: f64,
}

impl GeoPoint {
    /// `field` names the point; violations name `<field>.latitude` or `<field>.longitude`.
    pub fn parse(field: &str, latitude: f64, longitude: f64) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if !latitude.is_finite() || !(-90.0..=90.0).contains(&latitude) {
            violations.push(violation(
                &format!("{field}.latitude"),
                "must be a number from -90 to 90",
            ));
        }
        if !longitude.is_finite() || !(-180.0..=180.0).contains(&longitude) {
            violations.push(violation(
                &format!("{field}.longitude"),
                "must be a number from -180 to 180",
            ));
        }
        if violations.is_empty() {
            Ok(Self {
                latitude,
                longitude,
            })
        } else {
            Err(violations)
        }
    }

    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    pub fn longitude(&self) -> f64 {
        self.longitude
    }
}

/// A reference to a file kept elsewhere; the registry never stores the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    uri: String,
    media_type: String,
    size_bytes: i64,
    sha256: String,
}

impl Attachment {
    /// Largest attachment the registry will reference: 50 MiB.
    pub const MAX_SIZE_BYTES: i64 = 50 * 1024 * 1024;

    pub fn parse(
        field: &str,
        uri: &str,
        media_type: &str,
        size_bytes: i64,
        sha256: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let uri_ok = !uri.is_empty()
            && uri.len() <= 1024
            && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
            && (uri.starts_with("https://") || !uri.contains("://"));
        if !uri_ok {
            violations.push(violation(
                &format!("{field}.uri"),
                "must be an https URL or an object key without spaces (at most 1024)",
            ));
        }
        let media_ok = media_type.len() <= 127
            && media_type.split_once('/').is_some_and(|(t, s)| {
                !t.is_empty()
                    && !s.is_empty()
                    && media_type
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
            });
        if !media_ok {
            violations.push(violation(
                &format!("{field}.media_type"),
                "must be a media type like image/jpeg",
            ));
        }
        if !(0..=Self::MAX_SIZE_BYTES).contains(&size_bytes) {
            violations.push(violation(
                &format!("{field}.size_bytes"),
                format!("must be from 0 to {}", Self::MAX_SIZE_BYTES),
            ));
        }
        let sha_ok = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !sha_ok {
            violations.push(violation(
                &format!("{field}.sha256"),
                "must be 64 lower-case hex digits",
            ));
        }
        if violations.is_empty() {
            Ok(Self {
                uri: uri.to_owned(),
                media_type: media_type.to_owned(),
                size_bytes,
                sha256: sha256.to_owned(),
            })
        } else {
            Err(violations)
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }
    pub fn media_type(&self) -> &str {
        &self.media_type
    }
    pub fn size_bytes(&self) -> i64 {
        self.size_bytes
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_in_the_forms_people_write() {
        for ok in [
            "91234567",
            "+968 9123 4567",
            "00968-91234567",
            "96891234567",
            "24123456",
            "(+968) 7123-4567",
        ] {
            assert!(PhoneNumber::parse("phone", ok).is_ok(), "{ok}");
        }
        assert_eq!(
            PhoneNumber::parse("p", "+968 9123 4567").unwrap().as_str(),
            "+96891234567"
        );
        for bad in [
            "",
            "1234567",
            "912345678",
            "+971501234567",
            "81234567",
            "9123456a",
            "+96891234567+",
        ] {
            assert!(PhoneNumber::parse("phone", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reference_numbers_round_trip() {
        let r = ReferenceNumber::new(2026, 123).unwrap();
        assert_eq!(r.to_string(), "MCT-2026-000123");
        assert_eq!(ReferenceNumber::parse("r", "MCT-2026-000123").unwrap(), r);
        assert_eq!(
            ReferenceNumber::parse("r", "mct-2026-1234567")
                .unwrap()
                .number(),
            1_234_567
        );
        for bad in [
            "",
            "MCT-26-1",
            "ABC-2026-000001",
            "MCT-2026-",
            "MCT-2026-00000x",
            "MCT-2026-000000",
        ] {
            assert!(ReferenceNumber::parse("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_codes_civil_ids_points() {
        assert!(Email::parse("e", "a.b@mm.gov.om").is_ok());
        for bad in [
            "", "a", "a@b", "a@@b.om", "a b@c.om", "@c.om", "a@.om", "a@c..om",
        ] {
            assert!(Email::parse("e", bad).is_err(), "{bad}");
        }
        assert!(Code::parse("c", "waste_collection").is_ok());
        for bad in ["", "Waste", "1abc", "a-b", &"a".repeat(65)] {
            assert!(Code::parse("c", bad).is_err(), "{bad}");
        }
        assert!(CivilId::parse("c", "12345678").is_ok());
        assert!(CivilId::parse("c", "12345").is_err());
        assert!(GeoPoint::parse("p", 23.58, 58.38).is_ok());
        assert_eq!(GeoPoint::parse("p", 91.0, f64::NAN).unwrap_err().len(), 2);
    }

    #[test]
    fn text_is_kept_exactly_and_bounded_in_characters() {
        let arabic = "حفرة في شارع السلطان قابوس قرب دوار بوشر 🚧";
        assert_eq!(parse_text("s", arabic, 1, 200, false).unwrap(), arabic);
        // 200 Arabic characters are 400 bytes: the limit counts characters.
        assert!(parse_text("s", &"ب".repeat(200), 1, 200, false).is_ok());
        assert!(parse_text("s", &"ب".repeat(201), 1, 200, false).is_err());
        assert!(parse_text("s", "   ", 1, 200, false).is_err());
        assert!(parse_text("s", "a\nb", 1, 200, false).is_err());
        assert!(parse_text("s", "a\nb", 1, 200, true).is_ok());
        assert!(parse_text("s", "a\u{0}b", 1, 200, true).is_err());
    }
}
