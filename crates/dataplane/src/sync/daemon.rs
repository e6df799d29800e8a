//! The sync side thread: sockets, messages, authentication and bulk resync.
//!
//! One thread serves both roles. Each turn it
//! 1. picks up new settings ([`SyncControl`] publishes them; sockets are reopened);
//! 2. master: drains every worker's outgoing queue into IPVS version 1 messages, sending a
//!    message when it is full and at the latest [`FLUSH_AFTER`] after its first entry (IPVS
//!    flushes within 2 s; sooner means less to lose at a failover), and streams a requested
//!    resync a burst at a time;
//! 3. receives what arrived (version 1 messages for the backup, resync requests for the
//!    master, the end of a resync for the backup), checks and resolves each entry, and hands
//!    it to the worker that owns the flow;
//! 4. backup with resync on: asks for the table until a master answers;
//! 5. waits on the receive socket (or sleeps) for [`IDLE_WAIT`].
//!
//! Sockets follow IPVS (`make_send_sock`, `make_receive_sock`): the master sends from the
//! interface's address with `IP_MULTICAST_IF` set, loopback off and the configured TTL; the
//! backup binds the port with `SO_REUSEADDR` on the interface and joins the group there. The
//! backup binds the wildcard address rather than the group, so unicast peers and resync
//! answers reach the same socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use xvs_conntrack::{ConnTable, Listed};
use xvs_sync::auth::{Signer, Verifier, now_micros};
use xvs_sync::ext::{self, Ext};
use xvs_sync::{MessageWriter, SyncConn};

use super::convert::{to_install, to_wire, worker_for};
use super::{
    DaemonSettings, Install, Reject, Role, SyncCounters, SyncOptions, SyncPort, SyncStatus, load,
};
use crate::netdev::NetDev;
use crate::publish::Published;
use crate::service::snapshot::Snapshot;

/// A message waits at most this long for more entries before it is sent.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// How long an idle turn waits for a datagram (or sleeps).
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// Messages a resync stream sends per burst, and the pause between bursts.
const RESYNC_BURST: usize = 32;
const RESYNC_PAUSE: Duration = Duration::from_millis(1);
/// A starting backup asks this often, this many times, until a master answers.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
const RESYNC_TRIES: u32 = 30;
/// How long the thread waits for a worker's full install queue before dropping an entry.
const INSTALL_WAIT: Duration = Duration::from_millis(200);
/// Receive buffer asked for (resync streams arrive in bursts).
const RECV_BUFFER: usize = 8 << 20;

/// Why a daemon could not be started or stopped: ipvsadm's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// `--start-daemon` of a role that runs.
    #[error("Daemon has already run")]
    AlreadyRunning,
    /// `--stop-daemon` of a role that does not run.
    #[error("No daemon is running")]
    NotRunning,
    /// The interface is unknown or has no IPv4 address.
    #[error("{0}")]
    Interface(String),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Both roles' settings and the options, as the thread applies them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Settings {
    master: Option<DaemonSettings>,
    backup: Option<DaemonSettings>,
    options: SyncOptions,
}

/// Starts, stops and reports the sync daemons; owns the side thread.
pub struct SyncControl {
    settings: Mutex<Settings>,
    published: Arc<Published<Settings>>,
    counters: Arc<SyncCounters>,
    ports: Vec<Arc<SyncPort>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SyncControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncControl").finish_non_exhaustive()
    }
}

impl SyncControl {
    /// Starts the side thread (idle until a role starts) for the workers' `ports`.
    pub fn spawn(
        ports: Vec<Arc<SyncPort>>,
        table: ConnTable,
        snapshot: Arc<Published<Snapshot>>,
        epoch: Instant,
    ) -> io::Result<SyncControl> {
        let published = Arc::new(Published::new(Arc::new(Settings::default())));
        let counters = Arc::new(SyncCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut thread = SyncThread {
            settings: published.clone(),
            seen: u64::MAX,
            counters: counters.clone(),
            ports: ports.clone(),
            table,
            snapshot,
            epoch,
            stop: stop.clone(),
            master: None,
            backup: None,
            options: SyncOptions::default(),
            streams: Vec::new(),
            verifier: None,
        };
        let handle = std::thread::Builder::new()
            .name("xvs-sync".into())
            .spawn(move || thread.run())?;
        Ok(SyncControl {
            settings: Mutex::new(Settings::default()),
            published,
            counters,
            ports,
            stop,
            thread: Some(handle),
        })
    }

    /// `--start-daemon ROLE`: refused if it runs, or if the interface is unusable.
    pub fn start(&self, role: Role, daemon: DaemonSettings) -> Result<(), SyncError> {
        let daemon = checked(daemon)?;
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match role {
            Role::Master => &mut s.master,
            Role::Backup => &mut s.backup,
        };
        if slot.is_some() {
            return Err(SyncError::AlreadyRunning);
        }
        *slot = Some(daemon);
        self.apply(&s);
        Ok(())
    }

    /// `--stop-daemon ROLE`.
    pub fn stop_daemon(&self, role: Role) -> Result<(), SyncError> {
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match role {
            Role::Master => &mut s.master,
            Role::Backup => &mut s.backup,
        };
        if slot.take().is_none() {
            return Err(SyncError::NotRunning);
        }
        self.apply(&s);
        Ok(())
    }

    /// Replaces both roles and the options at once (the configuration file), checking
    /// every setting first: on error nothing changes.
    pub fn configure(
        &self,
        master: Option<DaemonSettings>,
        backup: Option<DaemonSettings>,
        options: SyncOptions,
    ) -> Result<(), SyncError> {
        let master = master.map(checked).transpose()?;
        let backup = backup.map(checked).transpose()?;
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        *s = Settings {
            master,
            backup,
            options,
        };
        self.apply(&s);
        Ok(())
    }

    fn apply(&self, s: &Settings) {
        for port in &self.ports {
            port.threshold
                .store(s.options.policy.threshold, Ordering::Relaxed);
            port.period
                .store(s.options.policy.period, Ordering::Relaxed);
            port.master.store(s.master.is_some(), Ordering::Release);
        }
        self.published.publish(Arc::new(s.clone()));
    }

    /// Settings and counters, for `xvsadm -L --daemon` and `--dataplane`.
    pub fn status(&self) -> SyncStatus {
        let s = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let c = &self.counters;
        let sum = |f: fn(&SyncPort) -> u64| self.ports.iter().map(|p| f(p)).sum::<u64>();
        SyncStatus {
            master: s.master,
            backup: s.backup,
            resync: s.options.resync,
            authenticated: s.options.key.is_some(),
            peers: s.options.peers,
            messages_sent: load(&c.messages_sent),
            conns_sent: load(&c.conns_sent),
            send_errors: load(&c.send_errors),
            queue_dropped: sum(|p| load(&p.outgoing_dropped)),
            messages_received: load(&c.messages_received),
            conns_received: load(&c.conns_received),
            installed: sum(|p| load(&p.installed)),
            install_failed: sum(|p| load(&p.install_failed)),
            rejected: Reject::ALL
                .iter()
                .map(|r| (r.name().to_string(), load(&c.rejected[*r as usize])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            resync_requests_sent: load(&c.resync_requests_sent),
            resync_requests_served: load(&c.resync_requests_served),
            resync_entries_sent: load(&c.resync_entries_sent),
            resyncs_completed: load(&c.resyncs_completed),
            last_resync_entries: load(&c.last_resync_entries),
            last_resync_millis: load(&c.last_resync_millis),
        }
    }
}

impl Drop for SyncControl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for port in &self.ports {
            port.master.store(false, Ordering::Relaxed);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks a daemon's settings as the kernel does on start: the interface exists and has an
/// IPv4 address, the group is multicast, `maxlen` fits one entry and the interface's MTU.
fn checked(mut d: DaemonSettings) -> Result<DaemonSettings, SyncError> {
    let dev = NetDev::by_name(&d.interface)
        .map_err(|e| SyncError::Interface(format!("{}: {e}", d.interface)))?;
    if dev.ipv4.is_empty() {
        return Err(SyncError::Interface(format!(
            "{}: no IPv4 address to send sync messages from",
            d.interface
        )));
    }
    if !d.group.is_multicast() {
        return Err(SyncError::Invalid(format!(
            "mcast-group {} is not a multicast address",
            d.group
        )));
    }
    let smallest = (xvs_sync::wire::HEADER_LEN + xvs_sync::wire::V4_LEN) as u16;
    if d.maxlen < smallest {
        return Err(SyncError::Invalid(format!(
            "sync-maxlen {} is below one entry ({smallest})",
            d.maxlen
        )));
    }
    // IPVS clamps the length to what one datagram on the interface carries.
    let mtu_limit = dev.mtu.saturating_sub(28).min(u32::from(u16::MAX)) as u16;
    d.maxlen = d.maxlen.min(mtu_limit.max(smallest));
    Ok(d)
}

/// A master's open sending side.
struct Master {
    settings: DaemonSettings,
    socket: Socket,
    /// Where messages go: the group, or the unicast peers.
    targets: Vec<SocketAddr>,
    message: MessageWriter,
    /// Bytes of a message available to entries (maxlen less the authentication trailer).
    message_room: usize,
    first_entry: Option<Instant>,
    signer: Option<Signer>,
    /// A socket that hears resync requests when no backup socket shares the port.
    listener: Option<Socket>,
}

/// A backup's open receiving side.
struct Backup {
    settings: DaemonSettings,
    socket: Socket,
    /// Where resync requests go.
    targets: Vec<SocketAddr>,
    resync: Option<ResyncAsk>,
    signer: Option<Signer>,
}

/// A backup's resync request in flight.
struct ResyncAsk {
    nonce: u32,
    tries: u32,
    last: Option<Instant>,
    started: Instant,
}

/// A master's answer to one request: the table as it was, and how far it has been sent.
struct ResyncStream {
    to: SocketAddr,
    nonce: u32,
    entries: Vec<SyncConn>,
    next: usize,
}

struct SyncThread {
    settings: Arc<Published<Settings>>,
    seen: u64,
    counters: Arc<SyncCounters>,
    ports: Vec<Arc<SyncPort>>,
    table: ConnTable,
    snapshot: Arc<Published<Snapshot>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    master: Option<Master>,
    backup: Option<Backup>,
    options: SyncOptions,
    streams: Vec<ResyncStream>,
    verifier: Option<Verifier>,
}

fn iface_addr(name: &str) -> io::Result<(Ipv4Addr, u32)> {
    let dev = NetDev::by_name(name)?;
    let addr = dev
        .ipv4
        .first()
        .map(|&(a, _)| a)
        .ok_or_else(|| io::Error::other(format!("{name} has no IPv4 address")))?;
    Ok((addr, dev.ifindex))
}

/// A UDP socket on `settings.interface` that sends multicast the way IPVS's sockets do.
fn udp_socket(settings: &DaemonSettings) -> io::Result<(Socket, Ipv4Addr)> {
    let (addr, _) = iface_addr(&settings.interface)?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProtocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(settings.interface.as_bytes()))?;
    socket.set_multicast_if_v4(&addr)?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_multicast_ttl_v4(u32::from(settings.ttl))?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// The backup's (or a master's request) receiving socket: the port on every address of the
/// interface, in the group unless unicast peers are configured.
fn receive_socket(settings: &DaemonSettings, join: bool) -> io::Result<Socket> {
    let (socket, addr) = udp_socket(settings)?;
    set_receive_buffer(&socket);
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, settings.port);
    socket.bind(&any.into())?;
    if join {
        socket.join_multicast_v4(&settings.group, &addr)?;
    }
    Ok(socket)
}

/// Asks for a large receive buffer, past `rmem_max` when privileged (SO_RCVBUFFORCE).
fn set_receive_buffer(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let size = RECV_BUFFER as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local c_int, on a
    // socket this function borrows; failure is harmless (the normal size stays).
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
}

fn targets(settings: &DaemonSettings, peers: &[IpAddr]) -> Vec<SocketAddr> {
    if peers.is_empty() {
        vec![SocketAddr::new(IpAddr::V4(settings.group), settings.port)]
    } else {
        peers
            .iter()
            .map(|&p| SocketAddr::new(p, settings.port))
            .collect()
    }
}

/// Message size left for entries: the authentication trailer takes its share.
fn message_room(maxlen: u16, signed: bool) -> usize {
    let trailer = if signed {
        xvs_sync::auth::TRAILER_LEN
    } else {
        0
    };
    usize::from(maxlen).saturating_sub(trailer)
}

/// A number unlikely to repeat across starts and calls (sender ids, nonces): the clock, the
/// process and a per-process counter, mixed.
fn draw_u32() -> u32 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut x = now_micros()
        ^ (u64::from(std::process::id()) << 32)
        ^ n.wrapping_mul(0xa076_1d64_78bd_642f);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

impl SyncThread {
    fn run(&mut self) {
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Ordering::Relaxed) {
            self.follow_settings();
            let mut busy = self.send_outgoing();
            busy |= self.stream_resync();
            busy |= self.receive(&mut buf);
            self.ask_resync();
            if !busy {
                self.wait();
            }
        }
        self.flush();
    }

    fn now_secs(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32 + 1
    }

    /// Reopens sockets when the settings changed.
    fn follow_settings(&mut self) {
        if self.settings.generation() == self.seen {
            return;
        }
        self.seen = self.settings.generation();
        let s = self.settings.load();
        self.flush();
        let key = s.options.key.clone();
        self.verifier = key.as_deref().map(Verifier::new);
        let signer = || key.as_deref().map(|k| Signer::new(k, draw_u32()));
        let join = s.options.peers.is_empty();
        if self.backup.as_ref().map(|b| &b.settings) != s.backup.as_ref()
            || self.options != s.options
        {
            self.backup = s.backup.as_ref().and_then(|d| {
                let opened = receive_socket(d, join).map(|socket| Backup {
                    settings: d.clone(),
                    socket,
                    targets: targets(d, &s.options.peers),
                    resync: s.options.resync.then(|| ResyncAsk {
                        nonce: draw_u32(),
                        tries: 0,
                        last: None,
                        started: Instant::now(),
                    }),
                    signer: signer(),
                });
                match opened {
                    Ok(b) => {
                        tracing::info!(iface = %d.interface, syncid = d.syncid, group = %d.group, port = d.port, "backup sync daemon started");
                        Some(b)
                    }
                    Err(e) => {
                        tracing::error!(iface = %d.interface, error = %e, "backup sync daemon cannot open its socket");
                        None
                    }
                }
            });
        }
        if self.master.as_ref().map(|m| &m.settings) != s.master.as_ref()
            || self.options != s.options
        {
            self.master = s.master.as_ref().and_then(|d| {
                let opened = udp_socket(d).and_then(|(socket, addr)| {
                    socket.bind(&SocketAddrV4::new(addr, 0).into())?;
                    // Resync requests come to the port; a backup socket on it hears them.
                    let shares_port = s.backup.as_ref().is_some_and(|b| b.port == d.port);
                    let listener = if s.options.resync && !shares_port {
                        Some(receive_socket(d, join)?)
                    } else {
                        None
                    };
                    let room = message_room(d.maxlen, key.is_some());
                    Ok(Master {
                        settings: d.clone(),
                        socket,
                        targets: targets(d, &s.options.peers),
                        message: MessageWriter::new(d.syncid, room),
                        message_room: room,
                        first_entry: None,
                        signer: signer(),
                        listener,
                    })
                });
                match opened {
                    Ok(m) => {
                        tracing::info!(iface = %d.interface, syncid = d.syncid, group = %d.group, port = d.port, "master sync daemon started");
                        Some(m)
                    }
                    Err(e) => {
                        tracing::error!(iface = %d.interface, error = %e, "master sync daemon cannot open its socket");
                        None
                    }
                }
            });
        }
        if s.master.is_none() {
            self.streams.clear();
        }
        self.options = s.options.clone();
    }

    /// Moves the workers' due entries into messages; sends full and old ones.
    fn send_outgoing(&mut self) -> bool {
        let Some(master) = self.master.as_mut() else {
            for port in &self.ports {
                while port.outgoing.pop().is_some() {}
            }
            return false;
        };
        let snapshot = self.snapshot.load();
        let now = self.epoch.elapsed().as_secs() as u32 + 1;
        let mut any = false;
        for port in &self.ports {
            while let Some(entry) = port.outgoing.pop() {
                any = true;
                if let Some(conn) = to_wire(&entry, &snapshot, now) {
                    add_to_message(master, &conn, &self.counters);
                }
            }
        }
        if master
            .first_entry
            .is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
        {
            send_message(master, &self.counters);
        }
        any
    }

    fn flush(&mut self) {
        if let Some(master) = self.master.as_mut() {
            send_message(master, &self.counters);
        }
    }

    /// Reads every datagram waiting on the receiving sockets.
    fn receive(&mut self, buf: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..1024 {
            let got = {
                let socket = match (
                    &self.backup,
                    self.master.as_ref().and_then(|m| m.listener.as_ref()),
                ) {
                    (Some(b), _) => Some(&b.socket),
                    (None, Some(l)) => Some(l),
                    (None, None) => None,
                };
                let Some(socket) = socket else { break };
                recv_from(socket, buf)
            };
            let Some((len, from)) = got else { break };
            any = true;
            self.handle(&buf[..len], from);
        }
        // A master with its own request listener while a backup also runs (other port).
        if self.backup.is_some()
            && let Some(listener) = self.master.as_ref().and_then(|m| m.listener.as_ref())
        {
            let mut requests = Vec::new();
            while let Some((len, from)) = recv_from(listener, buf) {
                requests.push((buf[..len].to_vec(), from));
            }
            for (datagram, from) in requests {
                any = true;
                self.handle(&datagram, from);
            }
        }
        any
    }

    /// One datagram: authentication, then an extension or a version 1 message.
    fn handle(&mut self, datagram: &[u8], from: SocketAddr) {
        let body = match self.verifier.as_mut() {
            Some(v) => match v.verify(datagram, now_micros()) {
                Ok(body) => body.to_vec(),
                Err(e) => {
                    self.counters.reject(e.into());
                    return;
                }
            },
            None => datagram.to_vec(),
        };
        if ext::is_extension(&body) {
            match Ext::decode(&body) {
                Some(Ext::ResyncRequest { syncid, nonce }) => {
                    self.serve_resync(syncid, nonce, from)
                }
                Some(Ext::ResyncDone { nonce, entries, .. }) => self.resync_done(nonce, entries),
                None => self.counters.reject(Reject::BadVersion),
            }
            return;
        }
        let Some(backup) = self.backup.as_ref() else {
            return;
        };
        self.counters
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        let entries = match xvs_sync::decode(&body, backup.settings.syncid) {
            Ok(entries) => entries,
            Err(e) => {
                self.counters.reject(e.into());
                return;
            }
        };
        let snapshot = self.snapshot.load();
        for entry in entries {
            self.counters.conns_received.fetch_add(1, Ordering::Relaxed);
            let install = entry
                .map_err(Reject::from)
                .and_then(|conn| to_install(&conn, &snapshot));
            match install {
                Ok(install) => self.hand_to_worker(install),
                Err(why) => self.counters.reject(why),
            }
        }
    }

    /// Queues `install` for the worker owning its flow, waiting briefly if that queue is
    /// full (this thread is not on the packet path; a worker drains its queue every turn).
    fn hand_to_worker(&self, install: Install) {
        let port = &self.ports[worker_for(&install, self.ports.len())];
        let mut pending = install;
        let deadline = Instant::now() + INSTALL_WAIT;
        loop {
            match port.install.push(pending) {
                Ok(()) => return,
                Err(back) if Instant::now() < deadline => {
                    pending = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => {
                    self.counters.reject(Reject::InstallQueueFull);
                    return;
                }
            }
        }
    }

    /// A backup asked for everything: snapshot the table now and stream it.
    fn serve_resync(&mut self, syncid: u8, nonce: u32, from: SocketAddr) {
        let Some(master) = self.master.as_ref() else {
            return;
        };
        if !self.options.resync {
            return;
        }
        let ours = master.settings.syncid;
        if syncid != 0 && ours != 0 && syncid != ours {
            self.counters.reject(Reject::OtherSyncid);
            return;
        }
        if self
            .streams
            .iter()
            .any(|s| s.to == from && s.nonce == nonce)
        {
            return; // a repeated request for a stream already running
        }
        let snapshot = self.snapshot.load();
        let now = self.now_secs();
        let mut entries = Vec::new();
        for shard in 0..self.table.shard_count() {
            self.table.for_each_entry(shard as u16, |e: Listed| {
                if let Some(conn) = to_wire(&e, &snapshot, now) {
                    entries.push(conn);
                }
            });
        }
        // Templates first, so connections meet their template on the backup.
        entries.sort_by_key(|c| !c.is_template());
        tracing::info!(%from, entries = entries.len(), "resync requested: streaming the table");
        self.counters
            .resync_requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.streams.push(ResyncStream {
            to: from,
            nonce,
            entries,
            next: 0,
        });
    }

    /// Sends the next burst of every resync stream; the last message of a stream is its end.
    fn stream_resync(&mut self) -> bool {
        let Some(master) = self.master.as_mut() else {
            return false;
        };
        if self.streams.is_empty() {
            return false;
        }
        let room = master.message_room;
        let syncid = master.settings.syncid;
        let mut finished = Vec::new();
        for (i, stream) in self.streams.iter_mut().enumerate() {
            for _ in 0..RESYNC_BURST {
                let mut message = MessageWriter::new(syncid, room);
                while let Some(conn) = stream.entries.get(stream.next) {
                    if !message.push(conn) {
                        break;
                    }
                    stream.next += 1;
                }
                if message.is_empty() {
                    let done = Ext::ResyncDone {
                        syncid,
                        nonce: stream.nonce,
                        entries: stream.next as u32,
                    };
                    send_to(master, &done.encode(), &[stream.to], &self.counters);
                    finished.push(i);
                    break;
                }
                send_to(master, message.bytes(), &[stream.to], &self.counters);
                self.counters
                    .resync_entries_sent
                    .fetch_add(message.count() as u64, Ordering::Relaxed);
            }
        }
        for i in finished.into_iter().rev() {
            let s = self.streams.remove(i);
            tracing::info!(to = %s.to, entries = s.next, "resync streamed");
        }
        std::thread::sleep(RESYNC_PAUSE);
        true
    }

    /// A starting backup with resync on asks every [`RESYNC_RETRY`] until answered.
    fn ask_resync(&mut self) {
        let Some(backup) = self.backup.as_mut() else {
            return;
        };
        let Some(ask) = backup.resync.as_mut() else {
            return;
        };
        if ask.last.is_some_and(|t| t.elapsed() < RESYNC_RETRY) {
            return;
        }
        if ask.tries >= RESYNC_TRIES {
            tracing::warn!("no master answered the resync request; continuing with live sync only");
            backup.resync = None;
            return;
        }
        ask.tries += 1;
        ask.last = Some(Instant::now());
        let request = Ext::ResyncRequest {
            syncid: backup.settings.syncid,
            nonce: ask.nonce,
        }
        .encode();
        let bytes = match backup.signer.as_mut() {
            Some(s) => s.sign(&request, now_micros()),
            None => request,
        };
        for to in &backup.targets {
            if backup.socket.send_to(&bytes, &(*to).into()).is_ok() {
                self.counters
                    .resync_requests_sent
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn resync_done(&mut self, nonce: u32, entries: u32) {
        let Some(backup) = self.backup.as_mut() else {
            return;
        };
        let Some(ask) = backup.resync.as_ref().filter(|a| a.nonce == nonce) else {
            return;
        };
        let millis = ask.started.elapsed().as_millis() as u64;
        tracing::info!(entries, millis, "resync complete");
        self.counters
            .resyncs_completed
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_resync_entries
            .store(u64::from(entries), Ordering::Relaxed);
        self.counters
            .last_resync_millis
            .store(millis, Ordering::Relaxed);
        backup.resync = None;
    }

    fn wait(&self) {
        let socket = self
            .backup
            .as_ref()
            .map(|b| &b.socket)
            .or_else(|| self.master.as_ref().and_then(|m| m.listener.as_ref()));
        match socket {
            Some(s) => {
                use std::os::fd::AsRawFd;
                let mut pfd = libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let timeout = IDLE_WAIT.as_millis() as libc::c_int;
                // SAFETY: one valid pollfd on the stack, count 1; the fd is borrowed live.
                unsafe { libc::poll(&mut pfd, 1, timeout) };
            }
            // No daemon runs: nothing can arrive, look at the settings less often.
            None if self.master.is_none() => std::thread::sleep(IDLE_WAIT * 10),
            None => std::thread::sleep(IDLE_WAIT),
        }
    }
}

fn recv_from(socket: &Socket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and recv_from only
    // writes initialised bytes into the buffer.
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(
            buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
            buf.len(),
        )
    };
    match socket.recv_from(uninit) {
        Ok((len, from)) => Some((len, from.as_socket()?)),
        Err(_) => None,
    }
}

fn add_to_message(master: &mut Master, conn: &SyncConn, counters: &SyncCounters) {
    if !master.message.push(conn) {
        send_message(master, counters);
        if !master.message.push(conn) {
            return; // larger than a message: cannot happen with maxlen >= one entry
        }
    }
    if master.first_entry.is_none() {
        master.first_entry = Some(Instant::now());
    }
}

/// Sends the current message to every target and starts a new one.
fn send_message(master: &mut Master, counters: &SyncCounters) {
    if master.message.is_empty() {
        return;
    }
    let count = master.message.count() as u64;
    let bytes = master.message.bytes().to_vec();
    let targets = master.targets.clone();
    send_to(master, &bytes, &targets, counters);
    counters.conns_sent.fetch_add(count, Ordering::Relaxed);
    master.message.clear();
    master.first_entry = None;
}

fn send_to(master: &mut Master, message: &[u8], to: &[SocketAddr], counters: &SyncCounters) {
    let bytes = match master.signer.as_mut() {
        Some(s) => s.sign(message, now_micros()),
        None => message.to_vec(),
    };
    for target in to {
        match master.socket.send_to(&bytes, &(*target).into()) {
            Ok(_) => counters.messages_sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
