//! The lab's real-server programs, run with the machine's python3 in each real server's
//! namespace: an HTTP server whose page is the server's name, a TCP line server that answers
//! every line with the server's name (for long-lived connections), and a UDP server that
//! answers every datagram with the server's name.

/// `python3 -c TCP_LINES NAME PORT`: answers each line of a connection with `NAME: line`.
pub const TCP_LINES: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64)
def serve(c):
    f = c.makefile("rwb", buffering=0)
    for line in f:
        f.write(name.encode() + b": " + line)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `python3 -c UDP_NAME NAME PORT`: answers each datagram with `NAME`.
pub const UDP_NAME: &str = r#"
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(name.encode(), peer)
"#;

/// `python3 -c UDP_ASK HOST PORT`: sends one datagram from a fresh port, prints the answer
/// (or nothing after 2 s).
pub const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"who", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(2048)[0].decode())
except socket.timeout:
    pass
"#;

/// `python3 -c TCP_SESSION HOST PORT`: keeps one TCP connection open; for every line read
/// from stdin it sends the line and prints the answer, until stdin closes.
pub const TCP_SESSION: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
f = c.makefile("rwb", buffering=0)
for line in sys.stdin:
    f.write(line.encode())
    print(f.readline().decode().strip(), flush=True)
c.close()
"#;

/// The python interpreter: Debian's if present (the one with the system packages), else
/// whatever `python3` the PATH gives.
pub fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}
