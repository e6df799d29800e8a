//! Connections per second with real TCP: a client that connects and closes as fast as it can,
//! and a server that accepts and closes.
//!
//! The client closes with `SO_LINGER {on, 0}`, which sends a RST instead of a FIN: no
//! TIME_WAIT, so a client address's 28k ephemeral ports do not run out after a few hundred
//! connections per second. Each connection is still a full three-way handshake through the
//! director (SYN in, SYN-ACK back for NAT, ACK in), then a RST.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

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

/// Answers every HTTP request on `0.0.0.0:port` with `bytes` bytes (zeros) and closes: the
/// real servers of `make bench-compare`'s bulk download. One thread per connection; the
/// body is written from one reused buffer, so the server costs little CPU besides TCP.
pub fn http_bytes(port: u16, bytes: u64) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = serve_bytes(&mut stream, bytes);
        });
    }
    Ok(())
}

/// Reads one request's head (up to the blank line) and writes the response.
fn serve_bytes(stream: &mut std::net::TcpStream, bytes: u64) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(header.as_bytes())?;
    let body = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(body.len() as u64) as usize;
        stream.write_all(&body[..n])?;
        left -= n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)
}

/// What a connect/close run achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpsResult {
    /// Connections whose handshake completed (SYN-ACK received), including those the
    /// server's RST closed before the connecting thread looked (`reset_after_handshake`).
    pub connections: u64,
    /// Attempts whose handshake did not complete: timed out, or refused.
    pub failures: u64,
    /// Of `connections`: handshakes that completed, then the server's accept-and-RST arrived
    /// before the connecting thread ran again, so `connect` reported ECONNRESET (the
    /// handshake's round trip was shorter than the client's wake-up).
    #[serde(default)]
    pub reset_after_handshake: u64,
    /// Of `connections`: handshakes that needed the SYN sent again (the 1 s initial
    /// retransmission timeout: the SYN or the SYN-ACK was lost).
    #[serde(default)]
    pub syn_retransmitted: u64,
    /// Seconds the run lasted.
    pub seconds: f64,
    /// `connections / seconds`.
    pub per_second: f64,
    /// Time from `connect` to the handshake's completion, over `connections`.
    #[serde(default)]
    pub handshake: Option<HandshakeTimes>,
    /// The first failure's error, if any.
    pub first_error: Option<String>,
}

/// Percentiles of the handshake time, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeTimes {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// How one attempt ended.
enum Attempt {
    /// Handshake complete; `reset`: the server's RST came first; `retransmitted`: the SYN
    /// went out more than once.
    Connected { reset: bool, retransmitted: bool },
    /// No handshake.
    Failed(io::Error),
}

/// The kernel's `TCP_INFO` for `fd`, or `None`.
fn tcp_info(fd: std::os::fd::RawFd) -> Option<libc::tcp_info> {
    // SAFETY: all-zero is a valid tcp_info (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes; a bad fd only returns an error.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

/// One connect with a timeout, then an abortive close. A non-blocking connect and `poll`, as
/// `TcpStream::connect_timeout`, but on failure `TCP_INFO` tells a reset after a completed
/// handshake (an RTT was measured from the SYN-ACK) from a handshake that never completed.
fn attempt(target: SocketAddrV4, timeout: Duration) -> Attempt {
    let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::TCP)) {
        Ok(s) => s,
        Err(e) => return Attempt::Failed(e),
    };
    if let Err(e) = socket.set_nonblocking(true) {
        return Attempt::Failed(e);
    }
    let _ = abort_on_close(&socket);
    let completed = match socket.connect(&SocketAddr::V4(target).into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let mut pfd = libc::pollfd {
                fd: socket.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => Err(io::Error::from(io::ErrorKind::TimedOut)),
                n if n < 0 => Err(io::Error::last_os_error()),
                _ => match socket.take_error() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) | Err(e) => Err(e),
                },
            }
        }
        Err(e) => Err(e),
    };
    let info = tcp_info(socket.as_raw_fd());
    let retransmitted = info.is_some_and(|i| i.tcpi_total_retrans > 0);
    match completed {
        Ok(()) => Attempt::Connected {
            reset: false,
            retransmitted,
        },
        Err(e)
            if e.raw_os_error() == Some(libc::ECONNRESET)
                && info.is_some_and(|i| i.tcpi_rtt > 0) =>
        {
            Attempt::Connected {
                reset: true,
                retransmitted,
            }
        }
        Err(e) => Attempt::Failed(e),
    }
}

/// What one connecting thread counted.
struct ThreadCounts {
    ok: u64,
    reset: u64,
    retransmitted: u64,
    failed: u64,
    handshake_ns: Histogram<u64>,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Connects to `target` and closes, over and over, from `threads` threads for `duration`.
pub fn connect_close(target: SocketAddrV4, duration: Duration, threads: usize) -> CpsResult {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = ThreadCounts {
                    ok: 0,
                    reset: 0,
                    retransmitted: 0,
                    failed: 0,
                    handshake_ns: histogram(),
                    first_error: None,
                };
                while !stop.load(Ordering::Relaxed) {
                    let begun = Instant::now();
                    match attempt(target, Duration::from_secs(1)) {
                        Attempt::Connected {
                            reset,
                            retransmitted,
                        } => {
                            let ns = begun.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                            c.handshake_ns.saturating_record(ns.max(1_000));
                            c.ok += 1;
                            c.reset += u64::from(reset);
                            c.retransmitted += u64::from(retransmitted);
                        }
                        Attempt::Failed(e) => {
                            c.failed += 1;
                            c.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                c
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut result = CpsResult {
        seconds,
        ..CpsResult::default()
    };
    let mut all = histogram();
    for h in handles {
        let Ok(c) = h.join() else { continue };
        result.connections += c.ok;
        result.reset_after_handshake += c.reset;
        result.syn_retransmitted += c.retransmitted;
        result.failures += c.failed;
        let _ = all.add(&c.handshake_ns);
        if result.first_error.is_none() {
            result.first_error = c.first_error;
        }
    }
    // Connections that completed after the stop flag still count; per second uses the
    // whole span until the last thread returned.
    let seconds = started.elapsed().as_secs_f64().max(seconds);
    result.seconds = seconds;
    result.per_second = if seconds > 0.0 {
        result.connections as f64 / seconds
    } else {
        0.0
    };
    if !all.is_empty() {
        let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
        result.handshake = Some(HandshakeTimes {
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            max_us: all.max() as f64 / 1000.0,
        });
    }
    result
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
    fn the_bulk_server_sends_the_length_it_announces() {
        use std::io::{Read, Write};
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::thread::spawn(move || http_bytes(port, 300_000));
        let mut stream = loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&all[..split]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 300000\r\n"), "{head}");
        assert_eq!(all.len() - split, 300_000);
        assert!(all[split..].iter().all(|&b| b == 0));
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
