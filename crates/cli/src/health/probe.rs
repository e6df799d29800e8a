//! One check of one real server: a TCP connect, an HTTP or HTTPS GET (ureq with rustls),
//! a UDP request, or an external program. Each returns `Ok` or a one-line reason, and
//! never takes longer than the check's timeout (a program still running then is killed).
//!
//! The director's own connections to its real servers go out through the kernel: their
//! replies are addressed to the director, which the XDP filter passes to the kernel.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::spec::{CheckSpec, HttpProbe, Probe, TlsCheck};

/// The most of a body read for `digest` and `contains` (keepalived reads it whole; a health
/// page is small).
const BODY_LIMIT: u64 = 1 << 20;

/// A check ready to run against one address: what can be built once (the HTTP agent with
/// its TLS settings) is.
pub struct Prober {
    spec: Arc<CheckSpec>,
    target: SocketAddr,
    http: Option<ureq::Agent>,
}

impl Prober {
    /// Prepares `spec` against `addr` (the check's own port); a CA file that cannot be read
    /// is reported at every check, as the failure it is.
    pub fn new(spec: Arc<CheckSpec>, addr: IpAddr) -> Prober {
        let http = match &spec.probe {
            Probe::Http(h) => Some(agent(h, spec.timeout)),
            _ => None,
        };
        Prober {
            target: SocketAddr::new(addr, spec.port),
            spec,
            http,
        }
    }

    /// Runs the check once.
    pub fn run(&self) -> Result<(), String> {
        let timeout = self.spec.timeout;
        match &self.spec.probe {
            Probe::Tcp => tcp(self.target, timeout),
            Probe::Http(h) => match &self.http {
                Some(agent) => http(agent, h, self.target),
                None => Err("no HTTP agent".into()),
            },
            Probe::Udp { send, expect } => udp(self.target, send, expect.as_deref(), timeout),
            Probe::External { command } => external(command, self.target, timeout),
        }
    }
}

fn tcp(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    TcpStream::connect_timeout(&target, timeout)
        .map(drop)
        .map_err(|e| io_reason("connect", &e, timeout))
}

/// "connect: refused", "connect: no answer within 1s", ...
fn io_reason(what: &str, e: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        TimedOut | WouldBlock => format!("{what}: no answer within {timeout:?}"),
        ConnectionRefused => format!("{what}: refused"),
        _ => format!("{what}: {e}"),
    }
}

/// The agent of one HTTP check: a fresh connection every time (a pooled one could hide a
/// listener that stopped), no proxy from the environment, no redirects followed (a 301 is
/// a status like any other), statuses returned rather than turned into errors.
fn agent(h: &HttpProbe, timeout: Duration) -> ureq::Agent {
    let tls = match &h.tls {
        None | Some(TlsCheck::Unverified) => TlsConfig::builder().disable_verification(true),
        Some(TlsCheck::CaFile(path)) => {
            let certs: Vec<Certificate<'static>> = std::fs::read(path)
                .map(|pem| {
                    ureq::tls::parse_pem(&pem)
                        .filter_map(|item| match item {
                            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            // No certificate read: verification against nothing fails every check, which
            // is what an unreadable CA file deserves.
            TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs))
        }
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .proxy(None)
        .user_agent("xvs-health-check")
        .tls_config(tls.build())
        .build()
        .into()
}

fn http(agent: &ureq::Agent, h: &HttpProbe, target: SocketAddr) -> Result<(), String> {
    let scheme = if h.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{target}{}", h.path);
    let mut request = agent.get(&url);
    if let Some(host) = &h.host {
        request = request.header("Host", host);
    }
    let mut response = request.call().map_err(|e| format!("GET {}: {e}", h.path))?;
    let status = response.status().as_u16();
    if !h.status.contains(&status) {
        let want: Vec<String> = h.status.iter().map(u16::to_string).collect();
        return Err(format!(
            "GET {}: status {status}, expected {}",
            h.path,
            want.join(" or ")
        ));
    }
    if h.digest.is_none() && h.contains.is_none() {
        return Ok(());
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_vec()
        .map_err(|e| format!("GET {}: body: {e}", h.path))?;
    if let Some(want) = &h.digest {
        let got = hex(&Md5::digest(&body));
        if got != *want {
            return Err(format!(
                "GET {}: body digest {got}, expected {want}",
                h.path
            ));
        }
    }
    if let Some(needle) = &h.contains
        && !contains(&body, needle.as_bytes())
    {
        return Err(format!("GET {}: body does not contain {needle:?}", h.path));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn udp(
    target: SocketAddr,
    send: &str,
    expect: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    // Connected, so an ICMP port unreachable comes back as a refused receive.
    socket
        .connect(target)
        .map_err(|e| io_reason("connect", &e, timeout))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("socket: {e}"))?;
    socket
        .send(send.as_bytes())
        .map_err(|e| io_reason("send", &e, timeout))?;
    let mut buf = [0u8; 2048];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| io_reason("reply", &e, timeout))?;
    match expect {
        Some(want) if !contains(&buf[..n], want.as_bytes()) => Err(format!(
            "reply {:?} does not contain {want:?}",
            String::from_utf8_lossy(&buf[..n.min(64)])
        )),
        _ => Ok(()),
    }
}

/// Runs `command ADDR PORT` (keepalived's MISC_CHECK, ldirectord's `external`): exit status
/// 0 passes. Its output is discarded; past `timeout` it is killed.
fn external(command: &[String], target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .arg(target.ip().to_string())
        .arg(target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{program}: {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program}: still running after {timeout:?}, killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::StartState;
    use std::io::Write;
    use std::net::TcpListener;

    fn spec(probe: Probe, port: u16) -> Arc<CheckSpec> {
        Arc::new(CheckSpec {
            probe,
            port,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            start: StartState::Up,
        })
    }

    fn localhost() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// A one-shot HTTP server on loopback answering `response` to the first request.
    fn serve_once(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = c.write_all(response.as_bytes());
            }
        });
        port
    }

    fn http_probe(status: u16, digest: Option<&str>, contains: Option<&str>) -> Probe {
        Probe::Http(HttpProbe {
            path: "/health".into(),
            host: None,
            status: vec![status],
            digest: digest.map(str::to_string),
            contains: contains.map(str::to_string),
            tls: None,
        })
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nrs1";

    #[test]
    fn http_status_digest_and_substring() {
        // md5("rs1")
        let digest = hex(&Md5::digest(b"rs1"));
        let run = |probe: Probe, response: &'static str| {
            let port = serve_once(response);
            Prober::new(spec(probe, port), localhost()).run()
        };
        assert_eq!(run(http_probe(200, Some(&digest), Some("rs")), OK), Ok(()));
        assert_eq!(
            run(http_probe(204, None, None), OK),
            Err("GET /health: status 200, expected 204".into())
        );
        let wrong = run(http_probe(200, Some(&"0".repeat(32)), None), OK).unwrap_err();
        assert!(wrong.contains("body digest"), "{wrong}");
        assert_eq!(
            run(http_probe(200, None, Some("rs2")), OK),
            Err("GET /health: body does not contain \"rs2\"".into())
        );
    }

    #[test]
    fn the_host_header_and_path_are_sent_as_configured() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = std::io::Read::read(&mut c, &mut buf).unwrap();
            c.write_all(OK.as_bytes()).unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let Probe::Http(mut h) = http_probe(200, None, None) else {
            unreachable!()
        };
        h.host = Some("www.example.com".into());
        assert_eq!(
            Prober::new(spec(Probe::Http(h), port), localhost()).run(),
            Ok(())
        );
        let request = seen.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /health http/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nhost: www.example.com\r\n"),
            "{request}"
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let err = Prober::new(spec(http_probe(200, None, None), port), localhost())
            .run()
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(err.to_lowercase().contains("timeout"), "{err}");
        drop(listener);
    }

    #[test]
    fn tcp_refused_and_accepted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            Prober::new(spec(Probe::Tcp, port), localhost()).run(),
            Ok(())
        );
        drop(listener);
        assert_eq!(
            Prober::new(spec(Probe::Tcp, port), localhost()).run(),
            Err("connect: refused".into())
        );
    }

    #[test]
    fn udp_reply_refusal_and_silence() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let answer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, peer) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
            server.send_to(b"pong rs1", peer).unwrap();
            server
        });
        let probe = || Probe::Udp {
            send: "ping".into(),
            expect: Some("pong".into()),
        };
        assert_eq!(Prober::new(spec(probe(), port), localhost()).run(), Ok(()));
        let server = answer.join().unwrap();
        // Bound but silent: no reply within the timeout.
        let err = Prober::new(spec(probe(), port), localhost())
            .run()
            .unwrap_err();
        assert!(err.starts_with("reply: no answer"), "{err}");
        drop(server);
        let err = Prober::new(spec(probe(), port), localhost())
            .run()
            .unwrap_err();
        assert_eq!(err, "reply: refused");
    }

    #[test]
    fn external_commands_get_address_and_port_and_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("args");
        let script = format!("echo \"$@\" > {}; exit $CODE", out.display());
        let run = |code: &str| {
            let command = vec![
                "/usr/bin/env".into(),
                format!("CODE={code}"),
                "/bin/sh".into(),
                "-c".into(),
                script.clone(),
                "check".into(),
            ];
            Prober::new(spec(Probe::External { command }, 8080), localhost()).run()
        };
        assert_eq!(run("0"), Ok(()));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "127.0.0.1 8080\n");
        assert!(run("3").unwrap_err().contains("exit status: 3"));
        let sleeper = vec!["/bin/sh".into(), "-c".into(), "sleep 5".into(), "x".into()];
        let started = Instant::now();
        let err = Prober::new(spec(Probe::External { command: sleeper }, 1), localhost())
            .run()
            .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
