//! A private three-node MariaDB Galera cluster on loopback, for tests of what Vigil does when a
//! database node dies under it (docs/high-availability.md, *MariaDB Galera behind HAProxy*),
//! without touching the machine's shared MariaDB.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use vigil_testkit::galera::PrivateGaleraCluster;
//!
//! let mut cluster = PrivateGaleraCluster::start().await?; // three nodes, all Synced
//! let url = cluster.url(1); // mysql://root@127.0.0.1:<port>/test
//! cluster.kill(1); // SIGKILL: nodes 2 and 3 carry on as a two-node primary component
//! cluster.restart(1).await?; // rejoins (full state transfer) and is Synced again
//! drop(cluster); // every node killed, every directory removed
//! # Ok(())
//! # }
//! ```
//!
//! [`PrivateGaleraCluster::start`] gives each node four free `127.0.0.1` ports (MySQL, group
//! communication, IST, SST) and a directory of its own under one temp dir. Node 1's data
//! directory is made by `mariadb-install-db` (root may log in over TCP with an empty password)
//! and bootstrapped with `--wsrep-new-cluster`; the database `test` is created there. Nodes 2 and
//! 3 start empty and join one after the other, each receiving a full copy by `rsync` state
//! transfer (SST), so the grants and `test` are the same on every node. Start-up returns once
//! every node reports `wsrep_local_state_comment = Synced` and `wsrep_cluster_size = 3`: 10 to
//! 15 seconds on a two-core machine, most of it the two state transfers (a few seconds each, of
//! which rsync itself takes well under one: the SST script's own start-up and pauses dominate).
//!
//! The nodes are [`crate::mariadb`]'s private servers (same small buffer pool and redo log, same
//! `--no-defaults` start, same port-clash retry), plus what Galera needs: row-based binlog format,
//! interleaved auto-increment locks, a 16 MiB write-set cache instead of 128 MiB, and every
//! address spelled out, since the defaults (port 4567 and its neighbours on the host's address)
//! would clash between nodes and between tests. The cluster name is unique per cluster, so a
//! node can never join another test's cluster through a recycled port. When the tests run as
//! root the nodes run as `mysql`: the SST script runs as the server's user and writes into the
//! joiner's data directory.
//!
//! Failure detection keeps Galera's defaults, so tests see what production sees: after
//! [`PrivateGaleraCluster::kill`], the surviving nodes go on answering, and they declare the dead
//! node gone after `evs.suspect_timeout` (5 s); until then they report a cluster of three, and a
//! commit on them may wait for that verdict.
//! [`PrivateGaleraCluster::wait_until_running_nodes_synced`] waits for the two-node primary
//! component. A killed node has no clean position (`seqno: -1`), so
//! [`PrivateGaleraCluster::restart`] rejoins by a full SST, like a node restarted without
//! `--wsrep-recover`: 4 to 6 seconds, longer on a busy machine.
//!
//! Galera replication is synchronous for commits but applied asynchronously: a read on node 3
//! right after a commit on node 1 may not see it yet, unless the reading session sets
//! `wsrep_sync_wait = 1` (a causal read).
//!
//! Dropping the cluster SIGKILLs every node with what it started (SST scripts, `rsync`) and removes
//! the directories. If the test process dies, the kernel kills the nodes; only the directories
//! (about 160 MB) are left behind.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tempfile::TempDir;

use crate::mariadb::{
    CONNECT_ATTEMPT_TIMEOUT, POLL_INTERVAL, ServerPaths, create_test_database,
    install_data_directory, root_options, spawn_server, wait_until_answering,
};
use crate::process::{
    PORT_ATTEMPTS, ProcessGroup, StartFailure, find_program, free_ports, give_to_server_user,
    with_context,
};

/// How many nodes a cluster has: the smallest that survives losing one with a majority.
pub const NODE_COUNT: usize = 3;

/// The Galera 4 provider library, where Debian's `galera-4` and other distributions put it.
const PROVIDER_PATHS: &[&str] = &[
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
];

/// Programs the rsync state transfer runs (as the server's user, from `$PATH`).
const SST_PROGRAMS: &[&str] = &["wsrep_sst_rsync", "rsync"];

/// Server settings every node needs for Galera, on top of the private server's small ones.
const GALERA_SERVER_ARGS: &[&str] = &[
    "--wsrep-on=ON",
    "--wsrep-sst-method=rsync",
    "--binlog-format=ROW",
    "--innodb-autoinc-lock-mode=2",
    "--default-storage-engine=InnoDB",
];

/// Size of each node's write-set cache (Galera's default is 128 MiB, preallocated on disk).
const GCACHE_SIZE: &str = "16M";

/// How long one node may take from its start to Synced, state transfer included.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the running nodes may take to agree on who is in the cluster: a killed node is
/// declared gone after Galera's suspect timeout (5 s).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest group name gcomm accepts; a longer one fails every group message between the nodes.
const MAX_CLUSTER_NAME_BYTES: usize = 32;

/// Ports a node needs: MySQL, group communication, IST and SST.
const PORTS_PER_NODE: usize = 4;

/// `wsrep_local_state_comment` of a node that is a full member, in step with the cluster.
const SYNCED: &str = "Synced";

/// `wsrep_cluster_status` of a node in a component that has quorum and takes writes.
const PRIMARY: &str = "Primary";

/// A three-node MariaDB Galera cluster of the test's own, each node on its own ports and data
/// directory. Dropping it kills every node and removes the directories.
pub struct PrivateGaleraCluster {
    /// Nodes 1, 2 and 3, in that order; dropped (killed) before `directory` is removed, as
    /// fields drop in declaration order.
    nodes: Vec<GaleraNode>,
    /// `wsrep_cluster_name`: unique, so nodes only ever join their own cluster.
    name: String,
    /// Path of the Galera provider library.
    provider: String,
    /// Holds one directory per node; removed after the nodes are killed.
    directory: TempDir,
}

/// One node: its addresses, its files and, while it runs, its process.
struct GaleraNode {
    /// 1, 2 or 3; the node is named `node<number>` in the cluster.
    number: usize,
    /// Its ports on `127.0.0.1`; kept across [`PrivateGaleraCluster::restart`].
    ports: NodePorts,
    /// Data directory, logs, socket and pid file.
    paths: ServerPaths,
    /// The running `mariadbd`, or `None` after a kill.
    server: Option<ProcessGroup>,
}

/// The `127.0.0.1` ports of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodePorts {
    /// Clients (`--port`).
    mysql: u16,
    /// Group communication between the nodes (`gmcast.listen_addr`).
    gcomm: u16,
    /// Incremental state transfer into this node (`ist.recv_addr`).
    ist: u16,
    /// Full state transfer into this node: the rsync daemon (`wsrep_sst_receive_address`).
    sst: u16,
}

impl NodePorts {
    fn from_chunk(ports: &[u16]) -> NodePorts {
        debug_assert_eq!(ports.len(), PORTS_PER_NODE);
        NodePorts {
            mysql: ports[0],
            gcomm: ports[1],
            ist: ports[2],
            sst: ports[3],
        }
    }

    fn all(&self) -> [u16; PORTS_PER_NODE] {
        [self.mysql, self.gcomm, self.ist, self.sst]
    }
}

/// What a node says about itself and its cluster (`SHOW GLOBAL STATUS LIKE 'wsrep_%'`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// `wsrep_local_state_comment`: `Synced`, `Donor/Desynced`, `Joining`, `Joined`, ...
    pub state: String,
    /// `wsrep_cluster_size`: the members of the component this node is in.
    pub cluster_size: u64,
    /// `wsrep_cluster_status` is `Primary`: the component has quorum and takes writes.
    pub primary: bool,
}

impl NodeStatus {
    /// Synced, in a primary component of `cluster_size` nodes.
    pub fn is_synced_member_of(&self, cluster_size: u64) -> bool {
        self.state == SYNCED && self.primary && self.cluster_size == cluster_size
    }
}

/// How a node is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StartMode {
    /// Node 1's first start: a new cluster (`--wsrep-new-cluster`).
    Bootstrap,
    /// First start of nodes 2 and 3: join; other ports are tried if these were taken.
    FirstJoin,
    /// After a kill: join again on the same ports (the proxy in front knows them).
    Rejoin,
}

impl PrivateGaleraCluster {
    /// Starts the three nodes (node 1 bootstraps, nodes 2 and 3 join by rsync SST), creates the
    /// database `test` and waits until every node is Synced in a cluster of three.
    pub async fn start() -> io::Result<PrivateGaleraCluster> {
        let provider = find_program(PROVIDER_PATHS).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("the Galera provider is missing (install galera-4): {error}"),
            )
        })?;
        for program in SST_PROGRAMS {
            find_program(&[program]).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "rsync state transfer needs {program} \
                         (install rsync and mariadb-server): {error}"
                    ),
                )
            })?;
        }
        let directory = tempfile::Builder::new().prefix("vigil-galera-").tempdir()?;
        // The nodes' directories are inside; the server's user must be able to reach them.
        give_to_server_user(directory.path())?;

        let ports = free_ports(NODE_COUNT * PORTS_PER_NODE)?;
        let mut nodes = Vec::with_capacity(NODE_COUNT);
        for (index, chunk) in ports.chunks(PORTS_PER_NODE).enumerate() {
            let number = index + 1;
            nodes.push(GaleraNode {
                number,
                ports: NodePorts::from_chunk(chunk),
                paths: ServerPaths::create(&directory.path().join(format!("node{number}")))?,
                server: None,
            });
        }
        let mut cluster = PrivateGaleraCluster {
            nodes,
            name: cluster_name(),
            provider,
            directory,
        };

        // Only node 1 needs system tables: the others receive node 1's data directory by SST.
        install_data_directory(&cluster.nodes[0].paths, &[]).await?;
        cluster.start_node(1, StartMode::Bootstrap).await?;
        let connection = MySqlConnection::connect_with(&root_options(cluster.port(1)))
            .await
            .map_err(|error| io::Error::other(format!("connect to node 1: {error}")))?;
        create_test_database(connection).await?;
        for number in 2..=NODE_COUNT {
            cluster.start_node(number, StartMode::FirstJoin).await?;
        }
        cluster.wait_until_running_nodes_synced().await?;
        Ok(cluster)
    }

    /// `mysql://root@127.0.0.1:<port>/test` of node `node` (1, 2 or 3).
    pub fn url(&self, node: usize) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port(node))
    }

    /// The MySQL port of node `node` (1, 2 or 3) on `127.0.0.1`; the same after a restart.
    pub fn port(&self, node: usize) -> u16 {
        self.node(node).ports.mysql
    }

    /// The data directory of node `node` (removed on drop).
    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.node(node).paths.data.clone()
    }

    /// The directory holding every node's files (removed on drop).
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// The nodes whose process runs (not killed), in order.
    pub fn running_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|node| node.server.is_some())
            .map(|node| node.number)
            .collect()
    }

    /// SIGKILLs node `node` (1, 2 or 3) and whatever it started, like a crash. Returns once the
    /// process is gone and its ports are closed; the other nodes notice within Galera's suspect
    /// timeout. A node that is already down is left as it is.
    pub fn kill(&mut self, node: usize) {
        // Dropping the process group kills and reaps it.
        self.node_mut(node).server = None;
    }

    /// Starts node `node` again on its ports and data directory, after killing it if it runs,
    /// and waits until it is Synced in a primary component of all the running nodes. It rejoins
    /// the running nodes (never bootstraps, node 1 included), so at least one other node must run.
    pub async fn restart(&mut self, node: usize) -> io::Result<()> {
        self.kill(node);
        if self.running_nodes().is_empty() {
            return Err(io::Error::other(format!(
                "node {node} cannot rejoin: no other node runs (a cluster with every node \
                 killed is not restarted by this testkit)"
            )));
        }
        self.start_node(node, StartMode::Rejoin).await
    }

    /// Asks node `node` for its Galera state.
    pub async fn status(&self, node: usize) -> io::Result<NodeStatus> {
        let context = |error: String| io::Error::other(format!("status of node {node}: {error}"));
        let mut connection = MySqlConnection::connect_with(&root_options(self.port(node)))
            .await
            .map_err(|error| context(error.to_string()))?;
        let status = query_status(&mut connection).await.map_err(context)?;
        connection
            .close()
            .await
            .map_err(|error| context(error.to_string()))?;
        Ok(status)
    }

    /// Waits until every running node is Synced in a primary component made of exactly the
    /// running nodes: after [`PrivateGaleraCluster::kill`], until the survivors have declared the
    /// killed node gone (Galera's `evs.suspect_timeout`, 5 s).
    pub async fn wait_until_running_nodes_synced(&self) -> io::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let running = self.running_nodes();
        let size = u64::try_from(running.len()).unwrap_or(u64::MAX);
        for number in running {
            loop {
                let status = self.status(number).await;
                if matches!(&status, Ok(status) if status.is_synced_member_of(size)) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "node {number} was not Synced in a cluster of {size} within {}s \
                             (last: {status:?}); log:\n{}",
                            SETTLE_TIMEOUT.as_secs(),
                            self.node(number).paths.log_tail()
                        ),
                    ));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }

    fn node(&self, number: usize) -> &GaleraNode {
        assert!(
            (1..=NODE_COUNT).contains(&number),
            "nodes are numbered 1 to {NODE_COUNT}, not {number}"
        );
        &self.nodes[number - 1]
    }

    fn node_mut(&mut self, number: usize) -> &mut GaleraNode {
        assert!(
            (1..=NODE_COUNT).contains(&number),
            "nodes are numbered 1 to {NODE_COUNT}, not {number}"
        );
        &mut self.nodes[number - 1]
    }

    /// Starts node `number` and waits until it is Synced in a cluster of every running node.
    async fn start_node(&mut self, number: usize, mode: StartMode) -> io::Result<()> {
        debug_assert!(self.node(number).server.is_none());
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let expected_size = u64::try_from(self.running_nodes().len() + 1).unwrap_or(u64::MAX);
        let mut last_port_clash = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let args = self.node_args(number, mode);
            let node = self.node(number);
            let mut server = spawn_server(&node.paths, node.ports.mysql, &args).await?;
            match wait_until_synced(&mut server, node, expected_size, deadline).await {
                Ok(()) => {
                    self.node_mut(number).server = Some(server);
                    return Ok(());
                }
                Err(StartFailure::PortTaken(log_tail)) if mode != StartMode::Rejoin => {
                    last_port_clash = log_tail;
                    // Stop the failed attempt before its ports are given up.
                    drop(server);
                    self.node_mut(number).ports = self.fresh_ports(number)?;
                }
                Err(StartFailure::PortTaken(log_tail)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "node {number} cannot rejoin: another process took one of its ports \
                             {:?} while it was down; log:\n{log_tail}",
                            self.node(number).ports
                        ),
                    ));
                }
                Err(StartFailure::Other(error)) => {
                    return Err(with_context(error, &format!("start node {number}")));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "node {number} could not bind free ports in {PORT_ATTEMPTS} attempts; last log:\n\
                 {last_port_clash}"
            ),
        ))
    }

    /// Free ports for node `number` that no other node uses (the others may not have bound
    /// theirs yet).
    fn fresh_ports(&self, number: usize) -> io::Result<NodePorts> {
        let taken: Vec<u16> = self
            .nodes
            .iter()
            .filter(|node| node.number != number)
            .flat_map(|node| node.ports.all())
            .collect();
        for _ in 0..PORT_ATTEMPTS {
            let ports = free_ports(PORTS_PER_NODE)?;
            if ports.iter().all(|port| !taken.contains(port)) {
                return Ok(NodePorts::from_chunk(&ports));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free ports for node {number} apart from the other nodes' {taken:?}"),
        ))
    }

    /// The Galera part of node `number`'s command line.
    fn node_args(&self, number: usize, mode: StartMode) -> Vec<String> {
        let ports = self.node(number).ports;
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.ports.gcomm))
            .collect();
        let mut args: Vec<String> = GALERA_SERVER_ARGS
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.extend([
            format!("--wsrep-provider={}", self.provider),
            format!("--wsrep-cluster-name={}", self.name),
            format!("--wsrep-cluster-address=gcomm://{}", peers.join(",")),
            format!("--wsrep-node-name=node{number}"),
            format!("--wsrep-node-address=127.0.0.1:{}", ports.gcomm),
            format!("--wsrep-node-incoming-address=127.0.0.1:{}", ports.mysql),
            format!("--wsrep-sst-receive-address=127.0.0.1:{}", ports.sst),
            format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};\
                 ist.recv_addr=127.0.0.1:{};gcache.size={GCACHE_SIZE}",
                ports.gcomm, ports.ist
            ),
        ]);
        if mode == StartMode::Bootstrap {
            args.push(String::from("--wsrep-new-cluster"));
        }
        args
    }
}

/// A `wsrep_cluster_name` no other cluster has: `vigil-` and 16 random hex digits.
fn cluster_name() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("vigil-{}", &random[..16]);
    debug_assert!(name.len() <= MAX_CLUSTER_NAME_BYTES);
    name
}

/// Waits until the freshly started `node` answers and is Synced in a primary component of
/// `expected_size` nodes. A joiner only opens its MySQL port once its state transfer is done.
async fn wait_until_synced(
    server: &mut ProcessGroup,
    node: &GaleraNode,
    expected_size: u64,
    deadline: Instant,
) -> Result<(), StartFailure> {
    let mut connection: Option<MySqlConnection> = None;
    loop {
        server.ensure_running("mariadbd", || node.paths.log_tail())?;
        let open = match connection.as_mut() {
            Some(open) => open,
            None => connection.insert(
                wait_until_answering(server, node.ports.mysql, &node.paths, deadline).await?,
            ),
        };
        let last_status =
            match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, query_status(open)).await {
                Ok(Ok(status)) if status.is_synced_member_of(expected_size) => return Ok(()),
                Ok(Ok(status)) => format!("{status:?}"),
                Ok(Err(error)) => {
                    connection = None;
                    error
                }
                Err(_) => {
                    // A query abandoned half-way leaves the connection unusable.
                    connection = None;
                    String::from("status query timed out")
                }
            };
        if Instant::now() >= deadline {
            return Err(StartFailure::Other(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "node {} was not Synced in a cluster of {expected_size} within {}s \
                     (last: {last_status}); log:\n{}",
                    node.number,
                    NODE_START_TIMEOUT.as_secs(),
                    node.paths.log_tail()
                ),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads the node's Galera state. `SHOW STATUS` is allowed even on a node outside the primary
/// component, where most statements are refused.
async fn query_status(connection: &mut MySqlConnection) -> Result<NodeStatus, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SHOW GLOBAL STATUS WHERE Variable_name IN \
         ('wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_status')",
    )
    .fetch_all(connection)
    .await
    .map_err(|error| error.to_string())?;
    let mut status = NodeStatus::default();
    for (name, value) in rows {
        match name.to_ascii_lowercase().as_str() {
            "wsrep_local_state_comment" => status.state = value,
            "wsrep_cluster_size" => {
                status.cluster_size = value
                    .parse()
                    .map_err(|error| format!("wsrep_cluster_size {value:?}: {error}"))?;
            }
            "wsrep_cluster_status" => status.primary = value == PRIMARY,
            _ => {}
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::{MAX_CLUSTER_NAME_BYTES, NodeStatus, cluster_name};

    #[test]
    fn cluster_names_fit_gcomm_and_differ() {
        let (first, second) = (cluster_name(), cluster_name());
        assert!(first.len() <= MAX_CLUSTER_NAME_BYTES, "{first}");
        assert_ne!(first, second);
    }

    #[test]
    fn only_a_synced_primary_member_of_the_expected_size_counts() {
        let synced = NodeStatus {
            state: String::from("Synced"),
            cluster_size: 3,
            primary: true,
        };
        assert!(synced.is_synced_member_of(3));
        assert!(!synced.is_synced_member_of(2));
        let joined = NodeStatus {
            state: String::from("Joined"),
            ..synced.clone()
        };
        assert!(!joined.is_synced_member_of(3));
        let non_primary = NodeStatus {
            primary: false,
            ..synced
        };
        assert!(!non_primary.is_synced_member_of(3));
    }
}
