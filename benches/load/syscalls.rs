//! Syscall counts of a serving process (issue 14): `strace -c -f -p PID`
//! attached to every thread of the gateway (or of nginx's workers) for one
//! saturated window, detached with SIGINT, its summary table parsed.
//!
//! strace stops the tracee at every syscall, so the process runs several
//! times slower while attached: the counts are per token delivered in that
//! window (a ratio), never a speed. `write` includes the runtime's eventfd
//! wake-ups, which `-c` cannot tell apart from socket writes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Syscalls that put bytes on a socket (the "writes").
pub const WRITES: &[&str] = &["write", "writev", "sendmsg", "sendto"];
/// Syscalls that take bytes off a socket.
pub const READS: &[&str] = &["read", "readv", "recvfrom", "recvmsg"];

/// An attached `strace -c`.
pub struct Strace {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// What one attachment counted.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Calls per syscall name.
    pub calls: BTreeMap<String, u64>,
}

impl Counts {
    pub fn sum(&self, names: &[&str]) -> u64 {
        names
            .iter()
            .filter_map(|n| self.calls.get(*n))
            .copied()
            .sum()
    }
}

impl Strace {
    /// Attach `strace` (`bin`) to every thread of every process in `pids`,
    /// and return once it reports them all attached (one line a process:
    /// `Process N attached` or `... attached with M threads`), or after 5 s.
    pub fn attach(bin: &Path, pids: &[u32]) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let out = dir.path().join("strace.txt");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg("-f").arg("-o").arg(&out);
        for p in pids {
            cmd.arg("-p").arg(p.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("strace stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut attached = 0;
        let mut said = Vec::new();
        while attached < pids.len().max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    attached += usize::from(l.contains("attached"));
                    said.push(l);
                }
                Err(_) => break,
            }
            if let Some(st) = child.try_wait()? {
                bail!("strace exited ({st}): {}", said.join("\n"));
            }
        }
        if attached == 0 {
            let _ = child.kill();
            let _ = child.wait();
            bail!("strace attached to nothing within 5 s: {}", said.join("\n"));
        }
        Ok(Self {
            child,
            out,
            _dir: dir,
        })
    }

    /// Detach (SIGINT) and read the summary.
    pub fn finish(mut self) -> Result<Counts> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("strace did not detach within 10 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))?;
        let c = parse(&text);
        if c.calls.is_empty() {
            bail!("no syscall summary from strace:\n{text}");
        }
        Ok(c)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `-c` table: `% time  seconds  usecs/call  calls  [errors]  syscall`.
fn parse(text: &str) -> Counts {
    let mut c = Counts::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = f[3].parse::<u64>() {
            *c.calls.entry(name.to_string()).or_default() += calls;
        }
    }
    c
}
