//! Process plumbing: free ports, watchdogs for the children, SIGTERM, and the
//! `/proc` readings (CPU time, peak RSS, machine busy time) the report rests
//! on. Linux only, like the rest of the project's tooling.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A port nobody listens on right now. The listener is dropped before the
/// port is used, so another process could take it in between; on a bench
/// machine that race is not worth a retry loop.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A shell that sends SIGTERM to `child_pid` once this process is gone.
///
/// Drop guards stop the children on errors and panics; the watchdog covers
/// the cases they cannot: the bench killed by a signal (SIGKILL, a SIGTERM
/// from a CI timeout), where no destructor runs and a broker or host would
/// otherwise outlive it. The caller kills the watchdog first when it stops the
/// child itself, so a recycled pid is never signalled.
pub fn watchdog(child_pid: u32) -> Result<Child> {
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$WATCH" 2>/dev/null; do sleep 0.5; done; kill -TERM "$CHILD" 2>/dev/null"#,
        ])
        .env("WATCH", std::process::id().to_string())
        .env("CHILD", child_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start a watchdog shell")
}

/// Kills and reaps a child we started; errors are moot at this point (it may
/// have exited already).
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM (the host's graceful shutdown), then up to `grace` for the exit,
/// then SIGKILL. std has no portable way to send SIGTERM, and `unsafe` (libc)
/// is forbidden in this workspace, so `kill(1)` sends it.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("run kill -TERM")?;
    if !sent.success() {
        // Raced with its own exit: collect the status below.
        eprintln!("notify-bench: kill -TERM {} failed ({sent})", child.id());
    }
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill().context("SIGKILL after the grace period")?;
            let status = child.wait()?;
            bail!(
                "process {} did not exit within {grace:?} of SIGTERM; killed ({status})",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kernel's clock tick (`USER_HZ`), the unit of `/proc/PID/stat` times.
/// `sysconf` would need `unsafe`; `getconf` asks it for us. 100 is what every
/// x86_64 and arm64 Linux kernel uses, so it is the fallback.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks. `pid` None is this process.
pub fn cpu_ticks(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let fields = stat_fields(&path)?;
    // utime and stime are fields 14 and 15 (1-based).
    Ok(fields.get(14)? + fields.get(15)?)
}

/// CPU of a process tree one level deep, in clock ticks: the process, its
/// reaped children (cutime + cstime) and its live children. A PostgreSQL
/// server: the postmaster and a backend per connection.
pub fn tree_cpu_ticks(pid: u32) -> Result<u64> {
    let own = stat_fields(&format!("/proc/{pid}/stat"))?;
    // utime, stime, cutime, cstime: fields 14 to 17.
    let mut ticks = own.get(14)? + own.get(15)? + own.get(16)? + own.get(17)?;
    for entry in fs::read_dir("/proc").context("read /proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: skip it.
        let Ok(fields) = stat_fields(&format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent's pid is field 4.
        if fields.get(4).ok() == Some(u64::from(pid)) {
            ticks += fields.get(14).unwrap_or(0) + fields.get(15).unwrap_or(0);
        }
    }
    Ok(ticks)
}

/// The fields of a `/proc/PID/stat` file from field 3 on.
struct StatFields {
    path: String,
    fields: Vec<String>,
}

impl StatFields {
    /// Field `n` (1-based, as `man proc` counts them; 3 or above) as a
    /// number.
    fn get(&self, n: usize) -> Result<u64> {
        self.fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{}: field {n} missing or not a number", self.path))
    }
}

fn stat_fields(path: &str) -> Result<StatFields> {
    let text = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // Field 2 (the command name) is parenthesised and may contain spaces and
    // parentheses; the fields after the last ')' start with field 3.
    let rest = text
        .rsplit_once(')')
        .with_context(|| format!("{path}: no ')'"))?
        .1;
    Ok(StatFields {
        path: path.to_string(),
        fields: rest.split_whitespace().map(str::to_string).collect(),
    })
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path}: no VmHWM line"))
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS (`5` to
/// `/proc/PID/clear_refs`, Linux 4.0+), so a later [`peak_rss_kib`] is the
/// peak since now: a run's peak without the start-up's (compiling a large
/// plugin takes far more than running it).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    fs::write(&path, "5").with_context(|| format!("write {path}"))
}

/// The machine's CPU time from `/proc/stat`: (busy, total) ticks summed over
/// all cores.
pub fn machine_ticks() -> Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no `cpu` line")?;
    // user nice system idle iowait irq softirq steal; guest time is already
    // counted in user.
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if values.len() < 5 {
        bail!("/proc/stat: short `cpu` line: {line}");
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values[4];
    Ok((total - idle, total))
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A directory under the system temp dir, removed on drop unless kept.
/// (tempfile is not a workspace dependency; this is all the bench needs.)
pub struct Workdir {
    pub path: std::path::PathBuf,
    pub keep: bool,
}

impl Workdir {
    pub fn new(keep: bool) -> Result<Workdir> {
        let path = std::env::temp_dir().join(format!(
            "notify-bench-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Workdir { path, keep })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("notify-bench: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
