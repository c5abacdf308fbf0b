//! What scenarios read and check: the demo's summary and its invariant, the
//! DLQ's answers, sockets, files and their owners.

use super::*;

/// The demo's `--json` summary: the last line of stdout that parses.
pub(super) fn summary(out: &Outputs) -> Result<Value, String> {
    out.stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .ok_or_else(|| format!("no JSON summary on stdout; stderr: {}", tail(&out.stderr)))
}

pub(super) fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Checks the invariant on the summary's own numbers (not its verdict).
pub(super) fn invariant(s: &Value) -> Result<String, String> {
    const TERMS: [&str; 6] = [
        "acked",
        "dead_lettered",
        "rejected_at_publish",
        "discarded_by_policy",
        "returned_at_shutdown",
        "pending",
    ];
    let published = s["published"]
        .as_u64()
        .ok_or("the summary has no `published`")?;
    // Over a broker, a run also settles what an earlier one left
    // (resumed). The MaxDeliver backstop's letters are in `dead_lettered`.
    let resumed = u(&s["broker"], "resumed");
    let sum: u64 = TERMS.iter().map(|t| u(s, t)).sum::<u64>();
    let shown = TERMS
        .iter()
        .filter(|t| u(s, t) > 0)
        .map(|t| format!("{t} {}", u(s, t)))
        .collect::<Vec<_>>()
        .join(" + ");
    if sum != published + resumed || s["invariant_holds"] != Value::Bool(true) {
        return Err(format!(
            "invariant broken: published {published} + resumed {resumed} != {shown} (= {sum})"
        ));
    }
    Ok(format!(
        "published {published} + resumed {resumed} = {shown}"
    ))
}

pub(super) fn dlq(ctx: &Ctx, dir: &Path, args: &[&str]) -> Result<String, String> {
    let o = ctx
        .busctl()
        .arg("dlq")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .map_err(|e| format!("busctl dlq: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "busctl dlq {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub(super) fn dlq_stats(ctx: &Ctx, dir: &Path) -> Result<Value, String> {
    let text = dlq(ctx, dir, &["stats", "--json"])?;
    serde_json::from_str(&text).map_err(|e| format!("dlq stats --json: {e}: {text}"))
}

pub(super) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

pub(super) fn wait_until(
    bound: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() > bound {
            return Err(format!("gave up waiting {bound:?} for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One GET on a fresh connection; the status code.
pub(super) fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&head)))
}

/// Sends a request head with one header of `size` bytes; how many bytes the
/// server took before it answered or closed.
pub(super) fn big_header_bytes_accepted(
    addr: SocketAddr,
    size: usize,
) -> Result<(usize, usize), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let mut sent = 0;
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ";
    s.write_all(head).map_err(|e| e.to_string())?;
    let chunk = vec![b'a'; 64 << 10];
    let give_up = Instant::now() + Duration::from_secs(8);
    while sent < size && Instant::now() < give_up {
        match s.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    // What was written but never read sits in the two sockets' buffers
    // (a few MiB at most on loopback), which is why the bound is 1 MiB of
    // a 64 MiB header and not the header limit itself. Returns what the
    // server read at most (what was sent beyond the buffers), and what was
    // sent in all.
    Ok((sent.saturating_sub(socket_buffers()), sent))
}

/// The loopback socket buffers a written-but-unread byte can sit in.
pub(super) fn socket_buffers() -> usize {
    let read = |p: &str| {
        fs::read_to_string(p)
            .ok()
            .and_then(|t| {
                t.split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .unwrap_or(4 << 20)
    };
    read("/proc/sys/net/ipv4/tcp_wmem") + read("/proc/sys/net/ipv4/tcp_rmem")
}

pub(super) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Every file's path, length and modification time: what a write changes.
pub(super) fn fingerprint(
    dir: &Path,
) -> Result<Vec<(PathBuf, u64, std::time::SystemTime)>, String> {
    let mut out = Vec::new();
    for p in files_under(dir) {
        let m = fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push((p, m.len(), m.modified().map_err(|e| e.to_string())?));
    }
    out.sort();
    Ok(out)
}

pub(super) fn chmod_tree(dir: &Path, mode: &str) -> Result<(), String> {
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(dir)
        .status()
        .map_err(|e| format!("chmod: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("chmod -R {mode}: {status}"))
}

pub(super) fn chown_nobody(dir: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("chown: {status}"))
}

pub(super) fn fastish_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub(super) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

pub(super) fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}
