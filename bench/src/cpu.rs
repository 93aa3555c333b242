//! CPU time by thread, read from `/proc/self/task`: what one stretch of a scenario cost each of
//! the process's threads (jobwarden's own apart from the in-process Spark-protocol server).

use std::collections::BTreeMap;

/// User plus system seconds of every thread of this process, by thread id, with its name.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(BTreeMap<u32, (String, f64)>);

/// The in-process protocol server's thread: Spark's side, never counted as jobwarden's.
pub const SERVER_THREAD: &str = "spark-server";

impl ThreadTimes {
    pub fn now() -> ThreadTimes {
        let mut times = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return ThreadTimes(times);
        };
        // SAFETY: sysconf reads a constant of the running system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        for task in tasks.flatten() {
            let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks)) = parse_stat(&stat) {
                times.insert(tid, (name, ticks as f64 / per_second));
            }
        }
        ThreadTimes(times)
    }

    /// Seconds each thread name used since `earlier` (threads started since count whole),
    /// busiest first.
    pub fn since(&self, earlier: &ThreadTimes) -> Vec<(String, f64)> {
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, seconds)) in &self.0 {
            let before = earlier.0.get(tid).map_or(0.0, |(_, s)| *s);
            *by_name.entry(name.clone()).or_default() += seconds - before;
        }
        let mut spent: Vec<(String, f64)> = by_name.into_iter().filter(|(_, s)| *s > 0.0).collect();
        spent.sort_by(|a, b| b.1.total_cmp(&a.1));
        spent
    }
}

/// Seconds jobwarden's own threads used, out of a [`ThreadTimes::since`] breakdown.
pub fn own_seconds(spent: &[(String, f64)]) -> f64 {
    spent
        .iter()
        .filter(|(name, _)| name != SERVER_THREAD)
        .map(|(_, s)| s)
        .sum()
}

/// `name (µs), …` per check, for a row's figure.
pub fn breakdown(spent: &[(String, f64)], checks: usize) -> String {
    spent
        .iter()
        .filter(|(name, _)| name != SERVER_THREAD)
        .map(|(name, s)| format!("{name} {:.0}", s * 1e6 / checks as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name and user plus system ticks of one `stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields of the whole line: 12th and 13th here.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks))
}

/// User plus system seconds the children of this process that were waited for have used
/// (wrk, once it has exited).
pub fn children_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_ticks() {
        let line = "4242 (actix-rt|system) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3";
        assert_eq!(parse_stat(line), Some(("actix-rt|system".to_owned(), 300)));
    }

    #[test]
    fn this_threads_time_only_grows() {
        let before = ThreadTimes::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let spent = ThreadTimes::now().since(&before);
        assert!(spent.iter().all(|(_, s)| *s >= 0.0));
    }
}
