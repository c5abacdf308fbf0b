//! `cargo xtask chaos [--ci] [--only NAME]... [--list]`: faults from outside,
//! run as black boxes against the built `busctl`.
//!
//! Each scenario does to a running `busctl` what an operator's bad day does
//! (a signal, a full disk, a broker killed and restarted, a client that holds
//! sockets open) and fails when the invariant, the exit code or a bound
//! breaks. A scenario runs at most [`BOUND`]; a NATS scenario starts its own
//! `nats-server` on a free loopback port and never touches a shared one.
//! `--ci` runs the subset marked for CI; every scenario is bounded in time and
//! load, and cleans up what it made (servers, mounts, directories).

mod checks;
mod local;
mod nats;
mod process;

use checks::*;
use local::*;
use nats::*;
use process::*;
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The longest any scenario may run.
const BOUND: Duration = Duration::from_secs(30);

/// An answer slower than this is a stalled server, not a busy machine.
const STALL: Duration = Duration::from_millis(500);

/// One black-box scenario.
struct Scenario {
    name: &'static str,
    /// Run by `cargo xtask chaos --ci` (and so by validate).
    ci: bool,
    about: &'static str,
    run: fn(&Ctx) -> Result<String, String>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sigterm",
        ci: true,
        about: "SIGTERM mid-run: drain, summary, nothing in flight vanishes, exit 0",
        run: sigterm,
    },
    Scenario {
        name: "sigint-twice",
        ci: true,
        about: "a second SIGINT exits at once, non-zero, saying so",
        run: sigint_twice,
    },
    Scenario {
        name: "full-disk",
        ci: true,
        about: "2 MiB tmpfs data dir: invariant sums, exit code tells, no torn line or temp file",
        run: full_disk,
    },
    Scenario {
        name: "thread-limit",
        ci: true,
        about: "--publishers 100 under a process limit: a clear error, no panic",
        run: thread_limit,
    },
    Scenario {
        name: "dlq-read-only",
        ci: true,
        about: "dlq read commands on a read-only store write nothing",
        run: dlq_read_only,
    },
    Scenario {
        name: "replay-blocked",
        ci: true,
        about: "300 unpublishable replays do not block the others",
        run: replay_blocked,
    },
    Scenario {
        name: "http-stall",
        ci: true,
        about: "1000 idle clients and one that never reads: /healthz never stalls",
        run: http_stall,
    },
    Scenario {
        name: "nats-restart",
        ci: true,
        about: "nats-server SIGKILLed at 3 s and restarted at 6 s: counts exact, outage shown",
        run: |ctx| nats_restart(ctx, "KILL"),
    },
    Scenario {
        name: "nats-full-stream",
        ci: true,
        about: "a stream at max_bytes under discard=new: refusals counted, health not healthy",
        run: nats_full_stream,
    },
    Scenario {
        name: "nats-lossy-refused",
        ci: true,
        about: "a stream that may drop unsettled messages is refused unless opted in",
        run: nats_lossy_refused,
    },
    Scenario {
        name: "nats-resume",
        ci: true,
        about: "a demo SIGKILLed mid-run: the rerun on its data dir resumes what it left",
        run: nats_resume,
    },
    Scenario {
        name: "nats-restart-term",
        ci: false,
        about: "as nats-restart, with SIGTERM",
        run: |ctx| nats_restart(ctx, "TERM"),
    },
];

/// What every scenario gets.
struct Ctx {
    busctl: PathBuf,
    /// A directory removed when the run ends.
    scratch: PathBuf,
}

impl Ctx {
    /// A fresh directory for one scenario's files.
    fn dir(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.scratch.join(name);
        fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        Ok(d)
    }

    fn busctl(&self) -> Command {
        Command::new(&self.busctl)
    }
}

pub(crate) fn chaos(args: &[String]) -> Result<(), String> {
    let mut only: Vec<&str> = Vec::new();
    let mut ci = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ci" => ci = true,
            "--only" => only.push(it.next().ok_or("--only needs a scenario name")?),
            "--list" => {
                for s in SCENARIOS {
                    println!(
                        "{:<18} {} {}",
                        s.name,
                        if s.ci { "ci " } else { "   " },
                        s.about
                    );
                }
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --list)")),
        }
    }
    for name in &only {
        if !SCENARIOS.iter().any(|s| s.name == *name) {
            return Err(format!("no scenario named {name:?} (try --list)"));
        }
    }
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            if only.is_empty() {
                !ci || s.ci
            } else {
                only.contains(&s.name)
            }
        })
        .collect();

    let mut build = crate::cargo();
    build.args(["build", "--quiet", "-p", "busctl"]);
    crate::step("build busctl", build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    let scratch = std::env::temp_dir().join(format!("bus-chaos-{}", std::process::id()));
    fs::create_dir_all(&scratch).map_err(|e| format!("mkdir {}: {e}", scratch.display()))?;
    let ctx = Ctx {
        busctl: target.join("debug/busctl"),
        scratch: scratch.clone(),
    };

    let started = Instant::now();
    let mut failed = Vec::new();
    for s in &chosen {
        eprintln!("==> chaos {}: {}", s.name, s.about);
        let t = Instant::now();
        match (s.run)(&ctx) {
            Ok(said) => eprintln!("    ok in {:.1}s: {said}", t.elapsed().as_secs_f64()),
            Err(why) => {
                eprintln!("    FAILED in {:.1}s: {why}", t.elapsed().as_secs_f64());
                failed.push(s.name);
            }
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    let passed = chosen.len() - failed.len();
    eprintln!(
        "chaos: {passed} passed, {} failed in {:.0}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}
#[cfg(test)]
mod tests {
    use super::SCENARIOS;

    /// docs/faults.md lists every scenario, and only those, in its table.
    #[test]
    fn the_guide_lists_every_scenario() {
        let guide = std::fs::read_to_string(crate::root().join("docs/faults.md"))
            .unwrap_or_else(|e| panic!("docs/faults.md: {e}"));
        let listed: Vec<&str> = guide
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let ours: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
    }
}
