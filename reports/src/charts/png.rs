//! The PNG renderer: plotters' in-memory bitmap backend, text in an embedded font,
//! PNG encoding by the `png` crate.
//!
//! Text uses DejaVu Sans compiled into the binary (`assets/fonts/`, Bitstream Vera
//! licence, see `assets/fonts/DejaVu-LICENSE`), registered with plotters' `ab_glyph`
//! text backend, so a server without any fonts installed still renders every
//! label. plotters keeps registered fonts in a process-wide table; we register ours
//! once, as "sans-serif".
//!
//! Log axes are drawn by transforming values (log10) onto a linear axis whose tick
//! labels show the untransformed values; a value ≤ 0 cannot be placed on a log axis
//! and is drawn as a gap.
//!
//! Legends never cover data: every plot gives up a column of [`LEGEND_WIDTH_PX`] on
//! its right, outside its axes, and the legend is drawn there (a label too long
//! for the column is cut with "…"). The time axis ends at the data's end.

use std::error::Error;
use std::sync::OnceLock;

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::{
    BarChart, BarGroup, Chart, ChartBody, ChartRenderer, Dash, FaultBand, Line, Panel, QuantileChart, Scale,
    TimeSeriesChart,
};
use crate::error::{ReportError, Result};

/// DejaVu Sans 2.37, unmodified.
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT_FAMILY: &str = "sans-serif";

/// Tableau 10: distinct, colour-blind-tolerant, readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];
const FAULT_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const TEXT_COLOR: RGBColor = RGBColor(0x22, 0x22, 0x22);

const TITLE_HEIGHT_PX: u32 = 44;
const TITLE_FONT_PX: f64 = 26.0;
const PANEL_TITLE_FONT_PX: f64 = 19.0;
const LABEL_FONT_PX: f64 = 15.0;
const LINE_WIDTH_PX: u32 = 2;
const FAULT_LABEL_ROWS: usize = 3;
const MARGIN_RIGHT_PX: i32 = 16;
/// The column right of every plot that holds its legend.
pub const LEGEND_WIDTH_PX: u32 = 260;
const LEGEND_ROW_PX: i32 = 22;
const Y_LABEL_AREA_PX: i32 = 78;
/// Where plots start: the left margin plus the y label area.
const PLOT_LEFT_PX: i32 = 12 + Y_LABEL_AREA_PX;
const FAULT_LABEL_ROW_PX: i32 = 16;

/// Renders charts as PNG images of a fixed width; time-series charts grow by one
/// `panel_height_px` per panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngRenderer {
    pub width_px: u32,
    /// Height of each panel of a time-series chart.
    pub panel_height_px: u32,
    /// Height of a quantile or bar chart.
    pub chart_height_px: u32,
    /// Whether legends are drawn. Their column is kept either way, so a chart
    /// rendered without them differs from one with them only inside the legends
    /// (how the tests find a legend's box and check it covers no data).
    pub draw_legends: bool,
}

impl Default for PngRenderer {
    fn default() -> Self {
        PngRenderer { width_px: 1200, panel_height_px: 380, chart_height_px: 560, draw_legends: true }
    }
}

impl PngRenderer {
    /// The colours lines and bars are drawn in (RGB), in palette order: a pixel of
    /// one of them in a plot belongs to a data series.
    pub fn series_colors(&self) -> Vec<[u8; 3]> {
        PALETTE.iter().map(|color| [color.0, color.1, color.2]).collect()
    }

    /// The pixel size `chart` renders at.
    pub fn size_of(&self, chart: &Chart) -> (u32, u32) {
        match &chart.body {
            ChartBody::TimeSeries(series) => {
                let panels = u32::try_from(series.panels.len().max(1)).unwrap_or(u32::MAX);
                (self.width_px, TITLE_HEIGHT_PX + self.panel_height_px.saturating_mul(panels))
            }
            ChartBody::Quantiles(_) | ChartBody::Bars(_) => (self.width_px, self.chart_height_px),
        }
    }
}

impl ChartRenderer for PngRenderer {
    fn extension(&self) -> &'static str {
        "png"
    }

    fn mime_type(&self) -> &'static str {
        "image/png"
    }

    fn render(&self, chart: &Chart) -> Result<Vec<u8>> {
        register_font()?;
        let (width, height) = self.size_of(chart);
        let chart_error = |message: String| ReportError::Chart { chart: chart.id.file_stem(), message };
        let pixels = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| chart_error(format!("{width}x{height} pixels is too large")))?;
        let mut rgb = vec![0xff_u8; pixels];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw_chart(&root, chart, self.draw_legends).map_err(|error| chart_error(error.to_string()))?;
            root.present().map_err(|error| chart_error(error.to_string()))?;
        }
        encode_png(&rgb, width, height).map_err(|error| chart_error(error.to_string()))
    }
}

/// Registers the embedded font with plotters, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font)
    }
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // A fixed filter: the default adaptive one cost half the render time (seconds
    // per report in a debug build) and made flat-coloured charts larger, not smaller.
    encoder.set_filter(png::Filter::Up);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

type DrawResult = std::result::Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// Every chart draws on linear axes with explicit ticks (log axes are transformed).
type Coords = Cartesian2d<TickedAxis, TickedAxis>;

/// A linear f64 axis whose ticks we choose (plotters' own `WithKeyPoints` cannot
/// take a label formatter).
#[derive(Debug, Clone)]
struct TickedAxis {
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> TickedAxis {
        let high = if range.end > range.start { range.end } else { range.start + 1.0 };
        TickedAxis { low: range.start, high, ticks }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        // Clamped, so a stray value far off the axis cannot overflow the pixel type.
        let fraction = ((value - self.low) / (self.high - self.low)).clamp(-4.0, 5.0);
        limit.0 + (fraction * f64::from(limit.1 - limit.0) + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.iter().copied().filter(|t| *t >= self.low - 1e-9 && *t <= self.high + 1e-9).collect()
    }

    fn range(&self) -> Range<f64> {
        self.low..self.high
    }
}

fn font(size_px: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size_px).into_font().color(&TEXT_COLOR)
}

fn draw_chart(root: &Area<'_>, chart: &Chart, legends: bool) -> DrawResult {
    root.fill(&WHITE)?;
    let (_, height) = root.dim_in_pixel();
    let (title_area, body) = root.split_vertically(TITLE_HEIGHT_PX.min(height));
    title_area.draw(&Text::new(chart.title.clone(), (16, 10), font(TITLE_FONT_PX)))?;
    match &chart.body {
        ChartBody::TimeSeries(series) => draw_time_series(&body, series, legends),
        ChartBody::Quantiles(quantiles) => draw_quantiles(&body, quantiles, legends),
        ChartBody::Bars(bars) => draw_bars(&body, bars, legends),
    }
}

fn draw_time_series(area: &Area<'_>, chart: &TimeSeriesChart, legends: bool) -> DrawResult {
    if chart.panels.is_empty() {
        return no_data(area);
    }
    let areas = area.split_evenly((chart.panels.len(), 1));
    let titled = chart.panels.len() > 1;
    for (panel_index, (panel, panel_area)) in chart.panels.iter().zip(&areas).enumerate() {
        draw_panel(panel_area, panel, chart, titled, panel_index == 0, legends)?;
    }
    Ok(())
}

/// `area` split into the plot's part and the legend column on its right.
fn split_legend<'a>(area: &Area<'a>) -> (Area<'a>, Area<'a>) {
    let (width, _) = area.dim_in_pixel();
    area.split_horizontally(width.saturating_sub(LEGEND_WIDTH_PX))
}

/// What a legend shows of one line or bar group.
struct LegendEntry {
    label: String,
    color: RGBColor,
    /// `None`: a bar's filled square.
    dash: Option<Dash>,
}

/// Draws `entries` down the legend column, from `top_px` (the plot's top, so the
/// legend starts level with it).
fn draw_legend(area: &Area<'_>, entries: &[LegendEntry], top_px: i32, draw: bool) -> DrawResult {
    if !draw || entries.is_empty() {
        return Ok(());
    }
    // About 7 px per character of the label font; the mark takes 40.
    let chars_max = ((LEGEND_WIDTH_PX as usize).saturating_sub(48) / 7).max(4);
    for (index, entry) in entries.iter().enumerate() {
        let y = top_px + 8 + LEGEND_ROW_PX * index as i32;
        let style = entry.color.stroke_width(LINE_WIDTH_PX);
        match entry.dash {
            Some(dash) => area.draw(&legend_mark::<BitMapBackend<'_>>(dash, style, 8, y))?,
            None => area.draw(&Rectangle::new([(8, y - 6), (24, y + 6)], entry.color.filled()))?,
        }
        let label = if entry.label.chars().count() > chars_max {
            let cut: String = entry.label.chars().take(chars_max - 1).collect();
            format!("{cut}…")
        } else {
            entry.label.clone()
        };
        area.draw(&Text::new(label, (40, y - 8), font(LABEL_FONT_PX)))?;
    }
    Ok(())
}

/// One panel: its title (when the chart has several) at the top left, then the
/// fault labels' rows, then the plot.
fn draw_panel(
    area: &Area<'_>,
    panel: &Panel,
    chart: &TimeSeriesChart,
    titled: bool,
    label_faults: bool,
    legends: bool,
) -> DrawResult {
    let values = panel.lines.iter().flat_map(|l| l.points.iter().filter_map(|p| p.1));
    let axis = if panel.y_counts { ValueAxis::fit_counts(values) } else { ValueAxis::fit(panel.y_scale, values) };
    // The axis ends with the data; the ticks past it are not drawn.
    let x_end = chart.x_end_seconds;
    let x_ticks = linear_ticks(0.0, x_end);
    let (area, legend_area) = split_legend(area);
    let area = &area;
    // Fault labels go in rows above the plot, where they cover neither data nor legend.
    let label_rows = if label_faults { chart.faults.len().min(FAULT_LABEL_ROWS) } else { 0 };
    let title_px = if titled {
        area.draw(&Text::new(panel.title.clone(), (PLOT_LEFT_PX, 6), font(PANEL_TITLE_FONT_PX)))?;
        PANEL_TITLE_FONT_PX as i32 + 10
    } else {
        0
    };
    let top_px = 10 + title_px + FAULT_LABEL_ROW_PX * label_rows as i32;
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .margin_right(MARGIN_RIGHT_PX)
        .margin_top(top_px)
        .x_label_area_size(44)
        .y_label_area_size(Y_LABEL_AREA_PX);
    let mut ctx = builder.build_cartesian_2d(
        TickedAxis::new(0.0..x_end, x_ticks),
        TickedAxis::new(axis.low..axis.high, axis.ticks.clone()),
    )?;
    let y_format = |y: &f64| axis.label(*y);
    ctx.configure_mesh()
        .x_desc("time (s)")
        .y_desc(panel.y_label.clone())
        .x_label_formatter(&|x| short_number(*x))
        .y_label_formatter(&y_format)
        .label_style(font(LABEL_FONT_PX))
        .axis_desc_style(font(LABEL_FONT_PX))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .draw()?;
    draw_fault_bands(&mut ctx, &chart.faults, (axis.low, axis.high), label_faults)?;
    let mut entries = Vec::new();
    for line in &panel.lines {
        entries.extend(draw_line(&mut ctx, line, Some, |y| axis.place(y))?);
    }
    draw_legend(&legend_area, &entries, top_px, legends)
}

fn draw_fault_bands<'a, 'b: 'a>(
    ctx: &mut ChartContext<'a, BitMapBackend<'b>, Coords>,
    faults: &[FaultBand],
    (y_low, y_high): (f64, f64),
    label: bool,
) -> DrawResult {
    for (index, band) in faults.iter().enumerate() {
        if band.end_seconds > band.start_seconds {
            ctx.draw_series(std::iter::once(Rectangle::new(
                [(band.start_seconds, y_low), (band.end_seconds, y_high)],
                FAULT_COLOR.mix(0.14).filled(),
            )))?;
        }
        // An edge line, so instant faults show too.
        ctx.draw_series(std::iter::once(PathElement::new(
            vec![(band.start_seconds, y_low), (band.start_seconds, y_high)],
            FAULT_COLOR.mix(0.6).stroke_width(1),
        )))?;
        if label {
            // Above the plot, staggered over rows so neighbours do not overprint;
            // a tick joins each label to its band's edge.
            let row = (index % FAULT_LABEL_ROWS) as i32;
            let dy = -FAULT_LABEL_ROW_PX * (FAULT_LABEL_ROWS.min(faults.len()) as i32 - row);
            ctx.draw_series(std::iter::once(
                EmptyElement::at((band.start_seconds, y_high))
                    + PathElement::new(vec![(0, dy), (0, 0)], FAULT_COLOR.mix(0.6))
                    + Text::new(band.label.clone(), (3, dy), font(13.0).color(&FAULT_COLOR)),
            ))?;
        }
    }
    Ok(())
}

/// Draws `line`'s points placed by `place_x`/`place_y`; a point either places as
/// `None` breaks the line. Returns its legend entry, if anything was drawn.
fn draw_line<'a, 'b: 'a>(
    ctx: &mut ChartContext<'a, BitMapBackend<'b>, Coords>,
    line: &Line,
    place_x: impl Fn(f64) -> Option<f64>,
    place_y: impl Fn(f64) -> Option<f64>,
) -> std::result::Result<Option<LegendEntry>, Box<dyn Error>> {
    let color = PALETTE[line.color % PALETTE.len()];
    let style = color.stroke_width(LINE_WIDTH_PX);
    let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in &line.points {
        match (place_x(x), y.and_then(&place_y)) {
            (Some(x), Some(y)) => {
                if let Some(segment) = segments.last_mut() {
                    segment.push((x, y));
                }
            }
            _ => {
                if segments.last().is_some_and(|s| !s.is_empty()) {
                    segments.push(Vec::new());
                }
            }
        }
    }
    // Lone points (a window between two gaps) would vanish as lines: mark them.
    let lone: Vec<(f64, f64)> = segments.iter().filter(|s| s.len() == 1).map(|s| s[0]).collect();
    ctx.draw_series(lone.into_iter().map(|point| Circle::new(point, 2, color.filled())))?;

    let drawn = segments.iter().any(|s| !s.is_empty());
    for segment in segments.into_iter().filter(|s| s.len() > 1) {
        match line.dash {
            Dash::Solid => ctx.draw_series(LineSeries::new(segment, style))?,
            Dash::Dashed => ctx.draw_series(DashedLineSeries::new(segment, 9, 5, style))?,
            Dash::Dotted => ctx.draw_series(DashedLineSeries::new(segment, 2, 4, style))?,
        };
    }
    Ok(drawn.then(|| LegendEntry { label: line.label.clone(), color, dash: Some(line.dash) }))
}

fn legend_mark<DB: DrawingBackend>(
    dash: Dash,
    style: ShapeStyle,
    x: i32,
    y: i32,
) -> DynElement<'static, DB, (i32, i32)> {
    let points = vec![(x, y), (x + 24, y)];
    match dash {
        Dash::Solid => PathElement::new(points, style).into_dyn(),
        Dash::Dashed => DashedPathElement::new(points, 7, 4, style).into_dyn(),
        Dash::Dotted => DashedPathElement::new(points, 2, 3, style).into_dyn(),
    }
}

/// The percentile axis: x = log10(1 / (1 - q)), i.e. the number of nines.
fn nines(percentile: f64) -> Option<f64> {
    let fraction = 1.0 - percentile / 100.0;
    (fraction > 0.0 && percentile >= 0.0).then(|| -fraction.log10())
}

fn draw_quantiles(area: &Area<'_>, chart: &QuantileChart, legends: bool) -> DrawResult {
    const NINES_MIN: f64 = 2.0; // 99%
    const NINES_MAX: f64 = 6.0; // 99.9999%
                                // Fitted to the data: up to the whole nine at or above its highest percentile.
    let data_nines =
        chart.lines.iter().flat_map(|line| line.points.iter().filter_map(|p| nines(p.0))).fold(0.0_f64, f64::max);
    let x_end = (data_nines - 1e-9).ceil().clamp(NINES_MIN, NINES_MAX);
    let (area, legend_area) = split_legend(area);
    let area = &area;
    let mut x_ticks = vec![0.0, 2.0_f64.log10()];
    x_ticks.extend((1..=x_end as u32).map(f64::from));

    let axis = ValueAxis::fit(Scale::Log, chart.lines.iter().flat_map(|l| l.points.iter().filter_map(|p| p.1)));
    let mut builder = ChartBuilder::on(area);
    builder.margin(16).margin_right(MARGIN_RIGHT_PX).x_label_area_size(44).y_label_area_size(Y_LABEL_AREA_PX);
    let mut ctx = builder.build_cartesian_2d(
        TickedAxis::new(0.0..x_end, x_ticks),
        TickedAxis::new(axis.low..axis.high, axis.ticks.clone()),
    )?;
    let y_format = |y: &f64| axis.label(*y);
    ctx.configure_mesh()
        .x_desc("percentile")
        .y_desc(chart.y_label.clone())
        .x_label_formatter(&|x| percent_label(*x))
        .y_label_formatter(&y_format)
        .label_style(font(LABEL_FONT_PX))
        .axis_desc_style(font(LABEL_FONT_PX))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .draw()?;
    let mut entries = Vec::new();
    for line in &chart.lines {
        entries.extend(draw_line(&mut ctx, line, |q| nines(q).filter(|&x| x <= x_end + 1e-9), |y| axis.place(y))?);
    }
    draw_legend(&legend_area, &entries, 16, legends)
}

/// "99.9%" for x = 3 nines.
fn percent_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.round() as i32 - 2).max(0) as usize;
    format!("{percentile:.decimals$}%")
}

fn draw_bars(area: &Area<'_>, chart: &BarChart, legends: bool) -> DrawResult {
    if chart.categories.is_empty() || chart.groups.is_empty() {
        return no_data(area);
    }
    let categories = chart.categories.len() as f64;
    let max = chart.groups.iter().flat_map(|g| g.values.iter()).copied().max().unwrap_or(0);
    // Headroom above the tallest bar for its value label.
    let axis = ValueAxis::fit_counts([0.0, (max as f64 * 1.1).max(1.0)]);
    let (area, legend_area) = split_legend(area);
    let area = &area;
    let x_ticks: Vec<f64> = (0..chart.categories.len()).map(|i| i as f64 + 0.5).collect();
    let mut builder = ChartBuilder::on(area);
    builder.margin(16).margin_right(MARGIN_RIGHT_PX).x_label_area_size(44).y_label_area_size(Y_LABEL_AREA_PX);
    let mut ctx = builder.build_cartesian_2d(
        TickedAxis::new(0.0..categories, x_ticks),
        TickedAxis::new(axis.low..axis.high, axis.ticks.clone()),
    )?;
    let category_of = |x: &f64| chart.categories.get(x.floor().max(0.0) as usize).cloned().unwrap_or_default();
    let y_format = |y: &f64| axis.label(*y);
    ctx.configure_mesh()
        .disable_x_mesh()
        .y_desc(chart.y_label.clone())
        .x_label_formatter(&category_of)
        .y_label_formatter(&y_format)
        .label_style(font(LABEL_FONT_PX))
        .axis_desc_style(font(LABEL_FONT_PX))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .draw()?;

    let groups = chart.groups.len() as f64;
    let bar_width = 0.8 / groups;
    let mut entries = Vec::new();
    for (group_index, group) in chart.groups.iter().enumerate() {
        draw_bar_group(&mut ctx, group, group_index as f64 * bar_width, bar_width)?;
        let color = PALETTE[group.color % PALETTE.len()];
        entries.push(LegendEntry { label: group.label.clone(), color, dash: None });
    }
    if max == 0 {
        ctx.draw_series(std::iter::once(Text::new(
            "no anomalies".to_string(),
            (categories / 2.0 - 0.4, axis.high * 0.6),
            font(22.0),
        )))?;
    }
    draw_legend(&legend_area, &entries, 16, legends)
}

/// One group's bars, `offset` right of each category's left edge (plus the 0.1
/// margin), each labelled with its value unless zero.
fn draw_bar_group<'a, 'b: 'a>(
    ctx: &mut ChartContext<'a, BitMapBackend<'b>, Coords>,
    group: &BarGroup,
    offset: f64,
    bar_width: f64,
) -> DrawResult {
    let color = PALETTE[group.color % PALETTE.len()];
    let left = |category: usize| category as f64 + 0.1 + offset;
    let bars = group.values.iter().enumerate().map(|(category, &value)| {
        Rectangle::new([(left(category), 0.0), (left(category) + bar_width * 0.92, value as f64)], color.filled())
    });
    ctx.draw_series(bars)?;
    let centred = font(13.0).pos(Pos::new(HPos::Center, VPos::Bottom));
    let value_labels = group.values.iter().enumerate().filter(|(_, &v)| v > 0).map(|(category, &value)| {
        EmptyElement::at((left(category) + bar_width * 0.46, value as f64))
            + Text::new(short_number(value as f64), (0, -4), centred.clone())
    });
    ctx.draw_series(value_labels)?;
    Ok(())
}

fn no_data(area: &Area<'_>) -> DrawResult {
    area.draw(&Text::new("no data".to_string(), (40, 40), font(22.0)))?;
    Ok(())
}

/// A value axis with explicit ticks; a log axis works in log10 units.
struct ValueAxis {
    scale: Scale,
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

impl ValueAxis {
    fn fit(scale: Scale, values: impl IntoIterator<Item = f64>) -> ValueAxis {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for value in values {
            if value.is_finite() && (scale == Scale::Linear || value > 0.0) {
                min = min.min(value);
                max = max.max(value);
            }
        }
        match scale {
            Scale::Linear => {
                if !min.is_finite() {
                    (min, max) = (0.0, 1.0);
                }
                let low = min.min(0.0);
                let high = if max > low { max } else { low + 1.0 };
                let ticks = linear_ticks(low, high);
                let low = ticks.first().copied().unwrap_or(low).min(low);
                let high = ticks.last().copied().unwrap_or(high).max(high);
                ValueAxis { scale, low, high, ticks }
            }
            Scale::Log => {
                if !min.is_finite() {
                    (min, max) = (1.0, 10.0);
                }
                let ticks = log_ticks(min, max);
                let low = ticks.first().copied().unwrap_or(0.0);
                let high = ticks.last().copied().unwrap_or(1.0).max(low + 1e-9);
                ValueAxis { scale, low, high, ticks }
            }
        }
    }

    /// A linear axis for counts: from 0, whole-number ticks (a step of at least 1).
    fn fit_counts(values: impl IntoIterator<Item = f64>) -> ValueAxis {
        let max = values.into_iter().filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
        let high = max.max(1.0);
        let ticks: Vec<f64> = linear_ticks(0.0, high)
            .into_iter()
            .filter(|&t| t >= 0.0 && (t - t.round()).abs() < 1e-9)
            .map(f64::round)
            .collect();
        let ticks = if ticks.len() < 2 { vec![0.0, 1.0] } else { ticks };
        let high = ticks.last().copied().unwrap_or(high).max(high);
        ValueAxis { scale: Scale::Linear, low: 0.0, high, ticks }
    }

    /// Where `value` goes on this axis, if it can go anywhere.
    fn place(&self, value: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear => value.is_finite().then_some(value),
            Scale::Log => (value > 0.0 && value.is_finite()).then(|| value.log10()),
        }
    }

    fn label(&self, position: f64) -> String {
        match self.scale {
            Scale::Linear => short_number(position),
            Scale::Log => short_number(10f64.powf(position)),
        }
    }
}

/// About six ticks at 1/2/5 × 10^k steps covering `low..=high`.
fn linear_ticks(low: f64, high: f64) -> Vec<f64> {
    let span = (high - low).abs();
    if !span.is_finite() || span == 0.0 {
        return vec![low, low + 1.0];
    }
    let raw_step = span / 6.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw_step).unwrap_or(10.0 * magnitude);
    let first = (low / step).floor() as i64;
    let last = (high / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Ticks at 1, 2, 5 × 10^k (log10 units) from the one at or below `min` to the one
/// at or above `max`; decades only if that would be too many.
fn log_ticks(min: f64, max: f64) -> Vec<f64> {
    let first_decade = min.log10().floor() as i32;
    let last_decade = max.log10().ceil() as i32;
    let multipliers: &[f64] = if last_decade - first_decade > 4 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let mut candidates = Vec::new();
    for decade in first_decade..=last_decade {
        for m in multipliers {
            candidates.push(m * 10f64.powi(decade));
        }
    }
    let low = candidates.iter().copied().filter(|&t| t <= min * (1.0 + 1e-12)).fold(f64::NAN, f64::max);
    let high = candidates.iter().copied().filter(|&t| t >= max * (1.0 - 1e-12)).fold(f64::NAN, f64::min);
    let low = if low.is_nan() { min } else { low };
    let high = if high.is_nan() || high <= low { low * 10.0 } else { high };
    candidates.into_iter().filter(|&t| t >= low * (1.0 - 1e-12) && t <= high * (1.0 + 1e-12)).map(f64::log10).collect()
}

/// Compact axis labels: 0.05, 1.5, 20, 1.2k, 3M.
fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text == "-0" { "0" } else { text };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_labels() {
        let labels: Vec<String> = [0.0, 2f64.log10(), 1.0, 2.0, 3.0, 4.0].iter().map(|&x| percent_label(x)).collect();
        assert_eq!(labels, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn a_count_axis_starts_at_zero_with_whole_ticks_even_for_small_or_negative_counts() {
        for values in [vec![0.0, 3.0], vec![-4.0, 2.0], vec![0.0], vec![7.0, 12_345.0]] {
            let axis = ValueAxis::fit_counts(values.clone());
            assert_eq!(axis.low, 0.0, "{values:?}");
            assert!(axis.ticks.len() >= 2, "{values:?}: {:?}", axis.ticks);
            assert!(axis.ticks.iter().all(|t| *t >= 0.0 && t.fract() == 0.0), "{values:?}: {:?}", axis.ticks);
            assert!(axis.high >= values.iter().copied().fold(1.0, f64::max));
        }
        // A linear measure axis still takes whatever ticks fit (0.5 steps here).
        assert!(ValueAxis::fit(Scale::Linear, [0.0, 3.0]).ticks.contains(&0.5));
    }

    #[test]
    fn ticks() {
        assert_eq!(linear_ticks(0.0, 10_000.0), [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10_000.0]);
        let log: Vec<String> = log_ticks(0.3, 40.0).iter().map(|&t| short_number(10f64.powf(t))).collect();
        assert_eq!(log, ["0.2", "0.5", "1", "2", "5", "10", "20", "50"]);
        assert_eq!(short_number(25_000.0), "25k");
        assert_eq!(short_number(0.125), "0.125");
    }
}
