//! `VIGIL_RETENTION`: events older than the period go (counted in `/metrics`), newer ones and
//! new posts stay, and a bad period is refused at start.

use crate::helpers::{TestApp, event_json, test_config};
use crate::metrics::scrape;
use crate::ws::post_one;

#[tokio::test]
async fn events_older_than_the_retention_period_are_deleted_and_newer_ones_stay() {
    // A first run creates the table; old rows are then written as an older deployment would
    // have left them.
    let app = TestApp::spawn().await;
    let kept_before = post_one(&app, event_json("recent")).await;
    let database = app.stop().await;
    let pool = sqlx::MySqlPool::connect(database.url()).await.unwrap();
    const OLD: u64 = 2500;
    for chunk in 0..(OLD / 500) {
        let mut sql = String::from(
            "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) VALUES ",
        );
        for n in 0..500 {
            let id = 1_000_000_000 + chunk * 500 + n;
            if n > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({id}, 'old', 'GAS', 'INFO', NULL, NULL, UTC_TIMESTAMP(3) - INTERVAL 3 HOUR, 'r-{id}')"
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }

    let config = test_config(database.url(), &["--retention", "2h"]);
    let app = TestApp::spawn_on(database, config).await;
    let kept_after = post_one(&app, event_json("new")).await;
    let count_old = || async {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE source = 'old'")
            .fetch_one(&pool)
            .await
            .unwrap();
        count
    };
    for _ in 0..600 {
        if count_old().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count_old().await, 0, "expired events are deleted");
    for id in [kept_before, kept_after] {
        assert_eq!(app.get(&format!("/api/events/{id}")).await.status, 200);
    }
    let metrics = scrape(&app).await;
    assert_eq!(
        metrics.value("vigil_retention_deleted_events_total", &[]),
        OLD as f64
    );
    // Ingest goes on meanwhile.
    post_one(&app, event_json("still-posting")).await;
    pool.close().await;
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn retention_is_off_by_default_and_bad_periods_are_refused() {
    let app = TestApp::spawn().await;
    let id = post_one(&app, event_json("kept")).await;
    assert_eq!(app.get(&format!("/api/events/{id}")).await.status, 200);
    assert_eq!(
        scrape(&app)
            .await
            .value("vigil_retention_deleted_events_total", &[]),
        0.0
    );
    app.stop().await;
    for bad in ["30", "10s", "1.5d", "forever"] {
        let parsed = vigil_server::config::Config::from_args(&[
            "vigil".to_owned(),
            "--retention".to_owned(),
            bad.to_owned(),
        ]);
        assert!(parsed.is_err(), "{bad} was accepted");
    }
}
