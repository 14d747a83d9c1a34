//! The baseline for Vigil's bulk ingest: raw multi-row INSERTs of N-row batches into the
//! same `events` table (same indexes) from one connection, through the same driver.
//!
//! `raw_insert <database-url> [rows-per-batch=1000] [seconds=15] [connections=1]` prints
//! rows/s. Ids come from far above Vigil's (2^50 upward) so both can share a table. Used by
//! `scripts/bench.sh` with one connection (the reference bulk ingest is held to); more
//! connections, each inserting its own batches concurrently, show what the server gains from
//! overlapping writers on the same machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, MySqlConnection};
use vigil_core::{BodyFormat, EventParser, Limits};

const ID_BASE: u64 = 1 << 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: raw_insert <database-url> [rows] [seconds] [connections]")?;
    let rows: usize = args.next().map_or(Ok(1000), |v| v.parse())?;
    let seconds: u64 = args.next().map_or(Ok(15), |v| v.parse())?;
    let connections: usize = args.next().map_or(Ok(1), |v| v.parse())?;

    // The same events the bulk load test posts, validated the same way.
    let body = vigil_benches::sample_bulk(rows);
    let events = EventParser::new(Limits {
        max_bulk_events: rows,
        ..Limits::default()
    })
    .parse(body.as_bytes(), BodyFormat::Json)?
    .events;
    debug_assert_eq!(events.len(), rows);

    let mut connection = MySqlConnection::connect(&url).await?;
    let start_id: u64 = sqlx::query_scalar(
        "SELECT CAST(GREATEST(COALESCE(MAX(id), 0) + 1, ?) AS UNSIGNED) FROM events",
    )
    .bind(ID_BASE)
    .fetch_one(&mut connection)
    .await?;
    let _ = connection.close().await;

    let next_id = Arc::new(AtomicU64::new(start_id));
    let events = Arc::new(events);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let writers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (url, next_id, events) = (url.clone(), next_id.clone(), events.clone());
            tokio::spawn(async move { insert_until(&url, &events, &next_id, until).await })
        })
        .collect();
    let mut inserted = 0usize;
    for writer in writers {
        inserted += writer.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let on = match connections {
        0 | 1 => "one connection".to_owned(),
        n => format!("{n} connections"),
    };
    println!(
        "raw multi-row INSERT, {rows}-row batches, {on}: {inserted} rows in {elapsed:.1} s = {:.0} rows/s",
        inserted as f64 / elapsed
    );
    Ok(())
}

/// One connection inserting `events` as one autocommit multi-row INSERT after another until
/// `until`, each batch under the next free ids; the rows it inserted.
async fn insert_until(
    url: &str,
    events: &[vigil_core::NewEvent],
    next_id: &AtomicU64,
    until: Instant,
) -> Result<usize, sqlx::Error> {
    let rows = events.len();
    let mut connection = MySqlConnection::connect(url).await?;
    connection.execute("SET time_zone = '+00:00'").await?;
    let placeholders = vec!["(?,?,?,?,?,?,?,?)"; rows].join(",");
    let sql = format!(
        "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) VALUES {placeholders}"
    );
    let mut inserted = 0usize;
    while Instant::now() < until {
        let created_at = created_at_now();
        let first_id = next_id.fetch_add(rows as u64, Ordering::Relaxed);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for (id, event) in (first_id..).zip(events) {
            query = query
                .bind(id)
                .bind(event.source.as_str())
                .bind(event.event_type.as_str())
                .bind(event.level.as_str())
                .bind(event.payload.as_deref())
                .bind(None::<&str>)
                .bind(created_at.as_str())
                .bind("raw-insert-baseline");
        }
        connection.execute(query).await?;
        inserted += rows;
    }
    Ok(inserted)
}

/// `YYYY-MM-DD HH:MM:SS.sss` for now, as Vigil binds `created_at`.
fn created_at_now() -> String {
    let mut out = Vec::new();
    vigil_core::UnixMillis::now().write_rfc3339(&mut out);
    let text = String::from_utf8(out).expect("ascii");
    text.replacen('T', " ", 1).trim_end_matches('Z').to_owned()
}
