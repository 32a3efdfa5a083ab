//! Inline SVG charts for the report, drawn in Rust: vertical bars per month (stacked, beside
//! the year before), lines per month on a 0-100% scale, and horizontal bars per group.
//!
//! Every chart is laid out in *reading order* (the first month, the start of a bar, the
//! legend's first item at the start of the line) and mirrored for a right-to-left language,
//! so an Arabic chart reads from the right as its page does. The SVG itself is fixed to
//! `direction="ltr"`, so text anchors are physical; each label is a first-strong isolate
//! (U+2068 ... U+2069) so Arabic names and numbers keep their own order inside it.
//!
//! Charts are pictures for the eye only; every chart has a `<title>`, a `<desc>` saying that
//! the table beside it holds the same figures, and the page prints that table.

use std::fmt::Write;

use super::html::escape;

/// The width every chart is laid out at, in SVG units (it scales to its box).
pub const WIDTH: f64 = 760.0;

/// A series: its name in the legend and its colour.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// Drawn hatched or dashed, for the year before or a target.
    pub faded: bool,
}

/// Where text sits against its point, in reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// A chart being drawn: coordinates are logical (reading order) and mirrored when written.
struct Canvas {
    height: f64,
    rtl: bool,
    body: String,
}

impl Canvas {
    fn new(height: f64, rtl: bool) -> Self {
        Self {
            height,
            rtl,
            body: String::new(),
        }
    }

    fn x(&self, x: f64) -> f64 {
        if self.rtl { WIDTH - x } else { x }
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str) {
        if w <= 0.0 || h <= 0.0 {
            return;
        }
        let left = if self.rtl { WIDTH - x - w } else { x };
        let _ = write!(
            self.body,
            r#"<rect x="{left:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"{extra}/>"#
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let (x1, x2) = (self.x(x1), self.x(x2));
        let _ = write!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" class="{class}"/>"#
        );
    }

    fn text(&mut self, x: f64, y: f64, anchor: Anchor, class: &str, content: &str) {
        let anchor = match (anchor, self.rtl) {
            (Anchor::Middle, _) => "middle",
            (Anchor::Start, false) | (Anchor::End, true) => "start",
            (Anchor::Start, true) | (Anchor::End, false) => "end",
        };
        let x = self.x(x);
        let _ = write!(
            self.body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" class=\"{class}\">\u{2068}{}\u{2069}</text>",
            escape(content)
        );
    }

    /// The legend on one line from the start, its text's baseline at `y`.
    fn legend(&mut self, series: &[&Series], y: f64) {
        let mut x = 8.0;
        for s in series {
            self.swatch(x, y - 10.0, s);
            self.text(x + 18.0, y, Anchor::Start, "legend", &s.label);
            // No text measurement here: an average glyph is about 7 units wide.
            x += 18.0 + s.label.chars().count() as f64 * 7.0 + 22.0;
        }
    }

    fn swatch(&mut self, x: f64, y: f64, s: &Series) {
        let extra = if s.faded {
            format!(
                r#" stroke="{}" stroke-width="1.5" fill-opacity="0.35""#,
                s.color
            )
        } else {
            String::new()
        };
        self.rect(x, y, 12.0, 12.0, s.color, &extra);
    }

    /// The message of a chart with nothing to draw.
    fn empty(&mut self, message: &str) {
        let middle = WIDTH / 2.0;
        self.text(middle, self.height / 2.0, Anchor::Middle, "empty", message);
    }

    fn finish(self, title: &str, desc: &str, id: &str) -> String {
        format!(
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {h:.0}" width="{WIDTH}" height="{h:.0}" direction="ltr" role="img" aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>{body}</svg>"#,
            h = self.height,
            title = escape(title),
            desc = escape(desc),
            body = self.body
        )
    }
}

/// A round upper bound for an axis of counts holding `max`, and its step: 1, 2, 2.5 or 5
/// times a power of ten, about four steps, and never under one.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0);
    }
    let rough = max / 4.0;
    let power = 10f64.powf(rough.log10().floor());
    // 2.5 only from 25 up, so counts keep whole steps.
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .filter(|m| *m != 2.5 || power >= 10.0)
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    // The bar charts count tickets: no step under one.
    let step = step.max(1.0);
    ((max / step).ceil() * step, step)
}

/// What the charts need to know of the page: its direction, how it writes a number, and
/// what it says when there is nothing to draw.
pub struct Style<'a> {
    pub rtl: bool,
    pub number: &'a dyn Fn(f64) -> String,
    pub no_data: &'a str,
}

/// Bars per month: the year's tickets stacked by type beside the year before's total.
pub struct MonthlyBars<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub desc: &'a str,
    pub months: [&'a str; 12],
    /// Per month, the year's counts of each stacked series.
    pub stacks: Vec<[u64; 4]>,
    pub stack_series: [Series; 4],
    pub previous: [u64; 12],
    pub previous_series: Series,
}

pub fn monthly_bars(chart: &MonthlyBars, style: &Style) -> String {
    let (top, bottom, start, end) = (40.0, 30.0, 60.0, 12.0);
    let plot_height = 240.0;
    let mut c = Canvas::new(top + plot_height + bottom, style.rtl);
    let mut legend: Vec<&Series> = chart.stack_series.iter().collect();
    legend.push(&chart.previous_series);
    c.legend(&legend, 18.0);
    let max = chart
        .stacks
        .iter()
        .map(|s| s.iter().sum::<u64>())
        .chain(chart.previous.iter().copied())
        .max()
        .unwrap_or(0);
    let (axis_max, step) = axis(max as f64);
    let y = |v: f64| top + plot_height - v / axis_max * plot_height;
    grid(&mut c, style, axis_max, step, start, end, y);
    let slot = (WIDTH - start - end) / 12.0;
    let bar = (slot - 10.0) / 2.0;
    for (m, label) in chart.months.iter().enumerate() {
        let x0 = start + m as f64 * slot + 5.0;
        let mut base = 0.0;
        for (i, n) in chart.stacks[m].iter().enumerate() {
            let h = *n as f64 / axis_max * plot_height;
            c.rect(x0, y(base) - h, bar, h, chart.stack_series[i].color, "");
            base += *n as f64;
        }
        let before = chart.previous[m] as f64;
        let h = before / axis_max * plot_height;
        let faded = format!(
            r#" stroke="{}" stroke-width="1" fill-opacity="0.35""#,
            chart.previous_series.color
        );
        c.rect(
            x0 + bar + 1.0,
            y(before),
            bar - 1.0,
            h,
            chart.previous_series.color,
            &faded,
        );
        c.text(
            start + (m as f64 + 0.5) * slot,
            top + plot_height + 18.0,
            Anchor::Middle,
            "tick",
            label,
        );
    }
    if max == 0 {
        c.empty(style.no_data);
    }
    c.finish(chart.title, chart.desc, chart.id)
}

/// Horizontal grid lines with their values at the start of each.
fn grid(
    c: &mut Canvas,
    style: &Style,
    axis_max: f64,
    step: f64,
    start: f64,
    end: f64,
    y: impl Fn(f64) -> f64,
) {
    let n = (axis_max / step).round() as usize;
    for i in 0..=n {
        let v = i as f64 * step;
        let at = y(v);
        c.line(
            start,
            at,
            WIDTH - end,
            at,
            if i == 0 { "axis" } else { "grid" },
        );
        c.text(
            start - 6.0,
            at + 4.0,
            Anchor::End,
            "tick",
            &(style.number)(v),
        );
    }
}

/// Lines per month on a 0-100% scale, with targets as dashed lines across.
pub struct MonthlyLines<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub desc: &'a str,
    pub months: [&'a str; 12],
    pub series: Vec<(Series, [Option<f64>; 12])>,
    pub targets: Vec<(Series, f64)>,
}

pub fn monthly_lines(chart: &MonthlyLines, style: &Style) -> String {
    let (top, bottom, start, end) = (40.0, 30.0, 60.0, 12.0);
    let plot_height = 220.0;
    let mut c = Canvas::new(top + plot_height + bottom, style.rtl);
    let legend: Vec<&Series> = chart
        .series
        .iter()
        .map(|(s, _)| s)
        .chain(chart.targets.iter().map(|(s, _)| s))
        .collect();
    c.legend(&legend, 18.0);
    let y = |v: f64| top + plot_height - v.clamp(0.0, 100.0) / 100.0 * plot_height;
    grid(&mut c, style, 100.0, 25.0, start, end, y);
    let slot = (WIDTH - start - end) / 12.0;
    let x = |m: usize| start + (m as f64 + 0.5) * slot;
    for (m, label) in chart.months.iter().enumerate() {
        c.text(
            x(m),
            top + plot_height + 18.0,
            Anchor::Middle,
            "tick",
            label,
        );
    }
    for (series, value) in &chart.targets {
        let at = y(*value);
        let (x1, x2) = (c.x(start), c.x(WIDTH - end));
        let _ = write!(
            c.body,
            r#"<line x1="{x1:.1}" y1="{at:.1}" x2="{x2:.1}" y2="{at:.1}" stroke="{}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            series.color
        );
    }
    let mut any = false;
    let mut radius: f64 = 6.0;
    for (series, values) in &chart.series {
        // A month without a known outcome breaks the line.
        let mut path = String::new();
        let mut pen_down = false;
        for (m, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        c.x(x(m)),
                        y(*v)
                    );
                    pen_down = true;
                    any = true;
                }
                None => pen_down = false,
            }
        }
        let dash = if series.faded {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = write!(
            c.body,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="2.5"{dash}/>"#,
            path.trim_end(),
            series.color
        );
        for (m, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    c.body,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="{radius}" fill="{}"/>"#,
                    c.x(x(m)),
                    y(*v),
                    series.color
                );
            }
        }
        // Each series' points are smaller than the one's before, so equal values show as a
        // ring around a dot instead of hiding each other.
        radius = (radius - 2.0).max(2.5);
    }
    if !any {
        c.empty(style.no_data);
    }
    c.finish(chart.title, chart.desc, chart.id)
}

/// Horizontal bars: one row per group, one bar per series, its value at its end.
pub struct HorizontalBars<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub desc: &'a str,
    pub series: Vec<Series>,
    /// The row's label and its value in each series.
    pub rows: Vec<(String, Vec<Option<f64>>)>,
    /// The end of the scale; the largest value when `None`.
    pub max: Option<f64>,
}

pub fn horizontal_bars(chart: &HorizontalBars, style: &Style) -> String {
    let (top, label_width, end) = (34.0, 230.0, 70.0);
    let bar = 13.0;
    let row_height = chart.series.len() as f64 * (bar + 2.0) + 12.0;
    let height = top + (chart.rows.len().max(1) as f64) * row_height + 8.0;
    let mut c = Canvas::new(height, style.rtl);
    let legend: Vec<&Series> = chart.series.iter().collect();
    c.legend(&legend, 18.0);
    let max = chart.max.unwrap_or_else(|| {
        chart
            .rows
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .fold(0.0, f64::max)
    });
    let scale = if max > 0.0 { max } else { 1.0 };
    let plot = WIDTH - label_width - end;
    c.line(label_width, top - 4.0, label_width, height - 8.0, "axis");
    for (r, (label, values)) in chart.rows.iter().enumerate() {
        let y0 = top + r as f64 * row_height;
        let label = shorten(label, 34);
        c.text(
            label_width - 8.0,
            y0 + row_height / 2.0,
            Anchor::End,
            "label",
            &label,
        );
        for (i, (series, v)) in chart.series.iter().zip(values).enumerate() {
            let y = y0 + 4.0 + i as f64 * (bar + 2.0);
            let Some(v) = v else { continue };
            let w = (v / scale).clamp(0.0, 1.0) * plot;
            let extra = if series.faded {
                format!(
                    r#" stroke="{}" stroke-width="1" fill-opacity="0.35""#,
                    series.color
                )
            } else {
                String::new()
            };
            c.rect(label_width, y, w, bar, series.color, &extra);
            c.text(
                label_width + w + 4.0,
                y + bar - 2.0,
                Anchor::Start,
                "value",
                &(style.number)(*v),
            );
        }
    }
    if chart.rows.is_empty() {
        c.empty(style.no_data);
    }
    c.finish(chart.title, chart.desc, chart.id)
}

/// At most `n` characters, with an ellipsis when cut.
fn shorten(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(n - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(rtl: bool) -> (bool, impl Fn(f64) -> String) {
        (rtl, |x: f64| format!("{x}"))
    }

    #[test]
    fn report_axes_have_round_steps() {
        assert_eq!(axis(0.0), (1.0, 1.0));
        assert_eq!(axis(7.0), (8.0, 2.0));
        assert_eq!(axis(100.0), (100.0, 25.0));
        assert_eq!(axis(1234.0), (1500.0, 500.0));
        assert_eq!(axis(9.0), (10.0, 5.0));
        assert_eq!(axis(1.0), (1.0, 1.0));
        assert_eq!(axis(3.0), (3.0, 1.0));
    }

    #[test]
    fn report_charts_mirror_for_right_to_left_and_escape_labels() {
        let (rtl, number) = style(true);
        let chart = HorizontalBars {
            id: "c",
            title: "a <title>",
            desc: "d",
            series: vec![Series {
                label: "s & t".into(),
                color: "#000",
                faded: false,
            }],
            rows: vec![("<b>".into(), vec![Some(5.0)])],
            max: None,
        };
        let svg = horizontal_bars(
            &chart,
            &Style {
                rtl,
                number: &number,
                no_data: "none",
            },
        );
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.contains("&lt;b&gt;"));
        assert!(svg.contains("s &amp; t"));
        assert!(!svg.contains("<b>"));
        // The full-length bar ends at the left edge of the plot in right-to-left.
        assert!(
            svg.contains(r#"<rect x="70.0" y="38.0" width="460.0""#),
            "{svg}"
        );
        let (rtl, number) = style(false);
        let svg = horizontal_bars(
            &chart,
            &Style {
                rtl,
                number: &number,
                no_data: "none",
            },
        );
        assert!(
            svg.contains(r#"<rect x="230.0" y="38.0" width="460.0""#),
            "{svg}"
        );
    }
}
