//! Turnaround CDFs as a self-contained SVG (no plotting dependency): one
//! line per series, turnaround on a log axis (seconds), the fraction of
//! applications done by then on the other.

use std::fmt::Write;

/// One line of the plot: its label, its values sorted, and how many there
/// are in all (values that never came, applications never done, keep the
/// line below 1).
pub struct Series {
    pub label: String,
    pub sorted: Vec<f64>,
    pub total: usize,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
/// Plot area: left, top, right, bottom margins.
const L: f64 = 70.0;
const T: f64 = 40.0;
const R: f64 = 200.0;
const B: f64 = 50.0;
/// Points drawn per line at most: a CDF of 20,000 values needs no more.
const POINTS: usize = 400;
/// Colour-blind-safe (Okabe-Ito).
const COLOURS: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The CDFs of `series` with `title` on top.
pub fn cdf_svg(title: &str, series: &[Series]) -> String {
    let values = series.iter().flat_map(|s| s.sorted.iter().copied()).filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) =
        if lo.is_finite() { (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0)) } else { (0.0, 1.0) };
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |v: f64| L + (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * pw;
    let y = |f: f64| T + (1.0 - f) * ph;
    let mut svg = header(title, pw);
    // Grid and axes: a line per decade, per tenth of the fraction.
    for d in (lo as i32)..=(hi as i32) {
        let gx = x(10f64.powi(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{T}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">10^{d}</text>"##,
            T + ph,
            T + ph + 16.0
        );
    }
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        let gy = y(f);
        let _ = writeln!(
            svg,
            r##"<line x1="{L}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{f:.1}</text>"##,
            L + pw,
            L - 6.0,
            gy + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">turnaround (s, log scale)</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">fraction of applications done</text>"##,
        L + pw / 2.0,
        H - 10.0,
        T + ph / 2.0,
        T + ph / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = s.sorted.len();
        if n > 0 {
            let step = n.div_ceil(POINTS).max(1);
            let mut points = String::new();
            for k in (0..n).step_by(step).chain(std::iter::once(n - 1)) {
                let _ = write!(points, "{:.1},{:.1} ", x(s.sorted[k]), y((k + 1) as f64 / s.total.max(n) as f64));
            }
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"##,
                points.trim_end()
            );
        }
        legend(&mut svg, i, colour, &s.label, pw);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One line of a time plot.
pub struct Line {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

/// Lines on linear axes from 0 (time plots: allocation, queue length).
pub fn lines_svg(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    let xmax = lines.iter().flat_map(|l| l.xs.iter().copied()).fold(0.0f64, f64::max).max(1e-9);
    let ymax = lines.iter().flat_map(|l| l.ys.iter().copied()).fold(0.0f64, f64::max);
    // A round top: 1 for fractions, else the next 1, 2 or 5 × 10^k.
    let top = if ymax <= 1.0 {
        1.0
    } else {
        let p = 10f64.powf(ymax.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= ymax).unwrap_or(10.0 * p)
    };
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |v: f64| L + v / xmax * pw;
    let y = |v: f64| T + (1.0 - v / top) * ph;
    let mut svg = header(title, pw);
    for k in 0..=10 {
        let gx = x(xmax * k as f64 / 10.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{T}" x2="{gx:.1}" y2="{:.1}" stroke="#eee"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"##,
            T + ph,
            T + ph + 16.0,
            xmax * k as f64 / 10.0
        );
        let v = top * k as f64 / 10.0;
        let gy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{L}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            L + pw,
            L - 6.0,
            gy + 4.0,
            if top <= 1.0 { format!("{v:.1}") } else { format!("{v:.0}") }
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"##,
        L + pw / 2.0,
        H - 10.0,
        escape(x_label),
        T + ph / 2.0,
        T + ph / 2.0,
        escape(y_label)
    );
    for (i, l) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> =
            l.xs.iter().zip(&l.ys).map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(b.min(top)))).collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.4" points="{}"/>"##,
            points.join(" ")
        );
        legend(&mut svg, i, colour, &l.label, pw);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Entry `i` of the legend, right of the plot: a stroke of the series'
/// colour and its label.
fn legend(svg: &mut String, i: usize, colour: &str, label: &str, pw: f64) {
    let ly = T + 10.0 + 20.0 * i as f64;
    let _ = writeln!(
        svg,
        r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
        L + pw + 12.0,
        L + pw + 36.0,
        L + pw + 42.0,
        ly + 4.0,
        escape(label)
    );
}

/// The document's start: size, white background and the centred title.
fn header(title: &str, pw: f64) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>
"##,
        L + pw / 2.0,
        escape(title)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_draws_one_line_and_one_legend_entry_per_series_with_escaped_labels() {
        let a = Series { label: "flexible <FIFO>".into(), sorted: (1..=1000).map(|v| v as f64).collect(), total: 1000 };
        let b = Series { label: "rigid".into(), sorted: vec![5.0, 50.0, 500.0], total: 6 };
        let svg = cdf_svg("turnaround & more", &[a, b]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("flexible &lt;FIFO&gt;") && svg.contains("turnaround &amp; more"));
        // Decades 10^0 to 10^3 on the axis; at most POINTS + 1 points a line.
        assert!(svg.contains(">10^0<") && svg.contains(">10^3<"));
        let first = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(first.split(' ').count() <= POINTS + 1);
        // Half of b's values never came: its line ends half-way up.
        let last = svg.split("points=\"").nth(2).unwrap().split('"').next().unwrap().split(' ').next_back().unwrap();
        let end_y: f64 = last.split(',').nth(1).unwrap().parse().unwrap();
        assert!((end_y - (T + 0.5 * (H - T - B))).abs() < 0.2, "{last}");
    }

    #[test]
    fn a_time_plot_draws_each_line_within_a_round_top() {
        let l = Line { label: "queue".into(), xs: vec![0.0, 1.0, 2.0], ys: vec![0.0, 140.0, 30.0] };
        let svg = lines_svg("pending", "hours", "applications", &[l]);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(">200<"), "140 rounds up to a top of 200");
    }
}
