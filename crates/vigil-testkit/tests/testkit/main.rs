//! Tests of the testkit itself, compiled as one binary (a module per file): the private servers
//! run with the settings they promise and go away on drop, and the fault proxy, the Galera
//! cluster, HAProxy and the Redis Sentinel group fail the way the tests that use them rely
//! on.

mod galera;
mod haproxy;
mod mariadb;
mod proxy;
mod redis_sentinel;
