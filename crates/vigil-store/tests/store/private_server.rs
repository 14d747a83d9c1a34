//! The id scheme on a server with settings the shared one lacks: a private `mariadbd`.

use sqlx::{Connection, Executor};
use vigil_store::{Store, StoreOptions};
use vigil_testkit::mariadb::PrivateMariaDb;

use crate::ids::{assert_every_acknowledged_id_is_its_row, insert_batches};

/// Rows each `INSERT … SELECT` of the pressure load adds.
const PRESSURE_SELECT_ROWS: u64 = 50;

/// Multi-row inserts into an AUTO_INCREMENT table, the load under which mode 2 interleaves the
/// ids of concurrent statements.
async fn autoinc_pressure(url: String, worker: u64, rounds: u64) -> u64 {
    let mut connection = sqlx::mysql::MySqlConnection::connect(&url).await.unwrap();
    let mut inserted = 0;
    for round in 0..rounds {
        let rows = 1 + (worker * 13 + round * 7) % 200;
        let values: Vec<String> = (0..rows)
            .map(|row| format!("('w{worker}-r{round}-{row}')"))
            .collect();
        let sql = format!(
            "INSERT INTO autoinc_pressure (note) VALUES {}",
            values.join(",")
        );
        connection.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        // A bulk INSERT … SELECT, whose row count the server cannot know in advance.
        connection
            .execute("INSERT INTO autoinc_pressure (note) SELECT note FROM pressure_source")
            .await
            .unwrap();
        inserted += rows + PRESSURE_SELECT_ROWS;
    }
    let _ = connection.close().await;
    inserted
}

/// Plain single-row inserts into the events table by another client, with ids from a third
/// store, interleaved with the stores' batches.
async fn single_row_inserts(store: Store, url: String, rounds: u64) -> Vec<u64> {
    let mut connection = sqlx::mysql::MySqlConnection::connect(&url).await.unwrap();
    let mut acknowledged = Vec::new();
    for _ in 0..rounds {
        let id = store.allocate_ids(1).await.unwrap()[0];
        let batch = crate::helpers::Batch::for_ids(vec![id]);
        let rows = batch.rows();
        let row = &rows[0];
        // `YYYY-MM-DDTHH:MM:SS.sssZ` → the DATETIME(3) literal `YYYY-MM-DD HH:MM:SS.sss`.
        let datetime = |at: vigil_core::UnixMillis| at.to_string()[..23].replace('T', " ");
        let created = datetime(row.created_at);
        let occurred = row.event.occurred_at.map(datetime);
        sqlx::query(
            "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.id)
        .bind(row.event.source.as_str())
        .bind(row.event.event_type.as_str())
        .bind(row.event.level.as_str())
        .bind(row.event.payload.as_deref())
        .bind(occurred)
        .bind(created)
        .bind(row.request_id)
        .execute(&mut connection)
        .await
        .unwrap();
        acknowledged.push(id);
    }
    let _ = connection.close().await;
    acknowledged
}

#[tokio::test]
async fn ids_are_exact_on_a_server_with_autoinc_lock_mode_2() {
    let server = PrivateMariaDb::start(&["--innodb-autoinc-lock-mode=2"])
        .await
        .expect("start a private mariadbd");
    let url = server.url();
    let first = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let second = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let third = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();

    let mut connection = sqlx::mysql::MySqlConnection::connect(&url).await.unwrap();
    let mode: i64 = sqlx::query_scalar("SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED)")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, 2, "the private server runs the interleaved lock mode");
    connection
        .execute("CREATE TABLE autoinc_pressure (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, note VARCHAR(32) NOT NULL) ENGINE=InnoDB")
        .await
        .unwrap();
    connection
        .execute("CREATE TABLE pressure_source (note VARCHAR(32) NOT NULL) ENGINE=InnoDB")
        .await
        .unwrap();
    let source_rows: Vec<String> = (0..PRESSURE_SELECT_ROWS)
        .map(|row| format!("('s{row}')"))
        .collect();
    connection
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO pressure_source (note) VALUES {}",
            source_rows.join(",")
        )))
        .await
        .unwrap();

    let mut batch_tasks = Vec::new();
    for task in 0..8u64 {
        let store = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        batch_tasks.push(tokio::spawn(insert_batches(store, task, 12)));
    }
    let singles = tokio::spawn(single_row_inserts(third.clone(), url.clone(), 300));
    let pressure: Vec<_> = (0..3u64)
        .map(|worker| tokio::spawn(autoinc_pressure(url.clone(), worker, 25)))
        .collect();

    let mut acknowledged = Vec::new();
    for task in batch_tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.extend(singles.await.unwrap());
    let mut pressure_rows = 0;
    for task in pressure {
        pressure_rows += task.await.unwrap();
    }

    assert_every_acknowledged_id_is_its_row(&first, &url, &acknowledged).await;
    let autoinc_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM autoinc_pressure")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        autoinc_rows as u64, pressure_rows,
        "the pressure load really ran"
    );

    let _ = connection.close().await;
    for store in [first, second, third] {
        store.close().await;
    }
    drop(server);
}
