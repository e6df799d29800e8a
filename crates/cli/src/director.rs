//! What the daemon does for xvsadm: the [`Director`] trait the control socket calls, the
//! requests it takes ([`Edit`], [`ListRequest`]) and [`TableOnlyDirector`], the reference
//! implementation over the configured table alone.
//!
//! [`TableOnlyDirector`] has no dataplane: every counter it lists is zero, because it has
//! counted nothing. It is the edit core the daemon wraps: the daemon applies an edit here
//! first (so IPVS's rules and messages decide), then compiles [`TableOnlyDirector::table`]
//! into the snapshot its workers read, and fills the counters from its statistics.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use xvs_dataplane::service::spec::{
    DestSpec, EditError, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::{DaemonSettings, Role};

use crate::listing::{DEFAULT_CONN_TABLE_SIZE, ListData, ServiceEntry, Timeouts};

/// One change to the service table: ipvsadm's edit commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Edit {
    /// `-A`.
    AddService {
        /// The new service (its `dests` are empty from xvsadm).
        service: ServiceSpec,
    },
    /// `-E`: scheduler, flags, persistence and `-o` become these (the Maglev table size,
    /// which only the config file sets, stays).
    EditService {
        /// The service's new settings.
        service: ServiceSpec,
    },
    /// `-D`.
    DeleteService {
        /// Which service.
        addr: ServiceAddr,
    },
    /// `-C`.
    Clear,
    /// `-a`.
    AddDest {
        /// The service.
        service: ServiceAddr,
        /// The real server.
        dest: DestSpec,
    },
    /// `-e`.
    EditDest {
        /// The service.
        service: ServiceAddr,
        /// The real server's new settings.
        dest: DestSpec,
    },
    /// `-d`.
    DeleteDest {
        /// The service.
        service: ServiceAddr,
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
}

impl Edit {
    /// Applies the edit to `table`; a refused edit changes nothing.
    pub fn apply_to(&self, table: &mut ServiceTableSpec) -> Result<(), EditError> {
        match self {
            Edit::AddService { service } => table.add_service(service.clone()),
            Edit::EditService { service } => {
                // ipvsadm -E cannot name a Maglev table size: the configured one stays.
                let mut service = service.clone();
                if let Some(current) = table.service(&service.addr) {
                    service.mh_table_size = current.mh_table_size;
                }
                table.edit_service(service)
            }
            Edit::DeleteService { addr } => table.delete_service(addr),
            Edit::Clear => {
                table.clear();
                Ok(())
            }
            Edit::AddDest { service, dest } => table.add_dest(service, *dest),
            Edit::EditDest { service, dest } => table.edit_dest(service, *dest),
            Edit::DeleteDest {
                service,
                addr,
                port,
            } => table.delete_dest(service, *addr, *port),
        }
    }

    /// The line ipvsadm prints for `err` after this edit (libipvs's `ipvs_strerror` table):
    /// real-server commands say "Service not defined" where service commands say "No such
    /// service", and an unknown scheduler is "Scheduler or persistence engine not found".
    pub fn error_message(&self, err: &EditError) -> String {
        let on_dest = matches!(
            self,
            Edit::AddDest { .. } | Edit::EditDest { .. } | Edit::DeleteDest { .. }
        );
        match err {
            EditError::NoSuchService if on_dest => "Service not defined".to_string(),
            EditError::Scheduler(xvs_sched::SchedError::UnknownScheduler(_)) => {
                "Scheduler or persistence engine not found".to_string()
            }
            other => other.to_string(),
        }
    }
}

/// A batch of edits was refused: which one (0-based) and ipvsadm's message for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFailure {
    /// Index of the refused edit in the batch.
    pub index: usize,
    /// The message, one line.
    pub message: String,
}

/// What a listing asks the daemon for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ListRequest {
    /// Every service (`-L`, `-S`).
    Services,
    /// One service (`-L -t addr:port`).
    Service {
        /// Which.
        addr: ServiceAddr,
    },
    /// Connections and templates (`-L -c`).
    Connections,
    /// Timeouts (`-L --timeout`).
    Timeouts,
    /// Ports and frame counters of the dataplane (`xvsadm --dataplane`).
    Dataplane,
    /// The connection sync daemons and their counters (`-L --daemon`).
    Daemon,
}

/// `--start-daemon`'s options as given; what is left out takes IPVS's default (and the
/// director's first interface for `--mcast-interface`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonArgs {
    /// `--mcast-interface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// `--syncid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncid: Option<u8>,
    /// `--sync-maxlen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlen: Option<u16>,
    /// `--mcast-group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<std::net::Ipv4Addr>,
    /// `--mcast-port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `--mcast-ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
}

impl DaemonArgs {
    /// The settings these give, on `default_interface` unless one is named.
    pub fn settings(&self, default_interface: &str) -> DaemonSettings {
        let mut d = DaemonSettings::new(
            self.interface
                .clone()
                .unwrap_or_else(|| default_interface.to_string()),
        );
        d.syncid = self.syncid.unwrap_or(d.syncid);
        d.maxlen = self.maxlen.unwrap_or(d.maxlen);
        d.group = self.group.unwrap_or(d.group);
        d.port = self.port.unwrap_or(d.port);
        d.ttl = self.ttl.unwrap_or(d.ttl);
        d
    }
}

/// The daemon's side of xvsadm. The control server calls it from its own thread, one
/// request at a time (it holds the director's lock for each).
pub trait Director: Send {
    /// Applies `edits` all or none: on the first refused edit nothing has changed and the
    /// failure says which edit and why (ipvsadm's message, see [`Edit::error_message`]).
    fn apply_batch(&mut self, edits: &[Edit]) -> Result<(), EditFailure>;

    /// Applies one edit.
    fn apply(&mut self, edit: Edit) -> Result<(), EditFailure> {
        self.apply_batch(std::slice::from_ref(&edit))
    }

    /// What a listing shows; a missing service (`-L -t`) is `NoSuchService`.
    fn list(&self, what: &ListRequest) -> Result<ListData, EditError>;

    /// `--set tcp tcpfin udp`: a 0 keeps the current value.
    fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), EditError>;

    /// `-Z [service]`: zeroes the counters of one service or all of them.
    fn zero(&mut self, service: Option<&ServiceAddr>) -> Result<(), EditError>;

    /// `--start-daemon ROLE`: ipvsadm's message on refusal. A director without a dataplane
    /// has nothing to sync.
    fn start_daemon(&mut self, _role: Role, _args: &DaemonArgs) -> Result<(), String> {
        Err(NO_SYNC.to_string())
    }

    /// `--stop-daemon ROLE`.
    fn stop_daemon(&mut self, _role: Role) -> Result<(), String> {
        Err(NO_SYNC.to_string())
    }

    /// `xvs drain [--undo]`: withdraw the announced VIPs (or announce them again).
    fn set_drained(&mut self, _drained: bool) -> Result<(), String> {
        Err(NO_ANNOUNCE.to_string())
    }
}

/// Why a director without a dataplane refuses sync daemons.
pub const NO_SYNC: &str = "xvs runs without a dataplane (--control-only): no connection to sync";

/// Why `xvs drain` is refused when nothing is announced.
pub const NO_ANNOUNCE: &str =
    "this xvs announces no VIP: add an [announce] section to its configuration";

/// The reference [`Director`]: the configured table and the timeouts, nothing else. It has
/// no dataplane, so it lists no connections and every counter as zero.
#[derive(Debug, Clone)]
pub struct TableOnlyDirector {
    table: ServiceTableSpec,
    timeouts: Timeouts,
    conn_table_size: u32,
    generation: u64,
}

impl Default for TableOnlyDirector {
    fn default() -> Self {
        TableOnlyDirector::new(ServiceTableSpec::default(), Timeouts::default())
    }
}

impl TableOnlyDirector {
    /// A director starting from `table` (already validated, e.g. from the config file).
    pub fn new(table: ServiceTableSpec, timeouts: Timeouts) -> Self {
        TableOnlyDirector {
            table,
            timeouts,
            conn_table_size: DEFAULT_CONN_TABLE_SIZE,
            generation: 0,
        }
    }

    /// Sets the connection-table size the banner shows (`size=`).
    pub fn with_conn_table_size(mut self, size: u32) -> Self {
        self.conn_table_size = size;
        self
    }

    /// The configured table, what the dataplane compiles.
    pub fn table(&self) -> &ServiceTableSpec {
        &self.table
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Counts every change of table or timeouts, so a wrapper can tell when to recompile.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the whole table and the timeouts at once (a SIGHUP reload).
    pub fn replace(&mut self, table: ServiceTableSpec, timeouts: Timeouts) {
        self.table = table;
        self.timeouts = timeouts;
        self.generation += 1;
    }
}

impl Director for TableOnlyDirector {
    fn apply_batch(&mut self, edits: &[Edit]) -> Result<(), EditFailure> {
        // Work on a copy and swap it in only when every edit passed: all or nothing.
        let mut next = self.table.clone();
        for (index, edit) in edits.iter().enumerate() {
            edit.apply_to(&mut next).map_err(|e| EditFailure {
                index,
                message: edit.error_message(&e),
            })?;
        }
        self.table = next;
        self.generation += 1;
        Ok(())
    }

    fn list(&self, what: &ListRequest) -> Result<ListData, EditError> {
        let mut data = ListData {
            conn_table_size: self.conn_table_size,
            timeouts: self.timeouts,
            ..ListData::default()
        };
        match what {
            ListRequest::Services => {
                data.services = self
                    .table
                    .services
                    .iter()
                    .map(ServiceEntry::from_spec)
                    .collect();
            }
            ListRequest::Service { addr } => {
                let s = self.table.service(addr).ok_or(EditError::NoSuchService)?;
                data.services = vec![ServiceEntry::from_spec(s)];
            }
            // No dataplane, no connections.
            ListRequest::Connections
            | ListRequest::Timeouts
            | ListRequest::Dataplane
            | ListRequest::Daemon => {}
        }
        Ok(data)
    }

    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), EditError> {
        let keep = |new: u32, old: u32| if new == 0 { old } else { new };
        self.timeouts = Timeouts {
            tcp: keep(t.tcp, self.timeouts.tcp),
            tcpfin: keep(t.tcpfin, self.timeouts.tcpfin),
            udp: keep(t.udp, self.timeouts.udp),
        };
        self.generation += 1;
        Ok(())
    }

    fn zero(&mut self, service: Option<&ServiceAddr>) -> Result<(), EditError> {
        // Nothing is counted here; zeroing a missing service still fails as in ipvsadm.
        match service {
            Some(addr) if self.table.service(addr).is_none() => Err(EditError::NoSuchService),
            _ => Ok(()),
        }
    }
}

/// The table `edits` build from an empty one, all or none (for callers without a
/// director, such as tests and tools).
pub fn build_table(edits: &[Edit]) -> Result<ServiceTableSpec, EditFailure> {
    let mut d = TableOnlyDirector::default();
    d.apply_batch(edits)?;
    Ok(d.table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use xvs_dataplane::service::spec::{ForwardMethod, Protocol};

    fn vip() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(172, 16, 21, 10)),
            port: 80,
        }
    }

    fn rs(last: u8) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 40, last)),
            port: 80,
            method: ForwardMethod::Route,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let mut d = TableOnlyDirector::default();
        d.apply(Edit::AddService {
            service: ServiceSpec::new(vip()),
        })
        .unwrap();
        let before = d.table().clone();
        let err = d
            .apply_batch(&[
                Edit::AddDest {
                    service: vip(),
                    dest: rs(12),
                },
                Edit::AddDest {
                    service: vip(),
                    dest: rs(12),
                },
            ])
            .unwrap_err();
        assert_eq!(
            err,
            EditFailure {
                index: 1,
                message: "Destination already exists".into()
            }
        );
        assert_eq!(d.table(), &before);
    }

    #[test]
    fn ipvsadm_messages_per_command() {
        let mut d = TableOnlyDirector::default();
        let e = d
            .apply(Edit::AddDest {
                service: vip(),
                dest: rs(1),
            })
            .unwrap_err();
        assert_eq!(e.message, "Service not defined");
        let e = d.apply(Edit::DeleteService { addr: vip() }).unwrap_err();
        assert_eq!(e.message, "No such service");
        let mut bad = ServiceSpec::new(vip());
        bad.scheduler = "fastest".into();
        let e = d.apply(Edit::AddService { service: bad }).unwrap_err();
        assert_eq!(e.message, "Scheduler or persistence engine not found");
        assert_eq!(d.zero(Some(&vip())), Err(EditError::NoSuchService));
        assert!(d.zero(None).is_ok());
    }

    #[test]
    fn edit_service_keeps_the_configured_maglev_size() {
        let mut spec = ServiceSpec::new(vip());
        spec.scheduler = "mh".into();
        spec.mh_table_size = 65_521;
        let mut d = TableOnlyDirector::default();
        d.apply(Edit::AddService { service: spec }).unwrap();
        let mut edited = ServiceSpec::new(vip());
        edited.scheduler = "mh".into();
        d.apply(Edit::EditService { service: edited }).unwrap();
        assert_eq!(d.table().services[0].mh_table_size, 65_521);
    }

    #[test]
    fn lists_zero_counters_and_keeps_timeouts() {
        let mut d = TableOnlyDirector::default();
        d.apply(Edit::AddService {
            service: ServiceSpec::new(vip()),
        })
        .unwrap();
        d.set_timeouts(Timeouts {
            tcp: 0,
            tcpfin: 30,
            udp: 0,
        })
        .unwrap();
        let data = d.list(&ListRequest::Timeouts).unwrap();
        assert_eq!(
            data.timeouts,
            Timeouts {
                tcp: 900,
                tcpfin: 30,
                udp: 300
            }
        );
        let one = d.list(&ListRequest::Service { addr: vip() }).unwrap();
        assert_eq!(one.services.len(), 1);
        assert_eq!(one.services[0].stats.conns, 0);
        assert!(
            d.list(&ListRequest::Connections)
                .unwrap()
                .connections
                .is_empty()
        );
    }
}
