//! The threads that run the checks: one per checked real server (a check blocks for up to
//! its timeout, so checks never wait on each other), and one that walks the connection
//! table for passive detection. None of them is a worker; each reports to a callback that
//! takes the director's lock only to count the outcome and, on a change, publish the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use xvs_conntrack::ConnTable;

use super::passive::{SynRecvTracker, WALK_PERIOD, syn_recv_walk};
use super::probe::Prober;
use super::spec::{CheckSpec, DestKey, HealthConfig};

/// Where a check's outcome goes.
pub type ReportCheck = Arc<dyn Fn(&DestKey, &CheckSpec, Result<(), String>) + Send + Sync>;

/// The running checks, one thread each.
pub struct Checkers {
    running: HashMap<DestKey, Running>,
    /// Threads told to stop, possibly still in a check; joined by [`Checkers::stop`].
    retired: Vec<JoinHandle<()>>,
    report: ReportCheck,
}

struct Running {
    spec: Arc<CheckSpec>,
    /// Dropping it wakes and ends the thread.
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkers {
    /// No check running yet; outcomes will go to `report`.
    pub fn new(report: ReportCheck) -> Self {
        Checkers {
            running: HashMap::new(),
            retired: Vec::new(),
            report,
        }
    }

    /// Runs exactly the checks of `config`: unchanged ones go on undisturbed, changed and
    /// new ones start (checking at once), removed ones stop.
    pub fn follow(&mut self, config: &HealthConfig) {
        let wanted: HashMap<&DestKey, &CheckSpec> = config.checks().map(|(k, s)| (k, s)).collect();
        let stale: Vec<DestKey> = self
            .running
            .iter()
            .filter(|(key, r)| wanted.get(key).is_none_or(|s| **s != *r.spec))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some(r) = self.running.remove(&key) {
                drop(r.stop);
                self.retired.push(r.thread);
            }
        }
        self.retired.retain(|t| !t.is_finished());
        for (key, spec) in wanted {
            if self.running.contains_key(key) {
                continue;
            }
            let spec = Arc::new(spec.clone());
            let (stop, stopped) = mpsc::channel();
            let report = self.report.clone();
            let (k, s) = (*key, spec.clone());
            let thread = std::thread::Builder::new()
                .name("xvs-check".into())
                .spawn(move || check_loop(k, s, stopped, report));
            match thread {
                Ok(thread) => {
                    self.running.insert(*key, Running { spec, stop, thread });
                }
                Err(e) => tracing::error!("health: cannot start the check of {key}: {e}"),
            }
        }
    }

    /// How many checks run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every check and waits for them (at most one check's timeout).
    pub fn stop(&mut self) {
        for (_, r) in self.running.drain() {
            drop(r.stop);
            self.retired.push(r.thread);
        }
        for t in self.retired.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks at once, then every `interval` (from start to start), until told to stop.
fn check_loop(
    key: DestKey,
    spec: Arc<CheckSpec>,
    stopped: mpsc::Receiver<()>,
    report: ReportCheck,
) {
    let prober = Prober::new(spec.clone(), key.addr);
    loop {
        let started = Instant::now();
        let outcome = prober.run();
        if matches!(stopped.try_recv(), Err(TryRecvError::Disconnected)) {
            return;
        }
        report(&key, &spec, outcome);
        let next = started + spec.interval;
        match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Where a walk's SYN_RECV connections go, and whether anyone wants them.
pub trait PassiveSink: Send + Sync + 'static {
    /// Whether any service has passive detection (else the walk is skipped).
    fn wanted(&self) -> bool;
    /// Since when each real server's connections have been in SYN_RECV.
    fn observe(&self, seen: &HashMap<DestKey, Vec<Instant>>, now: Instant);
}

/// The passive detection thread: walks `table` every [`WALK_PERIOD`] while the sink wants
/// it. Dropping it stops the thread.
pub struct PassiveWalker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PassiveWalker {
    /// Starts the walks.
    pub fn spawn(table: ConnTable, sink: Arc<dyn PassiveSink>) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("xvs-passive".into())
            .spawn(move || {
                let mut tracker = SynRecvTracker::default();
                loop {
                    match stopped.recv_timeout(WALK_PERIOD) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if !sink.wanted() {
                        tracker = SynRecvTracker::default();
                        continue;
                    }
                    let now = Instant::now();
                    let seen = tracker.observe(now, syn_recv_walk(&table));
                    sink.observe(&seen, now);
                }
            })?;
        Ok(PassiveWalker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for PassiveWalker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::{Probe, ServiceHealth, StartState};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::time::Duration;
    use xvs_dataplane::service::spec::{Protocol, ServiceAddr};

    #[test]
    fn checks_run_at_once_then_every_interval_and_follow_the_config() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let key = DestKey {
            service: ServiceAddr::Inet {
                protocol: Protocol::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
            },
            addr: "127.0.0.1".parse().unwrap(),
            port,
        };
        let spec = CheckSpec {
            probe: Probe::Tcp,
            port,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
            rise: 1,
            fall: 1,
            start: StartState::Up,
        };
        let seen: Arc<Mutex<Vec<(CheckSpec, bool)>>> = Arc::default();
        let log = seen.clone();
        let mut checkers = Checkers::new(Arc::new(move |_k, s, outcome| {
            log.lock().unwrap().push((s.clone(), outcome.is_ok()));
        }));
        let config = |spec: &CheckSpec| HealthConfig {
            services: vec![ServiceHealth {
                service: key.service,
                on_failure: Default::default(),
                sorry: None,
                passive: None,
                checks: vec![(key, spec.clone())],
            }],
        };
        checkers.follow(&config(&spec));
        std::thread::sleep(Duration::from_millis(450));
        let n = seen.lock().unwrap().len();
        assert!((3..=6).contains(&n), "{n} checks in 450 ms at 100 ms");
        assert!(seen.lock().unwrap().iter().all(|(_, ok)| *ok));
        // The same config again changes nothing; a changed one restarts the check.
        checkers.follow(&config(&spec));
        assert_eq!(checkers.len(), 1);
        let slower = CheckSpec {
            interval: Duration::from_secs(60),
            ..spec.clone()
        };
        checkers.follow(&config(&slower));
        std::thread::sleep(Duration::from_millis(150));
        let last = seen.lock().unwrap().last().unwrap().0.clone();
        assert_eq!(last, slower);
        checkers.follow(&HealthConfig::default());
        assert!(checkers.is_empty());
        let count = seen.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(seen.lock().unwrap().len(), count, "stopped");
        checkers.stop();
    }
}
