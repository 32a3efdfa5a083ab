//! The yearly report as one self-contained HTML page: no external font, script, style sheet
//! or image; the charts are inline SVG ([`super::chart`]) and every chart has a table of the
//! same figures beside it, so the page reads without pictures, aloud and on paper.
//!
//! The page holds the report once per language asked for, Arabic first: the document is
//! `<html lang="ar" dir="rtl">` and the English part an `<article lang="en" dir="ltr">`.
//!
//! Architecture invariant: every text that comes from data (catalog names, codes) goes
//! through [`escape`]; nothing here formats a number by hand (see [`super::locale`]).

use std::fmt::Write;

use super::chart::{self, HorizontalBars, MonthlyBars, MonthlyLines, Series, Style};
use super::figures::{GroupName, GroupRow, YearlyFigures};
use super::locale::{DASH, Lang, Unit, Words};
use crate::domain::kpi::KpiFigures;
use crate::domain::kpi_targets::{TargetKpi, TargetResult};

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours of the ticket types, the year before, and the two SLA clocks. Chosen to stay
/// apart in greyscale print and for the common colour-vision deficiencies.
const TYPE_COLORS: [&str; 4] = ["#1b6f8f", "#d1603d", "#5b8c3a", "#e6a532"];
const PREVIOUS_COLOR: &str = "#8a96a3";
const FIRST_RESPONSE_COLOR: &str = "#1b6f8f";
const RESOLUTION_COLOR: &str = "#d1603d";
const SATISFIED_COLOR: &str = "#5b8c3a";
const RESPONSE_RATE_COLOR: &str = "#7a5195";

const CSS: &str = r#"
:root { color-scheme: light; --ink: #1d2733; --muted: #5a6675; --rule: #d5dbe2; --band: #f3f6f9; --accent: #1b6f8f; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.55;
  font-family: "Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", "DejaVu Sans", Tahoma, "Segoe UI", Arial, sans-serif; }
article[lang="en"] { font-family: "Noto Sans", "DejaVu Sans", "Segoe UI", Arial, sans-serif; }
nav.languages { max-width: 1200px; margin: 0 auto; padding: 10px 24px 0; text-align: end; }
nav.languages a { color: var(--accent); }
article { max-width: 1200px; margin: 0 auto; padding: 8px 24px 32px; }
article + article { border-top: 4px solid var(--accent); margin-top: 24px; }
header { border-bottom: 2px solid var(--rule); margin-bottom: 12px; }
header .organisation { color: var(--accent); font-weight: bold; margin: 0; }
h1 { font-size: 1.9rem; margin: 4px 0; }
h2 { font-size: 1.3rem; margin: 28px 0 6px; color: var(--accent); border-bottom: 1px solid var(--rule); }
header p { margin: 2px 0; color: var(--muted); }
p.notice { background: #fff6dc; border-inline-start: 4px solid #e6a532; padding: 6px 10px; color: var(--ink); }
ul.key { columns: 2; column-gap: 32px; padding-inline-start: 20px; }
ul.key li { break-inside: avoid; margin-bottom: 4px; }
.intro { color: var(--muted); margin: 0 0 8px; }
figure { margin: 0 0 10px; }
svg.chart { width: 100%; max-width: 760px; height: auto; display: block; }
svg.chart text { font-size: 13px; fill: var(--ink); }
svg.chart text.tick { fill: var(--muted); font-size: 12px; }
svg.chart text.value { font-size: 12px; }
svg.chart text.empty { font-size: 16px; fill: var(--muted); }
svg.chart line.grid { stroke: var(--rule); stroke-width: 1; }
svg.chart line.axis { stroke: var(--muted); stroke-width: 1; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
caption { text-align: start; font-weight: bold; padding: 4px 0; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--rule); text-align: start; vertical-align: top; }
thead th { background: var(--band); font-weight: bold; border-bottom: 2px solid var(--rule); }
tfoot th, tfoot td { font-weight: bold; border-top: 2px solid var(--rule); }
td.num, th.num { text-align: end; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.met { color: #2e6b1f; font-weight: bold; }
.not-met { color: #a3361b; font-weight: bold; }
.unknown { color: var(--muted); }
footer { margin-top: 24px; color: var(--muted); font-size: 0.85rem; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  html { font-size: 10pt; }
  nav.languages { display: none; }
  article { max-width: none; padding: 0; }
  article + article { break-before: page; border-top: none; margin-top: 0; }
  section, figure, table, ul.key li { break-inside: avoid; }
  h2 { break-after: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// The whole page, one article per language in `languages` (the first sets the page's
/// language and direction).
pub fn render(f: &YearlyFigures, languages: &[Lang]) -> String {
    let first = languages.first().copied().unwrap_or(Lang::Ar);
    let w = first.words();
    let mut page = String::with_capacity(256 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"{}\" dir=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"balagh\">\n<title>{} {} — {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        first.code(),
        first.dir(),
        escape(w.page_title),
        first.year(f.year()),
        escape(w.organisation),
    );
    if languages.len() > 1 {
        page.push_str("<nav class=\"languages\">");
        for lang in &languages[1..] {
            let _ = write!(
                page,
                "<a href=\"#{}\" lang=\"{}\">{}</a> ",
                lang.code(),
                lang.code(),
                escape(languages[0].words().other_language)
            );
        }
        page.push_str("</nav>\n");
    }
    page.push_str("<main>\n");
    for lang in languages {
        Article { f, lang: *lang }.write(&mut page);
    }
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

/// One language's report.
struct Article<'a> {
    f: &'a YearlyFigures,
    lang: Lang,
}

/// A cell of a table: a header of a row, a number, or text.
enum Cell {
    Head(String),
    Num(String),
    Text(String),
    /// A target's status, with its class.
    Status(&'static str, String),
}

impl<'a> Article<'a> {
    fn w(&self) -> &'static Words {
        self.lang.words()
    }

    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.lang.code())
    }

    fn year(&self) -> String {
        self.lang.year(self.f.year())
    }

    fn previous_year(&self) -> String {
        self.lang.year(self.f.previous.year)
    }

    fn group_name(&self, name: &GroupName) -> String {
        match (name, self.lang) {
            (GroupName::Named { ar, .. }, Lang::Ar) => ar.clone(),
            (GroupName::Named { en, .. }, Lang::En) => en.clone(),
            (GroupName::Unknown(code), _) => code.clone(),
            (GroupName::NotAssigned, _) => self.w().not_assigned.to_owned(),
        }
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "<article id=\"{}\" lang=\"{}\" dir=\"{}\">",
            self.lang.code(),
            self.lang.code(),
            self.lang.dir()
        );
        self.header(out);
        self.key_figures(out);
        self.kpi_table(out);
        self.months(out);
        self.sla(out);
        self.satisfaction(out);
        self.categories(out);
        self.directorates(out);
        self.notes(out);
        out.push_str("</article>\n");
    }

    fn header(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        // The last day of the year: a microsecond before the next one starts.
        let last_day = crate::domain::Timestamp::from_micros(f.current.to.as_micros() - 1);
        let _ = write!(
            out,
            "<header>\n<p class=\"organisation\">{}</p>\n<h1>{} {}</h1>\n<p>{}</p>\n<p>{}</p>\n",
            escape(w.organisation),
            escape(w.page_title),
            self.year(),
            escape(
                &w.period
                    .replace("{from}", &l.date(f.current.from))
                    .replace("{to}", &l.date(last_day))
            ),
            escape(&w.compared_with.replace("{year}", &self.previous_year())),
        );
        out.push_str("</header>\n");
        let unfinished = if f.is_in_future() {
            Some(w.not_begun)
        } else if f.is_in_progress() {
            Some(w.in_progress)
        } else {
            None
        };
        if let Some(notice) = unfinished {
            let _ = writeln!(
                out,
                "<p class=\"notice\">{}</p>",
                escape(&notice.replace("{as_of}", &l.date_time(f.current.as_of)))
            );
        }
        if f.current.all.n_tickets == 0 {
            let _ = writeln!(
                out,
                "<p class=\"notice\">{}</p>",
                escape(&w.no_tickets.replace("{year}", &self.year()))
            );
        }
    }

    fn key_figures(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "<section aria-labelledby=\"{id}\">\n<h2 id=\"{id}\">{}</h2>\n<ul class=\"key\">",
            escape(self.w().summary_heading),
            id = self.id("key"),
        );
        for line in self.key_lines() {
            let _ = writeln!(out, "<li>{}</li>", escape(&line));
        }
        out.push_str("</ul>\n</section>\n");
    }

    /// The page's summary in sentences.
    fn key_lines(&self) -> Vec<String> {
        let l = self.lang;
        let f = self.f;
        let (now, before) = (&f.current.all, &f.previous.all);
        let target_of = |kpi: TargetKpi| f.targets.iter().find(|t| t.kpi == kpi).map(|t| t.target);
        let with_target = |kpi: TargetKpi, text: String| match (target_of(kpi), l) {
            (Some(t), Lang::En) => format!("{text} (target {})", l.kpi_value(kpi, Some(t))),
            (Some(t), Lang::Ar) => format!("{text} (المستهدف {})", l.kpi_value(kpi, Some(t))),
            (None, _) => text,
        };
        let fr = with_target(
            TargetKpi::FirstResponseCompliancePercent,
            l.percent(now.first_response_compliance_percent),
        );
        let res = with_target(
            TargetKpi::ResolutionCompliancePercent,
            l.percent(now.resolution_compliance_percent),
        );
        let top = f
            .top_categories
            .first()
            .map(|c| (self.group_name(&c.name), l.count(c.current.n_tickets)));
        let known: Vec<&TargetResult> = f.targets.iter().filter(|t| t.met.is_some()).collect();
        let met = known.iter().filter(|t| t.met == Some(true)).count() as u64;
        let mut lines = Vec::new();
        match l {
            Lang::En => {
                lines.push(format!(
                    "Tickets created in {}: {} ({}: {}, change {}).",
                    self.year(),
                    l.count(now.n_tickets),
                    self.previous_year(),
                    l.count(before.n_tickets),
                    l.count_change(now.n_tickets, before.n_tickets)
                ));
                lines.push(format!(
                    "By type: reports {}, complaints {}, suggestions {}, inquiries {}.",
                    l.count(now.n_reports),
                    l.count(now.n_complaints),
                    l.count(now.n_suggestions),
                    l.count(now.n_inquiries)
                ));
                lines.push(format!(
                    "First responses in time: {fr}; resolutions in time: {res}."
                ));
                lines.push(format!(
                    "Median resolution time: {} (business hours); resolved: {}; still open: {}.",
                    l.hours(now.resolution_hours_median),
                    l.count(now.n_resolved),
                    l.count(now.backlog)
                ));
                lines.push(format!(
                    "Satisfaction: {} of 5 (ratings: {}); satisfied: {}; rating response rate: {}.",
                    l.score(now.satisfaction_average),
                    l.count(now.n_rated),
                    l.percent(now.satisfied_percent),
                    l.percent(now.rating_response_percent)
                ));
                if let Some((name, n)) = top {
                    lines.push(format!("The category with the most tickets: {name} ({n})."));
                }
                if !f.targets.is_empty() {
                    lines.push(format!(
                        "Municipality-wide targets met: {} of {} measured ({} set).",
                        l.count(met),
                        l.count(known.len() as u64),
                        l.count(f.targets.len() as u64)
                    ));
                }
            }
            Lang::Ar => {
                lines.push(format!(
                    "عدد البلاغات المسجلة في عام {}: {} (عام {}: {}، التغيّر {}).",
                    self.year(),
                    l.count(now.n_tickets),
                    self.previous_year(),
                    l.count(before.n_tickets),
                    l.count_change(now.n_tickets, before.n_tickets)
                ));
                lines.push(format!(
                    "حسب النوع: بلاغ {}، شكوى {}، اقتراح {}، استفسار {}.",
                    l.count(now.n_reports),
                    l.count(now.n_complaints),
                    l.count(now.n_suggestions),
                    l.count(now.n_inquiries)
                ));
                lines.push(format!("الرد الأول ضمن الوقت: {fr}؛ الحل ضمن الوقت: {res}."));
                lines.push(format!(
                    "وسيط زمن الحل: {} من ساعات العمل؛ البلاغات المحلولة {}، والمفتوحة {}.",
                    l.hours(now.resolution_hours_median),
                    l.count(now.n_resolved),
                    l.count(now.backlog)
                ));
                lines.push(format!(
                    "متوسط الرضا {} من ٥ (عدد التقييمات {})؛ نسبة الراضين {}؛ نسبة الاستجابة للتقييم {}.",
                    l.score(now.satisfaction_average),
                    l.count(now.n_rated),
                    l.percent(now.satisfied_percent),
                    l.percent(now.rating_response_percent)
                ));
                if let Some((name, n)) = top {
                    lines.push(format!("الفئة الأكثر بلاغات: {name} ({n})."));
                }
                if !f.targets.is_empty() {
                    // Counted nouns change form with the number in Arabic: the numbers
                    // follow their labels instead.
                    lines.push(format!(
                        "المستهدفات على مستوى البلدية: المعتمدة {}، القابلة للقياس {}، المتحققة {}.",
                        l.count(f.targets.len() as u64),
                        l.count(known.len() as u64),
                        l.count(met)
                    ));
                }
            }
        }
        lines
    }

    fn kpi_table(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        self.section_start(out, "kpis", w.kpi_heading, w.kpi_intro);
        let with_next = !f.next_year_targets.is_empty();
        let mut head = vec![
            w.figure.to_owned(),
            self.year(),
            self.previous_year(),
            w.change.to_owned(),
            format!("{} {}", w.target, self.year()),
            w.status.to_owned(),
        ];
        if with_next {
            head.push(format!("{} {}", w.target, l.year(f.year() + 1)));
        }
        let mut rows = Vec::new();
        for figure in &KPI_ROWS {
            let (now, before) = (&f.current.all, &f.previous.all);
            let mut row = vec![Cell::Head(figure.label(w).to_owned())];
            match figure {
                Figure::Count(_, count) => {
                    row.push(Cell::Num(l.count(count(now))));
                    row.push(Cell::Num(l.count(count(before))));
                    row.push(Cell::Num(l.count_change(count(now), count(before))));
                }
                Figure::Kpi(kpi) => {
                    let (a, b) = (kpi.actual(now), kpi.actual(before));
                    row.push(Cell::Num(l.kpi_value(*kpi, a)));
                    row.push(Cell::Num(l.kpi_value(*kpi, b)));
                    row.push(Cell::Num(l.figure_change(Unit::of(*kpi), a, b)));
                }
                Figure::Other(_, unit, value) => {
                    row.push(Cell::Num(l.value(*unit, value(now))));
                    row.push(Cell::Num(l.value(*unit, value(before))));
                    row.push(Cell::Num(l.figure_change(*unit, value(now), value(before))));
                }
            }
            let target = match figure {
                Figure::Kpi(kpi) => f.targets.iter().find(|t| t.kpi == *kpi),
                _ => None,
            };
            match target {
                Some(t) => {
                    row.push(Cell::Num(l.kpi_value(t.kpi, Some(t.target))));
                    row.push(self.status(t.met));
                }
                None => {
                    row.push(Cell::Num(w.no_target.to_owned()));
                    row.push(Cell::Text(String::new()));
                }
            }
            if with_next {
                let next = match figure {
                    Figure::Kpi(kpi) => f
                        .next_year_targets
                        .iter()
                        .find(|(k, _)| k == kpi)
                        .map(|(k, v)| l.kpi_value(*k, Some(*v))),
                    _ => None,
                };
                row.push(Cell::Num(next.unwrap_or_else(|| w.no_target.to_owned())));
            }
            rows.push(row);
        }
        table(
            out,
            &self.id("kpi-table"),
            w.kpi_heading,
            &head,
            &rows,
            None,
        );
        out.push_str("</section>\n");
    }

    fn status(&self, met: Option<bool>) -> Cell {
        let w = self.w();
        match met {
            Some(true) => Cell::Status("met", format!("✓ {}", w.met)),
            Some(false) => Cell::Status("not-met", format!("✗ {}", w.not_met)),
            None => Cell::Status("unknown", w.not_measured.to_owned()),
        }
    }

    fn section_start(&self, out: &mut String, name: &str, heading: &str, intro: &str) {
        let _ = writeln!(
            out,
            "<section aria-labelledby=\"{id}\">\n<h2 id=\"{id}\">{}</h2>\n<p class=\"intro\">{}</p>",
            escape(heading),
            escape(intro),
            id = self.id(name),
        );
    }

    fn number_style(&self) -> impl Fn(f64) -> String + '_ {
        move |x: f64| {
            if x.fract() == 0.0 {
                self.lang.count(x as u64)
            } else {
                self.lang.decimal(x, 1)
            }
        }
    }

    fn months(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        self.section_start(out, "months", w.months_heading, "");
        let by_type =
            |m: &KpiFigures| [m.n_reports, m.n_complaints, m.n_suggestions, m.n_inquiries];
        let stack_series = std::array::from_fn(|i| Series {
            label: format!("{} {}", w.types[i], self.year()),
            color: TYPE_COLORS[i],
            faded: false,
        });
        let number = self.number_style();
        let svg = chart::monthly_bars(
            &MonthlyBars {
                id: &self.id("months-chart"),
                title: &format!("{} {}", w.months_heading, self.year()),
                desc: w.chart_same_as_table,
                months: w.months_short,
                stacks: f.current.months.iter().map(by_type).collect(),
                stack_series,
                previous: std::array::from_fn(|m| f.previous.months[m].n_tickets),
                previous_series: Series {
                    label: format!("{} {}", w.total, self.previous_year()),
                    color: PREVIOUS_COLOR,
                    faded: true,
                },
            },
            &Style {
                rtl: l.is_rtl(),
                number: &number,
                no_data: w.no_data,
            },
        );
        let mut head = vec![w.month.to_owned()];
        head.extend(w.types.iter().map(|t| (*t).to_owned()));
        head.push(format!("{} {}", w.total, self.year()));
        head.push(format!("{} {}", w.total, self.previous_year()));
        head.push(w.change.to_owned());
        let row = |label: &str, now: &KpiFigures, before: &KpiFigures| {
            let mut row = vec![Cell::Head(label.to_owned())];
            row.extend(by_type(now).into_iter().map(|n| Cell::Num(l.count(n))));
            row.push(Cell::Num(l.count(now.n_tickets)));
            row.push(Cell::Num(l.count(before.n_tickets)));
            row.push(Cell::Num(l.count_change(now.n_tickets, before.n_tickets)));
            row
        };
        let rows: Vec<Vec<Cell>> = (0..12)
            .map(|m| row(w.months[m], &f.current.months[m], &f.previous.months[m]))
            .collect();
        let total = row(w.total, &f.current.all, &f.previous.all);
        pair(out, &svg, |out| {
            table(
                out,
                &self.id("months-table"),
                w.months_heading,
                &head,
                &rows,
                Some(&total),
            )
        });
        out.push_str("</section>\n");
    }

    fn sla(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        self.section_start(out, "sla", w.sla_heading, w.sla_intro);
        let monthly = |value: fn(&KpiFigures) -> Option<f64>| {
            std::array::from_fn(|m| value(&f.current.months[m]))
        };
        let fr = |k: &KpiFigures| k.first_response_compliance_percent;
        let res = |k: &KpiFigures| k.resolution_compliance_percent;
        let mut targets = Vec::new();
        for (kpi, label, color) in [
            (
                TargetKpi::FirstResponseCompliancePercent,
                w.first_response,
                FIRST_RESPONSE_COLOR,
            ),
            (
                TargetKpi::ResolutionCompliancePercent,
                w.resolution,
                RESOLUTION_COLOR,
            ),
        ] {
            if let Some(t) = f.targets.iter().find(|t| t.kpi == kpi) {
                targets.push((
                    Series {
                        label: format!("{} ({})", w.target, label),
                        color,
                        faded: true,
                    },
                    t.target,
                ));
            }
        }
        let svg = chart::monthly_lines(
            &MonthlyLines {
                id: &self.id("sla-chart"),
                title: &format!("{} {}", w.sla_heading, self.year()),
                desc: w.chart_same_as_table,
                months: w.months_short,
                series: vec![
                    (
                        Series {
                            label: w.first_response.to_owned(),
                            color: FIRST_RESPONSE_COLOR,
                            faded: false,
                        },
                        monthly(fr),
                    ),
                    (
                        Series {
                            label: w.resolution.to_owned(),
                            color: RESOLUTION_COLOR,
                            faded: false,
                        },
                        monthly(res),
                    ),
                ],
                targets,
            },
            &Style {
                rtl: l.is_rtl(),
                number: &|x| l.percent_with(x, 0),
                no_data: w.no_data,
            },
        );
        let head = vec![
            w.month.to_owned(),
            format!("{} {}", w.first_response, self.year()),
            format!("{} {}", w.resolution, self.year()),
            format!("{} {}", w.first_response, self.previous_year()),
            format!("{} {}", w.resolution, self.previous_year()),
        ];
        let row = |label: &str, now: &KpiFigures, before: &KpiFigures| {
            vec![
                Cell::Head(label.to_owned()),
                Cell::Num(l.percent(fr(now))),
                Cell::Num(l.percent(res(now))),
                Cell::Num(l.percent(fr(before))),
                Cell::Num(l.percent(res(before))),
            ]
        };
        let rows: Vec<Vec<Cell>> = (0..12)
            .map(|m| row(w.months[m], &f.current.months[m], &f.previous.months[m]))
            .collect();
        let total = row(w.total, &f.current.all, &f.previous.all);
        pair(out, &svg, |out| {
            table(
                out,
                &self.id("sla-table"),
                w.sla_heading,
                &head,
                &rows,
                Some(&total),
            )
        });
        out.push_str("</section>\n");
    }

    fn satisfaction(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        self.section_start(
            out,
            "satisfaction",
            w.satisfaction_heading,
            w.satisfaction_intro,
        );
        // Each directorate's average rating, beside the year before's.
        let by_directorate = HorizontalBars {
            id: &self.id("satisfaction-directorates-chart"),
            title: &format!("{} {}", w.satisfaction_by_directorate, self.year()),
            desc: w.chart_same_as_table,
            series: vec![
                Series {
                    label: self.year(),
                    color: SATISFIED_COLOR,
                    faded: false,
                },
                Series {
                    label: self.previous_year(),
                    color: PREVIOUS_COLOR,
                    faded: true,
                },
            ],
            rows: f
                .directorates
                .iter()
                .filter(|d| d.current.n_rated > 0 || d.previous.n_rated > 0)
                .map(|d| {
                    (
                        self.group_name(&d.name),
                        vec![
                            d.current.satisfaction_average,
                            d.previous.satisfaction_average,
                        ],
                    )
                })
                .collect(),
            max: Some(5.0),
        };
        let number = |x: f64| l.decimal(x, 2);
        let style = Style {
            rtl: l.is_rtl(),
            number: &number,
            no_data: w.no_data,
        };
        let svg = chart::horizontal_bars(&by_directorate, &style);
        let head = vec![
            w.figure.to_owned(),
            self.year(),
            self.previous_year(),
            w.change.to_owned(),
            format!("{} {}", w.target, self.year()),
            w.status.to_owned(),
        ];
        let (now, before) = (&f.current.all, &f.previous.all);
        let mut rows = vec![vec![
            Cell::Head(w.rated_tickets.to_owned()),
            Cell::Num(l.count(now.n_rated)),
            Cell::Num(l.count(before.n_rated)),
            Cell::Num(l.count_change(now.n_rated, before.n_rated)),
            Cell::Num(w.no_target.to_owned()),
            Cell::Text(String::new()),
        ]];
        for kpi in [
            TargetKpi::SatisfactionAverage,
            TargetKpi::SatisfiedPercent,
            TargetKpi::RatingResponsePercent,
        ] {
            let (a, b) = (kpi.actual(now), kpi.actual(before));
            let target = f.targets.iter().find(|t| t.kpi == kpi);
            rows.push(vec![
                Cell::Head(w.kpi(kpi).to_owned()),
                Cell::Num(l.kpi_value(kpi, a)),
                Cell::Num(l.kpi_value(kpi, b)),
                Cell::Num(l.figure_change(Unit::of(kpi), a, b)),
                Cell::Num(
                    target.map_or(w.no_target.to_owned(), |t| l.kpi_value(kpi, Some(t.target))),
                ),
                target.map_or(Cell::Text(String::new()), |t| self.status(t.met)),
            ]);
        }
        pair(out, &svg, |out| {
            table(
                out,
                &self.id("satisfaction-table"),
                w.satisfaction_heading,
                &head,
                &rows,
                None,
            )
        });
        // Month by month: the share satisfied and the response rate.
        let lines = chart::monthly_lines(
            &MonthlyLines {
                id: &self.id("satisfaction-chart"),
                title: &format!("{} {}", w.satisfaction_heading, self.year()),
                desc: w.chart_same_as_table,
                months: w.months_short,
                series: vec![
                    (
                        Series {
                            label: w.satisfied_share.to_owned(),
                            color: SATISFIED_COLOR,
                            faded: false,
                        },
                        std::array::from_fn(|m| f.current.months[m].satisfied_percent),
                    ),
                    (
                        Series {
                            label: w.rating_response_rate.to_owned(),
                            color: RESPONSE_RATE_COLOR,
                            faded: false,
                        },
                        std::array::from_fn(|m| f.current.months[m].rating_response_percent),
                    ),
                ],
                targets: Vec::new(),
            },
            &Style {
                rtl: l.is_rtl(),
                number: &|x| l.percent_with(x, 0),
                no_data: w.no_data,
            },
        );
        let head = vec![
            w.month.to_owned(),
            w.rated.to_owned(),
            w.satisfaction_average.to_owned(),
            w.satisfied_share.to_owned(),
            w.rating_response_rate.to_owned(),
        ];
        let row = |label: &str, m: &KpiFigures| {
            vec![
                Cell::Head(label.to_owned()),
                Cell::Num(l.count(m.n_rated)),
                Cell::Num(l.score(m.satisfaction_average)),
                Cell::Num(l.percent(m.satisfied_percent)),
                Cell::Num(l.percent(m.rating_response_percent)),
            ]
        };
        let rows: Vec<Vec<Cell>> = (0..12)
            .map(|m| row(w.months[m], &f.current.months[m]))
            .collect();
        let total = row(w.total, now);
        pair(out, &lines, |out| {
            table(
                out,
                &self.id("satisfaction-months-table"),
                &format!("{} {}", w.satisfaction_heading, self.year()),
                &head,
                &rows,
                Some(&total),
            )
        });
        out.push_str("</section>\n");
    }

    fn categories(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        let intro = w
            .categories_intro
            .replace("{n}", &l.count(f.n_categories as u64));
        self.section_start(out, "categories", w.categories_heading, &intro);
        let number = self.number_style();
        let svg = chart::horizontal_bars(
            &HorizontalBars {
                id: &self.id("categories-chart"),
                title: &format!("{} {}", w.categories_heading, self.year()),
                desc: w.chart_same_as_table,
                series: vec![
                    Series {
                        label: self.year(),
                        color: TYPE_COLORS[0],
                        faded: false,
                    },
                    Series {
                        label: self.previous_year(),
                        color: PREVIOUS_COLOR,
                        faded: true,
                    },
                ],
                rows: f
                    .top_categories
                    .iter()
                    .map(|c| {
                        (
                            self.group_name(&c.name),
                            vec![
                                Some(c.current.n_tickets as f64),
                                Some(c.previous.n_tickets as f64),
                            ],
                        )
                    })
                    .collect(),
                max: None,
            },
            &Style {
                rtl: l.is_rtl(),
                number: &number,
                no_data: w.no_data,
            },
        );
        let head = vec![
            w.rank.to_owned(),
            w.category.to_owned(),
            self.year(),
            w.share.to_owned(),
            self.previous_year(),
            w.change.to_owned(),
            w.resolution_compliance.to_owned(),
        ];
        let total = f.current.all.n_tickets;
        let rows: Vec<Vec<Cell>> = f
            .top_categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                vec![
                    Cell::Num(l.count(i as u64 + 1)),
                    Cell::Head(self.group_name(&c.name)),
                    Cell::Num(l.count(c.current.n_tickets)),
                    Cell::Num(l.percent(
                        (total > 0).then(|| c.current.n_tickets as f64 * 100.0 / total as f64),
                    )),
                    Cell::Num(l.count(c.previous.n_tickets)),
                    Cell::Num(l.count_change(c.current.n_tickets, c.previous.n_tickets)),
                    Cell::Num(l.percent(c.current.resolution_compliance_percent)),
                ]
            })
            .collect();
        pair(out, &svg, |out| {
            table(
                out,
                &self.id("categories-table"),
                w.categories_heading,
                &head,
                &rows,
                None,
            )
        });
        out.push_str("</section>\n");
    }

    fn directorates(&self, out: &mut String) {
        let w = self.w();
        let l = self.lang;
        let f = self.f;
        self.section_start(
            out,
            "directorates",
            w.directorates_heading,
            w.directorates_intro,
        );
        let number = |x: f64| l.percent(Some(x));
        let svg = chart::horizontal_bars(
            &HorizontalBars {
                id: &self.id("directorates-chart"),
                title: &format!("{} {}", w.directorates_heading, self.year()),
                desc: w.chart_same_as_table,
                series: vec![
                    Series {
                        label: w.first_response_compliance.to_owned(),
                        color: FIRST_RESPONSE_COLOR,
                        faded: false,
                    },
                    Series {
                        label: w.resolution_compliance.to_owned(),
                        color: RESOLUTION_COLOR,
                        faded: false,
                    },
                ],
                rows: f
                    .directorates
                    .iter()
                    .filter(|d| d.current.n_tickets > 0)
                    .map(|d| {
                        (
                            self.group_name(&d.name),
                            vec![
                                d.current.first_response_compliance_percent,
                                d.current.resolution_compliance_percent,
                            ],
                        )
                    })
                    .collect(),
                max: Some(100.0),
            },
            &Style {
                rtl: l.is_rtl(),
                number: &number,
                no_data: w.no_data,
            },
        );
        let _ = writeln!(out, "<figure>{svg}</figure>");
        let head = vec![
            w.directorate.to_owned(),
            self.year(),
            self.previous_year(),
            w.change.to_owned(),
            w.first_response_compliance.to_owned(),
            w.resolution_compliance.to_owned(),
            w.resolution_hours_median.to_owned(),
            w.satisfaction_average.to_owned(),
            w.backlog.to_owned(),
            w.targets_met.to_owned(),
        ];
        let rows: Vec<Vec<Cell>> = f
            .directorates
            .iter()
            .map(|d| {
                let known = d.targets.iter().filter(|t| t.met.is_some()).count() as u64;
                let met = d.targets.iter().filter(|t| t.met == Some(true)).count() as u64;
                vec![
                    Cell::Head(self.group_name(&d.name)),
                    Cell::Num(l.count(d.current.n_tickets)),
                    Cell::Num(l.count(d.previous.n_tickets)),
                    Cell::Num(l.count_change(d.current.n_tickets, d.previous.n_tickets)),
                    Cell::Num(l.percent(d.current.first_response_compliance_percent)),
                    Cell::Num(l.percent(d.current.resolution_compliance_percent)),
                    Cell::Num(l.hours(d.current.resolution_hours_median)),
                    Cell::Num(l.score(d.current.satisfaction_average)),
                    Cell::Num(l.count(d.current.backlog)),
                    Cell::Num(if d.targets.is_empty() {
                        DASH.to_owned()
                    } else {
                        format!("{} / {}", l.count(met), l.count(known))
                    }),
                ]
            })
            .collect();
        table(
            out,
            &self.id("directorates-table"),
            w.directorates_heading,
            &head,
            &rows,
            None,
        );
        self.directorate_targets(out, &f.directorates);
        out.push_str("</section>\n");
    }

    /// Each directorate's targets of the year, beside its actuals.
    fn directorate_targets(&self, out: &mut String, directorates: &[GroupRow]) {
        let w = self.w();
        let l = self.lang;
        let rows: Vec<Vec<Cell>> = directorates
            .iter()
            .flat_map(|d| {
                d.targets.iter().map(|t| {
                    vec![
                        Cell::Head(self.group_name(&d.name)),
                        Cell::Text(w.kpi(t.kpi).to_owned()),
                        Cell::Num(l.kpi_value(t.kpi, Some(t.target))),
                        Cell::Num(l.kpi_value(t.kpi, t.actual)),
                        self.status(t.met),
                    ]
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let head = vec![
            w.directorate.to_owned(),
            w.figure.to_owned(),
            format!("{} {}", w.target, self.year()),
            self.year(),
            w.status.to_owned(),
        ];
        table(
            out,
            &self.id("directorate-targets-table"),
            &w.directorate_targets.replace("{year}", &self.year()),
            &head,
            &rows,
            None,
        );
    }

    fn notes(&self, out: &mut String) {
        let w = self.w();
        let _ = writeln!(out, "<footer>\n<h2>{}</h2>\n<ul>", escape(w.notes_heading));
        for note in w.notes {
            let _ = writeln!(out, "<li>{}</li>", escape(note));
        }
        let _ = writeln!(
            out,
            "</ul>\n<p>{}</p>\n</footer>",
            escape(
                &w.generated
                    .replace("{at}", &self.lang.date_time(self.f.generated_at))
            )
        );
    }
}

/// A chart followed by the table of its figures.
fn pair(out: &mut String, svg: &str, table: impl FnOnce(&mut String)) {
    let _ = writeln!(out, "<figure>{svg}</figure>");
    table(out);
}

fn table(
    out: &mut String,
    id: &str,
    caption: &str,
    head: &[String],
    rows: &[Vec<Cell>],
    total: Option<&Vec<Cell>>,
) {
    let _ = write!(
        out,
        "<table id=\"{}\">\n<caption>{}</caption>\n<thead><tr>",
        escape(id),
        escape(caption)
    );
    // A column is aligned as its cells are: numbers at the end of the line.
    for (i, h) in head.iter().enumerate() {
        let numeric = rows
            .first()
            .and_then(|r| r.get(i))
            .map_or(i > 0, |c| matches!(c, Cell::Num(_)));
        let class = if numeric { " class=\"num\"" } else { "" };
        let _ = write!(out, "<th scope=\"col\"{class}>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        table_row(out, row);
    }
    out.push_str("</tbody>\n");
    if let Some(total) = total {
        out.push_str("<tfoot>\n");
        table_row(out, total);
        out.push_str("</tfoot>\n");
    }
    out.push_str("</table>\n");
}

fn table_row(out: &mut String, row: &[Cell]) {
    out.push_str("<tr>");
    for cell in row {
        let _ = match cell {
            Cell::Head(text) => write!(out, "<th scope=\"row\">{}</th>", escape(text)),
            Cell::Num(text) => write!(out, "<td class=\"num\">{}</td>", escape(text)),
            Cell::Text(text) => write!(out, "<td>{}</td>", escape(text)),
            Cell::Status(class, text) => {
                write!(out, "<td class=\"{class}\">{}</td>", escape(text))
            }
        };
    }
    out.push_str("</tr>\n");
}

/// A row of the KPI table.
enum Figure {
    Count(fn(&Words) -> &'static str, fn(&KpiFigures) -> u64),
    Kpi(TargetKpi),
    Other(
        fn(&Words) -> &'static str,
        Unit,
        fn(&KpiFigures) -> Option<f64>,
    ),
}

impl Figure {
    fn label(&self, w: &Words) -> &'static str {
        match self {
            Figure::Count(label, _) | Figure::Other(label, _, _) => label(w),
            Figure::Kpi(kpi) => w.kpi(*kpi),
        }
    }
}

const KPI_ROWS: [Figure; 24] = [
    Figure::Count(|w| w.tickets, |f| f.n_tickets),
    Figure::Count(|w| w.types[0], |f| f.n_reports),
    Figure::Count(|w| w.types[1], |f| f.n_complaints),
    Figure::Count(|w| w.types[2], |f| f.n_suggestions),
    Figure::Count(|w| w.types[3], |f| f.n_inquiries),
    Figure::Kpi(TargetKpi::FirstResponseHoursMedian),
    Figure::Other(
        |w| w.first_response_hours_p90,
        Unit::Hours,
        |f| f.first_response_hours_p90,
    ),
    Figure::Kpi(TargetKpi::ResolutionHoursMedian),
    Figure::Kpi(TargetKpi::ResolutionHoursP90),
    Figure::Kpi(TargetKpi::FirstResponseCompliancePercent),
    Figure::Kpi(TargetKpi::ResolutionCompliancePercent),
    Figure::Count(|w| w.escalations, |f| f.n_escalations),
    Figure::Count(|w| w.backlog, |f| f.backlog),
    Figure::Count(|w| w.resolved, |f| f.n_resolved),
    Figure::Kpi(TargetKpi::FirstContactResolutionPercent),
    Figure::Kpi(TargetKpi::ReopenPercent),
    Figure::Other(|w| w.transfer_rate, Unit::Percent, |f| f.transfer_percent),
    Figure::Other(|w| w.rejection_rate, Unit::Percent, |f| f.rejection_percent),
    Figure::Count(|w| w.rated_tickets, |f| f.n_rated),
    Figure::Kpi(TargetKpi::SatisfactionAverage),
    Figure::Kpi(TargetKpi::SatisfiedPercent),
    Figure::Kpi(TargetKpi::RatingResponsePercent),
    Figure::Count(|w| w.quality_reviews, |f| f.n_quality_reviews),
    Figure::Kpi(TargetKpi::QualityScoreAverage),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_escapes_markup() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("حفرة"), "حفرة");
    }
}
