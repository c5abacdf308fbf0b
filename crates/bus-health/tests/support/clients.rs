//! Raw TCP clients for the HTTP endpoint, shared by the bounds tests and
//! the `http` bench: plain requests, idle crowds and a client that
//! pipelines requests and never reads.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One request for `/metrics`, kept alive, to pipeline.
pub const PIPELINED: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `GET path` on a fresh connection and reads the whole answer:
/// (status code, answer). An error if none comes within `within`.
pub fn try_get(addr: SocketAddr, path: &str, within: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(within))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out:?}")))?;
    Ok((code, out))
}

/// Raises the soft limit on open files towards `want` (up to the hard
/// limit) and returns the limit in force.
pub fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let target = now.maximum.map_or(want, |max| want.min(max));
    let raised = Rlimit {
        current: Some(target),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(_) => current,
    }
}

/// Clients that sit beside the ones measured.
pub struct Crowd {
    /// Connected, sending nothing.
    pub idle: Vec<TcpStream>,
    /// Sent `pipelined` requests for `/metrics` and reads nothing.
    pub pipeliner: TcpStream,
}

impl Crowd {
    /// Connects the pipelining client (and sends its requests), then up to
    /// `idle` idle clients: fewer when the open-file limit cannot be raised
    /// to fit them, which the returned crowd's `idle.len()` tells.
    pub fn gather(addr: SocketAddr, idle: usize, pipelined: usize) -> std::io::Result<Self> {
        let mut pipeliner = TcpStream::connect(addr)?;
        pipeliner.set_write_timeout(Some(Duration::from_secs(5)))?;
        pipeliner.write_all(&PIPELINED.repeat(pipelined))?;
        // Each idle client is a descriptor here and at most one in the
        // server; keep room for the rest of the process.
        let spare = 256;
        let limit = raise_open_files(idle as u64 + spare);
        let fits = usize::try_from(limit.saturating_sub(spare)).unwrap_or(usize::MAX);
        let idle = (0..idle.min(fits))
            .map(|_| TcpStream::connect(addr))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { idle, pipeliner })
    }
}
