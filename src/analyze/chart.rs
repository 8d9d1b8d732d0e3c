//! The sensitivity bar chart: per layer (most sensitive at the top), the accuracy drop when
//! only that layer is quantized, and the int8 model's SQNR at that layer.

use plotters::prelude::*;

/// SQNR bars stop here (dB).
const SQNR_CAP: f64 = 60.0;

/// Two horizontal bar panels, as an SVG document: per layer `names[i]` (top to bottom), its
/// accuracy drop `drops[i]` and its SQNR `sqnr[i]`.
pub fn bars(model: &str, names: &[&str], drops: &[f64], sqnr: &[f64]) -> String {
    let n = names.len().max(1);
    let height = 90 + 22 * n as u32;
    let label_width = 12 + 7 * names.iter().map(|s| s.len()).max().unwrap_or(5) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        // drawing into a string cannot fail: plotters' errors here are I/O errors
        let _ = root.fill(&WHITE);
        let (left, right) = root.split_horizontally(500);
        // an (almost) exact layer, such as 8-bit pixels, would squash the others
        let sqnr: Vec<f64> = sqnr.iter().map(|d| d.min(SQNR_CAP)).collect();
        panel(
            &left,
            &format!("{model}: accuracy drop, only this layer quantized (points)"),
            names,
            drops,
            label_width,
            &RGBColor(0xd6, 0x27, 0x28),
        );
        panel(
            &right,
            &format!("SQNR of the int8 model at this layer (dB, capped at {SQNR_CAP})"),
            names,
            &sqnr,
            label_width,
            &RGBColor(0x1f, 0x77, 0xb4),
        );
        let _ = root.present();
    }
    svg
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    names: &[&str],
    values: &[f64],
    label_width: u32,
    color: &RGBColor,
) {
    let lo = values.iter().copied().fold(0.0f64, f64::min);
    let hi = values.iter().copied().fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.05).max(0.01);
    let n = names.len().max(1);
    let Ok(mut chart) = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(label_width)
        .build_cartesian_2d((lo - pad)..(hi + pad), (0..n).into_segmented())
    else {
        return;
    };
    let _ = chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            // the most sensitive layer at the top
            SegmentValue::CenterOf(i) if *i < n => names
                .get(n - 1 - *i)
                .map_or(String::new(), |s| s.to_string()),
            _ => String::new(),
        })
        .draw();
    let _ = chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
        let row = n - 1 - i;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(row)),
                (v, SegmentValue::Exact(row + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }));
}
