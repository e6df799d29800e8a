//! The control socket between `xvsadm` and the daemon.
//!
//! A unix stream socket, mode 0600 (its directory is created 0700 when missing), at
//! [`DEFAULT_SOCKET`] unless `--socket` or the environment variable `XVS_SOCKET` says
//! otherwise; only root and the daemon's own user are served. The protocol is JSON lines:
//! the client writes one [`Request`] per line and reads one [`Reply`] per line; a
//! connection may carry several. The server ([`server`]) is plain std threads:
//! [`ControlServer::serve`] accepts on the calling thread and answers each connection on
//! its own thread, within [`Limits`], calling the [`Director`] under its mutex, so
//! requests are applied one at a time.
//!
//! On the wire (one object per line; addresses as serde writes [`ServiceAddr`]):
//!
//! ```text
//! > {"request":"apply","edits":[{"op":"delete_service","addr":{"fwmark":{"mark":7,"ipv6":false}}}]}
//! < {"reply":"failed","message":"No such service","index":0}
//! > {"request":"list","what":{"kind":"timeouts"}}
//! < {"reply":"listed","data":{"ipvs_version":"1.2.1","conn_table_size":4096,"services":[],"connections":[],"timeouts":{"tcp":900,"tcpfin":120,"udp":300}}}
//! > {"request":"set_timeouts","timeouts":{"tcp":0,"tcpfin":60,"udp":0}}
//! < {"reply":"done"}
//! ```
//!
//! `{"kind":"dataplane"}` asks for the ports and frame counters; its listing carries a
//! `"dataplane"` object (absent from other listings, and from a daemon without a dataplane).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xvs_dataplane::service::spec::ServiceAddr;

use crate::director::{DaemonArgs, Director, Edit, EditFailure, ListRequest};
use crate::listing::{ListData, Timeouts};
use xvs_dataplane::sync::Role;

pub mod server;
pub use server::{ControlServer, Limits, MAX_REQUEST, PERMISSION_DENIED, StopHandle};

/// Where the daemon listens when nothing says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvs.sock";
/// The environment variable that names the socket for both the daemon and xvsadm.
pub const SOCKET_ENV: &str = "XVS_SOCKET";
/// How long xvsadm waits for the daemon to take its request, and for a short one's reply.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long xvsadm waits for the reply to a request of `bytes`: a large `-R` takes the
/// daemon a while to apply (a second per MiB more than a short request).
fn reply_timeout(base: Duration, bytes: usize) -> Duration {
    base + Duration::from_secs((bytes >> 20) as u64)
}

/// The socket path: `--socket` if given, else `XVS_SOCKET`, else `fallback` (the config
/// file's value for the daemon), else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>, fallback: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    fallback
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "request")]
pub enum Request {
    /// Apply edits, all or none (`-A ... -d`, `-C`, a whole `-R`).
    Apply {
        /// The edits in order.
        edits: Vec<Edit>,
    },
    /// A listing.
    List {
        /// What to list.
        what: ListRequest,
    },
    /// `--set`.
    SetTimeouts {
        /// New timeouts; 0 keeps one.
        timeouts: Timeouts,
    },
    /// `-Z`.
    Zero {
        /// One service, or all.
        service: Option<ServiceAddr>,
    },
    /// `--start-daemon`.
    StartDaemon {
        /// Which daemon.
        role: Role,
        /// Its options as given.
        args: DaemonArgs,
    },
    /// `--stop-daemon`.
    StopDaemon {
        /// Which daemon.
        role: Role,
    },
    /// `xvs drain` (`drained: true`) or `xvs drain --undo`.
    Drain {
        /// Withdraw the VIPs (true) or announce them again.
        drained: bool,
    },
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply")]
pub enum Reply {
    /// Done, nothing to show.
    Done,
    /// A listing's data.
    Listed {
        /// The data.
        data: ListData,
    },
    /// Refused; nothing changed.
    Failed {
        /// ipvsadm's message, one line.
        message: String,
        /// For a batch, the index of the refused edit.
        index: Option<usize>,
    },
}

impl Reply {
    fn failed(message: impl Into<String>) -> Self {
        Reply::Failed {
            message: message.into(),
            index: None,
        }
    }
}

/// Answers one request with `director`.
pub fn handle<D: Director + ?Sized>(director: &mut D, request: Request) -> Reply {
    match request {
        Request::Apply { edits } => match director.apply_batch(&edits) {
            Ok(()) => Reply::Done,
            Err(EditFailure { index, message }) => Reply::Failed {
                message,
                index: Some(index),
            },
        },
        Request::List { what } => match director.list(&what) {
            Ok(data) => Reply::Listed { data },
            Err(e) => Reply::failed(e.to_string()),
        },
        Request::SetTimeouts { timeouts } => match director.set_timeouts(timeouts) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::failed(e.to_string()),
        },
        Request::Zero { service } => match director.zero(service.as_ref()) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::failed(e.to_string()),
        },
        Request::StartDaemon { role, args } => match director.start_daemon(role, &args) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::failed(e),
        },
        Request::StopDaemon { role } => match director.stop_daemon(role) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::failed(e),
        },
        Request::Drain { drained } => match director.set_drained(drained) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::failed(e),
        },
    }
}

/// Binds `socket_path` and serves `director` until the process ends (see
/// [`ControlServer`] to stop it).
pub fn serve<D: Director + ?Sized + 'static>(
    socket_path: &Path,
    director: Arc<Mutex<D>>,
) -> io::Result<()> {
    ControlServer::bind(socket_path)?.serve(director);
    Ok(())
}

/// Why xvsadm could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon at the socket.
    #[error("Can't connect to xvs at {path}: {source} (is xvs running? see --socket / XVS_SOCKET)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket's mode keeps this user out.
    #[error("Can't connect to xvs at {path}: {PERMISSION_DENIED}")]
    Denied {
        /// The socket path.
        path: PathBuf,
    },
    /// The exchange broke off.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The request is longer than the daemon reads.
    #[error(
        "the request is {}, more than the {} xvs reads in one request (for -R: restore the rules in parts)",
        server::size_text(*bytes),
        server::size_text(*limit)
    )]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The daemon's limit.
        limit: usize,
    },
    /// The daemon took the request but did not answer in time; it may still apply it.
    #[error(
        "control socket {path}: no reply within {secs} s; the daemon may still be applying the request (see xvsadm -L -n)"
    )]
    NoReply {
        /// The socket path.
        path: PathBuf,
        /// How long xvsadm waited.
        secs: f64,
    },
    /// The daemon's reply was not a reply.
    #[error("control socket {path}: bad reply: {detail}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// xvsadm's side: sends `request` to the daemon at `path` and returns its reply.
pub fn request(path: &Path, request: &Request) -> Result<Reply, ClientError> {
    send(path, request, MAX_REQUEST, IO_TIMEOUT)
}

/// [`request`], refusing before it connects a request longer than `limit` bytes, and
/// waiting `wait` (and a second per MiB sent) for the reply.
fn send(
    path: &Path,
    request: &Request,
    limit: usize,
    wait: Duration,
) -> Result<Reply, ClientError> {
    let mut text = serde_json::to_string(request).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if text.len() > limit {
        return Err(ClientError::TooLong {
            bytes: text.len(),
            limit,
        });
    }
    text.push('\n');
    let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => ClientError::Denied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Connect {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let waited = reply_timeout(wait, text.len());
    stream.set_read_timeout(Some(waited)).map_err(io_err)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    let written = (&stream).write_all(text.as_bytes());
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    // A daemon that refuses a request (too long, too slow, not allowed) says why before it
    // closes, which can break the write: its reply is the better message.
    match (written, read) {
        (Err(e), _) if line.is_empty() => return Err(io_err(e)),
        (_, Err(e))
            if line.is_empty()
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
        {
            return Err(ClientError::NoReply {
                path: path.to_path_buf(),
                secs: waited.as_secs_f64(),
            });
        }
        (_, Err(e)) if line.is_empty() => return Err(io_err(e)),
        _ => {}
    }
    serde_json::from_str(&line).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        detail: if line.is_empty() {
            "connection closed".to_string()
        } else {
            e.to_string()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::TableOnlyDirector;
    use std::net::{IpAddr, Ipv4Addr};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use xvs_dataplane::service::spec::{DestSpec, ForwardMethod, Protocol, ServiceSpec};

    fn vip() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(172, 16, 21, 10)),
            port: 80,
        }
    }

    fn start(dir: &Path) -> (PathBuf, StopHandle, std::thread::JoinHandle<()>) {
        let path = dir.join("run/xvs.sock");
        let server = ControlServer::bind(&path).unwrap();
        let stop = server.stop_handle();
        let director = Arc::new(Mutex::new(TableOnlyDirector::default()));
        let t = std::thread::spawn(move || server.serve(director));
        (path, stop, t)
    }

    #[test]
    fn end_to_end_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, thread) = start(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        let add = Request::Apply {
            edits: vec![
                Edit::AddService {
                    service: ServiceSpec::new(vip()),
                },
                Edit::AddDest {
                    service: vip(),
                    dest: DestSpec {
                        addr: IpAddr::V4(Ipv4Addr::new(192, 168, 40, 12)),
                        port: 80,
                        method: ForwardMethod::Route,
                        weight: 2,
                        upper_threshold: 0,
                        lower_threshold: 0,
                    },
                },
            ],
        };
        assert_eq!(request(&path, &add).unwrap(), Reply::Done);
        // The same batch again fails on its first edit and changes nothing.
        assert_eq!(
            request(&path, &add).unwrap(),
            Reply::Failed {
                message: "Service already exists".into(),
                index: Some(0)
            }
        );
        let Reply::Listed { data } = request(
            &path,
            &Request::List {
                what: ListRequest::Services,
            },
        )
        .unwrap() else {
            panic!("not a listing")
        };
        assert_eq!(data.services.len(), 1);
        assert_eq!(data.services[0].dests[0].weight, 2);
        assert_eq!(
            request(&path, &Request::Zero { service: None }).unwrap(),
            Reply::Done
        );

        // A second server on the same live socket is refused.
        let again = ControlServer::bind(&path).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);

        // Garbage gets a one-line refusal, not a hang-up.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"request\":\"nonsense\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("bad request"), "{line}");

        stop.stop();
        thread.join().unwrap();
        assert!(!path.exists(), "socket removed on stop");
        assert!(matches!(
            request(&path, &Request::Zero { service: None }),
            Err(ClientError::Connect { .. })
        ));
    }

    #[test]
    fn wire_format_is_as_documented() {
        let mut d = TableOnlyDirector::default();
        let line = r#"{"request":"apply","edits":[{"op":"delete_service","addr":{"fwmark":{"mark":7,"ipv6":false}}}]}"#;
        let reply = handle(&mut d, serde_json::from_str(line).unwrap());
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"reply":"failed","message":"No such service","index":0}"#
        );
        let line = r#"{"request":"list","what":{"kind":"timeouts"}}"#;
        let reply = handle(&mut d, serde_json::from_str(line).unwrap());
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"reply":"listed","data":{"ipvs_version":"1.2.1","conn_table_size":4096,"services":[],"connections":[],"timeouts":{"tcp":900,"tcpfin":120,"udp":300}}}"#
        );
        let line = r#"{"request":"set_timeouts","timeouts":{"tcp":0,"tcpfin":60,"udp":0}}"#;
        let reply = handle(&mut d, serde_json::from_str(line).unwrap());
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"reply":"done"}"#
        );
        assert_eq!(d.timeouts().tcpfin, 60);
    }

    #[test]
    fn a_reply_that_does_not_come_is_said_so_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.sock");
        // A daemon busy with something long: it takes the request and does not answer.
        let listener = UnixListener::bind(&path).unwrap();
        let busy = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let e = send(
            &path,
            &Request::Zero { service: None },
            MAX_REQUEST,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "control socket {}: no reply within 0.2 s; the daemon may still be applying the request (see xvsadm -L -n)",
                path.display()
            )
        );
        busy.join().unwrap();
        assert_eq!(
            reply_timeout(IO_TIMEOUT, 31 << 20),
            Duration::from_secs(41),
            "a large restore is given longer"
        );
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = ControlServer::bind(&path).unwrap();
        assert_eq!(server.path(), path.as_path());
    }

    #[test]
    fn socket_path_precedence() {
        let flag = PathBuf::from("/tmp/flag.sock");
        assert_eq!(socket_path(Some(&flag), None), flag);
        // Without a flag the environment or the fallback decides; both are paths.
        let p = socket_path(None, Some(Path::new("/tmp/cfg.sock")));
        match std::env::var_os(SOCKET_ENV) {
            Some(v) if !v.is_empty() => assert_eq!(p, PathBuf::from(v)),
            _ => assert_eq!(p, PathBuf::from("/tmp/cfg.sock")),
        }
    }
}
