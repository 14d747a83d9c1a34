//! TLS to the backing services: `rediss://` URLs and MySQL `ssl-mode` work because the redis
//! and sqlx crates are built with rustls. There is no TLS server here, so these tests show
//! that TLS is configured and attempted, not a finished handshake: the machine's MariaDB has
//! TLS disabled and its Redis speaks plain TCP.

use std::time::Duration;

use vigil_bus::{BusNames, RedisBus};
use vigil_store::{Store, StoreOptions};

fn names() -> BusNames {
    BusNames {
        recent_key: "vigil:test:tls:events:recent".into(),
        channel: "vigil:test:tls:events:new".into(),
        recent_size: 100,
    }
}

#[tokio::test]
async fn rediss_urls_are_accepted() {
    for url in [
        "rediss://cache.example.com:6380",
        "rediss://:secret@cache.example.com:6380/0",
        "rediss://default:secret@127.0.0.1:6379/#insecure",
    ] {
        redis::Client::open(url).unwrap_or_else(|error| panic!("{url}: {error}"));
        RedisBus::connect_lazy(url, names()).unwrap_or_else(|error| panic!("{url}: {error}"));
    }
}

#[tokio::test]
async fn a_rediss_connection_attempts_a_tls_handshake() {
    // The machine's Redis answers plain RESP, so a TLS client hello gets no valid answer.
    let bus = RedisBus::connect_lazy("rediss://127.0.0.1:6379", names()).unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(10), bus.ping()).await;
    assert!(
        !matches!(answered, Ok(Ok(()))),
        "a plain Redis must not answer a TLS client"
    );
}

#[tokio::test]
async fn mysql_ssl_mode_required_is_parsed_and_attempted() {
    let url = "mysql://root@127.0.0.1:3306/test?ssl-mode=required";
    let error = match Store::connect(url, &StoreOptions::default()).await {
        Ok(_) => panic!("the machine's MariaDB has TLS disabled, so ssl-mode=required must fail"),
        Err(error) => format!("{error:#} {error:?}"),
    };
    assert!(
        !error.contains("without TLS support") && !error.contains("InvalidUrl"),
        "TLS must be built in and the URL valid: {error}"
    );
    assert!(error.to_lowercase().contains("tls"), "{error}");
}

#[tokio::test]
async fn mysql_ssl_mode_preferred_falls_back_to_plain_on_a_server_without_tls() {
    let database = vigil_testkit::database::TestDatabase::create().await;
    let url = format!("{}?ssl-mode=preferred", database.url());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .expect("ssl-mode=preferred connects without TLS");
    store.ping().await.unwrap();
    store.close().await;
    database.drop_database().await;
}
