//! Connection sync between directors: IPVS's master and backup sync daemons, as a side thread.
//!
//! ```text
//! worker (master role on)                       sync thread                      worker
//!  input packet -> ConnTable::sync_due? --out--> encode IPVS v1 messages --UDP--> ...
//!                  (per-worker queue;            (fill to maxlen, flush            |
//!                   full: dropped, counted)       within FLUSH_AFTER)              |
//!  ... ----UDP---> decode, check, resolve the real server ---install queue--> Shard::install
//! ```
//!
//! Nothing here runs on the per-packet path but one check and, when due, a push onto the
//! worker's own bounded queue ([`SyncPort::outgoing`]): a full queue drops the entry and
//! counts it, it never blocks the worker. The side thread ([`daemon`]) does the rest: sockets,
//! messages, authentication, bulk resync. A backup hands each received entry to the worker
//! that owns its flow through that worker's install queue, since only a shard's worker writes
//! it; the worker installs a bounded number per loop turn.
//!
//! Roles and settings follow `ipvsadm --start-daemon master|backup` ([`DaemonSettings`]);
//! both roles may run at once. xvs's additions ([`SyncOptions`]) are off by default, so the
//! wire stays IPVS's: bulk resync, an HMAC key, unicast peers.

pub mod convert;
pub mod daemon;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;
use serde::Serialize;
use xvs_conntrack::{Listed, NewConn, Secs, SyncPolicy, TcpState, TemplateKey};
use xvs_sync::auth::AuthError;
use xvs_sync::{DecodeError, EntryError};

pub use daemon::{SyncControl, SyncError};

/// Entries a worker may queue for the sync thread before it drops (and counts) more.
pub const OUTGOING_QUEUE: usize = 16 * 1024;
/// Received entries queued for a worker to install.
pub const INSTALL_QUEUE: usize = 64 * 1024;
/// Installs a worker does per loop turn at most (the rest wait for the next turn).
pub const INSTALLS_PER_TURN: usize = 512;

/// Which sync daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends the connections this director forwards.
    Master,
    /// Installs the connections a master sends.
    Backup,
}

impl Role {
    /// ipvsadm's word.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

/// One daemon's settings: `--mcast-interface --syncid --sync-maxlen --mcast-group
/// --mcast-port --mcast-ttl`, with IPVS's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DaemonSettings {
    /// The interface messages leave and arrive on.
    pub interface: String,
    /// 0..=255; a backup with 0 takes every syncid.
    pub syncid: u8,
    /// Largest message, in bytes (IPVS default 1472; at most the interface MTU less 28).
    pub maxlen: u16,
    /// Multicast group (or, with unicast peers, unused for sending).
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Multicast TTL.
    pub ttl: u8,
}

impl DaemonSettings {
    /// IPVS's defaults on `interface`.
    pub fn new(interface: impl Into<String>) -> Self {
        DaemonSettings {
            interface: interface.into(),
            syncid: 0,
            maxlen: xvs_sync::DEFAULT_MAXLEN,
            group: xvs_sync::DEFAULT_GROUP,
            port: xvs_sync::DEFAULT_PORT,
            ttl: xvs_sync::DEFAULT_TTL,
        }
    }
}

/// What xvs adds to IPVS's sync, and IPVS's own `sync_threshold`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// When connections are sent (IPVS sysctl `sync_threshold`, "3 50").
    pub policy: SyncPolicy,
    /// A starting backup asks for the whole table; a master answers such requests.
    pub resync: bool,
    /// Shared HMAC-SHA256 key: messages are signed, unsigned or replayed ones refused.
    pub key: Option<Vec<u8>>,
    /// Unicast peers instead of the multicast group (clouds without multicast).
    pub peers: Vec<IpAddr>,
}

/// Why a received message or entry was refused (counted by reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    TooShort,
    BadSize,
    OtherSyncid,
    BadVersion,
    MalformedEntry,
    EntryVersion,
    UnsupportedEntry,
    UnknownParameter,
    Unauthenticated,
    BadMac,
    Replayed,
    Stale,
    /// No virtual service for the entry's (protocol, VIP, port), or its fwmark, here.
    NoService,
    /// The service has no such real server here.
    NoDest,
    /// The real server's method here is not the master's.
    MethodMismatch,
    /// Sequence adjustment or persistence-engine data, which xvs does not do.
    Unsupported,
    /// A template for a service that is not persistent here.
    NotPersistent,
    /// The worker's install queue was full.
    InstallQueueFull,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 18] = [
        Reject::TooShort,
        Reject::BadSize,
        Reject::OtherSyncid,
        Reject::BadVersion,
        Reject::MalformedEntry,
        Reject::EntryVersion,
        Reject::UnsupportedEntry,
        Reject::UnknownParameter,
        Reject::Unauthenticated,
        Reject::BadMac,
        Reject::Replayed,
        Reject::Stale,
        Reject::NoService,
        Reject::NoDest,
        Reject::MethodMismatch,
        Reject::Unsupported,
        Reject::NotPersistent,
        Reject::InstallQueueFull,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Reject::ALL.len();

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::TooShort => DecodeError::TooShort.name(),
            Reject::BadSize => DecodeError::BadSize.name(),
            Reject::OtherSyncid => DecodeError::OtherSyncid(0).name(),
            Reject::BadVersion => DecodeError::BadVersion.name(),
            Reject::MalformedEntry => EntryError::Malformed.name(),
            Reject::EntryVersion => EntryError::UnknownVersion.name(),
            Reject::UnsupportedEntry => EntryError::Unsupported.name(),
            Reject::UnknownParameter => EntryError::UnknownParameter.name(),
            Reject::Unauthenticated => AuthError::Missing.name(),
            Reject::BadMac => AuthError::BadMac.name(),
            Reject::Replayed => AuthError::Replayed.name(),
            Reject::Stale => AuthError::Stale.name(),
            Reject::NoService => "no_service",
            Reject::NoDest => "no_real_server",
            Reject::MethodMismatch => "method_mismatch",
            Reject::Unsupported => "seq_or_pe_data",
            Reject::NotPersistent => "not_persistent",
            Reject::InstallQueueFull => "install_queue_full",
        }
    }
}

impl From<DecodeError> for Reject {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooShort => Reject::TooShort,
            DecodeError::BadSize => Reject::BadSize,
            DecodeError::OtherSyncid(_) => Reject::OtherSyncid,
            DecodeError::BadVersion => Reject::BadVersion,
        }
    }
}

impl From<EntryError> for Reject {
    fn from(e: EntryError) -> Self {
        match e {
            EntryError::Malformed => Reject::MalformedEntry,
            EntryError::UnknownVersion => Reject::EntryVersion,
            EntryError::Unsupported => Reject::UnsupportedEntry,
            EntryError::UnknownParameter => Reject::UnknownParameter,
        }
    }
}

impl From<AuthError> for Reject {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Reject::Unauthenticated,
            AuthError::BadMac => Reject::BadMac,
            AuthError::Replayed => Reject::Replayed,
            AuthError::Stale => Reject::Stale,
        }
    }
}

/// What a worker installs for the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// A connection, with the master's state and seconds left.
    Conn {
        new: NewConn,
        state: TcpState,
        timeout: Secs,
    },
    /// A persistence template.
    Template {
        key: TemplateKey,
        dest: xvs_conntrack::DestId,
        dest_addr: xvs_conntrack::Endpoint,
        timeout: Secs,
    },
}

/// One worker's end of the sync: its queues and the switches it reads.
#[derive(Debug)]
pub struct SyncPort {
    /// The master role runs: input packets are counted for sync.
    pub master: AtomicBool,
    /// Some entry was installed by sync: an inbound miss also looks in other workers'
    /// shards (the backup cannot always know which queue the NIC will hash a flow to).
    pub installed_any: AtomicBool,
    /// `sync_threshold`.
    pub threshold: AtomicU32,
    /// `sync_period`.
    pub period: AtomicU32,
    /// Entries due for sending.
    pub outgoing: ArrayQueue<Listed>,
    /// Entries to install.
    pub install: ArrayQueue<Install>,
    /// Entries dropped because `outgoing` was full.
    pub outgoing_dropped: AtomicU64,
    /// Connections and templates installed.
    pub installed: AtomicU64,
    /// Installs refused by a full table.
    pub install_failed: AtomicU64,
}

impl Default for SyncPort {
    fn default() -> Self {
        let policy = SyncPolicy::default();
        SyncPort {
            master: AtomicBool::new(false),
            installed_any: AtomicBool::new(false),
            threshold: AtomicU32::new(policy.threshold),
            period: AtomicU32::new(policy.period),
            outgoing: ArrayQueue::new(OUTGOING_QUEUE),
            install: ArrayQueue::new(INSTALL_QUEUE),
            outgoing_dropped: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            install_failed: AtomicU64::new(0),
        }
    }
}

impl SyncPort {
    /// The policy in force.
    #[inline]
    pub fn policy(&self) -> SyncPolicy {
        SyncPolicy {
            threshold: self.threshold.load(Ordering::Relaxed),
            period: self.period.load(Ordering::Relaxed),
        }
    }

    /// Queues an entry for sending; a full queue drops it (counted).
    #[inline]
    pub fn send(&self, entry: Listed) {
        if self.outgoing.push(entry).is_err() {
            self.outgoing_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sync thread's counters (monotonic).
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub messages_sent: AtomicU64,
    pub conns_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub messages_received: AtomicU64,
    pub conns_received: AtomicU64,
    pub rejected: [AtomicU64; Reject::COUNT],
    pub resync_requests_sent: AtomicU64,
    pub resync_requests_served: AtomicU64,
    pub resync_entries_sent: AtomicU64,
    pub resyncs_completed: AtomicU64,
    /// Entries and milliseconds of the last completed resync (backup).
    pub last_resync_entries: AtomicU64,
    pub last_resync_millis: AtomicU64,
}

impl SyncCounters {
    /// Counts one refusal.
    pub fn reject(&self, why: Reject) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a listing shows about sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncStatus {
    /// The master daemon's settings, if it runs.
    pub master: Option<DaemonSettings>,
    /// The backup daemon's settings, if it runs.
    pub backup: Option<DaemonSettings>,
    /// Bulk resync on.
    pub resync: bool,
    /// Messages authenticated.
    pub authenticated: bool,
    /// Unicast peers, if any.
    pub peers: Vec<IpAddr>,
    pub messages_sent: u64,
    pub conns_sent: u64,
    pub send_errors: u64,
    /// Entries the workers could not queue for sending.
    pub queue_dropped: u64,
    pub messages_received: u64,
    pub conns_received: u64,
    /// Connections and templates installed by the workers.
    pub installed: u64,
    /// Installs refused by a full connection table.
    pub install_failed: u64,
    /// Refusals by reason (only non-zero ones).
    pub rejected: Vec<(String, u64)>,
    pub resync_requests_sent: u64,
    pub resync_requests_served: u64,
    pub resync_entries_sent: u64,
    pub resyncs_completed: u64,
    pub last_resync_entries: u64,
    pub last_resync_millis: u64,
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
