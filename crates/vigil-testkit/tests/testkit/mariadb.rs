//! A private mariadbd with non-default settings, that it can be killed and restarted with its
//! data, and that dropping it stops it.

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use vigil_testkit::mariadb::PrivateMariaDb;

#[tokio::test]
async fn private_server_runs_with_extra_args_and_stops_on_drop() {
    let server = PrivateMariaDb::start(&["--innodb-autoinc-lock-mode=2"])
        .await
        .unwrap();
    let port = server.port();
    assert_eq!(server.url(), format!("mysql://root@127.0.0.1:{port}/test"));
    let data_dir = server.data_dir();
    assert!(data_dir.is_dir());

    let mut connection = MySqlConnection::connect(&server.url()).await.unwrap();
    let lock_mode: i64 = sqlx::query_scalar("SELECT @@innodb_autoinc_lock_mode")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(lock_mode, 2);
    let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(database.as_deref(), Some("test"));
    connection.close().await.unwrap();

    drop(server);

    // Drop waits for the server to exit, so its port is closed at once.
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("port {port} still accepts connections after drop"),
    }
    assert!(!data_dir.exists(), "data directory left behind");
}

#[tokio::test]
async fn two_private_servers_run_side_by_side() {
    let (first, second) = tokio::join!(PrivateMariaDb::start(&[]), PrivateMariaDb::start(&[]));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.port(), second.port());
    for server in [&first, &second] {
        let mut connection = MySqlConnection::connect(&server.url()).await.unwrap();
        let port: u64 = sqlx::query_scalar("SELECT @@port")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(port, u64::from(server.port()));
    }
}

#[tokio::test]
async fn bad_server_option_fails_with_the_server_log() {
    let error = match PrivateMariaDb::start(&["--no-such-option-for-vigil"]).await {
        Ok(_) => panic!("mariadbd started with an unknown option"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(message.contains("no-such-option-for-vigil"), "{message}");
}

#[tokio::test]
async fn killed_server_refuses_connections_and_restarts_with_its_committed_rows() {
    let mut server = PrivateMariaDb::start(&[]).await.unwrap();
    let port = server.port();
    let mut connection = MySqlConnection::connect(&server.url()).await.unwrap();
    sqlx::query("CREATE TABLE survivors (id INT PRIMARY KEY) ENGINE=InnoDB")
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query("INSERT INTO survivors VALUES (1), (2)")
        .execute(&mut connection)
        .await
        .unwrap();

    server.kill();
    assert!(
        sqlx::query("SELECT 1")
            .execute(&mut connection)
            .await
            .is_err(),
        "the open connection died with the server"
    );
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("port {port} still accepts connections after kill"),
    }

    server.restart().await.unwrap();
    assert_eq!(server.port(), port, "a restart keeps the port");
    let mut connection = MySqlConnection::connect(&server.url()).await.unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM survivors ORDER BY id")
        .fetch_all(&mut connection)
        .await
        .unwrap();
    assert_eq!(ids, [1, 2], "committed rows survive the kill");
}
