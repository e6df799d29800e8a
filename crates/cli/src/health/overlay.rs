//! The table in force: the operator's table (the file, xvsadm, ldirectord's ipvsadm
//! lines) with what the health checks decided laid over it.
//!
//! [`Health`] keeps every check's state and passive detection's, and turns the desired
//! table into the effective one ([`Health::effective`]): a real server its check holds
//! down gets weight 0 (`on_failure = "quiesce"`) or is left out (`"remove"`), one passive
//! detection holds gets weight 0, and a service with no real server able to take new
//! connections gets its sorry server. Nothing else changes, so the rule for who wins is
//! simple: the operator decides whether a real server exists and what its weight is; its
//! check decides only whether it may take new connections. A weight set with `xvsadm -e`
//! while the check holds the server down is the weight it gets back when the check passes;
//! a server the operator removed is not re-added by its check; one the operator quiesced
//! (`-w 0`) stays at 0.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use xvs_dataplane::service::spec::{DestSpec, ServiceAddr, ServiceTableSpec, SocketText};

use super::passive::{PassiveEvent, PassiveState};
use super::spec::{CheckSpec, DestKey, HealthConfig, OnFailure, ServiceHealth};
use super::state::{CheckState, Transition};
use crate::listing::{CheckStatus, DestEntry, PassiveStatus, ServiceEntry};

/// Every check's and passive detection's state, and the settings they follow.
#[derive(Debug, Clone, Default)]
pub struct Health {
    config: HealthConfig,
    checks: HashMap<DestKey, (CheckSpec, CheckState)>,
    passive: HashMap<DestKey, PassiveState>,
    /// Services whose sorry server has taken connections: in quiesce mode it stays, at
    /// weight 0, so those connections finish.
    sorry_used: HashSet<ServiceAddr>,
}

impl Health {
    /// Starts from `config`: every check in its start state.
    pub fn new(config: HealthConfig, now: Instant) -> Self {
        let mut health = Health::default();
        health.reconfigure(config, now);
        health
    }

    /// Every checked real server and whether its check holds it in service.
    pub fn states(&self) -> impl Iterator<Item = (&DestKey, bool)> {
        self.checks.iter().map(|(key, (_, state))| (key, state.up))
    }

    /// The settings in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Follows a reloaded file: a check whose settings did not change keeps its state (a
    /// reload does not bring a failed server back); a new or changed one starts over in its
    /// start state; one no longer in the file is forgotten.
    pub fn reconfigure(&mut self, config: HealthConfig, now: Instant) {
        let mut checks = HashMap::new();
        for (key, spec) in config.checks() {
            let kept = self
                .checks
                .remove(key)
                .filter(|(old, _)| old == spec)
                .map(|(_, state)| state);
            let state = kept.unwrap_or_else(|| CheckState::new(spec, now));
            checks.insert(*key, (spec.clone(), state));
        }
        self.checks = checks;
        self.passive.retain(|key, _| {
            config
                .service(&key.service)
                .is_some_and(|s| s.passive.is_some())
        });
        self.sorry_used.retain(|service| {
            let sorry = |c: &HealthConfig| c.service(service).and_then(|s| s.sorry);
            sorry(&config).is_some() && sorry(&config) == sorry(&self.config)
        });
        self.config = config;
    }

    /// Whether health holds `key` out of new connections (its check is down, or passive
    /// detection quiesced it).
    fn held(&self, key: &DestKey) -> bool {
        self.checks.get(key).is_some_and(|(_, s)| !s.up)
            || self.passive.get(key).is_some_and(PassiveState::holds)
    }

    /// Whether the check of `key` (not passive detection) holds it down.
    fn check_down(&self, key: &DestKey) -> bool {
        self.checks.get(key).is_some_and(|(_, s)| !s.up)
    }

    /// The table in force for `desired`: see the module documentation.
    pub fn effective(&self, desired: &ServiceTableSpec) -> ServiceTableSpec {
        let mut table = desired.clone();
        for service in &mut table.services {
            let Some(policy) = self.config.service(&service.addr) else {
                continue;
            };
            let addr = service.addr;
            service.dests.retain_mut(|d| {
                let key = DestKey::of(addr, d);
                if policy.on_failure == OnFailure::Remove && self.check_down(&key) {
                    return false;
                }
                if self.held(&key) {
                    d.weight = 0;
                }
                true
            });
            let Some(sorry) = policy.sorry else {
                continue;
            };
            if service
                .dests
                .iter()
                .any(|d| d.addr == sorry.addr && d.port == sorry.port)
            {
                // The operator made it a real server: theirs.
                continue;
            }
            let serving = service.dests.iter().any(|d| d.weight > 0);
            if !serving {
                service.dests.push(sorry);
            } else if policy.on_failure == OnFailure::Quiesce && self.sorry_used.contains(&addr) {
                service.dests.push(DestSpec { weight: 0, ..sorry });
            }
        }
        table
    }

    /// After `after` replaced `before` in the dataplane: remembers which sorry servers
    /// took connections and logs each one that started or stopped taking new ones.
    pub fn committed(&mut self, before: &ServiceTableSpec, after: &ServiceTableSpec) {
        for policy in &self.config.services {
            let Some(sorry) = policy.sorry else {
                continue;
            };
            let active = |t: &ServiceTableSpec| {
                t.service(&policy.service).is_some_and(|s| {
                    s.dests
                        .iter()
                        .any(|d| d.addr == sorry.addr && d.port == sorry.port && d.weight > 0)
                })
            };
            let server = SocketText(sorry.addr, sorry.port);
            match (active(before), active(after)) {
                (false, true) => {
                    self.sorry_used.insert(policy.service);
                    tracing::warn!(
                        "health: {}: no real server can take new connections; sorry server {server} takes them",
                        policy.service
                    );
                }
                (true, false) => {
                    let now = match policy.on_failure {
                        OnFailure::Quiesce => "quiesced (weight 0)",
                        OnFailure::Remove => "removed",
                    };
                    tracing::info!(
                        "health: {}: real servers take new connections again; sorry server {server} {now}",
                        policy.service
                    );
                }
                _ => {}
            }
        }
    }

    /// Counts one outcome of the check of `key` run with `spec` (a check whose settings a
    /// reload changed meanwhile is ignored). Logs a transition in one line, naming what it
    /// does to the server in `desired`; returns whether there was one.
    pub fn record(
        &mut self,
        key: &DestKey,
        spec: &CheckSpec,
        outcome: Result<(), String>,
        desired: &ServiceTableSpec,
        now: Instant,
    ) -> bool {
        let Some((current, state)) = self.checks.get_mut(key) else {
            return false;
        };
        if current != spec {
            return false;
        }
        let Some(transition) = state.record(spec, outcome, now) else {
            return false;
        };
        let dest = desired
            .service(&key.service)
            .and_then(|s| s.dests.iter().find(|d| key.is(d)));
        let on_failure = self
            .config
            .service(&key.service)
            .map(|s| s.on_failure)
            .unwrap_or_default();
        let kind = spec.probe.kind();
        match transition {
            Transition::Down => {
                let reason = state.last_error.clone().unwrap_or_default();
                let action = match (dest, on_failure) {
                    (None, _) => "not in the table (removed by the operator)",
                    (Some(_), OnFailure::Quiesce) => "quiesced (weight 0)",
                    (Some(_), OnFailure::Remove) => "removed",
                };
                tracing::warn!(
                    "health: {key} down after {} failed {kind} check(s) ({reason}): {action}",
                    spec.fall
                );
            }
            Transition::Up => {
                let action = match dest {
                    None => "not in the table (removed by the operator)".to_string(),
                    Some(_) if self.passive.get(key).is_some_and(PassiveState::holds) => {
                        "still quiesced by passive detection".to_string()
                    }
                    Some(d) if on_failure == OnFailure::Remove => {
                        format!("added back with weight {}", d.weight)
                    }
                    Some(d) => format!("weight {} restored", d.weight),
                };
                tracing::info!(
                    "health: {key} up after {} passed {kind} check(s): {action}",
                    spec.rise
                );
            }
        }
        true
    }

    /// One walk's connections in SYN_RECV (since when each of a real server's has been
    /// there), for the real servers of `desired` in services with passive detection. Logs
    /// every change; returns whether any changed what a server may take.
    pub fn observe_passive(
        &mut self,
        seen: &HashMap<DestKey, Vec<Instant>>,
        desired: &ServiceTableSpec,
        now: Instant,
    ) -> bool {
        let mut changed = false;
        for policy in &self.config.services {
            let Some(spec) = policy.passive else {
                continue;
            };
            let Some(service) = desired.service(&policy.service) else {
                continue;
            };
            for dest in &service.dests {
                let key = DestKey::of(policy.service, dest);
                let first_seen = seen.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let state = self.passive.entry(key).or_default();
                let Some(event) = state.update(&spec, first_seen, now) else {
                    continue;
                };
                let stuck = state.stuck;
                let past = spec.syn_recv;
                match event {
                    PassiveEvent::Suspect if spec.quiesce => {
                        changed = true;
                        tracing::warn!(
                            "health: {key} suspect: {stuck} new connection(s) in SYN_RECV for over {past:?}: quiesced (weight 0) for {:?}",
                            spec.hold
                        );
                    }
                    PassiveEvent::Suspect => tracing::warn!(
                        "health: {key} suspect: {stuck} new connection(s) in SYN_RECV for over {past:?}"
                    ),
                    PassiveEvent::Cleared => {
                        tracing::info!(
                            "health: {key} no longer suspect: no connection stuck in SYN_RECV"
                        )
                    }
                    PassiveEvent::Released => {
                        changed = true;
                        let action = if self.check_down(&key) {
                            "still held by its check"
                        } else {
                            "takes new connections again"
                        };
                        tracing::info!(
                            "health: {key} passive quiesce over after {:?}: {action}",
                            spec.hold
                        );
                    }
                }
            }
        }
        changed
    }

    /// Adds the health of each real server of `entry` (a service of the effective table)
    /// to its listing: check state, passive counts, whether it is the sorry server, and the
    /// real servers of `desired` that their check took out (`held_out`).
    pub fn annotate(&self, entry: &mut ServiceEntry, desired: &ServiceTableSpec, now: Instant) {
        let Some(policy) = self.config.service(&entry.addr) else {
            return;
        };
        let wanted = desired.service(&entry.addr);
        let desired_dest = |addr, port| {
            wanted.and_then(|s| s.dests.iter().find(|d| d.addr == addr && d.port == port))
        };
        for dest in &mut entry.dests {
            let key = DestKey {
                service: entry.addr,
                addr: dest.addr,
                port: dest.port,
            };
            let wanted = desired_dest(dest.addr, dest.port);
            dest.check = self.status(&key, policy, wanted, now);
            dest.passive = self.passive_status(&key, policy);
            dest.sorry_server = wanted.is_none()
                && policy
                    .sorry
                    .is_some_and(|s| s.addr == dest.addr && s.port == dest.port);
        }
        let Some(wanted) = wanted else {
            return;
        };
        for dest in &wanted.dests {
            if entry
                .dests
                .iter()
                .any(|d| d.addr == dest.addr && d.port == dest.port)
            {
                continue;
            }
            let key = DestKey::of(entry.addr, dest);
            let mut held = DestEntry::from_spec(dest);
            held.check = self.status(&key, policy, Some(dest), now);
            held.passive = self.passive_status(&key, policy);
            entry.held_out.push(held);
        }
    }

    fn status(
        &self,
        key: &DestKey,
        policy: &ServiceHealth,
        wanted: Option<&DestSpec>,
        now: Instant,
    ) -> Option<CheckStatus> {
        let (spec, state) = self.checks.get(key)?;
        let action = match (state.up, policy.on_failure) {
            (true, _) => "none",
            (false, OnFailure::Quiesce) => "quiesced",
            (false, OnFailure::Remove) => "removed",
        };
        Some(CheckStatus {
            kind: spec.probe.kind().to_string(),
            port: spec.port,
            state: if state.up { "up" } else { "down" }.to_string(),
            action: action.to_string(),
            restore_weight: wanted.map(|d| d.weight).unwrap_or(0),
            passed_in_row: state.passed_in_row,
            failed_in_row: state.failed_in_row,
            rise: spec.rise,
            fall: spec.fall,
            checks: state.checks,
            failures: state.failures,
            last_passed: state.last_passed,
            last_error: state.last_error.clone(),
            for_secs: now.saturating_duration_since(state.since).as_secs(),
            interval_ms: spec.interval.as_millis() as u64,
            timeout_ms: spec.timeout.as_millis() as u64,
        })
    }

    fn passive_status(&self, key: &DestKey, policy: &ServiceHealth) -> Option<PassiveStatus> {
        policy.passive?;
        let state = self.passive.get(key);
        Some(PassiveStatus {
            stuck_syn_recv: state.map_or(0, |p| p.stuck),
            suspect: state.is_some_and(|p| p.suspect),
            times_suspected: state.map_or(0, |p| p.times_suspected),
            quiesced: state.is_some_and(PassiveState::holds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::{PassiveSpec, Probe, StartState};
    use std::time::Duration;
    use xvs_dataplane::service::spec::{ForwardMethod, Protocol, ServiceSpec};

    fn vip() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: "172.16.21.10".parse().unwrap(),
            port: 80,
        }
    }

    fn rs(last: u8, weight: u32) -> DestSpec {
        DestSpec {
            addr: format!("192.168.40.{last}").parse().unwrap(),
            port: 80,
            method: ForwardMethod::Route,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn desired(dests: &[DestSpec]) -> ServiceTableSpec {
        let mut t = ServiceTableSpec::default();
        t.add_service(ServiceSpec::new(vip())).unwrap();
        for d in dests {
            t.add_dest(&vip(), *d).unwrap();
        }
        t
    }

    fn check(start: StartState) -> CheckSpec {
        CheckSpec {
            probe: Probe::Tcp,
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            start,
        }
    }

    fn config(on_failure: OnFailure, sorry: Option<DestSpec>, checked: &[u8]) -> HealthConfig {
        HealthConfig {
            services: vec![ServiceHealth {
                service: vip(),
                on_failure,
                sorry,
                passive: None,
                checks: checked
                    .iter()
                    .map(|&last| (DestKey::of(vip(), &rs(last, 1)), check(StartState::Up)))
                    .collect(),
            }],
        }
    }

    fn weights(t: &ServiceTableSpec) -> Vec<(u8, u32)> {
        t.services[0]
            .dests
            .iter()
            .map(|d| match d.addr {
                std::net::IpAddr::V4(a) => (a.octets()[3], d.weight),
                _ => unreachable!(),
            })
            .collect()
    }

    fn fail(h: &mut Health, last: u8, table: &ServiceTableSpec) -> bool {
        let key = DestKey::of(vip(), &rs(last, 1));
        h.record(
            &key,
            &check(StartState::Up),
            Err("refused".into()),
            table,
            Instant::now(),
        )
    }

    fn pass(h: &mut Health, last: u8, table: &ServiceTableSpec) -> bool {
        let key = DestKey::of(vip(), &rs(last, 1));
        h.record(&key, &check(StartState::Up), Ok(()), table, Instant::now())
    }

    #[test]
    fn a_failed_server_is_quiesced_and_gets_the_operators_weight_back() {
        let mut h = Health::new(config(OnFailure::Quiesce, None, &[12, 13]), Instant::now());
        let mut table = desired(&[rs(12, 2), rs(13, 1)]);
        assert_eq!(weights(&h.effective(&table)), [(12, 2), (13, 1)]);
        assert!(fail(&mut h, 12, &table));
        assert_eq!(weights(&h.effective(&table)), [(12, 0), (13, 1)]);
        // The operator changes its weight meanwhile: kept at 0, restored to the new one.
        table.edit_dest(&vip(), rs(12, 5)).unwrap();
        assert_eq!(weights(&h.effective(&table)), [(12, 0), (13, 1)]);
        assert!(pass(&mut h, 12, &table));
        assert_eq!(weights(&h.effective(&table)), [(12, 5), (13, 1)]);
        // An operator's quiesce stays through the check's ups and downs.
        table.edit_dest(&vip(), rs(13, 0)).unwrap();
        fail(&mut h, 13, &table);
        pass(&mut h, 13, &table);
        assert_eq!(weights(&h.effective(&table)), [(12, 5), (13, 0)]);
        // A server the operator removed is not re-added by its check.
        table.delete_dest(&vip(), rs(13, 0).addr, 80).unwrap();
        fail(&mut h, 13, &table);
        pass(&mut h, 13, &table);
        assert_eq!(weights(&h.effective(&table)), [(12, 5)]);
    }

    #[test]
    fn remove_mode_leaves_failed_servers_out_and_lists_them_as_held_out() {
        let mut h = Health::new(config(OnFailure::Remove, None, &[12]), Instant::now());
        let table = desired(&[rs(12, 2), rs(13, 1)]);
        fail(&mut h, 12, &table);
        let effective = h.effective(&table);
        assert_eq!(weights(&effective), [(13, 1)]);
        let mut entry = ServiceEntry::from_spec(&effective.services[0]);
        h.annotate(&mut entry, &table, Instant::now());
        assert_eq!(entry.held_out.len(), 1);
        let status = entry.held_out[0].check.as_ref().unwrap();
        assert_eq!(
            (status.state.as_str(), status.action.as_str()),
            ("down", "removed")
        );
        assert_eq!(status.restore_weight, 2);
        assert_eq!(status.last_error.as_deref(), Some("refused"));
        assert!(entry.dests[0].check.is_none(), "13 is not checked");
        pass(&mut h, 12, &table);
        assert_eq!(weights(&h.effective(&table)), [(12, 2), (13, 1)]);
    }

    #[test]
    fn the_sorry_server_takes_over_when_no_real_server_can() {
        let sorry = rs(99, 1);
        for mode in [OnFailure::Quiesce, OnFailure::Remove] {
            let mut h = Health::new(config(mode, Some(sorry), &[12, 13]), Instant::now());
            let table = desired(&[rs(12, 1), rs(13, 1)]);
            let mut live = h.effective(&table);
            h.committed(&table, &live);
            fail(&mut h, 12, &table);
            assert!(!weights(&h.effective(&table)).contains(&(99, 1)));
            fail(&mut h, 13, &table);
            let next = h.effective(&table);
            assert!(weights(&next).contains(&(99, 1)), "{mode:?}");
            h.committed(&live, &next);
            live = next;
            let mut entry = ServiceEntry::from_spec(&live.services[0]);
            h.annotate(&mut entry, &table, Instant::now());
            assert!(entry.dests.iter().any(|d| d.sorry_server));
            pass(&mut h, 13, &table);
            let next = h.effective(&table);
            h.committed(&live, &next);
            match mode {
                // Its connections finish: weight 0, not removed.
                OnFailure::Quiesce => assert_eq!(weights(&next), [(12, 0), (13, 1), (99, 0)]),
                OnFailure::Remove => assert_eq!(weights(&next), [(13, 1)]),
            }
        }
    }

    #[test]
    fn a_reload_keeps_unchanged_checks_and_restarts_changed_ones() {
        let now = Instant::now();
        let mut h = Health::new(config(OnFailure::Quiesce, None, &[12, 13]), now);
        let table = desired(&[rs(12, 1), rs(13, 1)]);
        fail(&mut h, 12, &table);
        fail(&mut h, 13, &table);
        let mut next = config(OnFailure::Quiesce, None, &[12, 13]);
        next.services[0].checks[1].1.rise = 3;
        h.reconfigure(next, now);
        assert_eq!(
            weights(&h.effective(&table)),
            [(12, 0), (13, 1)],
            "12 unchanged stays down, 13 changed starts up"
        );
        // A report from the check as it was before the reload is ignored.
        let key = DestKey::of(vip(), &rs(13, 1));
        assert!(!h.record(&key, &check(StartState::Up), Err("x".into()), &table, now));
        h.reconfigure(HealthConfig::default(), now);
        assert_eq!(weights(&h.effective(&table)), [(12, 1), (13, 1)]);
    }

    #[test]
    fn start_down_holds_servers_until_proven() {
        let mut c = config(OnFailure::Quiesce, None, &[12]);
        c.services[0].checks[0].1.start = StartState::Down;
        let h = Health::new(c, Instant::now());
        assert_eq!(weights(&h.effective(&desired(&[rs(12, 3)]))), [(12, 0)]);
    }

    #[test]
    fn passive_detection_quiesces_a_suspect_server_for_its_hold() {
        let mut c = config(OnFailure::Quiesce, None, &[]);
        c.services[0].passive = Some(PassiveSpec {
            syn_recv: Duration::from_secs(2),
            min_stuck: 1,
            quiesce: true,
            hold: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        let mut h = Health::new(c, t0);
        let table = desired(&[rs(12, 1), rs(13, 1)]);
        let key = DestKey::of(vip(), &rs(12, 1));
        let seen: HashMap<DestKey, Vec<Instant>> = [(key, vec![t0])].into();
        assert!(!h.observe_passive(&seen, &table, t0 + Duration::from_secs(1)));
        assert!(h.observe_passive(&seen, &table, t0 + Duration::from_secs(3)));
        assert_eq!(weights(&h.effective(&table)), [(12, 0), (13, 1)]);
        let mut entry = ServiceEntry::from_spec(&h.effective(&table).services[0]);
        h.annotate(&mut entry, &table, t0);
        let p = entry.dests[0].passive.as_ref().unwrap();
        assert!(p.suspect && p.quiesced && p.times_suspected == 1 && p.stuck_syn_recv == 1);
        assert!(h.observe_passive(&seen, &table, t0 + Duration::from_secs(9)));
        assert_eq!(weights(&h.effective(&table)), [(12, 1), (13, 1)]);
    }
}
