//! Simulated citizens: they file cases for the municipality, add details to open ones, rate
//! resolved ones and ask to reopen some. Everything they do lands on the change feed.
//!
//! Their choices come from their own seeded stream (`mix(seed, action number, ..)`), apart from
//! the fault stream, so turning citizens on does not change which requests get faults. The
//! people are invented: names from a short list, phone numbers in a range no one is given
//! (`+968 9000 xxxx`), never anything taken from real data.

use serde::{Deserialize, Serialize};

use super::faults::{mix, unit};
use super::state::{CitizenFiling, Platform};
use crate::platform::contract::{self, Actor, CaseSource, Citizen, GeoLocation, PlatformTime};

/// What a citizen does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CitizenAction {
    /// Files a new case.
    File,
    /// Adds details to an open case they filed.
    Detail,
    /// Rates a resolved or closed case.
    Rate,
    /// Asks to reopen a resolved or closed case.
    Reopen,
}

/// What one citizen action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenActivity {
    pub action: CitizenAction,
    pub case_id: String,
    pub case_version: i64,
}

const NAMES: &[&str] = &[
    "سالم البلوشي",
    "عائشة الحارثية",
    "محمد الراشدي",
    "مريم الكندية",
    "خالد المعمري",
    "فاطمة السيابية",
    "Ahmed Al Hinai",
    "Noor Al Busaidi",
];

/// (platform category, case type, subject, description) that make sense together.
const FILINGS: &[(&str, &str, &str, &str)] = &[
    (
        "MUN-ROAD-010",
        "BLG",
        "حفرة في الطريق",
        "حفرة عميقة في منتصف الطريق قرب الإشارة، خطرة على السيارات ليلاً.",
    ),
    (
        "MUN-HLTH-010",
        "BLG",
        "لم تجمع النفايات",
        "الحاوية ممتلئة منذ ثلاثة أيام ولم تمر سيارة جمع النفايات.",
    ),
    (
        "MUN-ROAD-020",
        "BLG",
        "عمود إنارة معطل",
        "عمود الإنارة أمام المسجد لا يعمل منذ أسبوع.",
    ),
    (
        "MUN-HLTH-050",
        "BLG",
        "كلاب ضالة",
        "مجموعة من الكلاب الضالة قرب المدرسة صباحاً.",
    ),
    (
        "GOV-CNDT-010",
        "SHK",
        "تأخر في الرد",
        "راجعت مركز الخدمات مرتين ولم أحصل على رد بخصوص طلبي.",
    ),
    (
        "MUN-BLDG-010",
        "SHK",
        "بناء مخالف",
        "جاري يبني ملحقاً يسد الطريق الفرعي دون تصريح ظاهر.",
    ),
    (
        "MUN-PARK-010",
        "IQT",
        "مظلات في الحديقة",
        "أقترح إضافة مظلات ومقاعد في الحديقة العامة لكبار السن.",
    ),
    (
        "GOV-SRVC-010",
        "IQT",
        "Online appointments",
        "Please allow booking outlet appointments online to avoid queues.",
    ),
    (
        "MUN-BLDG-020",
        "IST",
        "مدة إصدار تصريح البناء",
        "كم تستغرق الموافقة على تصريح بناء منزل سكني؟",
    ),
    (
        "MUN-COMM-010",
        "IST",
        "Renewing a shop licence",
        "Which documents do I need to renew my shop's commercial licence?",
    ),
    (
        "MUN-OTHR-999",
        "SHK",
        "إزعاج من ورشة",
        "ورشة في الحي تعمل حتى وقت متأخر من الليل.",
    ),
];

const DETAILS: &[&str] = &[
    "أرفقت صورة إضافية للموقع.",
    "المشكلة ما زالت قائمة حتى اليوم.",
    "الموقع بجانب الدوار الثاني.",
    "The issue got worse after the rain.",
];

const COMMENTS: &[&str] = &["شكراً على سرعة الاستجابة", "تأخر الحل كثيراً", "Good service"];

const REOPEN_REASONS: &[&str] = &[
    "المشكلة عادت من جديد",
    "لم يتم الإصلاح فعلياً",
    "The fix did not last.",
];

/// Wilayats with a point inside each, roughly.
const PLACES: &[(&str, &str, f64, f64)] = &[
    ("OM-MA-01", "Old Muscat", 23.614, 58.593),
    ("OM-MA-02", "Ruwi", 23.588, 58.545),
    ("OM-MA-03", "Al Khuwair", 23.596, 58.430),
    ("OM-MA-04", "Al Mawaleh", 23.645, 58.200),
    ("OM-MA-05", "Al Amerat", 23.520, 58.500),
    ("OM-MA-06", "Qurayyat", 23.260, 58.910),
];

fn pick<T: Copy>(list: &[T], bits: u64) -> T {
    list[(bits % list.len() as u64) as usize]
}

/// The random stream of citizens is apart from the faults' (a different `stream` argument).
const STREAM: u64 = 0xC171_2E45;

/// Makes one citizen act: `wanted` if given and possible, otherwise a choice by weight
/// (file 40%, detail 25%, rate 20%, reopen 15%); anything impossible (nothing resolved to
/// rate) falls back to filing. `case_id` aims the action at one case.
pub fn act(
    platform: &mut Platform,
    seed: u64,
    wanted: Option<CitizenAction>,
    case_id: Option<&str>,
    now: PlatformTime,
) -> Result<CitizenActivity, Box<contract::Problem>> {
    let n = platform.n_citizen_actions;
    platform.n_citizen_actions += 1;
    let r = |k: u64| mix(seed, n, STREAM + k);
    let action = wanted.unwrap_or_else(|| match unit(r(0)) {
        x if x < 0.40 => CitizenAction::File,
        x if x < 0.65 => CitizenAction::Detail,
        x if x < 0.85 => CitizenAction::Rate,
        _ => CitizenAction::Reopen,
    });
    let eligible = |action: CitizenAction| -> Vec<String> {
        platform
            .cases
            .values()
            .filter(|rec| rec.case.source == CaseSource::Citizen)
            .filter(|rec| case_id.is_none_or(|id| id == rec.case.case_id))
            .filter(|rec| {
                let done = contract::STATUSES_DONE.contains(&rec.case.status.as_str());
                match action {
                    CitizenAction::File => false,
                    CitizenAction::Detail => {
                        !contract::STATUSES_FINAL.contains(&rec.case.status.as_str())
                    }
                    // Once per resolution, and at most two reopenings per case.
                    CitizenAction::Rate => {
                        done && rec.case.ratings.len() <= rec.case.reopen_requests.len()
                    }
                    CitizenAction::Reopen => done && rec.case.reopen_requests.len() < 2,
                }
            })
            .map(|rec| rec.case.case_id.clone())
            .collect()
    };
    let targets = eligible(action);
    let target =
        (!targets.is_empty()).then(|| targets[(r(1) % targets.len() as u64) as usize].clone());
    let case = match (action, target) {
        (CitizenAction::Detail, Some(id)) => {
            platform.add_detail(&id, Actor::Citizen, pick(DETAILS, r(2)).to_owned(), now)?
        }
        (CitizenAction::Rate, Some(id)) => {
            let score = 1 + (r(2) % 5) as u8;
            let comment = (r(3) % 2 == 0).then(|| pick(COMMENTS, r(4)).to_owned());
            platform.rate(&id, score, comment, now)?
        }
        (CitizenAction::Reopen, Some(id)) => {
            platform.request_reopen(&id, pick(REOPEN_REASONS, r(2)).to_owned(), now)?
        }
        _ if case_id.is_some() && action != CitizenAction::File => {
            return Err(Box::new(contract::Problem::new(
                contract::ProblemType::InvalidState,
                "that case does not allow this citizen action now",
            )));
        }
        _ => {
            let filing = filing(platform, r(5), r(6), r(7));
            let case = platform.citizen_files(filing, now)?;
            return Ok(CitizenActivity {
                action: CitizenAction::File,
                case_id: case.case_id,
                case_version: case.version,
            });
        }
    };
    Ok(CitizenActivity {
        action,
        case_id: case.case_id,
        case_version: case.version,
    })
}

fn filing(platform: &mut Platform, a: u64, b: u64, c: u64) -> CitizenFiling {
    let (category, case_type, subject, description) = pick(FILINGS, a);
    let (wilayat, area, latitude, longitude) = pick(PLACES, b);
    let n = platform.next_citizen;
    platform.next_citizen += 1;
    // A third of suggestions are anonymous, as the platform allows for suggestions only.
    let anonymous = case_type == "IQT" && c.is_multiple_of(3);
    let citizen = (!anonymous).then(|| Citizen {
        citizen_ref: format!("CIT-{n:06}"),
        name: pick(NAMES, c >> 8).to_owned(),
        phone: Some(format!("+9689000{:04}", n % 10_000)),
        email: None,
    });
    CitizenFiling {
        case_type: case_type.to_owned(),
        category: category.to_owned(),
        subject: subject.to_owned(),
        description: description.to_owned(),
        wilayat: Some(wilayat.to_owned()),
        area: Some(area.to_owned()),
        location: Some(GeoLocation {
            latitude,
            longitude,
        }),
        citizen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::platform::convert::new_ticket_from_case;
    use crate::platform::mapping::Mapping;

    fn now() -> PlatformTime {
        PlatformTime::new(Timestamp::from_micros(1_780_000_000_000_000))
    }

    #[test]
    fn citizens_act_the_same_way_on_the_same_seed() {
        let run = |seed| {
            let mut p = Platform::new("e".into(), "ep".into(), None);
            (0..50)
                .map(|_| act(&mut p, seed, None, None, now()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    /// Whatever a simulated citizen files must come in as a valid ticket.
    #[test]
    fn every_filing_makes_a_valid_ticket() {
        let mapping = Mapping::v1().unwrap();
        let mut p = Platform::new("e".into(), "ep".into(), None);
        for _ in 0..200 {
            act(&mut p, 11, Some(CitizenAction::File), None, now()).unwrap();
        }
        for record in p.cases.values() {
            new_ticket_from_case(&record.case, &mapping)
                .unwrap_or_else(|e| panic!("{}: {e}", record.case.case_id));
        }
    }
}
