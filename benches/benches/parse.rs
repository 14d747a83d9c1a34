//! Parse + validate: one ~120-byte event and a 1,000-event bulk, simd-json (Vigil) against a
//! serde_json reference doing the same validation.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_benches::{sample_bulk, sample_event, serde_reference};
use vigil_core::{BodyFormat, EventParser, Limits};

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut parser = EventParser::new(limits);
    for (name, body, events) in [
        ("single_event", sample_event(7), 1u64),
        ("bulk_1000", sample_bulk(1000), 1000),
    ] {
        let mut group = c.benchmark_group(format!("parse_validate/{name}"));
        group.throughput(Throughput::Elements(events));
        group.bench_function("vigil_simd_json", |b| {
            b.iter(|| {
                parser
                    .parse(black_box(body.as_bytes()), BodyFormat::Json)
                    .unwrap()
            })
        });
        group.bench_function("serde_json_reference", |b| {
            b.iter(|| serde_reference::parse(black_box(body.as_bytes()), &limits).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
