//! The private HAProxy in front of a Galera cluster: clients reach the active node, and when it
//! is killed their sessions are cut and new ones reach a backup within seconds.

use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use vigil_testkit::galera::PrivateGaleraCluster;
use vigil_testkit::haproxy::PrivateHaproxy;

use crate::galera::{causal_notes, connect, create_notes_table, insert_note, serving_port};

/// Deadline for the proxy to route to another node after a kill or a restart. The checks mark a
/// node down after two failures 500 ms apart and up after two successes; only a broken proxy
/// (or a badly overloaded machine) gets near this.
const REROUTE_DEADLINE: Duration = Duration::from_secs(20);

/// Polls new connections through the proxy until one is served on `port`.
async fn wait_until_served_by(proxy: &PrivateHaproxy, port: u16) -> Duration {
    let started = Instant::now();
    loop {
        let last = serving_port(&proxy.url()).await;
        if matches!(last, Ok(served) if served == port) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < REROUTE_DEADLINE,
            "the proxy did not route to port {port} within {REROUTE_DEADLINE:?} \
             (last: {last:?}); haproxy log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ping(connection: &mut MySqlConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(connection).await
}

#[tokio::test]
async fn haproxy_routes_to_the_active_galera_node_and_fails_over_to_a_backup() {
    let mut cluster = PrivateGaleraCluster::start().await.unwrap();
    let proxy = PrivateHaproxy::in_front_of(&cluster).await.unwrap();
    assert_eq!(
        proxy.url(),
        format!("mysql://root@127.0.0.1:{}/test", proxy.port())
    );

    assert_eq!(serving_port(&proxy.url()).await.unwrap(), cluster.port(1));
    create_notes_table(&proxy.url()).await;
    insert_note(&proxy.url(), "through the proxy to node 1").await;
    let mut writer = connect(&proxy.url()).await;
    assert_eq!(ping(&mut writer).await.unwrap(), 1);

    cluster.kill(1);
    assert!(
        ping(&mut writer).await.is_err(),
        "a session on the killed node is cut, not left hanging"
    );
    let failover = wait_until_served_by(&proxy, cluster.port(2)).await;
    eprintln!("new connections reach node 2 {failover:?} after node 1 was killed");

    insert_note(&proxy.url(), "through the proxy to node 2").await;
    assert_eq!(
        causal_notes(&cluster.url(3)).await,
        ["through the proxy to node 1", "through the proxy to node 2"]
    );

    // Node 1 is the active server again once it is back and passes its checks.
    cluster.restart(1).await.unwrap();
    let failback = wait_until_served_by(&proxy, cluster.port(1)).await;
    eprintln!("new connections reach node 1 {failback:?} after it was Synced again");

    let port = proxy.port();
    drop(proxy);
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("the proxy's port {port} still accepts connections after drop"),
    }
}
