//! `plot-latency CSV SVG [TITLE]`: draws p50/p99 latency against offered rate (the CSV that
//! `scripts/bench.sh` writes) as an SVG. See `vigil_loadtest::latency`.

use anyhow::{Context, bail};
use vigil_loadtest::latency;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (csv, svg, title) = match args.as_slice() {
        [csv, svg] => (csv, svg, "single-event ingest: latency vs offered rate"),
        [csv, svg, title] => (csv, svg, title.as_str()),
        _ => bail!("usage: plot-latency CSV SVG [TITLE]"),
    };
    let text = std::fs::read_to_string(csv).with_context(|| format!("read {csv}"))?;
    let points = latency::parse_csv(&text).map_err(anyhow::Error::msg)?;
    latency::draw_svg(&points, title, svg.as_ref()).map_err(anyhow::Error::msg)?;
    println!("{svg}: {} points", points.len());
    Ok(())
}
