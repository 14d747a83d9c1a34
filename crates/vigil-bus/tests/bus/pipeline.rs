//! The batcher and the publisher together, against the real MariaDB and Redis: what the
//! pipeline commits reaches the channel in commit order, byte for byte as stored.

use std::sync::Arc;
use std::time::Duration;

use vigil_core::{Level, NewEvent};
use vigil_ingest::{Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};
use vigil_testkit::database::TestDatabase;

fn event(source: &str) -> NewEvent {
    NewEvent {
        source: source.to_owned(),
        event_type: "GAS".into(),
        level: Level::Warn,
        payload: Some(r#"{"ppm":1}"#.into()),
        occurred_at: None,
    }
}

async fn store_for(database: &TestDatabase) -> Store {
    Store::connect(database.url(), &StoreOptions::default())
        .await
        .expect("connect")
}

#[tokio::test]
async fn committed_batches_are_published_in_commit_order_as_the_stored_json() {
    use futures_util::StreamExt;
    use vigil_bus::{BusNames, Publisher, RedisBus};

    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let prefix = format!("vigil:test:{}", uuid::Uuid::new_v4().simple());
    let names = BusNames {
        recent_key: format!("{prefix}:events:recent"),
        channel: format!("{prefix}:events:new"),
        recent_size: 100,
    };
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut subscriber = client.get_async_pubsub().await.unwrap();
    subscriber.subscribe(&names.channel).await.unwrap();
    let bus = RedisBus::connect("redis://127.0.0.1:6379", names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus, 64);
    let ingest = Ingest::start(
        store.clone(),
        IngestConfig::default(),
        Some(Arc::new(publisher.clone())),
    )
    .unwrap();
    let queue = ingest.queue();

    let acks: Vec<_> = (0..50)
        .map(|n| {
            queue
                .submit(vec![event(&format!("pub{n}"))], format!("r{n}"))
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for ack in acks {
        ids.extend(ack.wait().await.unwrap());
    }

    let mut messages = subscriber.on_message();
    for id in &ids {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("every committed event is published")
            .unwrap();
        let payload: Vec<u8> = message.get_payload().unwrap();
        let stored = store.get(*id).await.unwrap().unwrap();
        assert_eq!(
            payload,
            stored.as_ref().encode(),
            "published bytes are the stored event's JSON, in commit order"
        );
    }
    drop(messages);
    ingest.shutdown(Duration::from_secs(10)).await;
    publisher.shutdown(Duration::from_secs(5)).await;
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&names.recent_key)
        .arg(format!("{}:gap", names.recent_key))
        .query_async(&mut connection)
        .await
        .unwrap();
    database.drop_database().await;
}
