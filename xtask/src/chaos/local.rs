//! Scenarios against one `busctl` on this machine: signals, a full disk,
//! process limits, a read-only store, blocked replays and a stalled client.

use super::*;

pub(super) fn sigterm(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("sigterm")?;
    let mut demo = Run::demo(ctx, &dir, &["--duration", "30s", "--json"])?;
    demo.wait_for_progress(&dir)?;
    signal(demo.pid(), "TERM")?;
    let sent = Instant::now();
    let status = demo.wait(Duration::from_secs(20))?;
    let took = sent.elapsed();
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    if u(&s, "returned_at_shutdown") > 0 {
        return Err(format!(
            "{} messages handed back on the memory transport",
            u(&s, "returned_at_shutdown")
        ));
    }
    if code != 0 {
        return Err(format!(
            "exit code {code} after a clean drain; stderr: {}",
            tail(&out.stderr)
        ));
    }
    if !out.stderr.contains("SIGTERM") && !out.stdout.contains("SIGTERM") {
        return Err(format!(
            "the output does not name the signal: {}",
            tail(&out.stderr)
        ));
    }
    Ok(format!(
        "exited 0 {:.1}s after SIGTERM; {sum}",
        took.as_secs_f64()
    ))
}

pub(super) fn sigint_twice(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("sigint-twice")?;
    // Half the deliveries fail once and wait for a scheduled retry, so the
    // drain the first signal starts takes seconds (14 s measured) and the
    // second signal, 50 ms later, always lands inside it; without failures
    // a drain can finish within the 50 ms and the run rightly exits 0.
    let mut demo = Run::demo(
        ctx,
        &dir,
        &["--duration", "30s", "--fail-rate", "0.5", "--json"],
    )?;
    demo.wait_for_progress(&dir)?;
    signal(demo.pid(), "INT")?;
    std::thread::sleep(Duration::from_millis(50));
    signal(demo.pid(), "INT")?;
    let sent = Instant::now();
    let status = demo.wait(Duration::from_secs(10))?;
    let took = sent.elapsed();
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    if code == 0 {
        return Err("exit code 0 after a second signal cut the drain short".into());
    }
    if took > Duration::from_secs(3) {
        return Err(format!(
            "took {:.1}s to exit after the second signal",
            took.as_secs_f64()
        ));
    }
    if out.stderr.trim().is_empty() {
        return Err("said nothing on stderr".into());
    }
    Ok(format!(
        "exit {code} {:.2}s after the second SIGINT: {}",
        took.as_secs_f64(),
        last_line(&out.stderr)
    ))
}

pub(super) fn full_disk(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("full-disk")?;
    let mount = Tmpfs::mount(&dir, "2m")?;
    let mut demo = Run::demo(
        ctx,
        mount.path(),
        &[
            "--duration",
            "8s",
            "--poison-rate",
            "0.5",
            "--drain-timeout",
            "5s",
            "--json",
        ],
    )?;
    let status = demo.wait(BOUND)?;
    let out = demo.outputs()?;
    let code = exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    let returned = u(&s, "returned_at_shutdown");
    if returned > 0 && code == 0 {
        return Err(format!("{returned} messages handed back, yet exit code 0"));
    }
    if returned == 0 && code != 0 {
        return Err(format!(
            "exit code {code} with nothing handed back: {}",
            tail(&out.stderr)
        ));
    }
    let status_word = s["health"]["status"].as_str().unwrap_or("");
    if status_word == "healthy" {
        return Err("health says healthy while the disk refused dead letters".into());
    }
    let log = mount.path().join("logs/errors.jsonl");
    if let Ok(text) = fs::read_to_string(&log) {
        for (n, line) in text.lines().enumerate() {
            if serde_json::from_str::<Value>(line).is_err() {
                return Err(format!(
                    "{}:{} is not a whole JSON line",
                    log.display(),
                    n + 1
                ));
            }
        }
    }
    let stray = files_under(mount.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect::<Vec<_>>();
    if !stray.is_empty() {
        return Err(format!("temporary files left behind: {stray:?}"));
    }
    Ok(format!(
        "exit {code}, {returned} handed back, health {status_word}; {sum}"
    ))
}

pub(super) fn thread_limit(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("thread-limit")?;
    // Root is not bound by RLIMIT_NPROC: run as nobody, who owns nothing else.
    chown_nobody(&dir)?;
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "prlimit",
        "--nproc=40:40",
    ])
    .arg(&ctx.busctl)
    .args([
        "demo",
        "--publishers",
        "100",
        "--messages",
        "2000",
        "--json",
        "--data-dir",
    ])
    .arg(&dir);
    let mut run = Run::spawn(cmd, &dir)?;
    let status = run.wait(BOUND)?;
    let out = run.outputs()?;
    if out.stderr.contains("panicked") {
        return Err(format!("panicked: {}", tail(&out.stderr)));
    }
    let code = exit_code(status, &out)?;
    if code == 0 {
        let s = summary(&out)?;
        return Ok(format!("ran within the limit; {}", invariant(&s)?));
    }
    if !out.stderr.to_lowercase().contains("thread") {
        return Err(format!(
            "exit {code} without saying a thread could not start: {}",
            tail(&out.stderr)
        ));
    }
    Ok(format!("exit {code}: {}", last_line(&out.stderr)))
}

pub(super) fn dlq_read_only(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("dlq-read-only")?;
    let mut demo = Run::demo(
        ctx,
        &dir,
        &["--messages", "2000", "--poison-rate", "0.05", "--json"],
    )?;
    let status = demo.wait(BOUND)?;
    let out = demo.outputs()?;
    exit_code(status, &out)?;
    let before = fingerprint(&dir)?;
    // Owned by nobody, writable by no one: the commands run as nobody, whom
    // (unlike root) the mode binds.
    chown_nobody(&dir)?;
    chmod_tree(&dir, "a-w,a+rX")?;
    let mut said = Vec::new();
    for args in [
        vec!["stats"],
        vec!["list", "--limit", "5"],
        vec!["groups"],
        vec!["verify"],
        vec!["replay", "--state", "dead", "--dry-run"],
    ] {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&ctx.busctl)
            .arg("dlq")
            .args(&args)
            .arg("--data-dir")
            .arg(&dir);
        let o = cmd
            .output()
            .map_err(|e| format!("busctl dlq {}: {e}", args[0]))?;
        if !o.status.success() {
            return Err(format!(
                "busctl dlq {} failed on a read-only store: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        said.push(args[0]);
    }
    chmod_tree(&dir, "u+w")?;
    let after = fingerprint(&dir)?;
    if before != after {
        return Err(format!(
            "the store changed under read commands: {before:?} -> {after:?}"
        ));
    }
    Ok(format!(
        "{} ran read-only, store unchanged",
        said.join(", ")
    ))
}

pub(super) fn replay_blocked(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("replay-blocked")?;
    let mut demo = Run::demo(
        ctx,
        &dir,
        &["--messages", "4000", "--poison-rate", "0.2", "--json"],
    )?;
    let status = demo.wait(BOUND)?;
    let out = demo.outputs()?;
    exit_code(status, &out)?;
    let dead = dlq_stats(ctx, &dir)?;
    let total = dead["total"].as_u64().unwrap_or(0);
    if total < 320 {
        return Err(format!(
            "the first run dead-lettered only {total} letters; 320 needed"
        ));
    }
    // 300 letters asked to go where nobody listens, then 20 that can be
    // delivered: the 20 must not wait behind the 300.
    dlq(
        ctx,
        &dir,
        &["replay", "--limit", "300", "--to", "nobody.listens"],
    )?;
    dlq(ctx, &dir, &["replay", "--state", "dead", "--limit", "20"])?;
    let mut demo = Run::demo(
        ctx,
        &dir,
        &[
            "--duration",
            "4s",
            "--poison-rate",
            "0",
            "--fail-rate",
            "0",
            "--json",
        ],
    )?;
    let status = demo.wait(BOUND)?;
    let out = demo.outputs()?;
    exit_code(status, &out)?;
    let s = summary(&out)?;
    let sum = invariant(&s)?;
    let stats = dlq_stats(ctx, &dir)?;
    let states = &stats["by_state"];
    let waiting = states["replay_requested"].as_u64().unwrap_or(0);
    let replayed = states["replayed"].as_u64().unwrap_or(0);
    if replayed < 20 {
        return Err(format!(
            "only {replayed} of 20 deliverable replays went out; states {states}"
        ));
    }
    if waiting > 0 {
        return Err(format!(
            "{waiting} replays still waiting after the run; states {states}"
        ));
    }
    Ok(format!("states {states}; {sum}"))
}

pub(super) fn http_stall(ctx: &Ctx) -> Result<String, String> {
    let dir = ctx.dir("http-stall")?;
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let http = addr.to_string();
    let mut demo = Run::demo(ctx, &dir, &["--duration", "25s", "--json", "--http", &http])?;
    wait_until(
        Duration::from_secs(10),
        "the HTTP endpoint to listen",
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
    )?;

    let mut idle = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(e) => return Err(format!("idle client {} could not connect: {e}", idle.len())),
        }
    }
    // Pipelines requests and never reads a byte of the answers.
    let mut hog = TcpStream::connect(addr).map_err(|e| format!("pipelining client: {e}"))?;
    hog.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let burst = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let _ = hog.write_all(burst.as_bytes());

    let mut took = Vec::new();
    let mut bad = 0;
    let give_up = Instant::now() + Duration::from_secs(12);
    for _ in 0..200 {
        if Instant::now() > give_up {
            bad += 200 - took.len();
            took.resize(200, Duration::from_secs(2));
            break;
        }
        let t = Instant::now();
        match get(addr, "/healthz", Duration::from_secs(2)) {
            Ok(status) if status == 200 || status == 503 => took.push(t.elapsed()),
            _ => {
                bad += 1;
                took.push(Duration::from_secs(2));
            }
        }
    }
    // A header far over any sane limit must be refused before it is read whole.
    let big = big_header_bytes_accepted(addr, 64 << 20);
    let rss = vm_hwm_kib(demo.pid());
    drop(idle);
    drop(hog);
    signal(demo.pid(), "TERM")?;
    let _ = demo.wait(Duration::from_secs(15));

    took.sort();
    let p99 = took[took.len() * 99 / 100 - 1];
    let p50 = took[took.len() / 2];
    let (accepted, sent) = big?;
    if bad > 0 {
        return Err(format!(
            "{bad} of 200 /healthz requests failed or timed out (p50 {p50:?}, p99 {p99:?})"
        ));
    }
    // The p99 goal (50 ms) is the bench's to show (`cargo xtask bench`,
    // crates/bus-health/benches/http.rs) on a quiet machine; here, beside
    // whatever else CI runs, a stall (the old server's seconds) is the fault.
    if p99 > STALL {
        return Err(format!(
            "/healthz p99 {p99:?} (p50 {p50:?}) beside 1000 idle clients and a stalled one"
        ));
    }
    if accepted > 1 << 20 {
        return Err(format!(
            "the server read {accepted} bytes of one header before refusing it"
        ));
    }
    Ok(format!(
        "/healthz p50 {p50:?} p99 {p99:?}; a 64 MiB header was refused after {} KiB sent, {}; peak RSS {} MiB",
        sent >> 10,
        if accepted == 0 {
            "all of it within the socket buffers".to_owned()
        } else {
            format!("{} KiB beyond the socket buffers", accepted >> 10)
        },
        rss.map_or("?".into(), |k| (k >> 10).to_string())
    ))
}
