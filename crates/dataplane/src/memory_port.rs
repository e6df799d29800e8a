//! Ports in memory: the worker's frame I/O without a kernel, for unit tests and benchmarks.
//!
//! It follows the AF_XDP port step by step, with queues standing in for the rings: a frame
//! pushed in takes a free chunk of the same [`Umem`] the AF_XDP port uses (as the kernel takes
//! one from the fill ring), a poll receives batches, runs the same [`Umem::process_batch`] and
//! [`process_received`](crate::packet_io) code, and puts frames on bounded transmit queues;
//! reading a transmitted frame out completes it and frees its chunk (as a completion would).
//! Nothing allocates per frame except [`MemoryPorts::pop_tx`], a convenience for tests;
//! benchmarks use [`MemoryPorts::drain_tx`].

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::packet_io::{
    BATCH_SIZE, FrameAccount, PacketIo, PollSummary, PortStats, ProcessFn, TxList, process_received,
};
use crate::umem::{Desc, Umem, UmemConfig};

/// Default size of each port's transmit queue, like an AF_XDP TX ring.
pub const DEFAULT_TX_RING: usize = 2048;

struct MemoryPort {
    rx: VecDeque<Desc>,
    tx: VecDeque<Desc>,
    stats: PortStats,
}

/// A worker's ports held in memory. See the module documentation.
pub struct MemoryPorts {
    umem: Umem,
    ports: Vec<MemoryPort>,
    tx_ring: usize,
    tx_lists: Vec<TxList>,
}

impl std::fmt::Debug for MemoryPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPorts")
            .field("ports", &self.ports.len())
            .field("umem", &self.umem)
            .finish_non_exhaustive()
    }
}

impl MemoryPorts {
    /// `port_count` ports over one frame memory of shape `config`, with transmit queues of
    /// [`DEFAULT_TX_RING`] frames.
    pub fn new(port_count: usize, config: UmemConfig) -> io::Result<Self> {
        Self::with_tx_ring(port_count, config, DEFAULT_TX_RING)
    }

    /// Like [`MemoryPorts::new`] with transmit queues of `tx_ring` frames (a full queue drops
    /// and counts, as a full TX ring does).
    pub fn with_tx_ring(port_count: usize, config: UmemConfig, tx_ring: usize) -> io::Result<Self> {
        if port_count == 0 || port_count > usize::from(u8::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "1 to 255 ports",
            ));
        }
        let frames = config.frame_count as usize;
        let ports = (0..port_count)
            .map(|_| MemoryPort {
                rx: VecDeque::with_capacity(frames),
                tx: VecDeque::with_capacity(frames.min(tx_ring)),
                stats: PortStats::default(),
            })
            .collect();
        Ok(MemoryPorts {
            umem: Umem::new(config)?,
            ports,
            tx_ring,
            tx_lists: vec![TxList::new(); port_count],
        })
    }

    /// Queues `frame` for reception on `port`. False when no chunk is free, the frame does not
    /// fit in one, or the port does not exist.
    pub fn push_rx(&mut self, port: usize, frame: &[u8]) -> bool {
        let Some(rx) = self.ports.get_mut(port).map(|p| &mut p.rx) else {
            return false;
        };
        match self.umem.fill_from(frame) {
            Some(desc) => {
                rx.push_back(desc);
                true
            }
            None => false,
        }
    }

    /// Takes the oldest frame transmitted on `port`, freeing its chunk.
    pub fn pop_tx(&mut self, port: usize) -> Option<Vec<u8>> {
        let desc = self.ports.get_mut(port)?.tx.pop_front()?;
        let bytes = self.umem.tx_bytes(desc).to_vec();
        self.umem.complete(desc.addr);
        Some(bytes)
    }

    /// Hands every frame transmitted on `port` to `each`, oldest first, and frees them.
    /// Returns how many there were.
    pub fn drain_tx(&mut self, port: usize, mut each: impl FnMut(&[u8])) -> usize {
        let Some(p) = self.ports.get_mut(port) else {
            return 0;
        };
        let mut n = 0;
        while let Some(desc) = p.tx.pop_front() {
            each(self.umem.tx_bytes(desc));
            self.umem.complete(desc.addr);
            n += 1;
        }
        n
    }

    /// Frames waiting to be received on `port`.
    pub fn rx_pending(&self, port: usize) -> usize {
        self.ports.get(port).map_or(0, |p| p.rx.len())
    }

    /// Frames transmitted on `port` and not read out yet.
    pub fn tx_pending(&self, port: usize) -> usize {
        self.ports.get(port).map_or(0, |p| p.tx.len())
    }

    /// Chunks free for new frames.
    pub fn free_frames(&self) -> usize {
        self.umem.free_count()
    }
}

impl PacketIo for MemoryPorts {
    fn port_count(&self) -> usize {
        self.ports.len()
    }

    fn poll(&mut self, budget: usize, process: &mut ProcessFn<'_>) -> io::Result<PollSummary> {
        let mut summary = PollSummary::default();
        for ingress in 0..self.ports.len() {
            let mut left = budget;
            while left > 0 {
                let mut descs = [Desc::default(); BATCH_SIZE];
                let mut n = 0;
                let want = left.min(BATCH_SIZE);
                while n < want {
                    let Some(desc) = self.ports[ingress].rx.pop_front() else {
                        break;
                    };
                    if self.umem.receive(desc) {
                        descs[n] = desc;
                        n += 1;
                    } else {
                        self.ports[ingress].stats.invalid_descs += 1;
                    }
                }
                if n == 0 {
                    break;
                }
                left -= n;
                process_received(
                    &mut self.umem,
                    &mut descs[..n],
                    ingress,
                    &mut self.ports[ingress].stats,
                    &mut self.tx_lists,
                    process,
                );
                summary.received += n;
                summary.transmitted += self.transmit_lists();
            }
        }
        Ok(summary)
    }

    fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }

    fn stats(&self, port: usize) -> PortStats {
        self.ports
            .get(port)
            .map_or_else(PortStats::default, |p| p.stats)
    }

    /// The receive and transmit queues stand in for the kernel's rings.
    fn frames(&self) -> FrameAccount {
        FrameAccount {
            total: self.umem.config().frame_count,
            free: self.umem.free_count() as u32,
            kernel: self
                .ports
                .iter()
                .map(|p| p.rx.len() + p.tx.len())
                .sum::<usize>() as u32,
            in_flight: self.umem.in_batch_count(),
        }
    }
}

impl MemoryPorts {
    /// Moves the sorted frames onto the transmit queues, dropping what does not fit.
    fn transmit_lists(&mut self) -> usize {
        let mut sent = 0;
        for (list, port) in self.tx_lists.iter_mut().zip(self.ports.iter_mut()) {
            for desc in list.drain(..) {
                if port.tx.len() < self.tx_ring && self.umem.queue_for_tx(desc.addr) {
                    port.tx.push_back(desc);
                    port.stats.tx_packets += 1;
                    port.stats.tx_bytes += u64::from(desc.len);
                    sent += 1;
                } else {
                    port.stats.tx_ring_full += 1;
                    self.umem.release(desc.addr);
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet_io::Verdict;

    fn config(frames: u32) -> UmemConfig {
        UmemConfig {
            frame_count: frames,
            ..UmemConfig::default()
        }
    }

    /// Swaps the Ethernet addresses, as a reflector would.
    fn swap_macs(frame: &mut xvs_forwarders::Frame<'_>) {
        let data = frame.data_mut();
        for i in 0..6 {
            data.swap(i, i + 6);
        }
    }

    #[test]
    fn frames_go_through_process_to_the_port_their_verdict_names() {
        let mut ports = MemoryPorts::new(2, config(16)).unwrap();
        let frame: Vec<u8> = (0..64).collect();
        assert!(ports.push_rx(0, &frame));
        assert!(ports.push_rx(0, &frame));
        assert!(ports.push_rx(1, &frame));
        let mut seen = Vec::new();
        let summary = ports
            .poll(64, &mut |ingress, frames, verdicts| {
                seen.push((ingress, frames.len()));
                for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                    swap_macs(frame);
                    *verdict = Verdict::Transmit { port: 1 - ingress };
                }
                verdicts[0] = if ingress == 0 {
                    Verdict::Drop
                } else {
                    verdicts[0]
                };
            })
            .unwrap();
        assert_eq!(seen, vec![(0, 2), (1, 1)]);
        assert_eq!(
            summary,
            PollSummary {
                received: 3,
                transmitted: 2
            }
        );
        let out = ports.pop_tx(1).unwrap();
        assert_eq!(&out[..6], &frame[6..12]);
        assert_eq!(&out[6..12], &frame[..6]);
        assert_eq!(&out[12..], &frame[12..]);
        assert_eq!(ports.pop_tx(0).unwrap().len(), 64);
        assert_eq!(ports.pop_tx(0), None);
        assert_eq!(ports.free_frames(), 16, "every chunk came back");
        assert_eq!(ports.stats(0).dropped, 1);
        assert_eq!(ports.stats(0).rx_packets, 2);
        assert_eq!(ports.stats(1).tx_packets, 1);
    }

    #[test]
    fn budget_and_batch_size_bound_each_call() {
        let mut ports = MemoryPorts::new(1, config(256)).unwrap();
        for _ in 0..200 {
            assert!(ports.push_rx(0, &[0; 60]));
        }
        let mut batches = Vec::new();
        let summary = ports
            .poll(150, &mut |_, frames, _| batches.push(frames.len()))
            .unwrap();
        assert_eq!(batches, vec![64, 64, 22]);
        assert_eq!(summary.received, 150);
        assert_eq!(ports.rx_pending(0), 50);
    }

    /// An Ethernet + IPv4 + UDP frame (UDP checksum 0: none), built by hand.
    fn udp_frame(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_frame_grown_into_its_headroom_is_sent_from_its_new_start() {
        use xvs_forwarders::{Egress, Transmit, parse, tun};
        let mut ports = MemoryPorts::new(1, config(4)).unwrap();
        let inner = udp_frame([192, 0, 2, 1], [198, 51, 100, 1], b"payload");
        assert!(ports.push_rx(0, &inner));
        ports
            .poll(64, &mut |_, frames, verdicts| {
                let view = parse(&frames[0]).unwrap();
                let tunnel = tun::Tunnel {
                    source: [10, 9, 0, 1].into(),
                    real_server: [10, 9, 0, 2].into(),
                    ident: 1,
                };
                let egress = Egress {
                    src_mac: [2; 6],
                    dst_mac: [4; 6],
                    mtu: 1500,
                };
                let sent = tun::encapsulate(&mut frames[0], &view, &tunnel, &egress);
                assert_eq!(sent, Ok(Transmit::Forward));
                verdicts[0] = Verdict::Transmit { port: 0 };
            })
            .unwrap();
        let out = ports.pop_tx(0).unwrap();
        assert_eq!(out.len(), inner.len() + 20);
        assert_eq!(out[14], 0x45, "outer IPv4 header");
        assert_eq!(out[23], 4, "IPIP");
        // The inner datagram follows, its TTL decremented (and checksum updated) as IPVS does.
        assert_eq!(out[34 + 8], inner[14 + 8] - 1);
        assert_eq!(&out[34..34 + 8], &inner[14..14 + 8]);
        assert_eq!(&out[34 + 12..], &inner[14 + 12..]);
    }

    #[test]
    fn full_transmit_queues_and_unknown_ports_drop_and_count() {
        let mut ports = MemoryPorts::with_tx_ring(1, config(8), 2).unwrap();
        for _ in 0..4 {
            assert!(ports.push_rx(0, &[1; 60]));
        }
        ports
            .poll(64, &mut |_, _, verdicts| {
                verdicts.fill(Verdict::Transmit { port: 0 });
                verdicts[3] = Verdict::Transmit { port: 7 };
            })
            .unwrap();
        let stats = ports.stats(0);
        assert_eq!(
            (stats.tx_packets, stats.tx_ring_full, stats.bad_verdict),
            (2, 1, 1)
        );
        assert_eq!(ports.drain_tx(0, |bytes| assert_eq!(bytes, &[1; 60])), 2);
        assert_eq!(ports.free_frames(), 8);
    }

    #[test]
    fn every_frame_is_accounted_for_after_traffic() {
        let mut ports = MemoryPorts::with_tx_ring(2, config(32), 4).unwrap();
        let account = |ports: &MemoryPorts| {
            let a = ports.frames();
            assert!(a.balanced(), "{a:?}");
            (a.free, a.kernel, a.in_flight)
        };
        assert_eq!(account(&ports), (32, 0, 0));
        let mut turn = 0u32;
        for round in 0..50 {
            for i in 0..(round % 7 + 3) {
                assert!(ports.push_rx(i % 2, &[round as u8; 60]));
            }
            // Queued and not yet received: the "kernel" holds them.
            let (_, kernel, _) = account(&ports);
            assert_eq!(
                kernel as usize,
                ports.rx_pending(0)
                    + ports.rx_pending(1)
                    + ports.tx_pending(0)
                    + ports.tx_pending(1)
            );
            // Every third frame dropped, every fifth sent to a port that does not exist,
            // the rest forwarded to the other port (whose queue of 4 overflows at times).
            ports
                .poll(64, &mut |ingress, _, verdicts| {
                    for v in verdicts.iter_mut() {
                        turn += 1;
                        *v = match turn {
                            t if t % 3 == 0 => Verdict::Drop,
                            t if t % 5 == 0 => Verdict::Transmit { port: 9 },
                            _ => Verdict::Transmit { port: 1 - ingress },
                        };
                    }
                })
                .unwrap();
            let (free, kernel, in_flight) = account(&ports);
            assert_eq!(in_flight, 0, "nothing held between turns");
            assert_eq!(kernel as usize, ports.tx_pending(0) + ports.tx_pending(1));
            assert_eq!(free + kernel, 32);
            if round % 4 == 0 {
                ports.drain_tx(0, |_| {});
                ports.drain_tx(1, |_| {});
                assert_eq!(account(&ports), (32, 0, 0));
            }
        }
        let stats = [ports.stats(0), ports.stats(1)];
        let lost: u64 = stats.iter().map(|s| s.tx_ring_full + s.bad_verdict).sum();
        assert!(
            lost > 0,
            "the test overflowed a queue and named a missing port"
        );
    }

    #[test]
    fn push_refuses_what_cannot_be_received() {
        let mut ports = MemoryPorts::new(1, config(1)).unwrap();
        assert!(!ports.push_rx(1, &[0; 60]), "no such port");
        assert!(!ports.push_rx(0, &[0; 2048]), "larger than a chunk's room");
        assert!(ports.push_rx(0, &[0; 60]));
        assert!(!ports.push_rx(0, &[0; 60]), "no free chunk");
    }
}
