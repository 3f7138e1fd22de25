//! Process-wide counters and the latency histogram, rendered in Prometheus' text format (§8).
//! What every request counts (cache hits and misses, accepted tokens, the latency histogram) is an
//! atomic add; the rest is a short lock. Labels are `&'static str`, so nothing here allocates per
//! request.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// (family, label name, label value) → count
    counters: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// The hit/miss families ([`HIT_MISS`]), each as [hit, miss].
    hit_miss: [[AtomicU64; 2]; 3],
    /// `clerk_users_token_verifications_total{outcome="ok"}`, the one outcome of every request.
    verified: AtomicU64,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Histogram,
}

/// Cheap to clone; every clone records into the same figures.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Inner>);

/// Families with one label, and the help text of each.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "clerk_users_token_verifications_total",
        "outcome",
        "Token verifications by outcome (ok or the rejection code).",
    ),
    (
        "clerk_users_key_fetches_total",
        "outcome",
        "Fetches of the signing keys (JWKS) by outcome.",
    ),
    (
        "clerk_users_clerk_api_calls_total",
        "outcome",
        "Calls to Clerk's Backend API by outcome.",
    ),
    (
        "clerk_users_user_lookups_total",
        "result",
        "User lookups: hit (known user), miss (first sight).",
    ),
    (
        "clerk_users_user_cache_total",
        "result",
        "User cache lookups: hit, or miss (read from the database).",
    ),
    (
        "clerk_users_token_cache_total",
        "result",
        "Verified-token cache lookups: hit, or miss (verified in full).",
    ),
];

/// Families counted in `Inner::hit_miss`, in its order, with their positions in [`FAMILIES`].
const HIT_MISS: [usize; 3] = [3, 4, 5];

impl Metrics {
    fn hit_or_miss(&self, family: usize, hit: bool) {
        self.0.hit_miss[family][usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, family: &'static str, label: &'static str, value: &'static str) {
        let mut map = self.0.counters.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((family, label, value)).or_insert(0) += 1;
    }

    pub fn token_verification(&self, outcome: &'static str) {
        if outcome == "ok" {
            self.0.verified.fetch_add(1, Ordering::Relaxed);
        } else {
            self.count(FAMILIES[0].0, FAMILIES[0].1, outcome);
        }
    }
    pub fn key_fetch(&self, outcome: &'static str) {
        self.count(FAMILIES[1].0, FAMILIES[1].1, outcome);
    }
    pub fn clerk_call(&self, outcome: &'static str) {
        self.count(FAMILIES[2].0, FAMILIES[2].1, outcome);
    }
    pub fn user_lookup(&self, hit: bool) {
        self.hit_or_miss(0, hit);
    }
    pub fn user_cache(&self, hit: bool) {
        self.hit_or_miss(1, hit);
    }
    pub fn token_cache(&self, hit: bool) {
        self.hit_or_miss(2, hit);
    }

    /// One finished request: `route` is the matched route template, never the raw path.
    pub fn request(&self, route: &'static str, status: u16, latency: Duration) {
        *self
            .0
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_insert(0) += 1;
        let h = &self.0.latency;
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// The text exposition, with the gauges read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP clerk_users_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE clerk_users_http_requests_total counter");
        for ((route, status), n) in self
            .0
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "clerk_users_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let h = &self.0.latency;
        let _ = writeln!(
            out,
            "# HELP clerk_users_http_request_duration_seconds HTTP request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE clerk_users_http_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "clerk_users_http_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "clerk_users_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "clerk_users_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "clerk_users_http_request_duration_seconds_count {count}"
        );

        let mut counters = self
            .0
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let verified = self.0.verified.load(Ordering::Relaxed);
        if verified > 0 {
            counters.insert((FAMILIES[0].0, FAMILIES[0].1, "ok"), verified);
        }
        for (slot, family) in HIT_MISS.into_iter().enumerate() {
            let (name, label, _) = FAMILIES[family];
            for (i, value) in ["hit", "miss"].into_iter().enumerate() {
                let n = self.0.hit_miss[slot][i].load(Ordering::Relaxed);
                if n > 0 {
                    counters.insert((name, label, value), n);
                }
            }
        }
        for (family, label, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}");
            let _ = writeln!(out, "# TYPE {family} counter");
            for ((f, _, value), n) in counters.range((*family, *label, "")..) {
                if f != family {
                    break;
                }
                let _ = writeln!(out, "{family}{{{label}=\"{value}\"}} {n}");
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
