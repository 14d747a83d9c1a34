//! Integration tests of vigil-bus against the machine's real Redis, each test under its own key
//! and channel names (`vigil:test:<uuid>:…`), with faults injected through a TCP proxy.

mod faults;
mod helpers;
mod publish;
mod recent;
mod slow;
