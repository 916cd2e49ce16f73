//! The five ways the streaming scenarios read the same fake Ollama, side by
//! side in one run (issues 14 and 16):
//!
//! - **direct**: the NDJSON straight from the fake over plain HTTP (the limit
//!   no proxy can beat);
//! - **gateway**: the gateway with TLS, WSS sessions, token frames;
//! - **gateway (plain)**: the same gateway binary with `tls.enabled = false`;
//! - **openai**: the TLS gateway with its one upstream `api = "openai"` at
//!   the same fake, which then streams the same tokens as Server-Sent Events
//!   (`data: {chunk}` per delta, finish, usage, `[DONE]`): the OpenAI path's
//!   cost per token beside the Ollama path's (`--no-openai` leaves it out);
//! - **nginx**: nginx TLS in front of the fake, the raw NDJSON over
//!   HTTP/1.1 chunked, counted the same way as direct (only when an nginx
//!   binary is found; its cells stay empty otherwise).
//!
//! [`Sides::start`] starts the gateways and nginx (with the TLS gateway's
//! certificate); [`Sides::open`] opens connections before a measurement so
//! that only the streams are timed; [`Sides::streams`] runs one stream on
//! each at once and reports samples, wall time and the serving process's CPU.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::task::JoinSet;

use crate::clients::{self, Samples, Target, Window, Ws};
use crate::gateway::Gateway;
use crate::nginx::Nginx;
use crate::scenarios::{open_many, Plan};

/// Who serves a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Direct,
    Gateway,
    Plain,
    Nginx,
    OpenAi,
}

impl Side {
    /// In the order a row measures them: openai right after the gateway
    /// it is compared with.
    pub const ALL: [Side; 5] = [
        Side::Direct,
        Side::Gateway,
        Side::OpenAi,
        Side::Plain,
        Side::Nginx,
    ];
}

/// One open connection of a side: an HTTP/1.1 keep-alive connection (direct,
/// nginx) or a WebSocket session (the gateways).
pub enum Conn {
    Http(SendRequest<Full<Bytes>>),
    Ws(Box<Ws>),
}

impl Conn {
    /// One chat on this connection, read until its end or `w.deadline`.
    pub async fn stream(&mut self, w: Window) -> Result<Samples> {
        match self {
            Conn::Http(s) => clients::direct_stream(s, w).await,
            Conn::Ws(ws) => clients::gateway_stream(ws, w).await,
        }
    }

    /// Close politely (WebSocket close frame) or just drop.
    pub async fn close(self) {
        if let Conn::Ws(ws) = self {
            clients::close(*ws).await;
        }
    }
}

/// One measurement of one side.
pub struct Run {
    pub samples: Vec<Samples>,
    /// Wall time from the first request to the last stream's end.
    pub secs: f64,
    /// CPU of the serving process(es) over `secs`, in % of one core
    /// (`None` for direct: the fake serves every side).
    pub cpu_pct: Option<f64>,
}

/// Everything that serves streams in one scenario row.
pub struct Sides {
    fake: SocketAddr,
    pub gateway: Gateway,
    gateway_target: Target,
    pub plain: Gateway,
    plain_target: Target,
    pub nginx: Option<Nginx>,
    nginx_target: Option<Target>,
    /// The gateway in front of the fake's OpenAI dialect (unless
    /// `--no-openai`).
    pub openai: Option<Gateway>,
    openai_target: Option<Target>,
}

impl Sides {
    /// Fresh gateways (TLS and plain) and, when the plan has an nginx
    /// binary, nginx with the TLS gateway's certificate.
    pub async fn start(p: &Plan, heartbeat_secs: u64) -> Result<Self> {
        let (gateway, gateway_target) = p.gateway_with(heartbeat_secs, true, false).await?;
        let (plain, plain_target) = p.gateway_with(heartbeat_secs, false, false).await?;
        let (openai, openai_target) = if p.openai {
            let (g, t) = p.gateway_with(heartbeat_secs, true, true).await?;
            (Some(g), Some(t))
        } else {
            (None, None)
        };
        let (nginx, nginx_target) = match &p.nginx {
            Some(bin) => {
                let (bin, fake) = (bin.clone(), p.fake.addr());
                let (cert, key) = gateway.cert_files();
                let tls = gateway
                    .tls
                    .clone()
                    .context("the TLS gateway has no connector")?;
                let n =
                    tokio::task::spawn_blocking(move || Nginx::start(&bin, fake, &cert, &key, tls))
                        .await??;
                println!(
                    "  nginx pid {} at {}: {} workers",
                    n.pid(),
                    n.addr,
                    n.workers
                );
                let t = Target {
                    addr: n.addr,
                    tls: Some(n.tls.clone()),
                    token: "".into(),
                };
                (Some(n), Some(t))
            }
            None => (None, None),
        };
        Ok(Self {
            fake: p.fake.addr(),
            gateway,
            gateway_target,
            plain,
            plain_target,
            nginx,
            nginx_target,
            openai,
            openai_target,
        })
    }

    /// The sides this run can measure (nginx and openai only when started).
    pub fn present(&self) -> Vec<Side> {
        Side::ALL
            .into_iter()
            .filter(|s| match s {
                Side::Nginx => self.nginx.is_some(),
                Side::OpenAi => self.openai.is_some(),
                _ => true,
            })
            .collect()
    }

    /// Open `n` connections to `side` (sessions with `connection_ack` for the
    /// gateways), several handshakes at a time.
    pub async fn open(&self, side: Side, n: usize) -> Result<Vec<Conn>> {
        let mut out = Vec::with_capacity(n);
        match side {
            Side::Direct => {
                for _ in 0..n {
                    out.push(Conn::Http(clients::direct_connect(self.fake).await?));
                }
            }
            Side::Nginx => {
                let t = self.nginx_target.as_ref().context("no nginx")?;
                let mut set = JoinSet::new();
                for _ in 0..n {
                    let t = t.clone();
                    set.spawn(async move { clients::https_connect(&t).await });
                }
                while let Some(r) = set.join_next().await {
                    out.push(Conn::Http(r?.context("connecting to nginx")?));
                }
            }
            Side::Gateway | Side::Plain | Side::OpenAi => {
                for ws in open_many(self.target(side)?, n).await? {
                    out.push(Conn::Ws(Box::new(ws)));
                }
            }
        }
        Ok(out)
    }

    /// Open one connection to `side` from nothing: TCP, TLS, and for the
    /// gateways the upgrade and `connection_ack`.
    pub async fn connect_one(&self, side: Side) -> Result<Conn> {
        Ok(match side {
            Side::Direct => Conn::Http(clients::direct_connect(self.fake).await?),
            Side::Nginx => Conn::Http(clients::https_connect(self.target(side)?).await?),
            Side::Gateway | Side::Plain | Side::OpenAi => {
                Conn::Ws(Box::new(clients::open_session(self.target(side)?).await?))
            }
        })
    }

    fn target(&self, side: Side) -> Result<&Target> {
        match side {
            Side::Gateway => Ok(&self.gateway_target),
            Side::Plain => Ok(&self.plain_target),
            Side::Nginx => self.nginx_target.as_ref().context("no nginx"),
            Side::OpenAi => self.openai_target.as_ref().context("no openai gateway"),
            Side::Direct => anyhow::bail!("direct has no gateway target"),
        }
    }

    /// CPU seconds used so far by whatever serves `side`.
    pub fn cpu_secs(&self, side: Side) -> Option<f64> {
        match side {
            Side::Direct => None,
            Side::Gateway => Some(self.gateway.cpu_secs()),
            Side::Plain => Some(self.plain.cpu_secs()),
            Side::Nginx => self.nginx.as_ref().map(Nginx::cpu_secs),
            Side::OpenAi => self.openai.as_ref().map(Gateway::cpu_secs),
        }
    }

    /// The processes to attach strace to for `side`.
    pub fn pids(&self, side: Side) -> Vec<u32> {
        match side {
            Side::Direct => Vec::new(),
            Side::Gateway => vec![self.gateway.pid()],
            Side::Plain => vec![self.plain.pid()],
            Side::OpenAi => self.openai.iter().map(Gateway::pid).collect(),
            Side::Nginx => self
                .nginx
                .as_ref()
                .map(Nginx::worker_pids)
                .unwrap_or_default(),
        }
    }

    /// Open `n` connections to `side`, then run one chat on each at once.
    pub async fn streams(&self, side: Side, n: usize, w: impl Fn() -> Window) -> Result<Run> {
        let conns = self.open(side, n).await?;
        let w = w();
        let cpu0 = self.cpu_secs(side);
        let started = std::time::Instant::now();
        let mut set = JoinSet::new();
        for mut c in conns {
            set.spawn(async move {
                let s = c.stream(w).await;
                drop(c);
                s
            });
        }
        let mut samples = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            samples.push(r??);
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu_pct = match (cpu0, self.cpu_secs(side)) {
            (Some(a), Some(b)) => Some((b - a) / secs * 100.0),
            _ => None,
        };
        Ok(Run {
            samples,
            secs,
            cpu_pct,
        })
    }
}
