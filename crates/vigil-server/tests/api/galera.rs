//! Vigil on a MariaDB Galera cluster, as a high-availability deployment runs it: three nodes
//! (the tests' own, on loopback ports) behind HAProxy (TCP, health checks, one active node and
//! two backups), two Vigil instances under sustained single and bulk ingest, and a node killed
//! with SIGKILL:
//! - the active node: HAProxy moves new connections to a backup; each instance settles the
//!   batch its dead session may have left (without `KILL`ing by an id that belongs to another
//!   node) and ingest goes on through the proxy within seconds;
//! - a backup node that one instance reaches directly (an instance whose own node dies): that
//!   instance answers every post within the bound, 503 while its node is gone; the instance
//!   behind the proxy goes on.
//!
//! Either way every answer comes within the bound, and every acknowledged event is on the
//! surviving nodes exactly once under its id (read with `wsrep_sync_wait`, so what another node
//! committed is seen).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, Row as _};
use vigil_testkit::database::TestDatabase;
use vigil_testkit::galera::PrivateGaleraCluster;
use vigil_testkit::haproxy::PrivateHaproxy;

use crate::helpers::{ExtraInstance, TestApp, test_config};
use crate::producers::{Answer, Exchange, Load, Producers, Tally, check_table, report_failover};

/// The default answer bound (`VIGIL_REQUEST_TIMEOUT_S`) plus what HTTP and a busy machine may
/// add on the client's side.
const ANSWER_BOUND: Duration = Duration::from_secs(18);
/// Posters spread over both instances.
const LOAD: Load = Load {
    single: 8,
    bulk: 4,
    bulk_events: 20,
    answer_bound: ANSWER_BOUND,
    backoff: Duration::from_millis(100),
};
const WARM_UP: Duration = Duration::from_secs(3);
/// How long the load goes on after the kill.
const AFTER_KILL: Duration = Duration::from_secs(20);
/// Ingest through the proxy must be acknowledged again within this long after the kill:
/// Galera's verdict on the dead node (`evs.suspect_timeout`, 5 s), HAProxy's health checks
/// (about 1 s) and Vigil settling the batch the dead node's session may have left (its
/// server-side statement bound, 6 s by default).
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

/// A cluster, the proxy in front of it, and the name of a fresh database on it (the database
/// itself belongs to the test's first instance, which drops it at the end).
struct Site {
    cluster: PrivateGaleraCluster,
    proxy: PrivateHaproxy,
    database_name: String,
}

impl Site {
    async fn start() -> (Site, TestDatabase) {
        let cluster = PrivateGaleraCluster::start()
            .await
            .expect("a three-node galera cluster");
        let proxy = PrivateHaproxy::in_front_of(&cluster)
            .await
            .expect("haproxy in front of it");
        let database = TestDatabase::create_on(&proxy.url()).await;
        let site = Site {
            cluster,
            proxy,
            database_name: database.name().to_owned(),
        };
        (site, database)
    }

    /// This database on one node, directly.
    fn url_on_node(&self, node: usize) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{}",
            self.cluster.port(node),
            self.database_name
        )
    }

    /// Every row as a surviving `node` sees it after applying everything certified before.
    async fn rows_on(&self, node: usize) -> Vec<(u64, String)> {
        let mut connection = sqlx::mysql::MySqlConnection::connect(&self.url_on_node(node))
            .await
            .expect("connect to a surviving node");
        connection
            .execute("SET SESSION wsrep_sync_wait = 1")
            .await
            .expect("causal reads");
        let rows = sqlx::query("SELECT id, source FROM events ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("read the events table");
        let _ = connection.close().await;
        rows.iter()
            .map(|row| (row.get::<u64, _>(0), row.get::<String, _>(1)))
            .collect()
    }
}

/// The first acknowledgement of a post to `instance` sent after `since`, as time after it.
pub(crate) fn first_ack_after(
    exchanges: &[Exchange],
    instance: usize,
    since: Instant,
) -> Option<Duration> {
    exchanges
        .iter()
        .filter(|exchange| {
            exchange.instance == instance
                && exchange.sent_at > since
                && matches!(exchange.answer, Answer::Acked(_))
        })
        .map(|exchange| exchange.answered_at - since)
        .min()
}

/// Checks the surviving nodes agree and hold exactly what was acknowledged.
async fn check_survivors(site: &Site, survivors: &[usize], exchanges: &[Exchange]) -> Tally {
    let first = site.rows_on(survivors[0]).await;
    for &node in &survivors[1..] {
        assert_eq!(
            site.rows_on(node).await,
            first,
            "node {node} holds what node {} holds",
            survivors[0]
        );
    }
    check_table("galera", exchanges, &first)
}

#[tokio::test]
async fn two_instances_behind_haproxy_go_on_when_the_active_node_dies() {
    let (mut site, database) = Site::start().await;
    let url = database.url().to_owned();
    let first = TestApp::spawn_on(database, test_config(&url, &[])).await;
    let second = ExtraInstance::start(&url).await;
    let producers = Producers::start(&[first.addr, second.addr], LOAD);
    tokio::time::sleep(WARM_UP).await;

    site.cluster.kill(1);
    let killed_at = Instant::now();
    tokio::time::sleep(AFTER_KILL).await;
    let exchanges = producers.stop().await;
    second.stop().await;
    let database = first.stop().await;

    let tally = check_survivors(&site, &[2, 3], &exchanges).await;
    database.drop_database().await;
    let mut slowest_back = Duration::ZERO;
    for instance in 0..2 {
        let back = first_ack_after(&exchanges, instance, killed_at)
            .unwrap_or_else(|| panic!("instance {instance} acknowledged nothing after the kill"));
        assert!(
            back <= FAILOVER_BOUND,
            "instance {instance} took {back:?} to acknowledge posts again\n{}",
            site.proxy.log()
        );
        slowest_back = slowest_back.max(back);
    }
    report_failover(
        "Galera, 3 nodes behind HAProxy, 2 Vigil instances, the active node SIGKILLed (first 201: after the kill, the later instance)",
        &tally,
        slowest_back,
    );
}

#[tokio::test]
async fn an_instance_whose_own_node_dies_answers_within_the_bound_and_the_proxy_goes_on() {
    let (mut site, database) = Site::start().await;
    // One instance behind the proxy (node 1 active), one on node 3 directly.
    let url = database.url().to_owned();
    let behind_proxy = TestApp::spawn_on(database, test_config(&url, &[])).await;
    let on_node_3 = ExtraInstance::start(&site.url_on_node(3)).await;
    let instances: [SocketAddr; 2] = [behind_proxy.addr, on_node_3.addr];
    let producers = Producers::start(&instances, LOAD);
    tokio::time::sleep(WARM_UP).await;

    site.cluster.kill(3);
    let killed_at = Instant::now();
    tokio::time::sleep(AFTER_KILL).await;
    let exchanges = producers.stop().await;
    on_node_3.stop().await;
    let database = behind_proxy.stop().await;

    let tally = check_survivors(&site, &[1, 2], &exchanges).await;
    database.drop_database().await;
    // The instance on the dead node refused what it could not store, promptly once it knew.
    let settled_by = killed_at + ANSWER_BOUND;
    let orphaned: Vec<_> = exchanges
        .iter()
        .filter(|exchange| exchange.instance == 1 && exchange.sent_at > settled_by)
        .collect();
    assert!(!orphaned.is_empty(), "posts went to the orphaned instance");
    assert!(
        orphaned
            .iter()
            .all(|exchange| exchange.answer == Answer::Refused),
        "an instance whose node is dead refuses posts with 503"
    );
    let back = first_ack_after(&exchanges, 0, killed_at)
        .expect("the instance behind the proxy goes on acknowledging");
    assert!(
        back <= FAILOVER_BOUND,
        "the instance behind the proxy took {back:?} to acknowledge posts again"
    );
    report_failover(
        "Galera, an instance on node 3 directly and one behind HAProxy, node 3 SIGKILLed (first 201: the proxy's instance, after the kill)",
        &tally,
        back,
    );
}
