//! Gives memory freed after a burst back to the system. glibc's malloc keeps what it freed in its
//! per-thread arenas, so one burst leaves the resident size at its high-water mark for good: in the
//! soak test a spell of slow Clerk answers (every connection waiting on a first sight) left 3–4 MiB
//! more resident for the rest of the run, of which `malloc_trim(0)` gave back 3 MiB at once. So
//! every [`INTERVAL`] the service asks glibc to release its free pages. Elsewhere (musl, other
//! systems) this does nothing.

use std::time::Duration;

/// How often free memory is handed back.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Trim every [`INTERVAL`] until aborted; `None` where there is nothing to trim.
pub fn spawn_trimmer() -> Option<tokio::task::JoinHandle<()>> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    Some(tokio::spawn(async {
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let started = std::time::Instant::now();
            let released = trim();
            tracing::debug!(
                released,
                micros = started.elapsed().as_micros() as u64,
                "free memory handed back"
            );
        }
    }))
}

/// `malloc_trim(0)`: true when glibc released memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and is thread-safe; it only returns free pages of the
    // allocator's own arenas to the kernel.
    unsafe { malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        let rss = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        // Many small blocks, touched, then freed from another thread: the pattern a burst leaves.
        let blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 1000]).collect();
        let keep: Vec<Vec<u8>> = (0..40_000)
            .step_by(1000)
            .map(|i| vec![i as u8; 10])
            .collect();
        std::thread::spawn(move || drop(blocks)).join().unwrap();
        let before = rss();
        super::trim();
        let after = rss();
        assert!(after + 10_000 < before, "VmRSS {before} KiB → {after} KiB");
        drop(keep);
    }
}
