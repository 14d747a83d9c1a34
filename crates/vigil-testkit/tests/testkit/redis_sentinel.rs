//! The private Redis servers: a lone one runs without persistence and stops for good when
//! killed, and a Sentinel group fails over to its replica when its primary is killed, keeping
//! what was replicated.

use std::time::Duration;

use vigil_testkit::redis_sentinel::{PrivateRedis, RedisSentinelGroup};

/// Generous bound on a failover (Sentinel's own timing makes it a few seconds).
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

#[tokio::test]
async fn a_private_redis_keeps_nothing_on_disk_and_refuses_connections_once_killed() {
    let mut server = PrivateRedis::start(&[]).await.unwrap();
    let mut connection = connect(&server.url()).await.unwrap();
    let saved: String = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query_async::<Vec<String>>(&mut connection)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(saved, "", "no persistence");
    let port = server.port();

    server.kill();
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("port {port} still accepts connections after the kill"),
    }
    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
    assert!(ping.is_err(), "the old connection is dead");
}

#[tokio::test]
async fn killing_the_primary_makes_the_sentinels_promote_the_replica() {
    let mut group = RedisSentinelGroup::start().await.unwrap();
    assert_eq!(group.sentinels().split(',').count(), 3);
    let primary = group.primary().await.unwrap();
    let mut connection = connect(&format!("redis://{primary}")).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("replicated")
        .arg("yes")
        .query_async(&mut connection)
        .await
        .unwrap();
    // Wait until the replica has it, so the failover cannot lose it.
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query_async(&mut connection)
        .await
        .unwrap();

    let killed = group.kill_primary().await.unwrap();
    assert_eq!(killed, primary);
    let promoted = group
        .wait_for_new_primary(killed, FAILOVER_LIMIT)
        .await
        .unwrap();
    assert_ne!(promoted, killed);
    let mut connection = connect(&format!("redis://{promoted}")).await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("replicated")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, "yes");
    let _: () = redis::cmd("SET")
        .arg("written-after")
        .arg(1)
        .query_async(&mut connection)
        .await
        .expect("the promoted server takes writes");
    assert_eq!(group.primary().await.unwrap(), promoted);
}
