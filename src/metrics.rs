//! Process-wide counters and the latency histogram, rendered in Prometheus' text format (the
//! README's "Metrics" lists the families). What every request counts (its route and status, cache
//! hits and misses, accepted tokens, the latency histogram) is an atomic add in a fixed table, the
//! calling thread's copy of it; only the rare outcomes (key fetches, Backend API calls, rejected
//! tokens) take a short lock. Labels are `&'static str`, so nothing here allocates per request.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
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

struct Inner {
    /// (family, label name, label value) → count
    counters: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Known users answered from the cache while the database could not be reached, and the sum
    /// of those entries' ages (microseconds since last confirmed).
    stale_answers: AtomicU64,
    stale_age_micros: AtomicU64,
    /// What every request counts, one [`Slot`] per thread (round robin over a power of two).
    slots: Box<[Slot]>,
}

/// The counters every request adds to, in one thread's copy: two workers adding to one counter
/// pass its cache line from core to core on every add, and a request makes about eight. A scrape
/// sums the copies. Aligned so that no two slots share a line.
#[repr(align(128))]
struct Slot {
    /// The hit/miss families ([`HIT_MISS`]), each as [hit, miss].
    hit_miss: [[AtomicU64; 2]; 3],
    /// `clerk_users_token_verifications_total{outcome="ok"}`, the one outcome of every request.
    verified: AtomicU64,
    /// By [`Route`], then status code less 100 (statuses run from 100 to 599).
    requests: [[AtomicU64; STATUSES]; Route::ALL.len()],
    latency: Histogram,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            hit_miss: Default::default(),
            verified: AtomicU64::default(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::default())),
            latency: Histogram::default(),
        }
    }
}

impl Default for Inner {
    fn default() -> Self {
        let slots = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .next_power_of_two()
            .min(64);
        Self {
            counters: Mutex::default(),
            stale_answers: AtomicU64::default(),
            stale_age_micros: AtomicU64::default(),
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }
}

impl Inner {
    /// The calling thread's slot.
    fn slot(&self) -> &Slot {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let i = INDEX.with(|i| *i);
        &self.slots[i & (self.slots.len() - 1)]
    }

    /// One counter summed over the slots.
    fn sum(&self, counter: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// Status codes 100–599, one counter each.
const STATUSES: usize = 500;

/// The `route` label of a request: a known path, `/docs` for Swagger UI, `unmatched` for a 404
/// outside the API, `other` for the rest. A fixed set, so a scanner cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    UsersMe,
    Healthz,
    Readyz,
    DbPing,
    Metrics,
    OpenApi,
    Webhooks,
    Docs,
    Unmatched,
    Other,
}

impl Route {
    const ALL: [Route; 10] = [
        Route::UsersMe,
        Route::Healthz,
        Route::Readyz,
        Route::DbPing,
        Route::Metrics,
        Route::OpenApi,
        Route::Webhooks,
        Route::Docs,
        Route::Unmatched,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::UsersMe => "/users/me",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::DbPing => "/db-test/ping",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Webhooks => "/webhooks/clerk",
            Route::Docs => "/docs",
            Route::Unmatched => "unmatched",
            Route::Other => "other",
        }
    }

    /// The route an exact path names, if any (not `/docs…`, `unmatched` or `other`).
    pub fn of_path(path: &str) -> Option<Route> {
        Route::ALL[..Route::Docs as usize]
            .iter()
            .copied()
            .find(|r| r.label() == path)
    }
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

/// Families counted in `Slot::hit_miss`, in its order, with their positions in [`FAMILIES`].
const HIT_MISS: [usize; 3] = [3, 4, 5];

impl Metrics {
    fn hit_or_miss(&self, family: usize, hit: bool) {
        self.0.slot().hit_miss[family][usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, family: &'static str, label: &'static str, value: &'static str) {
        let mut map = self.0.counters.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((family, label, value)).or_insert(0) += 1;
    }

    pub fn token_verification(&self, outcome: &'static str) {
        if outcome == "ok" {
            self.0.slot().verified.fetch_add(1, Ordering::Relaxed);
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

    /// A known user answered from the cache while the database could not be reached, `age` after
    /// the entry was last confirmed.
    pub fn stale_answer(&self, age: Duration) {
        self.0.stale_answers.fetch_add(1, Ordering::Relaxed);
        self.0
            .stale_age_micros
            .fetch_add(age.as_micros() as u64, Ordering::Relaxed);
    }

    /// One finished request, by its route (never the raw path) and status.
    pub fn request(&self, route: Route, status: u16, latency: Duration) {
        let status = usize::from(status.clamp(100, 599)) - 100;
        let slot = self.0.slot();
        slot.requests[route as usize][status].fetch_add(1, Ordering::Relaxed);
        let h = &slot.latency;
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
        self.render_with(gauges, &[])
    }

    /// The text exposition with gauges and counters kept elsewhere, read at scrape time: each
    /// `(name, help, value)`.
    pub fn render_with(
        &self,
        gauges: &[(&str, &str, f64)],
        external_counters: &[(&str, &str, f64)],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP clerk_users_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE clerk_users_http_requests_total counter");
        for (r, route) in Route::ALL.iter().enumerate() {
            for (s, status) in (100..600).enumerate() {
                let n = self.0.sum(|slot| &slot.requests[r][s]);
                if n > 0 {
                    let route = route.label();
                    let _ = writeln!(
                        out,
                        "clerk_users_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
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
            cumulative += self.0.sum(|slot| &slot.latency.buckets[i]);
            let _ = writeln!(
                out,
                "clerk_users_http_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = self.0.sum(|slot| &slot.latency.count);
        let _ = writeln!(
            out,
            "clerk_users_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.0.sum(|slot| &slot.latency.sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "clerk_users_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "clerk_users_http_request_duration_seconds_count {count}"
        );

        let _ = writeln!(
            out,
            "# HELP clerk_users_user_stale_age_seconds Known users answered from the cache while \
             the database could not be reached, by the age of the entry since last confirmed."
        );
        let _ = writeln!(out, "# TYPE clerk_users_user_stale_age_seconds summary");
        let stale_sum = self.0.stale_age_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let stale_count = self.0.stale_answers.load(Ordering::Relaxed);
        let _ = writeln!(out, "clerk_users_user_stale_age_seconds_sum {stale_sum}");
        let _ = writeln!(
            out,
            "clerk_users_user_stale_age_seconds_count {stale_count}"
        );

        let mut counters = self
            .0
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let verified = self.0.sum(|slot| &slot.verified);
        if verified > 0 {
            counters.insert((FAMILIES[0].0, FAMILIES[0].1, "ok"), verified);
        }
        for (slot, family) in HIT_MISS.into_iter().enumerate() {
            let (name, label, _) = FAMILIES[family];
            for (i, value) in ["hit", "miss"].into_iter().enumerate() {
                let n = self.0.sum(|s| &s.hit_miss[slot][i]);
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
        for (kind, list) in [("counter", external_counters), ("gauge", gauges)] {
            for (name, help, value) in list {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name} {value}");
            }
        }
        out
    }
}
