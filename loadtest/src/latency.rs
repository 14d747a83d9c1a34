//! The latency-vs-offered-rate picture of BENCHMARKS.md (`plot-latency`).
//!
//! Saturation figures hide latency: a server at its peak rate queues requests. `scripts/bench.sh`
//! runs single-event ingest at fixed offered rates and writes one CSV line per run; this module
//! reads those lines and draws p50 and p99 against the offered rate as an SVG (plotters' SVG
//! backend: text as `<text>` elements, no font files needed).
//!
//! CSV columns, with a header line: `offered_rps,achieved_rps,p50_ms,p99_ms,errors`, then any
//! further columns (`bench.sh` adds how far the generator fell behind its schedule), ignored
//! here. The latency axis is logarithmic: past saturation p99 grows by orders of magnitude,
//! and a linear axis would flatten every point below it.

use std::path::Path;

use plotters::prelude::*;

/// One fixed-rate run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    /// Requests per second asked of the load generator.
    pub offered_rps: f64,
    /// Requests per second it achieved (below `offered_rps` past saturation).
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Failed requests (non-201 answers, connection errors).
    pub errors: u64,
}

/// Parses the CSV (header line first; blank lines ignored).
pub fn parse_csv(text: &str) -> Result<Vec<RatePoint>, String> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = lines.next().ok_or("empty CSV")?;
    if !header
        .trim()
        .starts_with("offered_rps,achieved_rps,p50_ms,p99_ms,errors")
    {
        return Err(format!("unexpected CSV header {header:?}"));
    }
    let mut points = Vec::new();
    for (index, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || format!("line {}: {line:?}", index + 2);
        if fields.len() < 5 {
            return Err(bad());
        }
        let number = |text: &str| text.parse::<f64>().map_err(|_| bad());
        points.push(RatePoint {
            offered_rps: number(fields[0])?,
            achieved_rps: number(fields[1])?,
            p50_ms: number(fields[2])?,
            p99_ms: number(fields[3])?,
            errors: fields[4].parse().map_err(|_| bad())?,
        });
    }
    if points.is_empty() {
        return Err("no data lines".into());
    }
    points.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
    Ok(points)
}

/// Draws p50 and p99 against offered rate into an SVG file at `path`, titled `title`.
pub fn draw_svg(points: &[RatePoint], title: &str, path: &Path) -> Result<(), String> {
    let max_rate = points.iter().map(|p| p.offered_rps).fold(1.0, f64::max) * 1.05;
    let max_latency = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.5;
    let min_latency = points
        .iter()
        .map(|p| p.p50_ms)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0)
        * 0.7;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let failed = |error: &dyn std::fmt::Display| format!("draw {}: {error}", path.display());
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_rate, (min_latency..max_latency).log_scale())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered rate (requests/s)")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|rate| format!("{rate:.0}"))
        .y_label_formatter(&|ms| {
            if *ms >= 10.0 {
                format!("{ms:.0}")
            } else {
                format!("{ms:.1}")
            }
        })
        .draw()
        .map_err(|e| failed(&e))?;
    for (label, color, pick) in [
        (
            "p50",
            BLUE,
            (|p: &RatePoint| p.p50_ms) as fn(&RatePoint) -> f64,
        ),
        ("p99", RED, |p: &RatePoint| p.p99_ms),
    ] {
        let series: Vec<(f64, f64)> = points.iter().map(|p| (p.offered_rps, pick(p))).collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|xy| Circle::new(xy, 4, color.filled())),
            )
            .map_err(|e| failed(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "offered_rps,achieved_rps,p50_ms,p99_ms,errors,late_sends\n\
                       2000,1999.5,0.9,2100,0,12\n\
                       1000,1000,0.8,1.5,0,0\n\n";

    #[test]
    fn the_csv_is_read_and_sorted_by_offered_rate() {
        let points = parse_csv(CSV).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].offered_rps, 1000.0);
        assert_eq!(points[1].achieved_rps, 1999.5);
        assert_eq!(points[1].p99_ms, 2100.0);
    }

    #[test]
    fn bad_csv_is_refused_with_the_line() {
        assert!(parse_csv("").is_err());
        assert!(parse_csv("a,b\n1,2").unwrap_err().contains("header"));
        let error =
            parse_csv("offered_rps,achieved_rps,p50_ms,p99_ms,errors\n1,2,x,4,0").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn the_svg_shows_both_percentiles() {
        let dir = std::env::temp_dir().join(format!("vigil-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.svg");
        draw_svg(&parse_csv(CSV).unwrap(), "ingest", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        for text in ["p50", "p99", "offered rate", "ingest"] {
            assert!(svg.contains(text), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
