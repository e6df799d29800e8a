//! The fuzz input format: `config` bytes, then records `[ctl][len: u16 LE][len bytes]`.
//!
//! The format is simple on purpose: libFuzzer's mutations of a seed keep most records
//! intact, and the seed generator writes it in a few lines. A record cut short by the end
//! of the input takes the bytes that remain.

/// Largest frame a record carries (a UMEM chunk of 2048 bytes minus the least headroom).
pub const MAX_FRAME: usize = 2048;

/// A cursor over the fuzz input; reads past the end give zeros and empty slices.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes, or all that remain.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// The next frame record, `None` at the end of the input.
    pub fn record(&mut self) -> Option<Record<'a>> {
        if self.is_empty() {
            return None;
        }
        let ctl = Ctl(self.byte());
        let len = u16::from_le_bytes([self.byte(), self.byte()]);
        let bytes = self.take(usize::from(len).min(MAX_FRAME));
        Some(Record { ctl, bytes })
    }
}

/// One frame of the input and what to do with it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The control byte.
    pub ctl: Ctl,
    /// The frame as the fuzzer wrote it (before repairs).
    pub bytes: &'a [u8],
}

/// A record's control byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctl(pub u8);

/// What happens before a record's frame in the sequence target (bits 4-5 of [`Ctl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing.
    None,
    /// The clock moves 1 s.
    Tick,
    /// The clock moves 1000 s (past every TCP and UDP timeout but ESTABLISHED's 900 s
    /// default, and past templates) and housekeeping runs.
    Expire,
    /// The service table is rebuilt from the record's first frame byte as a new service
    /// byte (real servers come and go) and swapped in.
    Reload,
}

impl Ctl {
    /// Bit 0: the port the frame arrives on (0 external, 1 internal).
    pub const INGRESS: u8 = 1 << 0;
    /// Bit 1: recompute the IPv4 header checksum (and a quoted header's, for ICMP errors).
    pub const FIX_IP: u8 = 1 << 1;
    /// Bit 2: recompute the TCP, UDP or ICMP checksum.
    pub const FIX_L4: u8 = 1 << 2;
    /// Bit 3: the worker that receives it (sequence target: two workers, one table).
    pub const WORKER: u8 = 1 << 3;
    /// Bit 6: the receive batch ends after this frame.
    pub const END_BATCH: u8 = 1 << 6;
    /// Bit 7: set the IPv4 total length (and UDP length) to the bytes present.
    pub const FIX_LENGTHS: u8 = 1 << 7;
    /// Every repair: what the seed frames use.
    pub const REPAIR: u8 = Self::FIX_IP | Self::FIX_L4 | Self::FIX_LENGTHS;

    /// The ingress port.
    pub fn ingress(self) -> u8 {
        self.0 & Self::INGRESS
    }

    /// Whether `flag` is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    /// The worker index (0 or 1).
    pub fn worker(self) -> usize {
        usize::from(self.has(Self::WORKER))
    }

    /// The event before the frame.
    pub fn event(self) -> Event {
        match (self.0 >> 4) & 3 {
            0 => Event::None,
            1 => Event::Tick,
            2 => Event::Expire,
            _ => Event::Reload,
        }
    }
}

/// Appends a record for `frame` to `out` (the seed generator's writer).
pub fn write_record(out: &mut Vec<u8>, ctl: u8, frame: &[u8]) {
    let len = u16::try_from(frame.len()).expect("a frame fits a record");
    out.push(ctl);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_short_one_takes_what_remains() {
        let mut data = vec![7, 1, 2];
        write_record(&mut data, Ctl::REPAIR | Ctl::INGRESS, &[1, 2, 3]);
        data.extend_from_slice(&[0x40, 10, 0, 9]);
        let mut input = Input::new(&data);
        assert_eq!((input.byte(), input.byte(), input.byte()), (7, 1, 2));
        let r = input.record().unwrap();
        assert_eq!((r.ctl.ingress(), r.bytes), (1, &[1u8, 2, 3][..]));
        let r = input.record().unwrap();
        assert!(r.ctl.has(Ctl::END_BATCH));
        assert_eq!(r.bytes, &[9]);
        assert!(input.record().is_none());
        assert_eq!(input.byte(), 0);
    }
}
