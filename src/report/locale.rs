//! The report's two languages: every word the page prints, month names, and numbers written
//! the way each language writes them.
//!
//! Arabic follows the Unicode CLDR conventions of Arabic in Oman (`ar-OM`): Arabic-Indic
//! digits (٠١٢٣٤٥٦٧٨٩), `٫` as the decimal separator, `٬` between thousands, `٪` after the
//! number, and an Arabic letter mark (U+061C) beside a sign or a percent so the bidirectional
//! algorithm keeps them on the right side of the digits. English uses Western digits, `.` and
//! `,`.

use crate::domain::Timestamp;
use crate::domain::kpi_targets::TargetKpi;
use crate::domain::ticket::TicketType;

/// U+061C ARABIC LETTER MARK.
const ALM: char = '\u{061C}';

/// A language of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Ar,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ar => "ar",
            Lang::En => "en",
        }
    }

    pub fn dir(self) -> &'static str {
        match self {
            Lang::Ar => "rtl",
            Lang::En => "ltr",
        }
    }

    pub fn is_rtl(self) -> bool {
        self == Lang::Ar
    }

    pub fn words(self) -> &'static Words {
        match self {
            Lang::Ar => &AR,
            Lang::En => &EN,
        }
    }

    /// Western digits written in this language's digits and separators (`.` decimal, `,`
    /// thousands).
    fn digits(self, western: &str) -> String {
        match self {
            Lang::En => western.to_owned(),
            Lang::Ar => western
                .chars()
                .map(|c| match c {
                    '0'..='9' => char::from_u32('٠' as u32 + (c as u32 - '0' as u32)).unwrap_or(c),
                    '.' => '٫',
                    ',' => '٬',
                    other => other,
                })
                .collect(),
        }
    }

    /// A whole number, thousands grouped: `12,345` / `١٢٬٣٤٥`.
    pub fn count(self, n: u64) -> String {
        let plain = n.to_string();
        let mut grouped = String::with_capacity(plain.len() + plain.len() / 3);
        for (i, c) in plain.chars().enumerate() {
            if i > 0 && (plain.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        self.digits(&grouped)
    }

    /// A year, never grouped: `2026` / `٢٠٢٦`.
    pub fn year(self, year: i32) -> String {
        self.digits(&year.to_string())
    }

    /// A real number with `decimals` decimals, thousands grouped.
    pub fn decimal(self, x: f64, decimals: usize) -> String {
        let text = format!("{:.*}", decimals, x.abs());
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let whole = whole.parse::<u64>().map_or(whole.to_owned(), |n| {
            // Grouped in Western form, so `digits` converts it once.
            Lang::En.count(n)
        });
        let mut western = String::new();
        if x < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
            western.push('-');
        }
        western.push_str(&whole);
        if !fraction.is_empty() {
            western.push('.');
            western.push_str(fraction);
        }
        self.digits(&western)
    }

    /// A percentage with one decimal: `87.5%` / `٨٧٫٥٪؜`; absent: a dash.
    pub fn percent(self, x: Option<f64>) -> String {
        x.map_or(DASH.to_owned(), |x| self.percent_with(x, 1))
    }

    /// A percentage with `decimals` decimals (a chart's axis has none).
    pub fn percent_with(self, x: f64, decimals: usize) -> String {
        match self {
            Lang::En => format!("{}%", self.decimal(x, decimals)),
            Lang::Ar => format!("{}٪{ALM}", self.decimal(x, decimals)),
        }
    }

    /// Business hours with one decimal: `4.5 h` / `٤٫٥ س`; absent: a dash.
    pub fn hours(self, x: Option<f64>) -> String {
        match x {
            None => DASH.to_owned(),
            Some(x) => format!("{} {}", self.decimal(x, 1), self.words().hours_unit),
        }
    }

    /// A satisfaction average on 1 to 5, two decimals; absent: a dash.
    pub fn score(self, x: Option<f64>) -> String {
        x.map_or(DASH.to_owned(), |x| self.decimal(x, 2))
    }

    /// A staff quality score on 0 to 100, one decimal; absent: a dash.
    pub fn quality(self, x: Option<f64>) -> String {
        x.map_or(DASH.to_owned(), |x| self.decimal(x, 1))
    }

    /// A figure in its unit.
    pub fn value(self, unit: Unit, x: Option<f64>) -> String {
        match unit {
            Unit::Percent => self.percent(x),
            Unit::Hours => self.hours(x),
            Unit::Score => self.score(x),
            Unit::Quality => self.quality(x),
        }
    }

    /// A KPI's value in its unit.
    pub fn kpi_value(self, kpi: TargetKpi, x: Option<f64>) -> String {
        self.value(Unit::of(kpi), x)
    }

    /// A signed number: `+5.2` / `؜+٥٫٢`, `−3.0` / `؜−٣٫٠`.
    fn signed(self, x: f64, decimals: usize) -> String {
        let magnitude = self.decimal(x.abs(), decimals);
        let rounded_zero = magnitude
            .chars()
            .all(|c| !c.is_numeric() || c == '0' || c == '٠');
        let sign = if rounded_zero {
            "±"
        } else if x > 0.0 {
            "+"
        } else {
            "\u{2212}"
        };
        match self {
            Lang::En => format!("{sign}{magnitude}"),
            Lang::Ar => format!("{ALM}{sign}{magnitude}"),
        }
    }

    /// The change of a count from the year before, in percent: `+5.2%`; a dash when the year
    /// before had none.
    pub fn count_change(self, now: u64, before: u64) -> String {
        if before == 0 {
            return DASH.to_owned();
        }
        let change = (now as f64 - before as f64) * 100.0 / before as f64;
        match self {
            Lang::En => format!("{}%", self.signed(change, 1)),
            Lang::Ar => format!("{}٪{ALM}", self.signed(change, 1)),
        }
    }

    /// The change of a figure from the year before in its own unit (percentage points,
    /// hours, score); a dash when either is absent.
    pub fn figure_change(self, unit: Unit, now: Option<f64>, before: Option<f64>) -> String {
        let (Some(now), Some(before)) = (now, before) else {
            return DASH.to_owned();
        };
        let words = self.words();
        match unit {
            Unit::Percent => format!("{} {}", self.signed(now - before, 1), words.points_unit),
            Unit::Hours => format!("{} {}", self.signed(now - before, 1), words.hours_unit),
            Unit::Score => self.signed(now - before, 2),
            Unit::Quality => self.signed(now - before, 1),
        }
    }

    /// A Muscat date: `1 January 2026` / `١ يناير ٢٠٢٦`.
    pub fn date(self, t: Timestamp) -> String {
        let (year, month, day, _, _) = muscat_fields(t);
        format!(
            "{} {} {}",
            self.digits(&day.to_string()),
            self.words().months[month as usize - 1],
            self.year(year)
        )
    }

    /// A Muscat date and time: `30 November 2026, 09:05` / `٣٠ نوفمبر ٢٠٢٦، ٠٩:٠٥`.
    pub fn date_time(self, t: Timestamp) -> String {
        let (_, _, _, hour, minute) = muscat_fields(t);
        let comma = match self {
            Lang::Ar => "،",
            Lang::En => ",",
        };
        format!(
            "{}{comma} {}",
            self.date(t),
            self.digits(&format!("{hour:02}:{minute:02}"))
        )
    }
}

/// What a figure is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Percent,
    /// Business hours.
    Hours,
    /// A satisfaction average, 1 to 5.
    Score,
    /// A staff quality score, 0 to 100.
    Quality,
}

impl Unit {
    /// No catch-all: a new KPI must choose its unit.
    pub fn of(kpi: TargetKpi) -> Unit {
        match kpi {
            TargetKpi::FirstResponseHoursMedian
            | TargetKpi::ResolutionHoursMedian
            | TargetKpi::ResolutionHoursP90 => Unit::Hours,
            TargetKpi::SatisfactionAverage => Unit::Score,
            TargetKpi::QualityScoreAverage => Unit::Quality,
            TargetKpi::FirstResponseCompliancePercent
            | TargetKpi::ResolutionCompliancePercent
            | TargetKpi::FirstContactResolutionPercent
            | TargetKpi::ReopenPercent
            | TargetKpi::SatisfiedPercent
            | TargetKpi::RatingResponsePercent => Unit::Percent,
        }
    }
}

/// An absent figure.
pub const DASH: &str = "—";

/// Year, month, day, hour and minute in Muscat.
fn muscat_fields(t: Timestamp) -> (i32, u32, u32, u32, u32) {
    use chrono::{Datelike, Timelike};
    let seconds = t.as_micros().div_euclid(1_000_000) + Timestamp::MUSCAT_OFFSET_SECONDS;
    let local = chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .naive_utc();
    (
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
    )
}

/// Every fixed text of the page, in one language.
pub struct Words {
    pub page_title: &'static str,
    pub organisation: &'static str,
    pub other_language: &'static str,
    pub period: &'static str,
    pub compared_with: &'static str,
    pub in_progress: &'static str,
    pub not_begun: &'static str,
    pub generated: &'static str,
    pub no_tickets: &'static str,
    pub summary_heading: &'static str,
    pub kpi_heading: &'static str,
    pub kpi_intro: &'static str,
    pub months_heading: &'static str,
    pub sla_heading: &'static str,
    pub sla_intro: &'static str,
    pub satisfaction_heading: &'static str,
    pub satisfaction_intro: &'static str,
    pub categories_heading: &'static str,
    pub categories_intro: &'static str,
    pub directorates_heading: &'static str,
    pub directorates_intro: &'static str,
    pub directorate_targets: &'static str,
    pub notes_heading: &'static str,
    pub notes: &'static [&'static str],
    pub chart_same_as_table: &'static str,
    pub no_data: &'static str,
    pub figure: &'static str,
    pub change: &'static str,
    pub target: &'static str,
    pub status: &'static str,
    pub met: &'static str,
    pub not_met: &'static str,
    pub not_measured: &'static str,
    pub no_target: &'static str,
    pub month: &'static str,
    pub total: &'static str,
    pub category: &'static str,
    pub directorate: &'static str,
    pub share: &'static str,
    pub rank: &'static str,
    pub score: &'static str,
    pub rated: &'static str,
    pub targets_met: &'static str,
    pub not_assigned: &'static str,
    pub first_response: &'static str,
    pub resolution: &'static str,
    pub hours_unit: &'static str,
    pub points_unit: &'static str,
    pub months: [&'static str; 12],
    pub months_short: [&'static str; 12],
    /// Report, complaint, suggestion, inquiry.
    pub types: [&'static str; 4],
    pub tickets: &'static str,
    pub first_response_hours_median: &'static str,
    pub first_response_hours_p90: &'static str,
    pub resolution_hours_median: &'static str,
    pub resolution_hours_p90: &'static str,
    pub first_response_compliance: &'static str,
    pub resolution_compliance: &'static str,
    pub escalations: &'static str,
    pub backlog: &'static str,
    pub resolved: &'static str,
    pub first_contact_resolution: &'static str,
    pub reopen_rate: &'static str,
    pub transfer_rate: &'static str,
    pub rejection_rate: &'static str,
    pub rated_tickets: &'static str,
    pub satisfaction_average: &'static str,
    pub satisfied_share: &'static str,
    pub rating_response_rate: &'static str,
    pub quality_reviews: &'static str,
    pub quality_score: &'static str,
    pub satisfaction_by_directorate: &'static str,
}

impl Words {
    pub fn ticket_type(&self, t: TicketType) -> &'static str {
        match t {
            TicketType::Report => self.types[0],
            TicketType::Complaint => self.types[1],
            TicketType::Suggestion => self.types[2],
            TicketType::Inquiry => self.types[3],
        }
    }

    pub fn kpi(&self, kpi: TargetKpi) -> &'static str {
        match kpi {
            TargetKpi::FirstResponseCompliancePercent => self.first_response_compliance,
            TargetKpi::ResolutionCompliancePercent => self.resolution_compliance,
            TargetKpi::FirstResponseHoursMedian => self.first_response_hours_median,
            TargetKpi::ResolutionHoursMedian => self.resolution_hours_median,
            TargetKpi::ResolutionHoursP90 => self.resolution_hours_p90,
            TargetKpi::FirstContactResolutionPercent => self.first_contact_resolution,
            TargetKpi::ReopenPercent => self.reopen_rate,
            TargetKpi::SatisfactionAverage => self.satisfaction_average,
            TargetKpi::SatisfiedPercent => self.satisfied_share,
            TargetKpi::RatingResponsePercent => self.rating_response_rate,
            TargetKpi::QualityScoreAverage => self.quality_score,
        }
    }
}

pub static AR: Words = Words {
    page_title: "الإحصائيات السنوية للبلاغات",
    organisation: "بلدية مسقط — مركز الاتصالات",
    other_language: "English",
    period: "البلاغات المسجلة من {from} إلى {to} بتوقيت مسقط.",
    compared_with: "مقارنةً بعام {year}.",
    in_progress: "العام لم ينتهِ بعد: الأرقام كما هي في {as_of}.",
    not_begun: "العام لم يبدأ بعد ({as_of}).",
    generated: "أُعدّ في {at} بواسطة نظام بلاغ.",
    no_tickets: "لم يُسجَّل أي بلاغ في عام {year}.",
    summary_heading: "أبرز الأرقام",
    kpi_heading: "مؤشرات الأداء مقارنةً بالمستهدفات",
    kpi_intro: "أرقام العام بجانب العام السابق، والمستهدف المعتمد لكل مؤشر على مستوى البلدية.",
    months_heading: "البلاغات شهرياً حسب النوع",
    sla_heading: "الالتزام بمستوى الخدمة شهرياً",
    sla_intro: "نسبة الردود الأولى ونسبة الحلول التي تمت ضمن الوقت المستهدف، من بين ما عُرفت نتيجته.",
    satisfaction_heading: "رضا المستفيدين",
    satisfaction_intro: "تقييمات المستفيدين من ١ إلى ٥ بعد تسوية البلاغ؛ الراضون من قيّموا بـ ٤ أو ٥.",
    categories_heading: "أكثر عشر فئات",
    categories_intro: "الفئات الأكثر بلاغات خلال العام، من بين {n} فئة.",
    directorates_heading: "مقارنة المديريات",
    directorates_intro: "كل مديرية وردت إليها بلاغات في أيٍّ من العامين، بحسب الإسناد الحالي.",
    directorate_targets: "مستهدفات المديريات لعام {year}",
    notes_heading: "ملاحظات",
    notes: &[
        "الأوقات بساعات العمل الرسمية وفق تقويم البلدية؛ الوسيط والمئين التسعون بطريقة أقرب رتبة.",
        "التراكم: البلاغات المسجلة في الفترة التي ما زالت مفتوحة في نهايتها.",
        "التعريفات الكاملة في docs/reporting.md.",
    ],
    chart_same_as_table: "الجدول التالي يعرض الأرقام نفسها.",
    no_data: "لا توجد بيانات",
    figure: "المؤشر",
    change: "التغيّر",
    target: "المستهدف",
    status: "الحالة",
    met: "متحقق",
    not_met: "غير متحقق",
    not_measured: "لا يمكن قياسه بعد",
    no_target: "—",
    month: "الشهر",
    total: "المجموع",
    category: "الفئة",
    directorate: "المديرية",
    share: "النسبة",
    rank: "الترتيب",
    score: "التقييم",
    rated: "عدد التقييمات",
    targets_met: "المستهدفات المتحققة",
    not_assigned: "غير مسندة بعد",
    first_response: "الرد الأول",
    resolution: "الحل",
    hours_unit: "ساعة",
    points_unit: "نقطة",
    months: [
        "يناير",
        "فبراير",
        "مارس",
        "أبريل",
        "مايو",
        "يونيو",
        "يوليو",
        "أغسطس",
        "سبتمبر",
        "أكتوبر",
        "نوفمبر",
        "ديسمبر",
    ],
    months_short: [
        "يناير",
        "فبراير",
        "مارس",
        "أبريل",
        "مايو",
        "يونيو",
        "يوليو",
        "أغسطس",
        "سبتمبر",
        "أكتوبر",
        "نوفمبر",
        "ديسمبر",
    ],
    types: ["بلاغ", "شكوى", "اقتراح", "استفسار"],
    tickets: "إجمالي البلاغات",
    first_response_hours_median: "وسيط زمن الرد الأول",
    first_response_hours_p90: "زمن الرد الأول (المئين ٩٠)",
    resolution_hours_median: "وسيط زمن الحل",
    resolution_hours_p90: "زمن الحل (المئين ٩٠)",
    first_response_compliance: "الرد الأول ضمن الوقت",
    resolution_compliance: "الحل ضمن الوقت",
    escalations: "التصعيدات",
    backlog: "البلاغات المتراكمة",
    resolved: "البلاغات المحلولة",
    first_contact_resolution: "الحل من الخط الأول",
    reopen_rate: "نسبة إعادة الفتح",
    transfer_rate: "نسبة الإحالة إلى جهات أخرى",
    rejection_rate: "نسبة الرفض",
    rated_tickets: "البلاغات المقيّمة",
    satisfaction_average: "متوسط الرضا (من ٥)",
    satisfied_share: "نسبة الراضين",
    rating_response_rate: "نسبة الاستجابة للتقييم",
    quality_reviews: "مراجعات جودة العمل",
    quality_score: "متوسط درجة جودة العمل (من ١٠٠)",
    satisfaction_by_directorate: "متوسط الرضا حسب المديرية (من ٥)",
};

pub static EN: Words = Words {
    page_title: "Yearly ticket statistics",
    organisation: "Muscat Municipality — Contact Centre",
    other_language: "العربية",
    period: "Tickets created from {from} to {to}, Muscat time.",
    compared_with: "Compared with {year}.",
    in_progress: "The year is not over: the figures stand as of {as_of}.",
    not_begun: "The year has not begun ({as_of}).",
    generated: "Generated {at} by balagh.",
    no_tickets: "No tickets were created in {year}.",
    summary_heading: "Key figures",
    kpi_heading: "KPIs against targets",
    kpi_intro: "The year beside the year before, and the municipality-wide target of each KPI where one is set.",
    months_heading: "Tickets per month by type",
    sla_heading: "SLA compliance per month",
    sla_intro: "First responses and resolutions within their target, among those whose outcome is known.",
    satisfaction_heading: "Beneficiary satisfaction",
    satisfaction_intro: "Beneficiaries rate the service 1 to 5 after resolution; satisfied means 4 or 5.",
    categories_heading: "Top 10 categories",
    categories_intro: "The categories with the most tickets in the year, of {n} with tickets.",
    directorates_heading: "Directorates compared",
    directorates_intro: "Every directorate with tickets in either year, by current assignment.",
    directorate_targets: "Each directorate's targets for {year}",
    notes_heading: "Notes",
    notes: &[
        "Times are business hours on the municipality's calendar; medians and 90th percentiles are nearest-rank.",
        "Backlog: tickets created in the period and still open at its end.",
        "Every figure is defined in docs/reporting.md.",
    ],
    chart_same_as_table: "The table below gives the same figures.",
    no_data: "No data",
    figure: "KPI",
    change: "Change",
    target: "Target",
    status: "Status",
    met: "met",
    not_met: "not met",
    not_measured: "not measurable yet",
    no_target: "—",
    month: "Month",
    total: "Total",
    category: "Category",
    directorate: "Directorate",
    share: "Share",
    rank: "Rank",
    score: "Score",
    rated: "Ratings",
    targets_met: "Targets met",
    not_assigned: "Not assigned yet",
    first_response: "First response",
    resolution: "Resolution",
    hours_unit: "h",
    points_unit: "pts",
    months: [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    months_short: [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ],
    types: ["Report", "Complaint", "Suggestion", "Inquiry"],
    tickets: "Tickets",
    first_response_hours_median: "First response, median",
    first_response_hours_p90: "First response, 90th percentile",
    resolution_hours_median: "Resolution, median",
    resolution_hours_p90: "Resolution, 90th percentile",
    first_response_compliance: "First responses in time",
    resolution_compliance: "Resolutions in time",
    escalations: "Escalations",
    backlog: "Backlog",
    resolved: "Resolved tickets",
    first_contact_resolution: "First-contact resolution",
    reopen_rate: "Reopened",
    transfer_rate: "Transferred to other entities",
    rejection_rate: "Rejected",
    rated_tickets: "Rated tickets",
    satisfaction_average: "Satisfaction (of 5)",
    satisfied_share: "Satisfied",
    rating_response_rate: "Rating response rate",
    quality_reviews: "Staff quality reviews",
    quality_score: "Staff quality score (of 100)",
    satisfaction_by_directorate: "Satisfaction by directorate (of 5)",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_numbers_are_written_per_language() {
        assert_eq!(Lang::En.count(0), "0");
        assert_eq!(Lang::En.count(999), "999");
        assert_eq!(Lang::En.count(1_234_567), "1,234,567");
        assert_eq!(Lang::Ar.count(1_234_567), "١٬٢٣٤٬٥٦٧");
        assert_eq!(Lang::Ar.year(2026), "٢٠٢٦");
        assert_eq!(Lang::En.decimal(1234.56, 1), "1,234.6");
        assert_eq!(Lang::En.decimal(-0.04, 1), "0.0");
        assert_eq!(Lang::En.percent(Some(200.0 / 3.0)), "66.7%");
        assert_eq!(Lang::Ar.percent(Some(50.0)), "٥٠٫٠٪\u{061C}");
        assert_eq!(Lang::En.percent(None), DASH);
        assert_eq!(Lang::En.hours(Some(4.5)), "4.5 h");
        assert_eq!(Lang::Ar.hours(Some(4.5)), "٤٫٥ ساعة");
        assert_eq!(Lang::En.count_change(105, 100), "+5.0%");
        assert_eq!(Lang::En.count_change(50, 100), "\u{2212}50.0%");
        assert_eq!(Lang::En.count_change(100, 100), "±0.0%");
        assert_eq!(Lang::En.count_change(7, 0), DASH);
        assert_eq!(
            Lang::En.figure_change(Unit::Percent, Some(75.0), Some(100.0)),
            "\u{2212}25.0 pts"
        );
        assert_eq!(
            Lang::Ar.figure_change(Unit::Score, Some(4.0), Some(3.5)),
            "\u{061C}+٠٫٥٠"
        );
        assert_eq!(Lang::En.figure_change(Unit::Hours, None, Some(1.0)), DASH);
    }

    #[test]
    fn report_dates_are_muscat_dates() {
        // 2025-12-31 20:00 UTC is 1 January 2026 00:00 in Muscat.
        let new_year = Timestamp::from_micros(1_767_211_200_000_000);
        assert_eq!(Lang::En.date(new_year), "1 January 2026");
        assert_eq!(Lang::Ar.date(new_year), "١ يناير ٢٠٢٦");
        assert_eq!(Lang::En.date_time(new_year), "1 January 2026, 00:00");
    }
}
