//! Results: percentiles of latency samples, one table per scenario (rows of
//! named cells), the median of repeated runs cell by cell, the machine the
//! numbers come from, and the JSON written by `--json`.

use serde_json::{json, Value};

/// Percentile `p` (0..=1) of sorted nanosecond samples, in microseconds.
pub fn pct_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

/// p50, p99, p99.9 and max of `samples` (sorted here), in µs.
#[derive(Clone, Debug)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        Self {
            n: samples.len(),
            p50: pct_us(samples, 0.50),
            p99: pct_us(samples, 0.99),
            p999: pct_us(samples, 0.999),
            max: pct_us(samples, 1.0),
        }
    }
}

/// One scenario's results.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    /// What the rows measure, printed under the title.
    pub note: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(name: &str, note: &str, columns: &[&str]) -> Self {
        Self {
            name: name.into(),
            note: note.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; numbers are rounded for reading.
    pub fn row(&mut self, cells: Vec<Value>) {
        assert_eq!(cells.len(), self.columns.len(), "row of {}", self.name);
        self.rows.push(cells);
    }

    /// The cell-by-cell median of repeated runs of one scenario (numbers;
    /// text from the first run).
    pub fn median(mut runs: Vec<Table>) -> Table {
        if runs.len() == 1 {
            return runs.pop().unwrap();
        }
        let mut out = runs[0].clone();
        out.note = format!("{} (median of {} runs)", out.note, runs.len());
        for (r, row) in out.rows.iter_mut().enumerate() {
            for (c, cell) in row.iter_mut().enumerate() {
                if !cell.is_number() {
                    continue;
                }
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter_map(|t| t.rows.get(r)?.get(c)?.as_f64())
                    .collect();
                v.sort_by(|a, b| a.total_cmp(b));
                if !v.is_empty() {
                    *cell = num(v[v.len() / 2]);
                }
            }
        }
        out
    }

    pub fn print(&self) {
        println!("\n== {}: {}", self.name, self.note);
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(show).collect())
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].len())
                    .chain([c.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |v: Vec<&str>| {
            let s: Vec<String> = v
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:>w$}"))
                .collect();
            println!("| {} |", s.join(" | "));
        };
        line(self.columns.iter().map(String::as_str).collect());
        println!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &cells {
            line(r.iter().map(String::as_str).collect());
        }
    }

    fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                Value::Object(
                    self.columns
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect(),
                )
            })
            .collect();
        json!({"scenario": self.name, "note": self.note, "rows": rows})
    }
}

/// A number cell, rounded to 3 significant decimals (NaN → null).
pub fn num(v: f64) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    let r = if v.abs() >= 100.0 {
        v.round()
    } else if v.abs() >= 1.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 1000.0).round() / 1000.0
    };
    json!(r)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        other => other.to_string(),
    }
}

/// The machine the numbers come from.
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_gib: f64,
    pub client_threads: usize,
    pub nofile: u64,
}

impl Machine {
    pub fn probe(client_threads: usize, nofile: u64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            client_threads,
            nofile,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "machine: {} CPUs ({}), {} GiB, Linux {}; load clients: {} tokio worker threads; \
             fake Ollama: 1 thread; gateway: its own runtime; nothing pinned; RLIMIT_NOFILE {}",
            self.cpus, self.cpu_model, self.mem_gib, self.kernel, self.client_threads, self.nofile
        )
    }
}

/// Everything `--json` writes.
pub fn json(m: &Machine, repeat: usize, tables: &[Table]) -> Value {
    json!({
        "machine": {
            "cpus": m.cpus,
            "cpu_model": m.cpu_model,
            "kernel": m.kernel,
            "mem_gib": m.mem_gib,
            "client_threads": m.client_threads,
            "fake_threads": 1,
            "pinned": false,
        },
        "repeat": repeat,
        "scenarios": tables.iter().map(Table::to_json).collect::<Vec<_>>(),
    })
}
