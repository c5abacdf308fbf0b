//! Scenarios against a `nats-server` of their own: a broker killed and
//! restarted, a full stream, a lossy stream, a demo killed and resumed.

use super::*;

pub(super) fn nats_restart(ctx: &Ctx, how: &str) -> Result<String, String> {
    let dir = ctx.dir(&format!("nats-restart-{how}"))?;
    let mut server = NatsServer::start(&dir.join("nats"))?;
    let mut demo = nats_demo(
        ctx,
        &dir,
        &server,
        None,
        &[
            "--duration",
            "10s",
            // A settle the server lost in the restart stays owed until its
            // ack wait (30 s) passes; the demo need not wait for it: what
            // it did not settle must merely be no more than the streams owe.
            "--drain-timeout",
            "5s",
        ],
    )?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    server.stop(how)?;
    std::thread::sleep(Duration::from_secs(3));
    server.restart()?;
    let status = demo.wait(BOUND.saturating_sub(started.elapsed()))?;
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    if code != 0 {
        return Err(format!("exit {code}: {}", tail(&out.stderr)));
    }
    if u(&s, "acked") > u(&s, "published") {
        return Err(format!(
            "acked {} > published {}",
            u(&s, "acked"),
            u(&s, "published")
        ));
    }
    let told = out.stdout.contains("outage")
        || out.stdout.contains("unreachable")
        || out.stdout.contains("disconnected");
    if !told {
        return Err("the summary never mentions the broker outage".into());
    }
    Ok(sum)
}

pub(super) fn nats_full_stream(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("nats-full-stream")?;
    let server = NatsServer::start(&dir.join("nats"))?;
    let config = format!("{FAST_SETTINGS}[nats]\nmax_bytes = 300000\ndiscard = \"new\"\n");
    let mut demo = nats_demo(
        ctx,
        &dir,
        &server,
        Some(&config),
        &["--duration", "6s", "--drain-timeout", "10s"],
    )?;
    let status = demo.wait(BOUND)?;
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    let refused = u(&s, "rejected_at_publish");
    if refused == 0 {
        return Err(format!("the full stream refused nothing; {sum}"));
    }
    let health = s["health"]["status"].as_str().unwrap_or("");
    if health == "healthy" {
        return Err(format!(
            "health says healthy while the broker refused {refused}"
        ));
    }
    if code != 0 {
        return Err(format!(
            "exit {code} although nothing was lost: {}",
            tail(&out.stderr)
        ));
    }
    Ok(format!("exit 0, health {health}, {refused} refused; {sum}"))
}

pub(super) fn nats_lossy_refused(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("nats-lossy-refused")?;
    let server = NatsServer::start(&dir.join("nats"))?;
    let config = "[nats]\nmax_bytes = 300000\ndiscard = \"old\"\n";
    let mut demo = nats_demo(ctx, &dir, &server, Some(config), &["--duration", "5s"])?;
    let status = demo.wait(Duration::from_secs(15))?;
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    if code == 0 {
        return Err("a stream that deletes unsettled messages was accepted".into());
    }
    if !out.stderr.contains("allow_message_loss") {
        return Err(format!(
            "the refusal does not say how to opt in: {}",
            tail(&out.stderr)
        ));
    }
    Ok(format!("exit {code}: {}", last_line(&out.stderr)))
}

pub(super) fn nats_resume(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("nats-resume")?;
    let server = NatsServer::start(&dir.join("nats"))?;
    let data = dir.join("bus");
    // A short ack_wait hands the rerun, within its drain, the deliveries the
    // killed run held as well as those it never fetched: all it left.
    let config = format!("{FAST_SETTINGS}[nats]\nack_wait = \"3s\"\n");
    let mut first = nats_demo(ctx, &dir, &server, Some(&config), &["--duration", "20s"])?;
    first.wait_for_progress(&data)?;
    signal(first.pid(), "KILL")?;
    let _ = first.wait(Duration::from_secs(5))?;
    let mut second = nats_demo(
        ctx,
        &dir,
        &server,
        Some(&config),
        &["--duration", "3s", "--drain-timeout", "15s"],
    )?;
    let status = second.wait(BOUND)?;
    let out = second.outputs()?;
    let code = exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    let resumed = u(&s["broker"], "resumed");
    let owed = u(&s["broker"], "owed_at_start");
    if resumed == 0 {
        return Err(format!(
            "the rerun resumed nothing of the {owed} the killed run left; {sum}"
        ));
    }
    let kept = s["broker"]["kept_streams"].as_array().map_or(0, Vec::len);
    if kept != 0 {
        return Err(format!(
            "{kept} streams kept after a drain longer than ack_wait: {}; {sum}",
            s["broker"]["kept_streams"]
        ));
    }
    if code != 0 {
        return Err(format!("exit {code}: {}", tail(&out.stderr)));
    }
    Ok(format!("resumed {resumed} (owed at start {owed}); {sum}"))
}

/// `busctl demo --transport nats --json` against `server`, with its data in
/// `dir/bus` and, if given, `config` written to `dir/bus.toml` and passed
/// as `--config`; `args` come last.
pub(super) fn nats_demo(
    ctx: &Ctx,
    dir: &Path,
    server: &NatsServer,
    config: Option<&str>,
    args: &[&str],
) -> Result<Run, String> {
    let url = server.url();
    let mut all = vec!["--transport", "nats", "--nats-url", &url, "--json"];
    let path = dir.join("bus.toml").display().to_string();
    if let Some(text) = config {
        write_file(Path::new(&path), text)?;
        all.extend(["--config", &path]);
    }
    all.extend(args);
    Run::demo(ctx, &dir.join("bus"), &all)
}

/// What a `--config` file needs besides its own lines for a run to drain
/// in seconds, as the demo's built-in settings do (a file replaces them).
pub(super) const FAST_SETTINGS: &str = r#"
[breaker]
wait_in_open = "200ms"
max_wait_in_open = "2s"
[recovery.categories.CONNECTION]
max_retries = 10
backoff = { kind = "exponential", base = "10ms", factor = 2.0, cap = "100ms" }
[recovery.categories.MESSAGE_PROCESSING]
backoff = { kind = "constant", delay = "10ms" }
[recovery.categories.TIMEOUT]
backoff = { kind = "constant", delay = "20ms" }
"#;

pub(super) fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
