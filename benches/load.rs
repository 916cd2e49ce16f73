//! The end-to-end load tool (issues 6 and 14): the real gateway binary
//! (release build, TLS on, the shipped `config.toml` with a raised
//! connection limit and open enrollment) in front of the fake Ollama of the
//! tests, driven by N WSS clients in this process, measured against the same
//! streams read straight from the fake (the limit no gateway can beat), the
//! same gateway with TLS off, and nginx TLS in front of the same fake (when
//! an `nginx` binary is found; never required). The same gateway with its
//! upstream `api = "openai"` reads the same fake through its OpenAI dialect
//! (Server-Sent Events): the `openai` columns and `openai/gateway`, the
//! OpenAI path's speed as a share of the Ollama path's (issue 16;
//! `--no-openai` leaves them out). With `strace` found, the saturated
//! scenario also counts the gateway's socket syscalls per token.
//!
//! ```sh
//! cargo bench --bench load -- --scenario all --repeat 3 --json load.json
//! cargo bench --bench load -- --scenario saturate --streams 50 --repeat 3
//! cargo bench --bench load -- --scenario paced --streams 1,100 --duration 5
//! cargo bench --bench load -- --smoke          # tiny, asserts only that it works (CI)
//! ```
//!
//! `cargo bench` builds `target/release/tars` itself (a bench target gets
//! the package's binaries built with the same profile); `--tars PATH` runs
//! another binary. The fake's token text is the wall-clock time it wrote the
//! token, so each token's latency is "client read it" minus "Ollama wrote
//! it", on one machine and one clock. Client, fake and gateway share the
//! machine's cores; nothing is pinned.
//!
//! - [`gateway`]: the gateway process, its config and resident memory.
//! - [`nginx`]: nginx TLS in front of the fake, its config and processes.
//! - [`syscalls`]: `strace -c` attached to a serving process.
//! - [`clients`]: the WSS client, the NDJSON client (direct or through
//!   nginx), HTTPS requests.
//! - [`sides`]: direct, gateway, openai, gateway (plain) and nginx side by
//!   side.
//! - [`streaming`]: the streaming scenarios (paced, saturate, ttft).
//! - [`scenarios`]: the plan, and idle, connect, validate, leak, soak.
//! - [`report`]: percentiles, tables, medians of repeats, JSON.

/// The fake Ollama of the tests (`tests/support/fake_ollama.rs`).
#[path = "../tests/support"]
mod support {
    #[allow(dead_code)]
    pub mod fake_ollama;
    #[allow(dead_code)]
    pub mod upstream_tls;
}
#[path = "load/clients.rs"]
mod clients;
#[path = "load/gateway.rs"]
mod gateway;
#[path = "load/nginx.rs"]
mod nginx;
#[path = "load/report.rs"]
mod report;
#[path = "load/scenarios.rs"]
mod scenarios;
#[path = "load/sides.rs"]
mod sides;
#[path = "load/streaming.rs"]
mod streaming;
#[path = "load/syscalls.rs"]
mod syscalls;

use support::fake_ollama;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::fake_ollama::FakeOllama;
use report::{Machine, Table};
use scenarios::Plan;

#[derive(Parser, Debug)]
#[command(about = "End-to-end load tool: tars against the direct-to-Ollama limit")]
struct Args {
    /// Scenarios to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Which>,
    /// Concurrency of the chosen scenarios (comma-separated list), instead of
    /// each scenario's defaults: streams (paced, saturate), chats at once
    /// (ttft), workers (connect), sessions (idle), keep-alive connections
    /// (validate), sessions (leak).
    #[arg(long, value_delimiter = ',')]
    streams: Option<Vec<usize>>,
    /// Seconds each measurement runs (idle: how long sessions are held).
    #[arg(long)]
    duration: Option<f64>,
    /// Run every chosen scenario this many times; tables show the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Every scenario tiny (a few streams, about a second each); checks only
    /// that everything works, never a speed.
    #[arg(long)]
    smoke: bool,
    /// The gateway binary (default: the one cargo built for this bench).
    #[arg(long)]
    tars: Option<PathBuf>,
    /// Leave nginx out even when it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Leave out the gateway in front of the fake's OpenAI dialect (the
    /// `openai` columns).
    #[arg(long)]
    no_openai: bool,
    /// Leave the strace syscall count out even when strace is installed.
    #[arg(long)]
    no_strace: bool,
    /// Worker threads of this tool's client runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    All,
    /// N streams at one token per ms (eased to a quarter of the direct
    /// limit); also `latency`, its name in issue 6.
    #[value(alias = "latency")]
    Paced,
    Saturate,
    Ttft,
    Idle,
    Connect,
    Validate,
    Leak,
    /// Issue 7's soak; not part of `all` (it runs for ten minutes).
    Soak,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nofile = raise_nofile(70_000);
    let bin = args
        .tars
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tars")));
    if !bin.exists() {
        eprintln!(
            "load: {} does not exist: run `cargo build --release` (or pass --tars PATH)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    // The gateway runs in its own temp dir: a relative path would not resolve.
    let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
    let which: Vec<Which> = if args.scenario.contains(&Which::All) {
        vec![
            Which::Paced,
            Which::Saturate,
            Which::Ttft,
            Which::Idle,
            Which::Connect,
            Which::Validate,
            Which::Leak,
        ]
        .into_iter()
        .chain(args.smoke.then_some(Which::Soak))
        .collect()
    } else {
        args.scenario.clone()
    };
    let machine = Machine::probe(args.client_threads, nofile);
    println!("{}", machine.describe());
    println!("gateway binary: {}", bin.display());
    let nginx = (!args.no_nginx).then(nginx::find).flatten();
    let strace = (!args.no_strace)
        .then(|| nginx::find_tool("strace"))
        .flatten();
    match &nginx {
        Some(n) => println!("nginx: {}", n.display()),
        None => println!("nginx: not found (or --no-nginx): no nginx columns"),
    }
    match &strace {
        Some(s) => println!("strace: {}", s.display()),
        None => println!("strace: not found (or --no-strace): no syscall counts"),
    }

    let fake = start_fake();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .expect("client runtime");
    let plan = Plan {
        bin,
        fake: fake.clone(),
        smoke: args.smoke,
        duration: args.duration,
        streams: args.streams.clone(),
        nginx,
        strace,
        nofile,
        openai: !args.no_openai,
    };
    let mut tables: Vec<Table> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for w in which {
        let mut runs = Vec::new();
        for r in 0..args.repeat.max(1) {
            if args.repeat > 1 {
                println!("\n--- {w:?}: run {} of {}", r + 1, args.repeat);
            }
            let res = rt.block_on(async {
                let one = |r: anyhow::Result<Table>| r.map(|t| vec![t]);
                match w {
                    Which::Paced => one(streaming::paced(&plan).await),
                    Which::Saturate => streaming::saturate(&plan).await,
                    Which::Ttft => one(streaming::ttft(&plan).await),
                    Which::Idle => one(scenarios::idle(&plan).await),
                    Which::Connect => one(scenarios::connect(&plan).await),
                    Which::Validate => one(scenarios::validate(&plan).await),
                    Which::Leak => one(scenarios::leak(&plan).await),
                    Which::Soak => one(scenarios::soak(&plan).await),
                    Which::All => unreachable!("expanded above"),
                }
            });
            match res {
                Ok(ts) => {
                    if args.repeat > 1 {
                        ts.iter().for_each(Table::print);
                    }
                    runs.push(ts);
                }
                Err(e) => {
                    eprintln!("load: scenario {w:?} failed: {e:#}");
                    failures.push(format!("{w:?}: {e:#}"));
                    break;
                }
            }
        }
        // A scenario may give several tables: the median of each across runs.
        let count = runs.first().map_or(0, Vec::len);
        for i in 0..count {
            let t = Table::median(runs.iter().map(|ts| ts[i].clone()).collect());
            t.print();
            tables.push(t);
        }
    }
    if let Some(path) = &args.json {
        let v = report::json(&machine, args.repeat, &tables);
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()) {
            eprintln!("load: cannot write {}: {e}", path.display());
            failures.push("json".into());
        } else {
            println!("\nwrote {}", path.display());
        }
    }
    drop(rt);
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("load: {} scenario(s) failed", failures.len());
        ExitCode::FAILURE
    }
}

/// Start the fake Ollama on a runtime of its own (one thread), so that its
/// timers and writes do not queue behind the clients' tasks.
fn start_fake() -> FakeOllama {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fake-ollama".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake runtime");
            rt.block_on(async move {
                let fake = FakeOllama::start().await;
                fake.forget_requests(true);
                tx.send(fake.clone()).expect("hand the fake over");
                // Serve for as long as the process lives.
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        })
        .expect("fake thread");
    rx.recv().expect("the fake started")
}

/// Raise RLIMIT_NOFILE (soft, and hard when allowed) to at least `want`;
/// the gateway child inherits it. Returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_max < want {
            let up = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return want;
            }
        }
        let target = r.rlim_max;
        if r.rlim_cur < target {
            let up = libc::rlimit {
                rlim_cur: target,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return target;
            }
        }
        r.rlim_cur
    }
}
