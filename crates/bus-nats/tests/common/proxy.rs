//! A TCP relay between the client and a server, that can swallow what the
//! server says while passing on what the client sends: the server stores
//! every publish and its confirmations are lost on the way back, as on a
//! link that failed in one direction.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The relay; stops accepting and cuts every link when dropped.
pub struct Proxy {
    port: u16,
    mute: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Relays a loopback port of its own to `upstream` (a port on 127.0.0.1).
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mute, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let links: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        {
            let (mute, stop, links) = (Arc::clone(&mute), Arc::clone(&stop), Arc::clone(&links));
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    // Without it, Nagle's algorithm holds each small
                    // request-reply (an ack and its confirmation) for a
                    // delayed ACK: tens of milliseconds per message.
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    {
                        let mut l = links.lock().unwrap();
                        l.push(client.try_clone().unwrap());
                        l.push(server.try_clone().unwrap());
                    }
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let never = Arc::new(AtomicBool::new(false));
                    std::thread::spawn(move || pipe(client, server, &never));
                    let mute = Arc::clone(&mute);
                    std::thread::spawn(move || pipe(s2, c2, &mute));
                }
            });
        }
        Self {
            port,
            mute,
            stop,
            links,
        }
    }

    /// `nats://127.0.0.1:<port>` of the relay.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on, what the server sends is read and dropped.
    pub fn mute_server(&self, mute: bool) {
        self.mute.store(mute, Ordering::SeqCst);
    }

    /// Closes every link it relays (the client sees its connection end).
    pub fn cut(&self) {
        for s in self.links.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either end closes, dropping what it reads
/// while `mute` is set.
fn pipe(mut from: TcpStream, mut to: TcpStream, mute: &AtomicBool) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mute.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
