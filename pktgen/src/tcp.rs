//! Connections per second with real TCP: a client that connects and closes as fast as it can,
//! and a server that accepts and closes.
//!
//! The client closes with `SO_LINGER {on, 0}`, which sends a RST instead of a FIN: no
//! TIME_WAIT, so a client address's 28k ephemeral ports do not run out after a few hundred
//! connections per second. Each connection is still a full three-way handshake through the
//! director (SYN in, SYN-ACK back for NAT, ACK in), then a RST.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Listen backlog of the server: bursts of SYNs must not overflow it.
const BACKLOG: i32 = 4096;

/// Sets `SO_LINGER {1, 0}` on `socket`: close sends a RST and leaves no TIME_WAIT.
fn abort_on_close(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Accepts connections on `0.0.0.0:port` with `threads` threads and closes each at once;
/// runs until the process is killed.
pub fn sink(port: u16, threads: usize) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    // SAFETY: listen() on our own bound socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = Arc::new(listener);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let listener = listener.clone();
            std::thread::spawn(move || {
                loop {
                    if let Ok((stream, _)) = listener.accept() {
                        let _ = abort_on_close(&stream);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// What a connect/close run achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpsResult {
    /// Connections established (handshake completed).
    pub connections: u64,
    /// Attempts that failed or timed out.
    pub failures: u64,
    /// Seconds the run lasted.
    pub seconds: f64,
    /// `connections / seconds`.
    pub per_second: f64,
    /// The first failure's error, if any.
    pub first_error: Option<String>,
}

/// Connects to `target` and closes, over and over, from `threads` threads for `duration`.
pub fn connect_close(target: SocketAddrV4, duration: Duration, threads: usize) -> CpsResult {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            let first_error = first_error.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect_timeout(
                        &SocketAddr::V4(target),
                        Duration::from_secs(1),
                    ) {
                        Ok(stream) => {
                            let _ = abort_on_close(&stream);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0
                                && let Ok(mut first) = first_error.lock()
                            {
                                *first = Some(e.to_string());
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let connections = ok.load(Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    CpsResult {
        connections,
        failures: failed.load(Ordering::Relaxed),
        seconds,
        per_second: if seconds > 0.0 {
            connections as f64 / seconds
        } else {
            0.0
        },
        first_error: first_error.lock().ok().and_then(|mut e| e.take()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_to_a_local_sink_are_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        let result = connect_close(
            SocketAddrV4::new([127, 0, 0, 1].into(), port),
            Duration::from_millis(200),
            2,
        );
        // A loaded machine may time a few out (the listener's backlog): most must succeed.
        assert!(result.connections > 10 * result.failures, "{result:?}");
        assert!(result.per_second > 0.0);
    }

    #[test]
    fn a_closed_port_counts_failures() {
        // Bind then drop: the port is very likely closed for the run.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let result = connect_close(
            SocketAddrV4::new([127, 0, 0, 1].into(), port),
            Duration::from_millis(50),
            1,
        );
        assert_eq!(result.connections, 0);
        assert!(result.failures > 0);
    }
}
