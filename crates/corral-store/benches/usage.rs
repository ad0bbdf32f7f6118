//! What writing usage records costs the database side: `Store::insert_usage` of one batch
//! (as the gateway's writer sends them every flush interval) into a SQLite file that already
//! holds records, per record. The gateway pays this on its own cores with SQLite (PostgreSQL
//! does the work in its own process).
//!
//! Two figures per batch size: the wall time (with the WAL's writes and checkpoints) and the
//! CPU time of the writing thread, which is what the gateway's own cores pay.
//!
//! And what a report of all time costs over a month of usage (a million records), its records
//! unpacked from their batches against read from the day sums they are folded into.
//!
//! `cargo bench -p corral-store --bench usage`

// A benchmark whose database cannot be set up has nothing to measure: it stops there.
#![allow(clippy::expect_used)]

use std::time::Duration;

use corral_store::{Store, UsageContext, UsageQuery, UsageRecord};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn record(i: u64) -> UsageRecord {
    let context = UsageContext {
        id: 0,
        user_id: Some(format!("0193a6f0-0000-7000-8000-00000000000{}", i % 5)),
        key_id: Some(format!("0193a6f0-0000-7000-8000-0000000000a{}", i % 7)),
        groups: Vec::new(),
        model_asked: "llama3.2".to_owned(),
        model_run: "llama3.2:latest".to_owned(),
        instance: Some(0),
        route: "chat".to_owned(),
        streamed: false,
    };
    UsageRecord {
        at_ms: 1_764_900_000_000 + i64::try_from(i).unwrap_or(0),
        seq: i64::try_from(i).unwrap_or(0),
        context: std::sync::Arc::new(context.identified()),
        status: 200,
        cancelled: false,
        estimated: false,
        input_tokens: 26,
        output_tokens: 12,
        ttft_ms: Some(3),
        duration_ms: 5,
    }
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn usage(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&dir.path().join("usage.db").to_string_lossy(), 1).expect("SQLite store");
    // A table that is not empty: 50,000 records already written.
    let mut n = 0u64;
    for _ in 0..125 {
        let batch: Vec<UsageRecord> = (0..400)
            .map(|_| {
                n += 1;
                record(n)
            })
            .collect();
        store.insert_usage(&batch).expect("insert");
    }
    let mut group = c.benchmark_group("usage");
    for size in [100u64, 1000] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("sqlite insert_usage, batch of {size}"), |b| {
            b.iter_batched(
                || {
                    (0..size)
                        .map(|_| {
                            n += 1;
                            record(n)
                        })
                        .collect::<Vec<_>>()
                },
                |batch| store.insert_usage(&batch).expect("insert"),
                BatchSize::LargeInput,
            );
        });
        group.bench_function(format!("sqlite insert_usage, batch of {size}, CPU time"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<UsageRecord> = (0..size)
                        .map(|_| {
                            n += 1;
                            record(n)
                        })
                        .collect();
                    let before = thread_cpu();
                    store.insert_usage(&batch).expect("insert");
                    spent += thread_cpu().saturating_sub(before);
                }
                spent
            });
        });
    }
    group.finish();
}

fn report(c: &mut Criterion) {
    const RECORDS: u64 = 1_000_000;
    const MONTH_MS: u64 = 30 * 86_400_000;
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&dir.path().join("report.db").to_string_lossy(), 1).expect("SQLite store");
    // A month of usage, evenly spread: a thousand batches of a thousand records.
    for first in (0..RECORDS).step_by(1000) {
        let batch: Vec<UsageRecord> = (first..first + 1000)
            .map(|i| UsageRecord {
                at_ms: 1_764_547_200_000 + i64::try_from(i * (MONTH_MS / RECORDS)).unwrap_or(0),
                ..record(i)
            })
            .collect();
        store.insert_usage(&batch).expect("insert");
    }
    let all = UsageQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        ..UsageQuery::default()
    };
    let mut group = c.benchmark_group("usage report of all time, a month of a million records");
    group.sample_size(10);
    group.bench_function("records unpacked from their batches", |b| {
        b.iter(|| store.usage_report(&all).expect("report"));
    });
    while store.fold_usage(1000).expect("fold") > 0 {}
    group.bench_function("day sums", |b| {
        b.iter(|| store.usage_report(&all).expect("report"));
    });
    group.finish();
}

criterion_group!(benches, usage, report);
criterion_main!(benches);
