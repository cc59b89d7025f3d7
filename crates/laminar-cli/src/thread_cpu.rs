//! On-core time of threads (Linux), for benchmark reports. A worker's busy time is wall
//! clock, so on a machine with fewer cores than runnable threads it includes the time the
//! worker waited for a core; on-core time says what each thread actually took.

use std::time::Duration;

/// On-core time of the calling thread so far.
pub(crate) fn current() -> Option<Duration> {
    on_core(std::path::Path::new("/proc/thread-self"))
}

/// On-core time of the thread whose `/proc` directory is `task`: the first field of its
/// `schedstat` (nanoseconds on a core, nanoseconds waiting for one, time slices).
fn on_core(task: &std::path::Path) -> Option<Duration> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// On-core time so far of each live thread of this process whose name starts with
/// `prefix`, by name (sorted); empty where `/proc` does not say.
pub(crate) fn named(prefix: &str) -> Vec<(String, Duration)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut threads: Vec<(String, Duration)> = tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let name = name.trim_end();
            if !name.starts_with(prefix) {
                return None;
            }
            Some((name.to_string(), on_core(&path)?))
        })
        .collect();
    threads.sort();
    threads
}

/// What each thread of `after` took since `before` (threads by name).
pub(crate) fn since(before: &[(String, Duration)], after: &[(String, Duration)]) -> Vec<Duration> {
    after
        .iter()
        .map(|(name, total)| {
            let start = before
                .iter()
                .find(|(earlier, _)| earlier == name)
                .map_or(Duration::ZERO, |(_, d)| *d);
            total.saturating_sub(start)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calling_thread_and_named_threads_have_on_core_time() {
        let spin = std::time::Instant::now();
        let mut x = 0_u64;
        while spin.elapsed() < Duration::from_millis(20) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let own = current().expect("thread CPU clock");
        assert!(own >= Duration::from_millis(10), "{own:?}");
        let handle = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(std::thread::park)
            .expect("thread");
        // The new thread names itself once it runs.
        let waiting = std::time::Instant::now();
        let mut named = named("cpu-probe");
        while named.is_empty() && waiting.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
            named = super::named("cpu-probe");
        }
        assert_eq!(named.len(), 1, "{named:?}");
        handle.thread().unpark();
        handle.join().expect("join");
        assert_eq!(since(&named, &named), vec![Duration::ZERO]);
    }
}
