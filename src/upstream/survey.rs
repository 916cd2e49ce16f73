//! `tars upstreams`: ask every configured upstream now (its health probe and
//! its model list) and render a table — name, url, api, up, models, latency.
//! Works without a running gateway: it reads the configuration only.

use std::fmt::Write;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::member::Upstream;
use crate::config::Config;

/// One upstream as it answered just now.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub url: String,
    pub api: &'static str,
    /// `Err` holds why it is down.
    pub up: Result<(), String>,
    /// Static models, or what it lists now.
    pub models: Vec<String>,
    pub latency_ms: Option<f64>,
}

/// Probe every upstream of `cfg` concurrently (each under
/// [`super::member::PROBE_TIMEOUT`]), in the configuration's order.
pub async fn survey(cfg: &Config) -> Vec<Row> {
    let mut set = JoinSet::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let m = Arc::new(Upstream::new(u.clone(), &cfg.ollama));
        set.spawn(async move {
            let c = m.config();
            let probe = m.probe().await;
            let models = match &c.models {
                Some(list) => list.clone(),
                None if probe.is_ok() => m.discover().await.unwrap_or_default(),
                None => Vec::new(),
            };
            (
                i,
                Row {
                    name: c.name,
                    url: c.url,
                    api: c.api.as_str(),
                    latency_ms: probe
                        .as_ref()
                        .ok()
                        .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
                    up: probe.map(|_| ()).map_err(|e| e.to_string()),
                    models,
                },
            )
        });
    }
    let mut rows = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            rows.push(r);
        }
    }
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// The rows as an aligned text table, then one line per down upstream
/// saying why.
pub fn table(rows: &[Row]) -> String {
    let head = ["NAME", "URL", "API", "UP", "LATENCY", "MODELS"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.url.clone(),
                r.api.to_string(),
                if r.up.is_ok() { "yes" } else { "no" }.to_string(),
                r.latency_ms.map_or("-".into(), |l| format!("{l} ms")),
                if r.models.is_empty() {
                    "-".into()
                } else {
                    r.models.join(",")
                },
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for c in &cells {
        line(&c.each_ref().map(String::as_str));
    }
    for r in rows {
        if let Err(e) = &r.up {
            let _ = writeln!(out, "{}: {e}", r.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_explains_down_ones() {
        let rows = vec![
            Row {
                name: "desktop".into(),
                url: "http://10.0.0.2:11434".into(),
                api: "ollama",
                up: Ok(()),
                models: vec!["llama3.1:8b".into(), "qwen".into()],
                latency_ms: Some(1.5),
            },
            Row {
                name: "nas".into(),
                url: "http://10.0.0.3:8080".into(),
                api: "openai",
                up: Err("connection refused".into()),
                models: vec![],
                latency_ms: None,
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME     URL                    API     UP   LATENCY  MODELS"
        );
        assert_eq!(
            lines[1],
            "desktop  http://10.0.0.2:11434  ollama  yes  1.5 ms   llama3.1:8b,qwen"
        );
        assert_eq!(
            lines[2],
            "nas      http://10.0.0.3:8080   openai  no   -        -"
        );
        assert_eq!(lines[3], "nas: connection refused");
    }
}
