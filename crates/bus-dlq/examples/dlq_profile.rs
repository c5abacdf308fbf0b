//! Pushes N 1 KiB letters for profiling (`strace -c`, `perf`, callgrind).
//!
//! `cargo run --release -p bus-dlq --example dlq_profile -- <dir> <threads> <letters> [push|then]`

#![allow(clippy::unwrap_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use bus_dlq::{DlqConfig, SqliteDlq};
use support::Push;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let threads: usize = args[2].parse().unwrap();
    let total: u64 = args[3].parse().unwrap();
    let mode = args.get(4).map_or("push", String::as_str).to_owned();
    let _ = std::fs::remove_dir_all(&dir);
    let dlq = SqliteDlq::open(DlqConfig::new(&dir)).unwrap();
    let how = if mode == "then" {
        Push::Pipelined
    } else {
        Push::Blocking { chunk: 1 }
    };
    let took = support::time_pushes(&dlq, support::letters_per_thread(threads, total), how);
    eprintln!(
        "{total} letters, {threads} threads, {mode}: {:?}, {:.0}/s",
        took,
        total as f64 / took.as_secs_f64()
    );
    let (user, sys) = writer_cpu_ms();
    let (on_cpu, runnable) = writer_schedstat_ms();
    eprintln!(
        "writer cpu: user {:.1} + sys {:.1} µs/letter; on cpu {:.0} ms, runnable but waiting for a cpu {:.0} ms, of {:.0} ms",
        user * 1000.0 / total as f64,
        sys * 1000.0 / total as f64,
        on_cpu,
        runnable,
        took.as_secs_f64() * 1000.0
    );
    dlq.close();
}

/// The `/proc` directory of the `bus-dlq-writer` thread.
fn writer_task() -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(Result::ok)
        .map(|t| t.path())
        .find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "bus-dlq-writer")
        })
}

/// The writer thread's time on a CPU and waiting on a run queue, in ms.
fn writer_schedstat_ms() -> (f64, f64) {
    let Some(t) = writer_task() else {
        return (0.0, 0.0);
    };
    let s = std::fs::read_to_string(t.join("schedstat")).unwrap();
    let f: Vec<f64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (f[0] / 1e6, f[1] / 1e6)
}

/// CPU time (user, system) of the `bus-dlq-writer` thread so far, in ms.
fn writer_cpu_ms() -> (f64, f64) {
    let Some(t) = writer_task() else {
        return (0.0, 0.0);
    };
    let stat = std::fs::read_to_string(t.join("stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm;
    // USER_HZ = 100.
    (
        f[11].parse::<f64>().unwrap() * 10.0,
        f[12].parse::<f64>().unwrap() * 10.0,
    )
}
