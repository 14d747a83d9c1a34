//! Fan-out of one event to 1,000 in-process subscribers through the WebSocket hub
//! (`Hub::deliver`): the delivery log's duplicate check, one parse of the event for the
//! filters, one frame built and shared, one `try_send` per client. Each iteration also drains
//! every client's queue (what the socket tasks do, minus the socket), so queues never fill.
//! Half the clients take everything, half filter on `type=GAS` (which this event matches).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_benches::sample_new_events;
use vigil_core::{EventFilter, UnixMillis};
use vigil_realtime::{Hub, HubSettings};

const CLIENTS: usize = 1000;

fn fanout(c: &mut Criterion) {
    let hub = Hub::new(HubSettings {
        client_queue: 1024,
        max_clients: CLIENTS,
        ping_interval: Duration::from_secs(20),
    });
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let filter = if index % 2 == 0 {
                EventFilter::default()
            } else {
                EventFilter {
                    types: vec!["GAS".to_owned()],
                    ..EventFilter::default()
                }
            };
            hub.register(filter).expect("room for every client")
        })
        .collect();
    let event = sample_new_events(1).remove(0);
    assert_eq!(event.event_type, "GAS");
    let created_at = UnixMillis::now();
    let mut json = Vec::with_capacity(256);
    // Ids must be new each time: the hub's delivery log drops an id it has fanned out.
    let mut next_id = 1u64;

    let mut group = c.benchmark_group("fanout_one_event");
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.bench_function("to_1000_clients", |b| {
        b.iter(|| {
            json.clear();
            event
                .as_stored(next_id, created_at, "req-1")
                .encode_into(&mut json);
            next_id += 1;
            let admitted = hub.deliver([json.as_slice()]);
            let mut frames = 0;
            for client in &mut clients {
                while let Some(frame) = client.try_next_frame() {
                    frames += 1;
                    black_box(frame);
                }
            }
            debug_assert_eq!((admitted, frames), (1, CLIENTS));
            black_box(frames)
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
