//! The processes and mounts a scenario owns, each cleaned up when dropped.

use super::*;

/// A child process whose stdout and stderr go to files (a pipe nobody reads
/// could block it), killed if still running when dropped.
pub(super) struct Run {
    pub(super) child: Child,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
}

pub(super) struct Outputs {
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Run {
    pub(super) fn demo(ctx: &Ctx, data_dir: &Path, args: &[&str]) -> Result<Self, String> {
        fs::create_dir_all(data_dir).map_err(|e| format!("mkdir {}: {e}", data_dir.display()))?;
        let mut cmd = ctx.busctl();
        cmd.arg("demo").args(args).arg("--data-dir").arg(data_dir);
        Self::spawn(cmd, data_dir)
    }

    pub(super) fn spawn(mut cmd: Command, dir: &Path) -> Result<Self, String> {
        let n = fastish_id();
        let stdout = dir.with_extension(format!("out{n}"));
        let stderr = dir.with_extension(format!("err{n}"));
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        cmd.stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?);
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the demo has dead-lettered or logged something, so a
    /// signal lands on a bus with work in flight.
    pub(super) fn wait_for_progress(&mut self, data_dir: &Path) -> Result<(), String> {
        let log = data_dir.join("logs/errors.jsonl");
        let started = Instant::now();
        loop {
            if fs::metadata(&log).is_ok_and(|m| m.len() > 0)
                && started.elapsed() > Duration::from_secs(2)
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the demo ended before the fault: {status}"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the demo made no progress in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn wait(&mut self, bound: Duration) -> Result<ExitStatus, String> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if started.elapsed() < bound => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let err = fs::read_to_string(&self.stderr).unwrap_or_default();
                    return Err(format!(
                        "still running after {bound:?}; killed. stderr: {}",
                        tail(&err)
                    ));
                }
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    pub(super) fn outputs(&self) -> Result<Outputs, String> {
        let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(Outputs {
            stdout: read(&self.stdout)?,
            stderr: read(&self.stderr)?,
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A nats-server of the scenario's own on a free loopback port.
pub(super) struct NatsServer {
    pub(super) child: Option<Child>,
    pub(super) port: u16,
    pub(super) store: PathBuf,
}

impl NatsServer {
    pub(super) fn start(store: &Path) -> Result<Self, String> {
        fs::create_dir_all(store).map_err(|e| format!("mkdir {}: {e}", store.display()))?;
        let mut s = Self {
            child: None,
            port: free_port()?,
            store: store.to_path_buf(),
        };
        s.restart()?;
        Ok(s)
    }

    pub(super) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(super) fn restart(&mut self) -> Result<(), String> {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server (is it installed?): {e}"))?;
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_until(Duration::from_secs(10), "nats-server to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
    }

    pub(super) fn stop(&mut self, how: &str) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), how)?;
            let _ = child.wait();
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tmpfs of a fixed size mounted for one scenario, unmounted when dropped.
pub(super) struct Tmpfs {
    pub(super) path: PathBuf,
}

impl Tmpfs {
    pub(super) fn mount(at: &Path, size: &str) -> Result<Self, String> {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!(
                "could not mount a {size} tmpfs at {} (root needed): {status}",
                at.display()
            ));
        }
        Ok(Self {
            path: at.to_path_buf(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

pub(super) fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{name} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid}: {status}"))
    }
}

/// The process's exit code; a death by signal is a failure of its own.
pub(super) fn exit_code(status: ExitStatus, out: &Outputs) -> Result<i32, String> {
    status.code().ok_or_else(|| {
        format!(
            "killed by a signal ({status}), no exit code; stderr: {}",
            tail(&out.stderr)
        )
    })
}
