//! The plot of a sweep, as SVG: what users feel and what swapping costs, against memory. Three
//! panels share the memory axis: requests failed, time to first token p99, and the swap cost
//! with the offline bounds dashed; one line per policy.

use std::fmt::Write as _;

use super::report::{PolicyRun, Report};

const WIDTH: f64 = 720.0;
const PANEL: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// How a line is drawn: a policy's in its colour, a bound dashed in black.
#[derive(Clone, Copy, PartialEq)]
enum Line {
    Policy,
    Upper,
    Lower,
}

type Series = Vec<(String, Vec<f64>, Line)>;

/// The three panels of `r`, one above the other.
pub fn svg(r: &Report) -> String {
    let xs: Vec<f64> = r
        .points
        .iter()
        .map(|p| p.memory_bytes as f64 / f64::from(1u32 << 30))
        .collect();
    let names: Vec<String> = r
        .points
        .first()
        .map(|p| p.policies.iter().map(|x| x.policy.clone()).collect())
        .unwrap_or_default();
    let per = |f: fn(&PolicyRun) -> f64| -> Series {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let ys = r.points.iter().map(|p| f(&p.policies[i])).collect();
                (n.clone(), ys, Line::Policy)
            })
            .collect()
    };
    let mut swap = per(|p| p.metrics.load_seconds);
    swap.push((
        "upper bound".into(),
        r.points.iter().map(|p| p.bounds.upper_seconds).collect(),
        Line::Upper,
    ));
    swap.push((
        "lower bound".into(),
        r.points.iter().map(|p| p.bounds.lower_seconds).collect(),
        Line::Lower,
    ));
    let panels = [
        ("requests failed", per(|p| p.metrics.failed as f64)),
        (
            "time to first token p99 (s)",
            per(|p| p.metrics.ttft_p99_ms as f64 / 1000.0),
        ),
        ("swap cost (load seconds)", swap),
    ];
    let height = PANEL * panels.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    for (k, (title, series)) in panels.iter().enumerate() {
        let title = format!("{title} vs memory: {}", xml(&r.trace));
        panel(&mut s, k as f64 * PANEL, &title, &xs, series);
    }
    s.push_str("</svg>\n");
    s
}

/// One panel whose top edge is at `y0`.
fn panel(s: &mut String, y0: f64, title: &str, xs: &[f64], series: &Series) {
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let y1 = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.05;
    let px = |x: f64| {
        if x1 > x0 {
            LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        } else {
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0
        }
    };
    let (top, base) = (y0 + TOP, y0 + PANEL - BOTTOM);
    let py = |y: f64| top + (1.0 - y / y1) * (base - top);
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{:.1}">{title}</text>"#, y0 + 18.0);
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" stroke="black"/><line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{base}" stroke="black"/>"#
    );
    for k in 0..=4 {
        let y = y1 / 1.05 * f64::from(k) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            LEFT - 6.0,
            py(y) + 4.0,
            y
        );
    }
    for &x in xs {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{x:.0}</text>"#,
            px(x),
            base + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">memory (GiB)</text>"#,
        (LEFT + right) / 2.0,
        y0 + PANEL - 10.0
    );
    for (i, (name, ys, line)) in series.iter().enumerate() {
        let (colour, dash) = match line {
            Line::Policy => (COLOURS[i % COLOURS.len()], ""),
            Line::Upper => ("#000000", r#" stroke-dasharray="6,4""#),
            Line::Lower => ("#000000", r#" stroke-dasharray="2,3""#),
        };
        let points: Vec<String> = xs
            .iter()
            .zip(ys)
            .map(|(&x, &y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            points.join(" ")
        );
        let ly = top + 16.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            right + 10.0,
            right + 34.0,
            right + 40.0,
            ly + 4.0,
            xml(name)
        );
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
