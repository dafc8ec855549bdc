//! CPU time of processes and of the machine, from `/proc`, to tell whether
//! a benchmark was bound by the CPU (and whose).

/// One process's CPU seconds: its own (user + system) and that of its
/// children it has waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcCpu {
    pub own: f64,
    pub children: f64,
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn fields(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &raw[raw.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds of `pid` (None when it is gone).
pub fn stat(pid: u32) -> Option<ProcCpu> {
    let f = fields(pid)?;
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = ticks_per_second();
    Some(ProcCpu {
        own: (n(11) + n(12)) / hz,
        children: (n(13) + n(14)) / hz,
    })
}

/// The live processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fields(*child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok())) == Some(pid)
        })
        .collect()
}

/// The machine's CPU time so far: (busy, total) in clock ticks, all cores.
pub fn machine() -> (u64, u64) {
    let raw = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = raw.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
