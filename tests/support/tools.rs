//! External tools some tests need (chromium, python's venv, node, nginx,
//! systemd-analyze, prlimit). No test passes silently: when a tool is
//! missing, [`skip`] prints `SKIPPED: ...` and lets the test return early on
//! a developer's machine, but panics when `CI=true`, where `.ci/run` has
//! installed every one of them.

use std::io::Write;

/// Whether this run is CI (`CI=true` or `CI=1`, as `.ci/run` sets it).
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// A test cannot run because `why`: say so and return (so the caller
/// returns) locally; fail under CI.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}");
    assert!(
        !in_ci(),
        "{line} — under CI=true a missing tool is a failure (.ci/run installs it)"
    );
    // Past the test harness's output capture, so a skip is seen.
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `Err(why)` when `program --version` does not run successfully.
pub fn have(program: &str) -> Result<(), String> {
    have_with(program, "--version")
}

/// `Err(why)` when `program arg` does not run successfully.
pub fn have_with(program: &str, arg: &str) -> Result<(), String> {
    match std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{program} {arg}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{program} is not installed ({e})")),
    }
}

/// The full path of `program` on `PATH`, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
