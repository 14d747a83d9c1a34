//! Integration tests of vigil-bus against the machine's real Redis, each test under its own key
//! and channel names (`vigil:test:<uuid>:…`), with faults injected through a TCP proxy; and
//! against a private Redis Sentinel group whose primary is killed.

mod faults;
mod helpers;
mod pipeline;
mod publish;
mod recent;
mod sentinel;
mod slow;
