//! `scripts/capacity.sh`, the capacity model of docs/scaling.md: its answers for the worked
//! examples against a fixture of round unit costs (worked out by hand below), its refusals,
//! and that the repository's own BENCHMARKS.md carries every unit cost it reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn capacity(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/capacity.sh"))
        .args(args)
        .output()
        .expect("run bash scripts/capacity.sh")
}

fn answer(args: &[&str]) -> Value {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/capacity-benchmarks.md");
    let mut all = vec!["--benchmarks", fixture.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let output = capacity(&all);
    assert!(
        output.status.success(),
        "capacity.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn close(value: &Value, expected: f64) {
    let got = value.as_f64().expect("a number");
    assert!(
        (got - expected).abs() < 1e-6 * expected.max(1.0),
        "{got} != {expected}"
    );
}

#[test]
fn every_dashboard_seeing_every_event() {
    // 10,000 events/s, 200 dashboards: 2,000,000 deliveries/s. Vigil: 10,000 × 20 µs = 0.2
    // CPU of ingest + 2,000,000 × 1 µs = 2.0 of deliveries; 2 instances would each carry
    // (2.2 + 1 × 10,000 × 2 µs) / 2 = 1.11 CPU, over the 1.0 budget (2 CPUs at 50 %); 3 carry
    // (2.2 + 0.04) / 3 = 0.75 each.
    let a = answer(&["--sensors", "10000", "--hz", "1", "--dashboards", "200"]);
    close(&a["events_per_s"], 10_000.0);
    close(&a["deliveries_per_s"], 2_000_000.0);
    assert_eq!(a["instances"], 3);
    close(&a["vigil_cores"], 2.24);
    assert_eq!(a["clients_per_instance"], 67);
    close(&a["client_memory_mib_per_instance"], 670.0 / 1024.0);
    // MariaDB: 10,000 rows/s × 20 µs; Redis: 10,000 × (5 + 2 further subscribers × 4) µs, and
    // out 10,000 × (300 + 2 × 280) bytes per second.
    close(&a["database_rows_per_s"], 10_000.0);
    close(&a["database_cores"], 0.2);
    close(&a["redis_cores"], 0.13);
    close(&a["redis_egress_mib_per_s"], 8_600_000.0 / 1_048_576.0);
    // The ceiling, with each further instance posting: 10,000 × (5 + 2 × 10) µs.
    close(&a["redis_cores_posting_instances"], 0.25);
    assert_eq!(a["warnings"], serde_json::json!([]));
}

#[test]
fn dashboards_watching_their_own_site() {
    // 100,000 events/s over 50 sites; 5,000 dashboards each receiving its site's 2,000/s:
    // 10,000,000 deliveries/s = 10 CPU, + 2 of ingest; n instances carry
    // (12 + (n − 1) × 0.2) / n ≤ 1.0 from n = 15.
    let a = answer(&[
        "--sensors",
        "100000",
        "--dashboards",
        "5000",
        "--sites",
        "50",
        "--per-site",
    ]);
    close(&a["deliveries_per_s"], 10_000_000.0);
    assert_eq!(a["instances"], 15);
    close(&a["vigil_cores"], 14.8);
    // Redis: 100,000 × (5 + 14 × 4) µs = 6.1 CPU and 100,000 × (300 + 14 × 280) B/s out: both
    // past what one Redis should carry, and the answer says so.
    close(&a["redis_cores"], 6.1);
    close(&a["redis_egress_mib_per_s"], 422_000_000.0 / 1_048_576.0);
    let warnings = a["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("one thread"));
    assert!(warnings[1].as_str().unwrap().contains("egress"));
}

#[test]
fn gateways_posting_bulks_use_the_bulk_costs() {
    // 20,000 events/s in bulks: Vigil 20,000 × 5 µs = 0.1 CPU, no dashboards: the minimum of 2
    // instances; MariaDB's cost is per row either way.
    let a = answer(&["--sensors", "20000", "--bulk"]);
    assert_eq!(a["instances"], 2);
    close(&a["vigil_cores"], 0.1 + 20_000.0 * 2e-6);
    close(&a["database_cores"], 0.4);
    close(&a["redis_cores"], 20_000.0 * (1.0 + 4.0) / 1e6);
    close(
        &a["redis_cores_posting_instances"],
        20_000.0 * (1.0 + 10.0) / 1e6,
    );
}

#[test]
fn redis_past_half_a_core_only_with_every_instance_posting_is_a_warning_of_its_own() {
    // 40,000 events/s, no dashboards: 2 instances ((0.8 + 0.08) / 2 CPU each). Redis by the
    // model: 40,000 × (5 + 4) µs = 0.36 CPU; with the further instance posting too:
    // 40,000 × (5 + 10) µs = 0.6, past half a core.
    let a = answer(&["--sensors", "40000"]);
    assert_eq!(a["instances"], 2);
    close(&a["redis_cores"], 0.36);
    close(&a["redis_cores_posting_instances"], 0.6);
    let warnings = a["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("every instance posting")
    );
}

#[test]
fn a_page_without_the_posting_instances_cost_answers_without_the_ceiling() {
    // Pages written before that measurement still answer, from the model alone.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/capacity-benchmarks.md");
    let page: String = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .filter(|line| !line.contains("redis_us_per_event_per_posting_instance"))
        .map(|line| format!("{line}\n"))
        .collect();
    let older =
        std::env::temp_dir().join(format!("vigil-capacity-older-{}.md", std::process::id()));
    std::fs::write(&older, page).unwrap();
    let output = capacity(&[
        "--benchmarks",
        older.to_str().unwrap(),
        "--json",
        "--sensors",
        "40000",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(&older).unwrap();
    let a: Value = serde_json::from_slice(&output.stdout).unwrap();
    close(&a["redis_cores"], 0.36);
    assert!(a["redis_cores_posting_instances"].is_null());
    assert_eq!(a["warnings"], serde_json::json!([]));
}

#[test]
fn nonsense_is_refused_with_a_reason() {
    let output = capacity(&["--sensors", "10", "--hz", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hz above 0"));
    let output = capacity(&[
        "--sensors",
        "10",
        "--benchmarks",
        "/nonexistent/BENCHMARKS.md",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn the_repositorys_benchmarks_carry_every_unit_cost() {
    // The text answer, from the BENCHMARKS.md that scripts/bench.sh wrote.
    let output = capacity(&[
        "--benchmarks",
        repo().join("BENCHMARKS.md").to_str().unwrap(),
        "--sensors",
        "10000",
        "--dashboards",
        "200",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Vigil instances"), "{text}");
    assert!(text.contains("unit costs from"), "{text}");
    assert!(text.contains("with every instance posting"), "{text}");
}
