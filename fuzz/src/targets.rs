//! The fuzz targets' bodies (the files in `fuzz_targets/` call these), so the seed corpus
//! can also be replayed by `cargo test` in this crate.

use xvs_forwarders::{Frame, icmp};

use crate::input::{Ctl, Event, Input, MAX_FRAME};
use crate::lab::{Lab, LabConfig};
use crate::oracle::{Counters, Oracle};
use crate::reference;
use crate::repair::repair;

/// `parse`: `[ctl][frame]`. The frame (repaired as `ctl` asks) must parse to exactly what
/// the etherparse reference gives, view or reason, through a slice and through a `Frame`
/// with headroom; the fast path's `parse_common`, where it takes the frame, to the same
/// view; an ICMP error's quote likewise through `icmp::parse_error`.
pub fn parse(data: &[u8]) {
    let mut input = Input::new(data);
    let ctl = Ctl(input.byte());
    let mut bytes = input.take(MAX_FRAME).to_vec();
    repair(&mut bytes, ctl);
    let got = xvs_forwarders::parse_bytes(&bytes);
    assert_eq!(got, reference::parse(&bytes), "parse_bytes vs etherparse");
    if let Some(common) = xvs_forwarders::parse_common(&bytes) {
        assert_eq!(
            Ok(common),
            got,
            "the fast path's parse_common vs parse_bytes"
        );
    }

    let headroom = 28;
    let mut chunk = vec![0u8; headroom + bytes.len() + 16];
    chunk[headroom..headroom + bytes.len()].copy_from_slice(&bytes);
    let frame = Frame::new(&mut chunk, headroom, bytes.len()).expect("fits");
    assert_eq!(xvs_forwarders::parse(&frame), got, "parse on a Frame");
    if let Ok(view) = got {
        let error = icmp::parse_error(&frame, &view);
        if view.is_icmp_error() {
            assert_eq!(error, reference::parse_error(&bytes, &view), "parse_error");
        } else {
            assert!(error.is_err(), "only ICMP errors have a quote");
        }
    }
}

/// `pipeline`: `[config: 3][records]`, one worker. Consecutive frames of one ingress port
/// are one `process_batch` call; every batch goes through the [`Oracle`].
pub fn pipeline(data: &[u8]) {
    let mut input = Input::new(data);
    let mut lab = Lab::new(LabConfig::read(&mut input), 1);
    let oracle = Oracle::new(&lab);
    let mut batch = Vec::new();
    let mut ingress = 0;
    while let Some(record) = input.record() {
        if record.ctl.ingress() != ingress {
            run(&mut lab, &oracle, 0, ingress, &mut batch);
            ingress = record.ctl.ingress();
        }
        let mut frame = record.bytes.to_vec();
        repair(&mut frame, record.ctl);
        batch.push(frame);
    }
    run(&mut lab, &oracle, 0, ingress, &mut batch);
}

/// `pipeline_sequence`: like [`pipeline`] with two workers over one connection table and
/// time: a record's control byte picks the worker, ends the batch, and moves the clock
/// (housekeeping included) or reloads the service table before its frame.
pub fn pipeline_sequence(data: &[u8]) {
    let mut input = Input::new(data);
    let mut lab = Lab::new(LabConfig::read(&mut input), 2);
    let oracle = Oracle::new(&lab);
    let mut batch = Vec::new();
    let (mut worker, mut ingress) = (0, 0);
    while let Some(record) = input.record() {
        let ctl = record.ctl;
        let event = ctl.event();
        if event != Event::None || ctl.worker() != worker || ctl.ingress() != ingress {
            run(&mut lab, &oracle, worker, ingress, &mut batch);
            (worker, ingress) = (ctl.worker(), ctl.ingress());
        }
        match event {
            Event::None => {}
            Event::Tick => lab.advance(1, false),
            Event::Expire => lab.advance(1000, true),
            Event::Reload => lab.reload(record.bytes.first().copied().unwrap_or(0)),
        }
        let mut frame = record.bytes.to_vec();
        repair(&mut frame, ctl);
        batch.push(frame);
        if ctl.has(Ctl::END_BATCH) {
            run(&mut lab, &oracle, worker, ingress, &mut batch);
        }
    }
    run(&mut lab, &oracle, worker, ingress, &mut batch);
}

/// Processes `batch` on `worker` and checks it; empties it.
fn run(lab: &mut Lab, oracle: &Oracle, worker: usize, ingress: u8, batch: &mut Vec<Vec<u8>>) {
    if batch.is_empty() {
        return;
    }
    let before = Counters::of(&lab.workers[worker].counters);
    let outcomes = lab.run_batch(worker, ingress, batch);
    oracle.check_batch(ingress, &outcomes, &before, &lab.workers[worker].counters);
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn the_seeds_pass_their_targets() {
        for (_, seed) in seeds::parse_seeds() {
            parse(&seed);
        }
        for (_, seed) in seeds::pipeline_seeds() {
            pipeline(&seed);
        }
        for (_, seed) in seeds::sequence_seeds() {
            pipeline_sequence(&seed);
        }
    }
}
