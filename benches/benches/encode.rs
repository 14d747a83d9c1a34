//! Encoding a stored event to its JSON (`StoredEventRef::encode_into`): done once per event,
//! after the insert; those bytes serve the cache, pub/sub, every WebSocket frame and the list
//! API.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_benches::sample_new_events;
use vigil_core::UnixMillis;

fn encode(c: &mut Criterion) {
    let events = sample_new_events(1000);
    let created_at = UnixMillis::now();
    let request_id = "0193a5c2-7d4e-7b21-9c3f-5a1e2d3c4b5a";
    let mut out = Vec::with_capacity(256 * 1000);

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_event", |b| {
        let event = &events[7];
        b.iter(|| {
            out.clear();
            event
                .as_stored(black_box(17), created_at, request_id)
                .encode_into(&mut out);
            black_box(out.len())
        })
    });
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("batch_1000", |b| {
        b.iter(|| {
            out.clear();
            for (index, event) in events.iter().enumerate() {
                event
                    .as_stored(index as u64 + 1, created_at, request_id)
                    .encode_into(&mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
