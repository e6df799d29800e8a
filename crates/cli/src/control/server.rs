//! The daemon's end of the control socket: binding it safely and serving it within limits.
//!
//! - The socket is bound in a private directory (mode 0700), made 0600 there and only then
//!   renamed to its path, so it is never reachable with another mode whatever the umask.
//!   A path that exists and is not a socket is refused and left alone; a live socket is
//!   another daemon's (refused); a stale one is replaced.
//! - Each connection's peer is checked by its credentials (`SO_PEERCRED`): root and the
//!   daemon's own user are served, anyone else gets ipvsadm's "Permission denied (you must
//!   be root)" and is closed, on the accepting thread, without a thread of its own.
//! - At most [`Limits::connections`] connections are served at once (one more is answered
//!   "busy"); a request is at most [`Limits::request_bytes`] long and must arrive whole
//!   within [`Limits::deadline`] (a total, which a slow sender cannot stretch), and so must
//!   its reply be taken. Requests longer than [`SMALL_REQUEST`] are read one at a time, so
//!   the memory held by requests stays near one large request, not one per connection.
//! - Accept failures (out of file descriptors, say) back off from 10 ms to 500 ms instead of
//!   spinning, and are logged once per episode, with a line when accepting works again.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Reply, Request, handle};
use crate::director::Director;

/// Bytes of the longest request the daemon reads (one `-R` is one request: some 250,000
/// rules fit). xvsadm refuses to send a longer one.
pub const MAX_REQUEST: usize = 64 << 20;
/// Requests up to this size are read by every connection at once; a longer one waits for
/// the one large-request slot.
pub const SMALL_REQUEST: usize = 1 << 20;
/// The longest socket path (`sun_path` less its NUL).
const MAX_PATH: usize = 107;
/// ipvsadm's words (libipvs's `EPERM`) for a user who may not change the table.
pub const PERMISSION_DENIED: &str = "Permission denied (you must be root)";

/// What one client may take of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is answered "busy" and closed.
    pub connections: usize,
    /// Bytes of one request line.
    pub request_bytes: usize,
    /// Time for a whole request to arrive (from the connection, or the previous reply,
    /// on), and for a whole reply to be taken.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 16,
            request_bytes: MAX_REQUEST,
            deadline: Duration::from_secs(10),
        }
    }
}

/// A bound control socket, ready to [`serve`](ControlServer::serve).
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    limits: Limits,
}

/// Stops a running [`ControlServer::serve`] from another thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl StopHandle {
    /// Makes `serve` return; connections being answered finish on their own threads.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns.
        let _ = UnixStream::connect(&self.path);
    }
}

impl ControlServer {
    /// Binds `path`, mode 0600 from the start. A missing directory is created with mode
    /// 0700; a stale socket (nobody listening) is replaced; a live one is an error, so two
    /// daemons never share a socket; anything else at `path` is refused and kept.
    pub fn bind(path: &Path) -> io::Result<Self> {
        // Clients connect by the path: it must fit a socket address.
        if path.as_os_str().len() > MAX_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a socket path is at most {MAX_PATH} bytes long",
                    path.display()
                ),
            ));
        }
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        clear_stale(path)?;
        let private = PrivateDir::create(&dir)?;
        let listener = private.bind()?;
        private.move_to(path)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
            limits: Limits::default(),
        })
    }

    /// The same server with other limits (tests use small ones).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`serve`](Self::serve).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            path: self.path.clone(),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Accepts connections until stopped, answering each allowed one on its own thread;
    /// removes the socket file when it returns.
    pub fn serve<D: Director + ?Sized + 'static>(self, director: Arc<Mutex<D>>) {
        let shared = Arc::new(Shared {
            limits: self.limits,
            active: AtomicUsize::new(0),
            large: LargeSlot::default(),
        });
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        let mut accept_failures = Episode::default();
        let mut refused = Throttle::default();
        let mut busy = Throttle::default();
        let mut no_thread = Throttle::default();
        while !self.stop.load(Ordering::SeqCst) {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failures.failed(&e);
                    std::thread::sleep(accept_failures.backoff());
                    continue;
                }
            };
            accept_failures.succeeded();
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match peer_uid(&stream) {
                Ok(uid) if uid == 0 || uid == own_uid => {}
                Ok(uid) => {
                    if let Some(more) = refused.allow() {
                        tracing::warn!(
                            uid,
                            also_refused = more,
                            "control socket: refused a client that is neither root nor xvs's user"
                        );
                    }
                    refuse(stream, PERMISSION_DENIED);
                    continue;
                }
                Err(e) => {
                    tracing::debug!("control socket: no peer credentials: {e}");
                    continue;
                }
            }
            if shared.active.load(Ordering::SeqCst) >= shared.limits.connections {
                let message = format!(
                    "busy: {} control connections are open, the most xvs serves at once; try again",
                    shared.limits.connections
                );
                if let Some(more) = busy.allow() {
                    tracing::warn!(also_refused = more, "control socket: {message}");
                }
                refuse(stream, &message);
                continue;
            }
            let slot = ConnectionSlot::take(&shared);
            let director = Arc::clone(&director);
            let spawned = std::thread::Builder::new()
                .name("xvs-control-conn".into())
                .spawn(move || {
                    if let Err(e) = answer(stream, &director, &slot.0) {
                        tracing::debug!("control connection: {e}");
                    }
                });
            if let Err(e) = spawned
                && no_thread.allow().is_some()
            {
                tracing::warn!("control socket: cannot start a thread: {e}");
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Refuses `path` unless it is missing or a socket nobody listens on (then removed).
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the path exists and is {what}, not a socket: refusing to replace it (remove it, or give another --socket)"
            ),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another xvs", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// A directory only the daemon's user can enter, next to the socket's path, where the
/// socket is bound and given its mode before it is moved into place. Removed on drop.
struct PrivateDir {
    dir: PathBuf,
}

impl PrivateDir {
    const NAME: &'static str = "xvs.sock";

    fn create(parent: &Path) -> io::Result<Self> {
        for n in 0..100u32 {
            let dir = parent.join(format!(".xvs-{:x}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    // The umask can only have removed bits; make sure of 0700 exactly.
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(PrivateDir { dir });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: no free private directory name", parent.display()),
        ))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(Self::NAME)
    }

    /// Binds the socket inside the directory and makes it 0600.
    fn bind(&self) -> io::Result<UnixListener> {
        let socket = self.socket();
        // A socket path is at most 107 bytes; inside /proc/self/fd/N the name is short
        // whatever the directory's path.
        let dir_handle;
        let bind_path = if socket.as_os_str().len() <= MAX_PATH {
            socket.clone()
        } else {
            dir_handle = std::fs::File::open(&self.dir)?;
            PathBuf::from(format!(
                "/proc/self/fd/{}/{}",
                dir_handle.as_raw_fd(),
                Self::NAME
            ))
        };
        let listener = UnixListener::bind(&bind_path)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Moves the socket to `path`, which must not exist (it never replaces what another
    /// process put there meanwhile).
    fn move_to(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let from = std::ffi::CString::new(self.socket().as_os_str().as_bytes())?;
        let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: both pointers are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // A file system without RENAME_NOREPLACE: the path was checked just before.
            Some(libc::EINVAL) => std::fs::rename(self.socket(), path),
            Some(libc::EEXIST) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} appeared while the socket was being bound: refusing to replace it",
                    path.display()
                ),
            )),
            _ => Err(e),
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The uid of the process at the other end of `stream`, from the kernel.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds `cred`'s size, as
    // SO_PEERCRED requires; the descriptor is owned by `stream` for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Answers a connection that is not served with one failure line, without waiting.
fn refuse(stream: UnixStream, message: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&reply_line(&Reply::failed(message)));
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut text = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    text
}

/// What the connection threads share.
struct Shared {
    limits: Limits,
    active: AtomicUsize,
    large: LargeSlot,
}

/// One counted connection; the count drops with it, on whatever path its thread ends.
struct ConnectionSlot(Arc<Shared>);

impl ConnectionSlot {
    fn take(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::SeqCst);
        ConnectionSlot(Arc::clone(shared))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to buffer a request longer than [`SMALL_REQUEST`]: one connection at a time.
#[derive(Default)]
struct LargeSlot {
    taken: Mutex<bool>,
    freed: Condvar,
}

struct LargeGuard<'a>(&'a LargeSlot);

impl LargeSlot {
    /// Waits until `deadline` for the slot.
    fn take(&self, deadline: Instant) -> Option<LargeGuard<'_>> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        while *taken {
            let left = deadline.checked_duration_since(Instant::now())?;
            taken = self
                .freed
                .wait_timeout(taken, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *taken = true;
        Some(LargeGuard(self))
    }
}

impl Drop for LargeGuard<'_> {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

/// Why no request was read.
enum ReadFailure {
    /// The client closed the connection between requests.
    Closed,
    /// The request was not complete by the deadline.
    TimedOut,
    /// The request passed the byte limit.
    TooLong,
    /// The connection broke.
    Io(io::Error),
}

/// One connection's requests, read against a deadline and a size limit.
struct Connection<'a> {
    stream: UnixStream,
    shared: &'a Shared,
    /// Bytes read past the last request's newline.
    pending: Vec<u8>,
}

impl<'a> Connection<'a> {
    /// Reads the next request line (without its newline). A request longer than
    /// [`SMALL_REQUEST`] comes with the large-request slot, held until the caller drops it.
    fn next_request(
        &mut self,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Option<LargeGuard<'a>>), ReadFailure> {
        let limit = self.shared.limits.request_bytes;
        let mut large = None;
        let mut scanned = 0;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(at) = self.pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + at;
                if end > limit {
                    return Err(ReadFailure::TooLong);
                }
                let rest = self.pending.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Ok((line, large));
            }
            scanned = self.pending.len();
            if scanned > limit {
                return Err(ReadFailure::TooLong);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(ReadFailure::TimedOut)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ReadFailure::Io)?;
            let want = chunk.len().min(limit + 1 - scanned);
            let n = match self.stream.read(&mut chunk[..want]) {
                Ok(0) if self.pending.is_empty() => return Err(ReadFailure::Closed),
                // A last line without its newline is still a request.
                Ok(0) => return Ok((std::mem::take(&mut self.pending), large)),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadFailure::TimedOut);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadFailure::Io(e)),
            };
            if large.is_none() && self.pending.len() + n > SMALL_REQUEST {
                large = Some(
                    self.shared
                        .large
                        .take(deadline)
                        .ok_or(ReadFailure::TimedOut)?,
                );
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes `bytes` whole by `deadline`, however slowly the client reads.
    fn write_by(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "reply not taken in time")
                })?;
            self.stream.set_write_timeout(Some(left))?;
            let end = rest.len().min(64 * 1024);
            match self.stream.write(&rest[..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn answer<D: Director + ?Sized>(
    stream: UnixStream,
    director: &Mutex<D>,
    shared: &Shared,
) -> io::Result<()> {
    let limits = shared.limits;
    let mut conn = Connection {
        stream,
        shared,
        pending: Vec::new(),
    };
    loop {
        let deadline = Instant::now() + limits.deadline;
        let (line, large) = match conn.next_request(deadline) {
            Ok(read) => read,
            Err(ReadFailure::Closed) => return Ok(()),
            Err(ReadFailure::Io(e)) => return Err(e),
            Err(ReadFailure::TimedOut) => {
                let message = format!(
                    "request not received in full within {} s",
                    limits.deadline.as_secs_f64()
                );
                let reply = reply_line(&Reply::failed(&message));
                let _ = conn.write_by(&reply, Instant::now() + Duration::from_secs(1));
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            Err(ReadFailure::TooLong) => {
                let message = format!(
                    "request too long: xvs reads at most {} per request",
                    size_text(limits.request_bytes)
                );
                let reply = reply_line(&Reply::failed(&message));
                let _ = conn.write_by(&reply, Instant::now() + Duration::from_secs(1));
                return Err(io::Error::new(io::ErrorKind::InvalidData, message));
            }
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<Request>(&line);
        // The line's memory and the large slot go before the (maybe long) answer.
        drop(line);
        drop(large);
        if conn.pending.capacity() > SMALL_REQUEST {
            conn.pending.shrink_to(SMALL_REQUEST);
        }
        let reply = match parsed {
            Ok(request) => {
                let mut d = director
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                handle(&mut *d, request)
            }
            Err(e) => Reply::failed(format!("bad request: {e}")),
        };
        conn.write_by(&reply_line(&reply), Instant::now() + limits.deadline)?;
    }
}

/// `64 MiB`, `512 KiB` or `100 bytes`.
pub fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Consecutive accept failures: logged at the first, backed off, and logged again when
/// accepting works.
#[derive(Default)]
struct Episode {
    failures: u64,
}

impl Episode {
    fn failed(&mut self, e: &io::Error) {
        if self.failures == 0 {
            tracing::warn!(
                "control socket: accept failed: {e}; retrying with back-off (not logged again until a connection is accepted)"
            );
        }
        self.failures += 1;
    }

    /// 10 ms after the first failure, doubling to 500 ms.
    fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(6) as u32;
        Duration::from_millis(10 << doublings).min(Duration::from_millis(500))
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failed = self.failures,
                "control socket: accepting connections again"
            );
            self.failures = 0;
        }
    }
}

/// At most one log line per 10 s for a repeated event, saying how many went unlogged.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(unlogged since the last line)` if this one may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Self::EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ClientError, send};
    use crate::director::{Edit, TableOnlyDirector};
    use std::io::{BufRead, BufReader};
    use std::net::{IpAddr, Ipv4Addr};
    use std::process::Command;
    use xvs_dataplane::service::spec::{Protocol, ServiceAddr, ServiceSpec};

    /// How long the tests' clients wait for a reply.
    const WAIT: Duration = Duration::from_secs(10);
    /// Set in a child process this test binary runs again: which part it plays.
    const CHILD: &str = "XVS_CONTROL_TEST_CHILD";
    /// The socket (or directory) the child works with.
    const CHILD_PATH: &str = "XVS_CONTROL_TEST_PATH";
    /// What a child prints once its part ran (a filtered-out test prints nothing).
    const CHILD_DONE: &str = "child part done";

    /// This test binary again, running only `test` (a name in this module).
    fn rerun(exe: &Path, test: &str, part: &str, path: &Path) -> Command {
        let mut c = Command::new(exe);
        c.args([
            &format!("control::server::tests::{test}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, part)
        .env(CHILD_PATH, path);
        c
    }

    fn child_part() -> Option<(String, PathBuf)> {
        let part = std::env::var(CHILD).ok()?;
        Some((part, PathBuf::from(std::env::var_os(CHILD_PATH)?)))
    }

    fn vip(port: u16) -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(172, 16, 21, 10)),
            port,
        }
    }

    type Running = (
        StopHandle,
        Arc<Mutex<TableOnlyDirector>>,
        std::thread::JoinHandle<()>,
    );

    fn serve(path: &Path, limits: Limits) -> Running {
        let server = ControlServer::bind(path).unwrap().with_limits(limits);
        let stop = server.stop_handle();
        let director = Arc::new(Mutex::new(TableOnlyDirector::default()));
        let served = Arc::clone(&director);
        let thread = std::thread::spawn(move || server.serve(served));
        (stop, director, thread)
    }

    fn add_services(ports: std::ops::Range<u16>) -> Request {
        Request::Apply {
            edits: ports
                .map(|p| Edit::AddService {
                    service: ServiceSpec::new(vip(p)),
                })
                .collect(),
        }
    }

    /// One reply line; `""` once the daemon closed (a reset counts: the daemon closed with
    /// a request of ours unread).
    fn read_reply(stream: &UnixStream) -> String {
        let mut line = String::new();
        match BufReader::new(stream).read_line(&mut line) {
            Ok(_) => line,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && line.is_empty() => line,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    fn failed(message: &str) -> String {
        String::from_utf8(reply_line(&Reply::failed(message))).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_socket_has_its_final_mode_whatever_the_umask() {
        if let Some((part, dir)) = child_part() {
            assert_eq!(part, "umask");
            // SAFETY: umask has no preconditions; this process runs only this test.
            unsafe { libc::umask(0) };
            // The socket is 0600 inside a 0700 directory before it is moved to its path.
            let private = PrivateDir::create(&dir).unwrap();
            assert_eq!(mode(&private.dir), 0o700);
            let listener = private.bind().unwrap();
            assert_eq!(mode(&private.socket()), 0o600);
            drop((listener, private));
            let created = dir.join("run/xvs.sock");
            let existing = dir.join("xvs.sock");
            let a = ControlServer::bind(&created).unwrap();
            let b = ControlServer::bind(&existing).unwrap();
            assert_eq!(mode(&created), 0o600);
            assert_eq!(mode(&existing), 0o600);
            assert_eq!(mode(&dir.join("run")), 0o700);
            // No private directory is left behind.
            assert_eq!(entries(&dir.join("run")), vec!["xvs.sock"]);
            assert_eq!(entries(&dir), vec!["run", "xvs.sock"]);
            drop((a, b));
            println!("{CHILD_DONE}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = rerun(
            &exe,
            "the_socket_has_its_final_mode_whatever_the_umask",
            "umask",
            dir.path(),
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(CHILD_DONE),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_long_path_is_bound_through_its_directory_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut long = dir.path().to_path_buf();
        while long.as_os_str().len() < 90 {
            long.push("d");
        }
        let path = long.join("xvs.sock");
        assert!(path.as_os_str().len() <= MAX_PATH);
        let (stop, _, thread) = serve(&path, Limits::default());
        let private = PrivateDir::create(&long).unwrap();
        assert!(
            private.socket().as_os_str().len() > MAX_PATH,
            "needs the handle"
        );
        drop(private);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            send(&path, &Request::Zero { service: None }, MAX_REQUEST, WAIT).unwrap(),
            Reply::Done
        );
        stop.stop();
        thread.join().unwrap();
        let too_long = long.join("d".repeat(20)).join("xvs.sock");
        assert_eq!(
            ControlServer::bind(&too_long).unwrap_err().to_string(),
            format!(
                "{}: a socket path is at most 107 bytes long",
                too_long.display()
            )
        );
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me\n").unwrap();
        let e = ControlServer::bind(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the path exists and is a regular file, not a socket: refusing to replace it (remove it, or give another --socket)"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = ControlServer::bind(&sub).unwrap_err();
        assert!(
            e.to_string().contains("is a directory, not a socket"),
            "{e}"
        );
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = ControlServer::bind(&link).unwrap_err();
        assert!(
            e.to_string().contains("is a symbolic link, not a socket"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "keep me\n");
        assert_eq!(entries(dir.path()), vec!["link.sock", "notes.txt", "sub"]);
    }

    /// Runs this test binary as user nobody: from a directory nobody can enter.
    fn nobody_exe(dir: &Path) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let copy = dir.join("test-binary");
        if std::fs::hard_link(&exe, &copy).is_err() {
            std::fs::copy(&exe, &copy).unwrap();
        }
        copy
    }

    #[test]
    fn peers_other_than_root_and_its_own_user_are_refused() {
        const TEST: &str = "peers_other_than_root_and_its_own_user_are_refused";
        if let Some((part, socket)) = child_part() {
            // SAFETY: getuid has no preconditions.
            assert_eq!(unsafe { libc::getuid() }, 65_534, "runs as nobody");
            match part.as_str() {
                // Through a socket whose mode lets anyone connect: the credentials decide.
                "raw" => {
                    let mut s = UnixStream::connect(&socket).unwrap();
                    // The refusal may come (and the socket close) before the request goes.
                    let _ =
                        s.write_all(b"{\"request\":\"apply\",\"edits\":[{\"op\":\"clear\"}]}\n");
                    print!("reply: {}", read_reply(&s));
                }
                // A daemon run as nobody serves nobody: its own user.
                "own" => {
                    let own = socket.join("own.sock");
                    let (stop, _, thread) = serve(&own, Limits::default());
                    let reply = send(&own, &Request::Zero { service: None }, MAX_REQUEST, WAIT);
                    println!("own: {reply:?}");
                    stop.stop();
                    thread.join().unwrap();
                }
                // Through the socket as bound: its mode decides.
                _ => match crate::control::request(&socket, &Request::Zero { service: None }) {
                    Ok(reply) => println!("reply: {reply:?}"),
                    Err(e) => println!("error: {e}"),
                },
            }
            println!("{CHILD_DONE}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("xvs.sock");
        let (stop, director, thread) = serve(&socket, Limits::default());
        assert_eq!(
            send(&socket, &add_services(80..81), MAX_REQUEST, WAIT).unwrap(),
            Reply::Done
        );
        let exe = nobody_exe(dir.path());
        let as_nobody = |part: &str| {
            let out = rerun(&exe, TEST, part, &socket)
                .uid(65_534)
                .gid(65_534)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && stdout.contains(CHILD_DONE),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        };
        use std::os::unix::process::CommandExt;

        let out = as_nobody("request");
        assert!(
            out.contains(&format!(
                "error: Can't connect to xvs at {}: {PERMISSION_DENIED}",
                socket.display()
            )),
            "{out}"
        );
        // As if the umask had left it open: the credentials still keep nobody out.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody("raw");
        assert!(
            out.contains(&format!("reply: {}", failed(PERMISSION_DENIED))),
            "{out}"
        );
        assert_eq!(
            director.lock().unwrap().table().services.len(),
            1,
            "nothing cleared"
        );
        // A daemon's own user is served too.
        let own_dir = dir.path().join("own");
        std::fs::create_dir(&own_dir).unwrap();
        std::fs::set_permissions(&own_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = rerun(&exe, TEST, "own", &own_dir)
            .uid(65_534)
            .gid(65_534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("own: Ok(Done)"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Root is served.
        assert_eq!(
            send(&socket, &Request::Zero { service: None }, MAX_REQUEST, WAIT).unwrap(),
            Reply::Done
        );
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn a_slow_sender_is_cut_off_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("xvs.sock");
        let limits = Limits {
            deadline: Duration::from_secs(1),
            ..Limits::default()
        };
        let (stop, _, thread) = serve(&socket, limits);
        let slow = UnixStream::connect(&socket).unwrap();
        let start = Instant::now();
        let writer = slow.try_clone().unwrap();
        let dribble = std::thread::spawn(move || {
            // One byte every 200 ms: each read is quick, the request never complete.
            for b in b"{\"request\":\"zero\",\"service\":null}"
                .iter()
                .cycle()
                .take(40)
            {
                if (&writer).write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        slow.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        assert_eq!(
            read_reply(&slow),
            failed("request not received in full within 1 s")
        );
        assert_eq!(read_reply(&slow), "", "closed after the reply");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // An idle connection is closed the same way.
        let idle = UnixStream::connect(&socket).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        assert_eq!(
            read_reply(&idle),
            failed("request not received in full within 1 s")
        );
        dribble.join().unwrap();
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn connections_past_the_limit_are_told_busy() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("xvs.sock");
        let limits = Limits {
            connections: 3,
            ..Limits::default()
        };
        let (stop, _, thread) = serve(&socket, limits);
        let held: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect();
        let extra = UnixStream::connect(&socket).unwrap();
        assert_eq!(
            read_reply(&extra),
            failed("busy: 3 control connections are open, the most xvs serves at once; try again")
        );
        assert_eq!(read_reply(&extra), "");
        // The held connections are served as usual.
        (&held[0])
            .write_all(b"{\"request\":\"zero\",\"service\":null}\n")
            .unwrap();
        assert_eq!(read_reply(&held[0]), "{\"reply\":\"done\"}\n");
        drop(held);
        let start = Instant::now();
        loop {
            match send(&socket, &Request::Zero { service: None }, MAX_REQUEST, WAIT) {
                Ok(Reply::Done) => break,
                other => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "still busy: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn a_request_over_the_limit_is_refused_with_a_reply() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("xvs.sock");
        let limits = Limits {
            request_bytes: 64 << 10,
            ..Limits::default()
        };
        let (stop, director, thread) = serve(&socket, limits);
        let big = add_services(1..4000);
        // xvsadm refuses it before it connects...
        let e = send(&socket, &big, 64 << 10, WAIT).unwrap_err();
        assert!(matches!(e, ClientError::TooLong { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with("the request is ")
                && text.ends_with(
                    "more than the 64 KiB xvs reads in one request (for -R: restore the rules in parts)"
                ),
            "{text}"
        );
        // ...and the daemon refuses it in words, not with a broken pipe.
        assert_eq!(
            send(&socket, &big, usize::MAX, WAIT).unwrap(),
            Reply::failed("request too long: xvs reads at most 64 KiB per request")
        );
        assert!(director.lock().unwrap().table().services.is_empty());
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn large_requests_are_read_one_at_a_time_and_all_applied() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("xvs.sock");
        let (stop, director, thread) = serve(&socket, Limits::default());
        // Three requests of over 1 MiB each at once (cheap edits: the test is the reading).
        let clients: Vec<_> = (0..3u16)
            .map(|k| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let mut edits = vec![Edit::Clear; 80_000];
                    edits.push(Edit::AddService {
                        service: ServiceSpec::new(vip(80 + k)),
                    });
                    let request = Request::Apply { edits };
                    let len = serde_json::to_vec(&request).unwrap().len();
                    assert!(len > SMALL_REQUEST, "{len}");
                    send(&socket, &request, MAX_REQUEST, WAIT).unwrap()
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), Reply::Done);
        }
        assert_eq!(
            director.lock().unwrap().table().services.len(),
            1,
            "the last batch applied"
        );
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn out_of_descriptors_the_accept_loop_backs_off_and_logs_once() {
        const TEST: &str = "out_of_descriptors_the_accept_loop_backs_off_and_logs_once";
        if let Some((_, dir)) = child_part() {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let socket = dir.join("xvs.sock");
            let server = ControlServer::bind(&socket).unwrap();
            let stop = server.stop_handle();
            let limit = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            // SAFETY: `limit` is a valid rlimit for the call.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            let mut fillers = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                fillers.push(f);
            }
            // One descriptor for the client: the daemon has none left to accept with. (The
            // kernel takes accept's descriptor before it waits, so the server starts after.)
            fillers.pop();
            let client = UnixStream::connect(&socket).unwrap();
            let director = Arc::new(Mutex::new(TableOnlyDirector::default()));
            let thread = std::thread::spawn(move || server.serve(director));
            let cpu = || {
                // SAFETY: `usage` is valid for writes.
                let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
                assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
                let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
                t(usage.ru_utime) + t(usage.ru_stime)
            };
            let before = cpu();
            std::thread::sleep(Duration::from_secs(2));
            let used = cpu() - before;
            assert!(
                used < 0.1,
                "the accept loop spun: {used:.2} s of CPU in 2 s"
            );
            drop(fillers);
            (&client)
                .write_all(b"{\"request\":\"zero\",\"service\":null}\n")
                .unwrap();
            assert_eq!(read_reply(&client), "{\"reply\":\"done\"}\n");
            stop.stop();
            thread.join().unwrap();
            println!("{CHILD_DONE}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = rerun(&exe, TEST, "fdlimit", dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(CHILD_DONE),
            "{stdout}{stderr}"
        );
        let failures: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("accept failed"))
            .collect();
        assert_eq!(failures.len(), 1, "{stderr}");
        assert!(failures[0].contains("Too many open files"), "{stderr}");
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.contains("accepting connections again"))
                .count(),
            1,
            "{stderr}"
        );
    }
}
