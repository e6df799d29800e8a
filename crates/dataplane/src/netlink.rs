//! Just enough rtnetlink to ask the kernel about links, addresses and neighbours.
//!
//! Raw `NETLINK_ROUTE` sockets through libc rather than a netlink crate: xvs needs four message
//! types, and the encoding is a few dozen lines that are tested here against literal bytes.
//! Netlink sockets belong to the network namespace of the thread that opens them, so the same
//! code works for a director inside a namespace (sysfs would show the mounting namespace).
//!
//! A message is a 16-byte header (`nlmsghdr`), a fixed family header (`ifinfomsg`, `ifaddrmsg`,
//! `ndmsg`) and attributes (`rtattr`: length, type, value, padded to 4 bytes).

use std::io;

/// `nlmsghdr` size.
pub const HEADER_LEN: usize = 16;

/// Message types used by xvs.
pub mod kind {
    /// Error or acknowledgement.
    pub const ERROR: u16 = 2;
    /// End of a dump.
    pub const DONE: u16 = 3;
    /// A link (reply to `GET_LINK`).
    pub const NEW_LINK: u16 = 16;
    /// Ask for links.
    pub const GET_LINK: u16 = 18;
    /// An address (reply to `GET_ADDR`).
    pub const NEW_ADDR: u16 = 20;
    /// Remove an address.
    pub const DEL_ADDR: u16 = 21;
    /// Ask for addresses.
    pub const GET_ADDR: u16 = 22;
    /// A neighbour (reply to `GET_NEIGH`), or a request to add/use one.
    pub const NEW_NEIGH: u16 = 28;
    /// Ask for neighbours.
    pub const GET_NEIGH: u16 = 30;
}

/// `nlmsg_flags` bits.
pub mod flags {
    /// A request.
    pub const REQUEST: u16 = 0x01;
    /// Acknowledge with an error message (0 = success).
    pub const ACK: u16 = 0x04;
    /// Replace an existing object.
    pub const REPLACE: u16 = 0x100;
    /// Create the object if missing.
    pub const CREATE: u16 = 0x400;
    /// Dump every object (root | match).
    pub const DUMP: u16 = 0x300;
}

/// Builds one request: header, family header, attributes. Lengths are filled in by `finish`.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A request of type `kind` with `flags` and sequence number `seq`, followed by the family
    /// header `family_header`.
    pub fn new(kind: u16, flags: u16, seq: u32, family_header: &[u8]) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(family_header);
        pad4(&mut buf);
        Request { buf }
    }

    /// Appends attribute `kind` with value `value`.
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Request {
        let len = (4 + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        pad4(&mut self.buf);
        self
    }

    /// The encoded message.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// One received message: its type and the bytes after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Family header and attributes.
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; stops at the first malformed one.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let header = rest.get(..HEADER_LEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < HEADER_LEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            seq: u32::from_ne_bytes(header[8..12].try_into().ok()?),
            payload: &rest[HEADER_LEN..len],
        };
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(message)
    })
}

/// Iterates the attributes that follow a family header of `header_len` bytes in `payload`;
/// stops at the first malformed one.
pub fn attributes(payload: &[u8], header_len: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload.get(align4(header_len)..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let header = rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff; // drop NESTED/BYTEORDER
        if len < 4 || len > rest.len() {
            rest = &[];
            return None;
        }
        let value = &rest[4..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The errno of an `ERROR` message's payload (0 for an acknowledgement).
pub fn error_code(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct RouteSocket {
    fd: std::os::fd::OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    /// Opens and binds a socket.
    pub fn open() -> io::Result<RouteSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the result is checked before being wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_nl (pid 0: the kernel picks one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // A kernel that never answers must not hang the side thread: give up after 2 s.
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RouteSocket {
            fd,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A fresh sequence number for the next request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` (built with sequence `seq`) and hands every reply message of that
    /// sequence to `each` until the dump ends, the acknowledgement arrives, or (for a plain
    /// `GET` answered by one message) the reply came. A negative error message becomes `Err`.
    pub fn transact(
        &mut self,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(Message<'_>),
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: `request` is a readable buffer of the length passed.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = request
            .get(6..8)
            .map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
        let multipart = flags & flags::DUMP == flags::DUMP;
        let wants_ack = flags & flags::ACK != 0;
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut finished = false;
            for message in messages(&self.buf[..n as usize]) {
                if message.seq != seq {
                    continue;
                }
                match message.kind {
                    kind::DONE => finished = true,
                    kind::ERROR => {
                        let code = error_code(message.payload).unwrap_or(-libc::EPROTO);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        finished = true;
                    }
                    _ => {
                        each(message);
                        if !multipart && !wants_ack {
                            finished = true;
                        }
                    }
                }
            }
            if finished {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_header_family_header_and_padded_attributes() {
        let bytes = Request::new(kind::GET_LINK, flags::REQUEST, 7, &[0; 16])
            .attr(3, b"eth0\0")
            .finish();
        let mut expected = Vec::new();
        expected.extend_from_slice(&44u32.to_ne_bytes());
        expected.extend_from_slice(&18u16.to_ne_bytes());
        expected.extend_from_slice(&1u16.to_ne_bytes());
        expected.extend_from_slice(&7u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&9u16.to_ne_bytes());
        expected.extend_from_slice(&3u16.to_ne_bytes());
        expected.extend_from_slice(b"eth0\0\0\0\0");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn datagrams_split_into_messages_and_attributes() {
        let one = Request::new(kind::NEW_NEIGH, 2, 5, &[2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 1])
            .attr(1, &[10, 0, 0, 2])
            .attr(2, &[2, 0, 0, 0, 0, 9])
            .finish();
        let done = Request::new(kind::DONE, 2, 5, &0i32.to_ne_bytes()).finish();
        let datagram = [one.clone(), done].concat();
        let all: Vec<Message<'_>> = messages(&datagram).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].kind, all[0].seq), (kind::NEW_NEIGH, 5));
        assert_eq!(all[1].kind, kind::DONE);
        let attrs: Vec<(u16, &[u8])> = attributes(all[0].payload, 12).collect();
        assert_eq!(
            attrs,
            vec![(1, &[10, 0, 0, 2][..]), (2, &[2, 0, 0, 0, 0, 9][..])]
        );
    }

    #[test]
    fn malformed_input_ends_iteration_without_panicking() {
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        let mut short = Request::new(kind::NEW_LINK, 0, 1, &[0; 16]).finish();
        short[0] = 200; // claims more bytes than there are
        assert_eq!(messages(&short).count(), 0);
        let bad_attr = [0u8, 0, 0, 0, 0xff, 0xff, 1, 0];
        assert_eq!(attributes(&bad_attr, 4).count(), 0);
        assert_eq!(attributes(&[], 16).count(), 0);
        assert_eq!(error_code(&[1]), None);
        assert_eq!(error_code(&(-19i32).to_ne_bytes()), Some(-19));
    }
}
