//! The reports' charts, drawn on the server as SVG with plotters' SVG backend. No font files are
//! read: plotters' built-in estimate lays text out and the SVG carries `<text>` elements that
//! the browser sets in its own sans-serif. The output uses presentation attributes only (no
//! `style` attribute or element), so it may be inlined under the pages' Content-Security-Policy.

use plotters::prelude::*;

use crate::app::{Chart, Drawing, ReportData, Unit, format_value};
use crate::domain::request::RequestState;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 330;
/// The site's text colour, a muted one for axes, and the light one of grid lines.
const INK: RGBColor = RGBColor(0x1b, 0x1b, 0x1b);
const MUTED: RGBColor = RGBColor(0x54, 0x54, 0x54);
const GRID: RGBColor = RGBColor(0xe5, 0xe7, 0xeb);
const FONT: &str = "sans-serif";
/// plotters writes `font-size` as this over 1.24: 16 is about 13px.
const TEXT_SIZE: f64 = 16.0;
const LEGEND_ROW: u32 = 22;
/// How wide a legend's sample of a series is.
const SWATCH: u32 = 26;

/// Series colours, each at least 3:1 against white (WCAG's contrast for graphics).
const PALETTE: [RGBColor; 4] = [
    RGBColor(0x0b, 0x4f, 0xb3),
    RGBColor(0xb4, 0x53, 0x09),
    RGBColor(0x15, 0x80, 0x3d),
    RGBColor(0x6d, 0x28, 0xd9),
];

/// A colour per request state, in [`RequestState::ALL`]'s order.
fn state_colour(state: RequestState) -> RGBColor {
    match state {
        RequestState::Submitted => RGBColor(0xb4, 0x53, 0x09),
        RequestState::Approved => RGBColor(0x6d, 0x28, 0xd9),
        RequestState::Issued => RGBColor(0x0e, 0x74, 0x90),
        RequestState::Activated => RGBColor(0x15, 0x80, 0x3d),
        RequestState::Expired => RGBColor(0x6b, 0x72, 0x80),
        RequestState::Revoked => RGBColor(0xb9, 0x1c, 0x1c),
        RequestState::Denied => RGBColor(0xbe, 0x18, 0x5d),
        RequestState::Cancelled => RGBColor(0x1d, 0x4e, 0xd8),
        RequestState::Failed => RGBColor(0x11, 0x18, 0x27),
    }
}

/// The colour of the `i`-th plotted column of a report, and whether its line is dashed. The
/// percentiles of [`Chart::TimeToToken`] come in pairs (median, 90th percentile): a colour per
/// pair, the percentile dashed with hollow markers, so that equal values stay visible.
fn look(chart: Chart, name: &str, i: usize) -> (RGBColor, bool) {
    if chart == Chart::RequestsPerWeek
        && let Some(state) = RequestState::ALL.iter().find(|s| s.as_str() == name)
    {
        return (state_colour(*state), false);
    }
    if chart == Chart::TimeToToken {
        return (PALETTE[(i / 2) % PALETTE.len()], i % 2 == 1);
    }
    (PALETTE[i % PALETTE.len()], false)
}

/// A drawn series: its name, colour and values (one per row).
struct Series {
    name: String,
    colour: RGBColor,
    dashed: bool,
    values: Vec<Option<f64>>,
}

fn series_of(data: &ReportData) -> Vec<Series> {
    data.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.plotted)
        .enumerate()
        .map(|(n, (i, c))| {
            let (colour, dashed) = look(data.chart, &c.name, n);
            Series {
                name: c.name.clone(),
                colour,
                dashed,
                values: data
                    .rows
                    .iter()
                    .map(|r| r.values.get(i).copied().flatten())
                    .collect(),
            }
        })
        .collect()
}

/// A round top for the value axis and the step between its labels.
fn axis_top(max: f64, unit: Unit) -> (f64, f64) {
    let floor = if unit == Unit::Count { 4.0 } else { 1.0 };
    let max = max.max(floor);
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(magnitude * 10.0);
    let step = if unit == Unit::Count {
        step.max(1.0).round()
    } else {
        step
    };
    ((max / step).ceil() * step, step)
}

/// How wide plotters' text estimate makes `text` (its naive font: 0.7 em per character).
fn text_width(text: &str) -> u32 {
    let em = TEXT_SIZE / 1.24 / 1.24;
    (em * 0.7 * text.chars().count() as f64).ceil() as u32
}

/// Legend entries laid out in rows: (row, x) of each.
fn legend_layout(names: &[String]) -> (Vec<(u32, u32)>, u32) {
    let (mut row, mut x) = (0u32, 0u32);
    let mut at = Vec::new();
    for name in names {
        let w = SWATCH + 6 + text_width(name) + 22;
        if x > 0 && x + w > WIDTH - 20 {
            row += 1;
            x = 0;
        }
        at.push((row, x));
        x += w;
    }
    let rows = if names.is_empty() { 0 } else { row + 1 };
    (at, rows)
}

/// The short label of a row on the category axis: `03-02` for a day, else the label.
fn short_label(label: &str) -> String {
    let bytes = label.as_bytes();
    if label.len() == 10 && bytes.get(4) == Some(&b'-') && bytes.get(7) == Some(&b'-') {
        label.get(5..).unwrap_or(label).to_owned()
    } else {
        label.to_owned()
    }
}

/// A point's marker: a dot, or for a dashed series a ring around where the dot would be.
fn marker<C>(at: C, s: &Series) -> Circle<C, i32> {
    if s.dashed {
        Circle::new(at, 6, s.colour.stroke_width(2))
    } else {
        Circle::new(at, 3, s.colour.filled())
    }
}

type DrawResult<T> = Result<T, String>;

fn fail<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the chart: {e:?}")
}

/// The chart of a report as an SVG document (`None` for a report that is only a table).
/// `described_by`: the id of the element holding its summary, when inlined in a page.
pub fn svg(data: &ReportData, described_by: Option<&str>) -> DrawResult<Option<String>> {
    let drawing = data.chart.drawing();
    if drawing == Drawing::TableOnly {
        return Ok(None);
    }
    let series = series_of(data);
    let labels: Vec<String> = data
        .rows
        .iter()
        .map(|r| r.labels.first().cloned().unwrap_or_default())
        .collect();
    let unit = data
        .columns
        .iter()
        .find(|c| c.plotted)
        .map_or(Unit::Count, |c| c.unit);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
        let (places, legend_rows) = if series.len() > 1 {
            legend_layout(&names)
        } else {
            (Vec::new(), 0)
        };
        let legend_height = legend_rows * LEGEND_ROW + if legend_rows > 0 { 6 } else { 0 };
        let (legend, plot) = root.split_vertically(legend_height);
        let text = (FONT, TEXT_SIZE).into_font().color(&INK);
        for (s, (row, x)) in series.iter().zip(&places) {
            let y = (row * LEGEND_ROW + 6) as i32;
            let x = (*x + 10) as i32;
            let w = SWATCH as i32;
            if drawing == Drawing::Lines {
                // A sample of the line: solid or dashed, with its marker.
                let mid = y + 7;
                let pieces = if s.dashed {
                    vec![(x, x + 8), (x + 13, x + w - 13), (x + w - 8, x + w)]
                } else {
                    vec![(x, x + w)]
                };
                for (a, b) in pieces.into_iter().filter(|(a, b)| a < b) {
                    legend
                        .draw(&PathElement::new(
                            vec![(a, mid), (b, mid)],
                            s.colour.stroke_width(2),
                        ))
                        .map_err(fail)?;
                }
                legend.draw(&marker((x + w / 2, mid), s)).map_err(fail)?;
            } else {
                legend
                    .draw(&Rectangle::new(
                        [(x, y), (x + w, y + 14)],
                        s.colour.filled(),
                    ))
                    .map_err(fail)?;
            }
            legend
                .draw(&Text::new(s.name.clone(), (x + w + 6, y), text.clone()))
                .map_err(fail)?;
        }

        let n = i32::try_from(data.rows.len()).unwrap_or(i32::MAX).max(1);
        let max = match drawing {
            Drawing::StackedBars => (0..data.rows.len())
                .map(|i| {
                    series
                        .iter()
                        .filter_map(|s| s.values.get(i).copied().flatten())
                        .sum::<f64>()
                })
                .fold(0.0, f64::max),
            _ => series
                .iter()
                .flat_map(|s| s.values.iter().copied().flatten())
                .fold(0.0, f64::max),
        };
        let (top, step) = axis_top(max, unit);
        let y_labels = (top / step).round() as usize + 1;
        let every = if data.rows.len() > 14 { 5 } else { 1 };
        let x_format = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
                .ok()
                .filter(|i| i % every == 0 || *i + 1 == labels.len())
                .and_then(|i| labels.get(i))
                .map(|l| short_label(l))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        let y_format = |v: &f64| match unit {
            Unit::Count => format!("{v:.0}"),
            Unit::Hours => {
                let s = format!("{v:.1}");
                s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
            }
        };
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(if legend_rows > 0 { 8 } else { 16 })
            .margin_right(16)
            .margin_left(6)
            .x_label_area_size(46)
            .y_label_area_size(58)
            // `0..n - 1`: plotters' integer range includes its end, one segment per value.
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)
            .map_err(fail)?;
        let category = data.label_columns.first().copied().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(data.rows.len().max(1))
            .y_labels(y_labels)
            // (Not `max_light_lines(0)`: plotters' integer axes loop on a hint of no points.)
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(MUTED)
            .label_style(text.clone())
            .axis_desc_style(text.clone())
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .y_desc(data.axis)
            .x_desc(category)
            .draw()
            .map_err(fail)?;

        match drawing {
            Drawing::StackedBars | Drawing::Bars => {
                // A fifth of each segment between bars.
                let plot_width = f64::from(WIDTH - 58 - 16 - 6);
                let gap = (plot_width / f64::from(n) * 0.1).clamp(2.0, 40.0) as u32;
                let mut base = vec![0.0f64; data.rows.len()];
                for s in &series {
                    let bars = s.values.iter().enumerate().filter_map(|(i, v)| {
                        let v = v.filter(|v| *v > 0.0)?;
                        let x = i32::try_from(i).ok()?;
                        let from = *base.get(i)?;
                        let mut bar = Rectangle::new(
                            [
                                (SegmentValue::Exact(x), from),
                                (SegmentValue::Exact(x + 1), from + v),
                            ],
                            s.colour.filled(),
                        );
                        bar.set_margin(0, 0, gap, gap);
                        Some(bar)
                    });
                    let bars: Vec<Rectangle<(SegmentValue<i32>, f64)>> = bars.collect();
                    chart.draw_series(bars).map_err(fail)?;
                    for (i, v) in s.values.iter().enumerate() {
                        if let (Some(b), Some(v)) = (base.get_mut(i), v) {
                            *b += v;
                        }
                    }
                }
                // Each bar's total above it, when the bars are few enough to read.
                if data.rows.len() <= 14 || drawing == Drawing::Bars {
                    let small = (FONT, TEXT_SIZE * 0.85).into_font().color(&INK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    );
                    let totals = base.iter().enumerate().filter_map(|(i, v)| {
                        let x = i32::try_from(i).ok()?;
                        (*v > 0.0).then(|| {
                            Text::new(
                                format_value(Some(*v), unit),
                                (SegmentValue::CenterOf(x), *v + top * 0.01),
                                small.clone(),
                            )
                        })
                    });
                    let totals: Vec<Text<'_, (SegmentValue<i32>, f64), String>> = totals.collect();
                    chart.draw_series(totals).map_err(fail)?;
                }
            }
            Drawing::Lines => {
                for s in &series {
                    // A gap where there is nothing to measure.
                    let mut run: Vec<(SegmentValue<i32>, f64)> = Vec::new();
                    let mut runs = Vec::new();
                    for (i, v) in s.values.iter().enumerate() {
                        let x = i32::try_from(i).unwrap_or(i32::MAX);
                        match v {
                            Some(v) => run.push((SegmentValue::CenterOf(x), *v)),
                            None => runs.push(std::mem::take(&mut run)),
                        }
                    }
                    runs.push(run);
                    for run in runs.into_iter().filter(|r| !r.is_empty()) {
                        let points: Vec<Circle<_, i32>> =
                            run.iter().map(|p| marker(p.clone(), s)).collect();
                        let line = s.colour.stroke_width(2);
                        if s.dashed {
                            chart
                                .draw_series(DashedLineSeries::new(run, 8, 5, line))
                                .map_err(fail)?;
                        } else {
                            chart
                                .draw_series(LineSeries::new(run, line))
                                .map_err(fail)?;
                        }
                        chart.draw_series(points).map_err(fail)?;
                    }
                }
            }
            Drawing::TableOnly => {}
        }
        root.present().map_err(fail)?;
    }
    Ok(Some(labelled(&buf, data, described_by)))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG named for assistive technology: `role="img"` and an `aria-label`, described by the
/// page's summary when inlined, else carrying it as `<title>` and `<desc>`.
fn labelled(svg: &str, data: &ReportData, described_by: Option<&str>) -> String {
    let label = escape(data.chart.title());
    let mut attrs = format!(r#"<svg role="img" aria-label="{label}" class="chart-svg" "#);
    if let Some(id) = described_by {
        attrs.push_str(&format!(r#"aria-describedby="{}" "#, escape(id)));
    }
    let body = svg.strip_prefix("<svg ").unwrap_or(svg);
    let mut out = attrs + body;
    if described_by.is_none()
        && let Some(end) = out.find(">\n")
    {
        let about = format!(
            "<title>{label}</title>\n<desc>{}</desc>\n",
            escape(&data.summary)
        );
        out.insert_str(end + 2, &about);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(axis_top(0.0, Unit::Count), (4.0, 1.0));
        assert_eq!(axis_top(7.0, Unit::Count), (8.0, 2.0));
        assert_eq!(axis_top(23.0, Unit::Count), (25.0, 5.0));
        assert_eq!(axis_top(130.0, Unit::Count), (150.0, 50.0));
        assert_eq!(axis_top(0.4, Unit::Hours), (1.0, 0.2));
    }

    #[test]
    fn legends_wrap() {
        let names: Vec<String> = RequestState::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let (places, rows) = legend_layout(&names);
        assert_eq!(places.len(), names.len());
        assert!(rows >= 1);
        assert!(places.iter().all(|(_, x)| *x < WIDTH));
    }
}
