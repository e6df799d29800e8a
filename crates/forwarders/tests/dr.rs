//! Direct routing: MACs rewritten, IP datagram untouched; MTU rule with "fragmentation needed".

mod common;

use common::*;
use xvs_forwarders::{Frame, Reason, Transmit, dr, parse};

fn client_syn(ip: &Ip, payload: &[u8]) -> Vec<u8> {
    tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        ip,
        (40000, 80),
        0x02,
        payload,
    )
}

#[test]
fn golden_tcp_only_macs_change() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, b"hello");
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let sent = dr::forward(&mut frame, &view, &to_real_server(1500)).unwrap();
    assert_eq!(sent, Transmit::Forward);
    let expected = tcp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &ip,
        (40000, 80),
        0x02,
        b"hello",
    );
    assert_same_frame(frame.data(), &expected);
    assert_eq!(
        datagram(frame.data()),
        datagram(&input),
        "datagram untouched"
    );
    verify_checksums(frame.data());
}

#[test]
fn golden_udp_with_ip_options_and_dscp() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.options = &[0x01, 0x01, 0x01, 0x00]; // NOP NOP NOP EOL
    ip.dscp = 46;
    ip.ecn = 1;
    ip.dont_fragment = false;
    let input = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), b"query");
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    assert_eq!(view.l4_offset, 14 + 24);
    assert_eq!(view.tos, (46 << 2) | 1);
    dr::forward(&mut frame, &view, &to_real_server(1500)).unwrap();
    let expected = udp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &ip,
        (5000, 53),
        b"query",
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn exactly_mtu_sized_datagram_passes() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, &[7; 1460]);
    assert_eq!(input.len(), 14 + 1500);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
}

/// Checks an ICMP "fragmentation needed" built by the director in answer to `original`.
pub fn assert_frag_needed_reply(reply: &[u8], original: &[u8], from: [u8; 4], mtu: u16) {
    let quote_len = (original.len() - 14).min(548);
    let quoted = &original[14..14 + quote_len];
    let mut ip = Ip::new(from, CLIENT);
    ip.ident = 0;
    ip.dscp = 0x30; // precedence "internetwork control" (0xc0 >> 2)
    let mtu = mtu.to_be_bytes();
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, CLIENT_MAC),
        &ip,
        3,
        4,
        [0, 0, mtu[0], mtu[1]],
        quoted,
    );
    assert_same_frame(reply, &expected);
    verify_checksums(reply);
}

#[test]
fn too_big_with_df_answers_fragmentation_needed_from_headroom() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, &[9; 1000]);
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let sent = dr::forward(&mut frame, &view, &to_real_server(576)).unwrap();
    assert_eq!(sent, Transmit::FragmentationNeededToSender);
    // The quoted bytes did not move: the reply starts 28 bytes earlier.
    assert_eq!(frame.start(), 64 - 28);
    assert_frag_needed_reply(frame.data(), &input, VIP, 576);
}

#[test]
fn too_big_without_headroom_shifts_the_quote_within_the_buffer() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, &[9; 100]);
    let mut buf = buffer(&input, 0, 28);
    let mut frame = Frame::new(&mut buf, 0, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let sent = dr::forward(&mut frame, &view, &to_real_server(100)).unwrap();
    assert_eq!(sent, Transmit::FragmentationNeededToSender);
    assert_eq!(frame.start(), 0);
    assert_frag_needed_reply(frame.data(), &input, VIP, 100);
}

#[test]
fn too_big_without_any_room_refuses_and_leaves_the_frame() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, &[9; 100]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(100)),
        Err(Reason::NoHeadroom)
    );
    assert_eq!(frame.data(), &input[..]);
}

#[test]
fn too_big_without_df_is_dropped() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.dont_fragment = false;
    let input = client_syn(&ip, &[9; 100]);
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(100)),
        Err(Reason::TooBig)
    );
    assert_eq!(frame.data(), &input[..]);
}

#[test]
fn no_icmp_error_to_a_broadcast_source() {
    let ip = Ip::new([255, 255, 255, 255], VIP);
    let input = client_syn(&ip, &[9; 100]);
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(100)),
        Err(Reason::TooBig)
    );
}

#[test]
fn large_datagram_quote_is_capped_at_576_bytes() {
    let ip = Ip::new(CLIENT, VIP);
    let input = client_syn(&ip, &[3; 1400]);
    let mut buf = buffer(&input, 32, 0);
    let mut frame = Frame::new(&mut buf, 32, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    dr::forward(&mut frame, &view, &to_real_server(1280)).unwrap();
    assert_eq!(frame.len(), 14 + 576);
    assert_frag_needed_reply(frame.data(), &input, VIP, 1280);
}

#[test]
fn a_view_from_a_larger_frame_is_refused() {
    let ip = Ip::new(CLIENT, VIP);
    let long = client_syn(&ip, &[1; 200]);
    let view = parse(&Frame::whole(&mut long.clone())).unwrap();
    let mut short = client_syn(&ip, b"x");
    let mut frame = Frame::whole(&mut short);
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(1500)),
        Err(Reason::ViewMismatch)
    );
}

/// Found by fuzzing (fuzz/, target `pipeline`): bytes after the datagram beyond Ethernet's
/// 60-byte minimum went out with the frame (past the MTU the datagram was checked against).
#[test]
fn bytes_after_the_datagram_are_cut_but_minimum_frame_padding_stays() {
    let ip = Ip::new(CLIENT, VIP);
    let mut input = client_syn(&ip, b"");
    input.extend_from_slice(&[0xee; 100]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    assert_eq!(
        frame.len(),
        60,
        "54-byte SYN, padded to the Ethernet minimum"
    );
    let mut input = client_syn(&ip, &[7; 100]);
    let datagram_end = input.len();
    input.extend_from_slice(&[0xee; 1000]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    dr::forward(&mut frame, &view, &to_real_server(1500)).unwrap();
    assert_eq!(frame.len(), datagram_end);
    assert_eq!(datagram(frame.data()), datagram(&input[..datagram_end]));
}
