//! The private Galera cluster: it forms with three Synced nodes that replicate, a killed node
//! leaves a two-node primary component that takes writes, and a restarted node catches up.

use std::time::Instant;

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use vigil_testkit::galera::{NODE_COUNT, PrivateGaleraCluster};

/// The table the tests write notes into, one row per note.
const NOTES_TABLE: &str = "galera_notes";

pub(crate) async fn connect(url: &str) -> MySqlConnection {
    MySqlConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}"))
}

pub(crate) async fn create_notes_table(url: &str) {
    let mut connection = connect(url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {NOTES_TABLE} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         note VARCHAR(64) NOT NULL) ENGINE=InnoDB"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
}

pub(crate) async fn insert_note(url: &str, note: &str) {
    let mut connection = connect(url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {NOTES_TABLE} (note) VALUES (?)"
    )))
    .bind(note)
    .execute(&mut connection)
    .await
    .unwrap_or_else(|error| panic!("insert {note:?} through {url}: {error}"));
}

/// Every note, sorted, read as a causal read: the server first applies everything the cluster
/// committed before the read began, so a commit on another node is seen.
pub(crate) async fn causal_notes(url: &str) -> Vec<String> {
    let mut connection = connect(url).await;
    sqlx::query("SET SESSION wsrep_sync_wait = 1")
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT note FROM {NOTES_TABLE} ORDER BY note"
    )))
    .fetch_all(&mut connection)
    .await
    .unwrap()
}

/// The port of the server that answers on `url` (through a proxy: which node it reached).
pub(crate) async fn serving_port(url: &str) -> Result<u16, sqlx::Error> {
    let mut connection = MySqlConnection::connect(url).await?;
    let port: u64 = sqlx::query_scalar("SELECT @@port")
        .fetch_one(&mut connection)
        .await?;
    Ok(u16::try_from(port).expect("a TCP port"))
}

fn assert_refused(port: u16) {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("port {port} still accepts connections"),
    }
}

fn sorted(notes: &[&str]) -> Vec<String> {
    let mut notes: Vec<String> = notes.iter().map(|note| note.to_string()).collect();
    notes.sort();
    notes
}

#[tokio::test]
async fn galera_cluster_forms_with_three_synced_nodes_that_replicate_and_drop_removes_it() {
    let started = Instant::now();
    let cluster = PrivateGaleraCluster::start().await.unwrap();
    eprintln!("three-node cluster Synced in {:?}", started.elapsed());

    let mut ports = Vec::new();
    for node in 1..=NODE_COUNT {
        let status = cluster.status(node).await.unwrap();
        assert!(status.is_synced_member_of(3), "node {node}: {status:?}");
        let port = cluster.port(node);
        assert_eq!(
            cluster.url(node),
            format!("mysql://root@127.0.0.1:{port}/test")
        );
        assert_eq!(serving_port(&cluster.url(node)).await.unwrap(), port);
        ports.push(port);
    }
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), NODE_COUNT, "every node has its own port");
    assert_eq!(cluster.running_nodes(), [1, 2, 3]);

    create_notes_table(&cluster.url(1)).await;
    insert_note(&cluster.url(1), "written on node 1").await;
    assert_eq!(
        causal_notes(&cluster.url(3)).await,
        ["written on node 1"],
        "node 3 has node 1's row"
    );

    let directory = cluster.directory().to_path_buf();
    assert!(cluster.data_dir(3).is_dir());
    drop(cluster);

    // Drop waits for every node to exit, so their ports are closed at once.
    for port in ports {
        assert_refused(port);
    }
    assert!(!directory.exists(), "cluster directory left behind");
}

#[tokio::test]
async fn galera_killed_node_leaves_a_primary_that_takes_writes_and_catches_up_on_restart() {
    let mut cluster = PrivateGaleraCluster::start().await.unwrap();
    create_notes_table(&cluster.url(1)).await;
    insert_note(&cluster.url(1), "before the kill").await;

    // Node 1 bootstrapped the cluster: its restart must join, not bootstrap a second cluster.
    cluster.kill(1);
    assert_refused(cluster.port(1));
    assert_eq!(cluster.running_nodes(), [2, 3]);

    let killed = Instant::now();
    insert_note(&cluster.url(2), "while node 1 is down").await;
    eprintln!(
        "a commit on node 2 took {:?} after the kill",
        killed.elapsed()
    );
    cluster.wait_until_running_nodes_synced().await.unwrap();
    eprintln!(
        "nodes 2 and 3 formed a primary component {:?} after the kill",
        killed.elapsed()
    );
    for node in [2, 3] {
        let status = cluster.status(node).await.unwrap();
        assert!(status.is_synced_member_of(2), "node {node}: {status:?}");
    }
    assert_eq!(
        causal_notes(&cluster.url(3)).await,
        sorted(&["before the kill", "while node 1 is down"])
    );

    let restarted = Instant::now();
    cluster.restart(1).await.unwrap();
    eprintln!("node 1 rejoined and Synced in {:?}", restarted.elapsed());
    for node in 1..=NODE_COUNT {
        let status = cluster.status(node).await.unwrap();
        assert!(status.is_synced_member_of(3), "node {node}: {status:?}");
    }
    assert_eq!(
        causal_notes(&cluster.url(1)).await,
        sorted(&["before the kill", "while node 1 is down"]),
        "the restarted node has what was written while it was down"
    );

    // A full member again: what it commits reaches the others.
    insert_note(&cluster.url(1), "after the restart").await;
    assert_eq!(
        causal_notes(&cluster.url(2)).await,
        sorted(&[
            "after the restart",
            "before the kill",
            "while node 1 is down"
        ])
    );
}
