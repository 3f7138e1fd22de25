//! Micro-benchmark of the access log (README, "Operations"): the `request finished` line of a known
//! user's request, as the service writes it, on one core.
//!
//! ```text
//! cargo bench --bench log
//! ```
//!
//! - `log/json` and `log/pretty`: one event with the request's scope (request id, method, path,
//!   clerk id), its status and latency, through the service's subscriber (the `RUST_LOG` filter,
//!   the formatter) into a writer that drops the bytes: everything but the batched stdout.
//! - `log/filtered-out`: the same event under `RUST_LOG=warn`, the floor of a line not written.

use std::{hint::black_box, time::Duration};

use clerk_users::telemetry::{Lines, RequestScope, in_request, record_clerk_id};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn run(c: &mut Criterion, name: &str, json: bool, filter: &str) {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::sink)
        .fmt_fields(Lines { json })
        .event_format(Lines { json })
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(1));
    tracing::subscriber::with_default(subscriber, || {
        let scope = RequestScope::new(
            "0193a1c45d6e7f809a1b2c3d4e5f6a7b",
            "GET",
            "/users/me".into(),
        );
        runtime.block_on(in_request(scope, async {
            record_clerk_id("user_29w83sxmDNGwOuEthce5gg56FcC");
            g.bench_function(name, |b| {
                b.iter(|| {
                    let (status, latency_ms) = (black_box(200u16), black_box(0.468f64));
                    tracing::info!(status, latency_ms, "request finished");
                })
            });
        }));
    });
    g.finish();
}

fn log_benches(c: &mut Criterion) {
    run(c, "json", true, "info");
    run(c, "pretty", false, "info");
    run(c, "filtered-out", true, "warn");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = log_benches
}
criterion_main!(benches);
