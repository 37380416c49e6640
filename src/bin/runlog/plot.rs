//! `runlog plot`: several runs' curves of one metric on one chart, each downsampled over the
//! same step buckets, drawn as a line through each bucket's last value inside a band from its
//! minimum to its maximum (so spikes that downsampling would hide stay visible).
//!
//! Invariants: the output format follows the file extension (`.svg` or `.png`); text is set in
//! an embedded font (DejaVu Sans Mono, `DejaVuSansMono.LICENSE`), so a chart renders the same
//! on a machine without fonts; non-finite values are left out of the drawing, not the data.

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::inspect::resolve_run;
use crate::{Context, Failure, Outcome};
use runlog::query::Downsampled;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run ids or unique run names.
    #[arg(required = true)]
    runs: Vec<String>,
    /// The metric to draw.
    #[arg(long)]
    key: String,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Buckets along the step axis.
    #[arg(long, default_value_t = 400)]
    buckets: usize,
    /// Image width in pixels (200 to 8192).
    #[arg(long, default_value_t = 1000)]
    width: u32,
    /// Image height in pixels (150 to 8192).
    #[arg(long, default_value_t = 600)]
    height: u32,
}

/// The smallest image that still has room for the axes, labels and legend.
const SIZE_PIXELS_MIN: (u32, u32) = (200, 150);

/// The largest side: a PNG's pixels are held in memory (3 bytes each, 192 MiB at the largest
/// square), and plotters' bitmap backend computes buffer offsets in `u32`, which sides of 65,536
/// overflow.
const SIDE_PIXELS_MAX: u32 = 8_192;

const _: () = assert!(3 * (SIDE_PIXELS_MAX as u64) * (SIDE_PIXELS_MAX as u64) <= u32::MAX as u64);

/// Refuses an image too small to draw in, or too large to draw safely.
fn check_size(width: u32, height: u32) -> Outcome {
    let (width_min, height_min) = SIZE_PIXELS_MIN;
    if width < width_min || height < height_min {
        return Err(Failure::Message(format!(
            "the image must be at least {width_min}x{height_min} pixels, not {width}x{height}"
        )));
    }
    if width > SIDE_PIXELS_MAX || height > SIDE_PIXELS_MAX {
        return Err(Failure::Message(format!(
            "the image may be at most {SIDE_PIXELS_MAX}x{SIDE_PIXELS_MAX} pixels, not \
             {width}x{height}"
        )));
    }
    Ok(())
}

const FONT: &str = "runlog-mono";
static FONT_BYTES: &[u8] = include_bytes!("DejaVuSansMono.ttf");

pub fn run(args: Args, context: &mut Context) -> Outcome {
    let extension = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let png = match extension.as_deref() {
        Some("svg") => false,
        Some("png") => true,
        _ => {
            return Err(Failure::Message(format!(
                "-o {}: the file must end in .svg or .png",
                args.output.display()
            )));
        }
    };
    if args.buckets == 0 {
        return Err(Failure::Message("--buckets must be at least 1".into()));
    }
    check_size(args.width, args.height)?;
    let store = context.open_read_only()?;
    let mut runs = Vec::new();
    for text in &args.runs {
        let id = resolve_run(&store, text)?;
        let view = store.run(id)?;
        if !view.metrics.contains_key(&args.key) {
            return Err(Failure::Message(format!(
                "run {text} has no metric {:?}",
                args.key
            )));
        }
        runs.push((id, view.info.name));
    }
    let ids: Vec<runlog::RunId> = runs.iter().map(|(id, _)| *id).collect();
    let series = store.compare_aligned(&ids, &args.key, .., args.buckets)?;
    let curves: Vec<(String, Downsampled)> = series
        .into_iter()
        .zip(&runs)
        .map(|((_, downsampled), (_, name))| (name.clone(), downsampled))
        .collect();
    plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
        .map_err(|_| Failure::Message("the embedded font does not load".into()))?;
    let size = (args.width, args.height);
    let drawn = if png {
        let root = BitMapBackend::new(&args.output, size).into_drawing_area();
        draw(&root, &args.key, &curves).and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        let root = SVGBackend::new(&args.output, size).into_drawing_area();
        draw(&root, &args.key, &curves).and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    drawn.map_err(|e| Failure::Message(format!("plot {}: {e}", args.output.display())))?;
    crate::eprintln_quiet(&format!(
        "runlog: wrote {} ({} runs, {})",
        args.output.display(),
        curves.len(),
        args.key
    ));
    Ok(())
}

/// The value range of the finite parts of `curves`, widened a little so lines stay off the
/// frame (and made non-empty for a flat curve).
fn value_range(curves: &[(String, Downsampled)]) -> Option<(f64, f64)> {
    let values = curves
        .iter()
        .flat_map(|(_, d)| d.buckets.iter().flat_map(|b| [b.min, b.max]))
        .filter(|v| v.is_finite());
    let (low, high) = values.fold(None, |range: Option<(f64, f64)>, v| match range {
        None => Some((v, v)),
        Some((low, high)) => Some((low.min(v), high.max(v))),
    })?;
    let pad = if high > low {
        (high - low) * 0.05
    } else {
        low.abs().max(1.0) * 0.05
    };
    Some((low - pad, high + pad))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    key: &str,
    curves: &[(String, Downsampled)],
) -> Result<(), String> {
    let text = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(text)?;
    let steps = curves
        .iter()
        .flat_map(|(_, d)| d.buckets.iter().flat_map(|b| [b.step_start, b.step_end]));
    let (first, last) = steps.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let Some((low, high)) = value_range(curves) else {
        return Err(format!("{key} has no finite values to draw"));
    };
    let (first, last) = if first < last {
        (first, last)
    } else {
        (first.saturating_sub(1), first.saturating_add(1))
    };
    let mut chart = ChartBuilder::on(root)
        .caption(key, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(first as f64..last as f64, low..high)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(key)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(text)?;
    for (index, (name, downsampled)) in curves.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let buckets: Vec<_> = downsampled
            .buckets
            .iter()
            .filter(|b| b.min.is_finite() && b.max.is_finite())
            .collect();
        let band: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| (b.step_start as f64, b.max))
            .chain(buckets.iter().rev().map(|b| (b.step_end as f64, b.min)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.18).filled(),
            )))
            .map_err(text)?;
        let line: Vec<(f64, f64)> = downsampled
            .buckets
            .iter()
            .filter(|b| b.last.value.is_finite())
            .map(|b| (b.last.step as f64, b.last.value))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(text)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(text)?;
    Ok(())
}
