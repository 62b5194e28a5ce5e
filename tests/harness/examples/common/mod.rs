//! Shared by the harness's benchmark examples.

/// This thread's user + system CPU time from /proc (clock ticks of 10 ms: the runs are long
/// enough for that to be precise to about 1 %); `None` where /proc is not available. CPU time
/// leaves out the time the thread waited for a core: on a shared machine it is the steadier
/// figure.
pub fn thread_cpu_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Some(ticks * 10_000_000)
}
