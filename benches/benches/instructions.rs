//! The regression gate: instructions per operation of the hot paths, counted by valgrind.
//!
//! Wall-clock figures on a shared machine move by tens of percent from one run to the next;
//! the number of instructions a path executes does not (it moves only when the code, the
//! compiler or the dependencies change). So CI gates on instructions, and criterion stays for
//! people who want times.
//!
//! Each path runs twice under `valgrind --tool=cachegrind` (no cache simulation): once for a
//! warm-up call only, once for the warm-up and `iterations` more. The difference, divided by
//! `iterations`, is the cost of one operation with the set-up, the warm-up (lazy statics, CPU
//! feature detection) and the process's start and exit taken out. The results are compared
//! with the baseline committed in `benches/instructions-baseline.json`; a path more than
//! [`THRESHOLD_PERCENT`] above it fails the run. The table is printed either way.
//!
//! ```sh
//! cargo bench -p vigil-benches --bench instructions               # compare (CI does this)
//! cargo bench -p vigil-benches --bench instructions -- --save     # write a new baseline
//! ```
//!
//! Counts depend on the compiler: the baseline records the `rustc` that made it, and under
//! another one the table is printed with a warning instead of failing. Refresh the baseline
//! (and say why in the commit) when a change makes a path cheaper, when a costlier path is
//! the price of a feature, or after a toolchain upgrade.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_benches::{sample_bulk, sample_event, sample_new_events};
use vigil_core::{BodyFormat, EventFilter, EventParser, Limits, NewEvent, UnixMillis};
use vigil_realtime::{Hub, HubSettings, Registration};
use vigil_store::{EventRow, mysql, sql};

/// A path this much more expensive than its baseline fails the gate. Counts of the same
/// build repeat to within a few hundredths of a percent (hash seeds move a few probes), so 5 %
/// is a real change of code, not noise.
const THRESHOLD_PERCENT: f64 = 5.0;

/// A fixed time, so that every run formats the same digits.
const CREATED_AT: UnixMillis = UnixMillis(1_765_000_000_000);

/// One hot path: what one operation is, and how many to count.
struct HotPath {
    name: &'static str,
    operation: &'static str,
    iterations: u64,
    run: fn(u64),
}

const HOT_PATHS: &[HotPath] = &[
    HotPath {
        name: "parse_validate/single_event",
        operation: "one POST body of one ~120-byte event",
        iterations: 2000,
        run: parse_single,
    },
    HotPath {
        name: "parse_validate/bulk_1000",
        operation: "one POST body of 1,000 events",
        iterations: 20,
        run: parse_bulk,
    },
    HotPath {
        name: "encode/batch_1000",
        operation: "1,000 stored events to their JSON",
        iterations: 20,
        run: encode_batch,
    },
    HotPath {
        name: "insert_sql/bind_1000_rows",
        operation: "plan, format and bind a 1,000-row INSERT",
        iterations: 20,
        run: insert_build,
    },
    HotPath {
        name: "hub/deliver_to_1000_clients",
        operation: "one event fanned out to 1,000 subscribers and drained",
        iterations: 50,
        run: hub_deliver,
    },
];

fn parse_single(iterations: u64) {
    let body = sample_event(7);
    let mut parser = EventParser::new(Limits::default());
    for _ in 0..=iterations {
        black_box(parser.parse(black_box(body.as_bytes()), BodyFormat::Json)).expect("valid");
    }
}

fn parse_bulk(iterations: u64) {
    let body = sample_bulk(1000);
    let mut parser = EventParser::new(Limits::default());
    for _ in 0..=iterations {
        black_box(parser.parse(black_box(body.as_bytes()), BodyFormat::Json)).expect("valid");
    }
}

fn encode_batch(iterations: u64) {
    let events = sample_new_events(1000);
    let mut out = Vec::with_capacity(256 * 1000);
    for _ in 0..=iterations {
        out.clear();
        for (index, event) in events.iter().enumerate() {
            event
                .as_stored(
                    index as u64 + 1,
                    CREATED_AT,
                    "0193a5c2-7d4e-7b21-9c3f-5a1e2d3c4b5a",
                )
                .encode_into(&mut out);
        }
        black_box(out.len());
    }
}

fn insert_build(iterations: u64) {
    let events = sample_new_events(1000);
    let request_ids: Vec<String> = (0..events.len()).map(|n| format!("req-{n:08}")).collect();
    let rows = event_rows(&events, &request_ids);
    let mut cache = sql::InsertSqlCache::default();
    let mut datetimes = String::with_capacity(rows.len() * 2 * sql::DATETIME_LEN);
    for _ in 0..=iterations {
        let plan = sql::plan_statements(
            rows.iter().map(sql::estimated_row_bytes),
            sql::MAX_ROWS_PER_STATEMENT,
            sql::statement_budget(64 * 1024 * 1024),
        );
        let statement = cache.for_rows(plan[0].len());
        drop(black_box(mysql::bound_insert(
            statement,
            &rows,
            &mut datetimes,
        )));
    }
}

fn event_rows<'a>(events: &'a [NewEvent], request_ids: &'a [String]) -> Vec<EventRow<'a>> {
    events
        .iter()
        .zip(request_ids)
        .enumerate()
        .map(|(index, (event, request_id))| EventRow {
            id: index as u64 + 1,
            event,
            created_at: CREATED_AT,
            request_id,
        })
        .collect()
}

fn hub_deliver(iterations: u64) {
    const CLIENTS: usize = 1000;
    let hub = Hub::new(HubSettings {
        client_queue: 1024,
        max_clients: CLIENTS,
        ping_interval: Duration::from_secs(20),
    });
    // Half take everything, half filter on the event's own type.
    let mut clients: Vec<Registration> = (0..CLIENTS)
        .map(|index| {
            let types = if index % 2 == 0 {
                vec![]
            } else {
                vec!["GAS".to_owned()]
            };
            hub.register(EventFilter {
                types,
                ..EventFilter::default()
            })
            .expect("room for every client")
        })
        .collect();
    let event = sample_new_events(1).remove(0);
    let mut json = Vec::with_capacity(256);
    for id in 1..=iterations + 1 {
        json.clear();
        // A new id each time: the hub drops an id it has fanned out before.
        event
            .as_stored(id, CREATED_AT, "req-1")
            .encode_into(&mut json);
        assert_eq!(hub.deliver([json.as_slice()]), 1);
        for client in &mut clients {
            while let Some(frame) = client.try_next_frame() {
                black_box(frame);
            }
        }
    }
}

/// The committed counts: instructions per operation, and the compiler that made them.
#[derive(Serialize, Deserialize)]
struct Baseline {
    rustc: String,
    valgrind: String,
    instructions_per_operation: BTreeMap<String, u64>,
}

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("instructions-baseline.json")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The child mode: `--run NAME ITERATIONS`, under valgrind.
    if let Some(at) = args.iter().position(|arg| arg == "--run") {
        let name = &args[at + 1];
        let iterations = args[at + 2].parse().expect("a count of iterations");
        let path = HOT_PATHS
            .iter()
            .find(|path| path.name == name)
            .expect("a known hot path");
        (path.run)(iterations);
        return ExitCode::SUCCESS;
    }
    // cargo bench passes its own flags (and criterion's, when the whole package's benches run
    // with some): only --save means something here.
    let save = args.iter().any(|arg| arg == "--save");
    match measure_and_compare(save) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("instruction counts: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Counts every path, prints the table against the baseline, and says whether the gate passed.
fn measure_and_compare(save: bool) -> Result<bool, String> {
    let valgrind = tool_version("valgrind", &["--version"])
        .ok_or("valgrind is not installed (apt install valgrind)")?;
    let rustc = tool_version("rustc", &["--version"]).unwrap_or_else(|| "unknown".to_owned());
    let mut counts = BTreeMap::new();
    for path in HOT_PATHS {
        let warm_up_only = count_instructions(path.name, 0)?;
        let with_iterations = count_instructions(path.name, path.iterations)?;
        let per_operation = with_iterations.saturating_sub(warm_up_only) / path.iterations;
        counts.insert(path.name.to_owned(), per_operation);
    }

    let file = baseline_path();
    if save {
        let baseline = Baseline {
            rustc,
            valgrind,
            instructions_per_operation: counts.clone(),
        };
        let text = serde_json::to_string_pretty(&baseline).expect("serializable") + "\n";
        std::fs::write(&file, text).map_err(|error| format!("{}: {error}", file.display()))?;
        print_table(&counts, None);
        println!("wrote {}", file.display());
        return Ok(true);
    }

    let baseline: Option<Baseline> = std::fs::read_to_string(&file)
        .ok()
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| format!("{}: {error}", file.display()))?;
    let Some(baseline) = baseline else {
        print_table(&counts, None);
        println!("no baseline at {}: nothing to compare with", file.display());
        return Ok(true);
    };
    let regressions = print_table(&counts, Some(&baseline.instructions_per_operation));
    if baseline.rustc != rustc {
        println!(
            "the baseline was counted with {} and this run with {rustc}: compilers differ, so \
             the gate only warns; refresh the baseline with this compiler",
            baseline.rustc
        );
        return Ok(true);
    }
    if regressions.is_empty() {
        println!("instruction counts within +{THRESHOLD_PERCENT} % of the baseline");
        Ok(true)
    } else {
        println!(
            "more than +{THRESHOLD_PERCENT} % over the baseline: {}. If the cost is meant, \
             refresh the baseline (cargo bench -p vigil-benches --bench instructions -- --save) \
             and say why in the commit.",
            regressions.join(", ")
        );
        Ok(false)
    }
}

/// Prints one line per path; returns the names of the paths over the threshold.
fn print_table(
    counts: &BTreeMap<String, u64>,
    baseline: Option<&BTreeMap<String, u64>>,
) -> Vec<String> {
    let mut regressions = Vec::new();
    println!(
        "{:<30} {:>14} {:>14} {:>9}  one operation",
        "hot path", "instructions", "baseline", "change"
    );
    for path in HOT_PATHS {
        let count = counts[path.name];
        let before = baseline
            .and_then(|baseline| baseline.get(path.name))
            .copied();
        let (before_text, change_text) = match before {
            Some(before) if before > 0 => {
                let change = (count as f64 - before as f64) / before as f64 * 100.0;
                if change > THRESHOLD_PERCENT {
                    regressions.push(path.name.to_owned());
                }
                (before.to_string(), format!("{change:+.2} %"))
            }
            _ => ("-".to_owned(), "new".to_owned()),
        };
        println!(
            "{:<30} {:>14} {:>14} {:>9}  {}",
            path.name, count, before_text, change_text, path.operation
        );
    }
    regressions
}

/// Total instructions of this binary running one path `iterations` times (after a warm-up
/// call), as cachegrind counts them.
fn count_instructions(name: &str, iterations: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--branch-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(&exe)
        .args(["--run", name, &iterations.to_string()])
        .output()
        .map_err(|error| format!("running valgrind: {error}"))?;
    let report = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{name} under valgrind failed:\n{report}"));
    }
    // "==123== I   refs:      1,234,567"
    report
        .lines()
        .find_map(|line| {
            line.split_once("I   refs:")
                .map(|(_, count)| count.trim().replace(',', ""))
        })
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| format!("no instruction count in valgrind's report:\n{report}"))
}

fn tool_version(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
