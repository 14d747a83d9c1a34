//! A measurement, not a check (ignored by default; it loads a million rows): the same reads
//! on 10,000 and on 1,000,000 events, timed and with the rows each examines.
//!
//! ```sh
//! cargo test -p vigil-store --test store list_scale -- --ignored --nocapture
//! ```

use std::time::Instant;

use vigil_core::EventQuery;
use vigil_store::Store;

use crate::helpers::store_on_fresh_database;
use crate::list::{at, load_mix};

/// Runs of each query per measurement.
const RUNS: u32 = 200;

/// Rows per `Store::insert` while loading.
const LOAD_BATCH: usize = 5000;

/// Sources in the mix.
const SOURCES: u64 = 300;

/// Mean time per `list` and rows examined, for each query.
async fn measure(store: &Store, queries: &[String]) -> Vec<(String, f64, u64)> {
    let mut results = Vec::new();
    for parameters in queries {
        let query = EventQuery::parse(Some(parameters)).unwrap();
        let (_, examined) = store.list_with_rows_examined(&query).await.unwrap();
        // One untimed run warms the statement cache and the buffer pool pages it touches.
        store.list(&query).await.unwrap();
        let started = Instant::now();
        for _ in 0..RUNS {
            let page = store.list(&query).await.unwrap();
            std::hint::black_box(page);
        }
        let mean_micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
        results.push((parameters.clone(), mean_micros, examined));
    }
    results
}

fn queries(store_rows: u64, first_id: u64) -> Vec<String> {
    let deep = first_id + store_rows / 5;
    vec![
        "size=20".into(),
        "type=GAS&level=WARN&size=20".into(),
        format!("type=GAS&level=WARN&size=20&before={deep}"),
        "type=GAS&size=20".into(),
        "type=GAS,SMOKE&size=20".into(),
        "level=CRITICAL&size=20".into(),
        "source=site-17/sensor&size=20".into(),
        "source=site-17/sensor&type=GAS&size=20".into(),
        "type=GAS&level=WARN&size=20&page=5".into(),
        // The newest minute (ids are 10 ms apart), and one second early in the table.
        format!(
            "type=GAS&level=WARN&size=20&from={}",
            at((first_id + store_rows) as i64 * 10 - 60_000)
        ),
        format!(
            "type=GAS&size=20&from={}&to={}",
            at((first_id + 1000) as i64 * 10),
            at((first_id + 1100) as i64 * 10)
        ),
    ]
}

#[tokio::test]
#[ignore = "loads 1,000,000 rows; run by hand to measure"]
async fn filtered_reads_cost_the_same_on_ten_thousand_and_a_million_rows() {
    let (database, store) = store_on_fresh_database().await;
    let first_id = store.allocate_ids(1).await.unwrap()[0];
    let mut loaded = 0u64;
    let mut report = Vec::new();
    for target in [10_000u64, 1_000_000] {
        let started = Instant::now();
        load_mix(&store, (target - loaded) as usize, SOURCES, LOAD_BATCH).await;
        println!(
            "loaded {} rows in {:.1} s",
            target - loaded,
            started.elapsed().as_secs_f64()
        );
        loaded = target;
        report.push((target, measure(&store, &queries(target, first_id)).await));
    }
    let (small, large) = (&report[0].1, &report[1].1);
    println!(
        "{:<48} {:>12} {:>12} {:>10} {:>10}",
        "query", "10k µs", "1M µs", "10k rows", "1M rows"
    );
    for ((query, small_micros, small_rows), (large_query, large_micros, large_rows)) in
        small.iter().zip(large)
    {
        println!(
            "{query:<48} {small_micros:>12.0} {large_micros:>12.0} {small_rows:>10} {large_rows:>10}"
        );
        if large_query != query {
            println!("  on 1M rows: {large_query}");
        }
    }
    store.close().await;
    database.drop_database().await;
}
