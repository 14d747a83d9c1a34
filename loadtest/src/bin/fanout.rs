//! `fanout`: measures a Vigil server's WebSocket fan-out, or weighs idle connections
//! (`--idle N`). See loadtest/README.md.

use clap::Parser;

use vigil_loadtest::fanout::{self, Args};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.json;
    let runtime = fanout::runtime(args.threads)?;
    let report = runtime.block_on(fanout::run(args))?;
    print!("{}", report.render(json));
    Ok(())
}
