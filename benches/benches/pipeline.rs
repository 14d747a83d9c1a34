//! The ingest pipeline end to end on the embedded store: requests submitted to the queue, the
//! batcher group-commits them into SQLite (WAL, `synchronous=FULL`: every commit is an fsync
//! of this machine's disk), encodes each event once, acks every request, and hands the batch
//! to the in-process bus (the recent list). No HTTP. Two shapes per iteration:
//! 100 single-event requests in flight at once, and one 1,000-event bulk.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_benches::sample_new_events;
use vigil_bus::LocalRecent;
use vigil_core::CommitSink;
use vigil_ingest::{Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};

fn pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let store = runtime
        .block_on(Store::open_embedded(
            data_dir.path(),
            &StoreOptions::default(),
        ))
        .expect("open the embedded store");
    let recent = LocalRecent::new(100);
    let sink: Arc<dyn CommitSink> = Arc::new(recent.clone());
    let ingest = Ingest::start(store.clone(), IngestConfig::default(), Some(sink))
        .expect("start the batcher");
    let queue = ingest.queue();
    let events = sample_new_events(1000);

    let mut group = c.benchmark_group("pipeline_embedded");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100_single_event_requests", |b| {
        b.iter(|| {
            let acks: Vec<_> = events[..100]
                .iter()
                .enumerate()
                .map(|(n, event)| {
                    queue
                        .submit(vec![event.clone()], format!("req-{n}"))
                        .expect("within budget")
                })
                .collect();
            runtime.block_on(async {
                for ack in acks {
                    ack.wait().await.expect("committed");
                }
            });
        })
    });
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("one_1000_event_bulk", |b| {
        b.iter(|| {
            let ack = queue
                .submit(events.clone(), "req-bulk".to_owned())
                .expect("within budget");
            runtime.block_on(ack.wait()).expect("committed")
        })
    });
    group.finish();
    runtime.block_on(ingest.shutdown(Duration::from_secs(10)));
    runtime.block_on(store.close());
    assert!(
        recent.pushed_events() > 0,
        "committed batches reach the bus"
    );
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
