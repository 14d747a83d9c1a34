//! Building the multi-row INSERT for a 1,000-row batch on the client side, as the MySQL
//! writer does before its one round trip: plan the statements (row sizes against the packet
//! budget), take the statement text, then `mysql::bound_insert`, the writer's own code: both
//! times of every row formatted, 8,000 values bound (sqlx encodes each bind into the argument
//! buffer as it is added). The round trip
//! itself is the database's time, measured by `scripts/bench.sh` instead.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_benches::sample_new_events;
use vigil_core::UnixMillis;
use vigil_store::{EventRow, mysql, sql};

const ROWS: usize = 1000;

fn insert_sql(c: &mut Criterion) {
    let events = sample_new_events(ROWS);
    let created_at = UnixMillis::now();
    let request_ids: Vec<String> = (0..ROWS).map(|n| format!("req-{n:08}")).collect();
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .zip(&request_ids)
        .enumerate()
        .map(|(index, (event, request_id))| EventRow {
            id: index as u64 + 1,
            event,
            created_at,
            request_id,
        })
        .collect();
    // One statement: 1,000 rows are far below the placeholder limit and a 64 MiB packet.
    let plan = || {
        sql::plan_statements(
            rows.iter().map(sql::estimated_row_bytes),
            sql::MAX_ROWS_PER_STATEMENT,
            sql::statement_budget(64 * 1024 * 1024),
        )
    };
    let mut cache = sql::InsertSqlCache::default();
    let mut datetimes = String::with_capacity(ROWS * 2 * sql::DATETIME_LEN);

    let mut group = c.benchmark_group("insert_1000_rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("plan_and_sql_text", |b| {
        b.iter(|| {
            let plan = plan();
            let text = sql::insert_sql(plan[0].len());
            black_box((plan, text))
        })
    });
    group.bench_function("plan_format_and_bind", |b| {
        b.iter(|| {
            let plan = plan();
            debug_assert_eq!(plan.len(), 1);
            let statement = cache.for_rows(rows.len());
            let query = mysql::bound_insert(statement, &rows, &mut datetimes);
            drop(black_box(query));
        })
    });
    group.finish();
}

criterion_group!(benches, insert_sql);
criterion_main!(benches);
