//! The lab's real-server programs, run with the machine's python3 in each real server's
//! namespace: an HTTP server whose page is the server's name, a TCP line server that answers
//! every line with the server's name (for long-lived connections), and a UDP server that
//! answers every datagram with the server's name.

/// `python3 -c TCP_LINES NAME PORT [ADDR]`: answers each line of a connection with `NAME:
/// line`; listens on ADDR (default 0.0.0.0; `::` takes both families).
pub const TCP_LINES: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
host = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
if ":" in host:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(64)
def serve(c):
    f = c.makefile("rwb", buffering=0)
    for line in f:
        f.write(name.encode() + b": " + line)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `python3 -c UDP_NAME NAME PORT [ADDR]`: answers each datagram with `NAME`; listens on
/// ADDR (default 0.0.0.0; `::` takes both families).
pub const UDP_NAME: &str = r#"
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
host = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
if ":" in host:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((host, port))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(name.encode(), peer)
"#;

/// `python3 -c UDP_ASK HOST PORT`: sends one datagram from a fresh port, prints the answer
/// (or nothing after 2 s). HOST may be IPv6.
pub const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
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

/// `python3 -c HTTPS PORT DIR CERT KEY`: python's http.server over TLS, serving DIR.
pub const HTTPS: &str = r#"
import functools, http.server, ssl, sys
port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
httpd = http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
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

/// `python3 -c CONVERSATION HOST PORT SECONDS`: one TCP connection to a line server that
/// sends a numbered line every 50 ms for SECONDS and reads every answer. Prints `answer N
/// NAME MS` for each answer as it comes (N the line's number, NAME the server, MS since the
/// start), and at the end one JSON line (see `lab::ConversationReport`). After SECONDS it
/// waits up to 1 s more for answers still due; it stops sending early if the connection is
/// reset or closed.
pub const CONVERSATION: &str = r#"
import errno, json, select, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
INTERVAL, GRACE = 0.05, 1.0
r = {"connected": False, "sent": 0, "answered": 0, "missing": 0, "out_of_order": 0,
     "servers": [], "reset": False, "closed": False, "error": None,
     "longest_gap_ms": 0.0, "silent_at_end_ms": 0.0}
start = time.monotonic()
try:
    c = socket.create_connection((host, port), timeout=3)
except OSError as e:
    r["error"] = "connect: %s" % e
    print(json.dumps(r), flush=True)
    sys.exit(0)
r["connected"] = True
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.setblocking(False)
start = time.monotonic()
end = start + seconds
stopped = None           # when sending stopped early (reset, closed, error)
seq, answered, highest, last, gap = 0, set(), -1, None, 0.0
out, inbuf = b"", b""
def broken(e):
    global stopped
    if e.errno in (errno.ECONNRESET, errno.EPIPE):
        r["reset"] = True
    else:
        r["error"] = str(e)
    stopped = time.monotonic()
while True:
    now = time.monotonic()
    sending = stopped is None and now < end
    if not sending and (stopped is not None or len(answered) == seq or now >= end + GRACE):
        break
    if sending and now >= start + seq * INTERVAL:
        out += b"%d\n" % seq
        seq += 1
    if out and stopped is None:
        try:
            out = out[c.send(out):]
        except BlockingIOError:
            pass
        except OSError as e:
            broken(e)
            continue
    wake = start + seq * INTERVAL if sending else end + GRACE
    readable, _, _ = select.select([c], [], [], max(0.0, wake - time.monotonic()))
    if not readable:
        continue
    try:
        data = c.recv(65536)
    except BlockingIOError:
        continue
    except OSError as e:
        broken(e)
        continue
    if not data:
        r["closed"] = True
        stopped = time.monotonic()
        continue
    inbuf += data
    while b"\n" in inbuf:
        line, inbuf = inbuf.split(b"\n", 1)
        name, _, text = line.decode(errors="replace").partition(": ")
        try:
            n = int(text)
        except ValueError:
            r["error"] = "unexpected answer %r" % line
            continue
        t = time.monotonic()
        if last is not None:
            gap = max(gap, t - last)
        last = t
        if n <= highest:
            r["out_of_order"] += 1
        highest = max(highest, n)
        answered.add(n)
        if name not in r["servers"]:
            r["servers"].append(name)
        print("answer %d %s %.1f" % (n, name, (t - start) * 1000), flush=True)
c.close()
r["sent"], r["answered"] = seq, len(answered)
r["missing"] = seq - len(answered)
r["longest_gap_ms"] = round(gap * 1000, 1)
finish = min(end, stopped or end)
r["silent_at_end_ms"] = round(max(0.0, finish - (last or start)) * 1000, 1)
print(json.dumps(r), flush=True)
"#;

/// `python3 -c CONVERSATIONS HOST PORT SECONDS N SOURCES`: N long-lived TCP conversations to
/// a line server, opened from the comma-separated SOURCES addresses in turn, each sending a
/// numbered line every 100 ms for SECONDS; alongside, a new connection every 100 ms (one
/// line, one answer, closed) from those sources. Prints `progress ANSWERS` lines while it
/// runs and at the end one JSON line (see `lab::scaleout::ConversationsReport`). After
/// SECONDS it waits up to 2 s for answers still due.
pub const CONVERSATIONS: &str = r#"
import errno, json, select, socket, sys, threading, time
host, port, seconds, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sources = sys.argv[5].split(",")
INTERVAL, GRACE = 0.1, 2.0
convs, by_fd = [], {}
for i in range(n):
    c = {"i": i, "source": sources[i % len(sources)], "sent": 0, "answered": set(),
         "servers": [], "reset": False, "closed": False, "error": None, "last": None,
         "gap": 0.0, "out": b"", "in": b"", "done": False}
    try:
        s = socket.socket()
        s.bind((c["source"], 0))
        s.settimeout(3)
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        c["sock"] = s
        c["port"] = s.getsockname()[1]
        by_fd[s.fileno()] = c
    except OSError as e:
        c["error"], c["done"] = "connect: %s" % e, True
    convs.append(c)
probe = {"attempts": 0, "ok": 0, "failed": 0, "slowest_ms": 0.0, "failures": []}
start = time.monotonic()
end = start + seconds
def prober():
    k = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        probe["attempts"] += 1
        try:
            s = socket.socket()
            s.bind((sources[k % len(sources)], 0))
            s.settimeout(3)
            s.connect((host, port))
            s.sendall(b"probe\n")
            answer = s.makefile("rb").readline()
            s.close()
            if not answer.endswith(b": probe\n"):
                raise OSError("answer %r" % answer)
            probe["ok"] += 1
            probe["slowest_ms"] = max(probe["slowest_ms"], (time.monotonic() - t0) * 1000)
        except OSError as e:
            probe["failed"] += 1
            probe["failures"].append("%.1fs: %s" % (t0 - start, e))
        k += 1
        time.sleep(max(0.0, t0 + INTERVAL - time.monotonic()))
probing = threading.Thread(target=prober, daemon=True)
probing.start()
def broken(c, e):
    if e.errno in (errno.ECONNRESET, errno.EPIPE):
        c["reset"] = True
    else:
        c["error"] = str(e)
    c["done"] = True
seq, progress = 0, 0.0
while True:
    now = time.monotonic()
    sending = now < end
    live = [c for c in convs if not c["done"]]
    if not sending and (now >= end + GRACE or all(len(c["answered"]) == c["sent"] for c in live)):
        break
    # Conversation i sends its line k at start + (k + i / n) * INTERVAL: staggered, so
    # some line is always in flight whenever a director dies.
    if sending and now >= start + seq * INTERVAL:
        seq += 1
    for c in live:
        if c["sent"] < seq and now >= start + (c["sent"] + c["i"] / n) * INTERVAL:
            c["out"] += b"%d\n" % c["sent"]
            c["sent"] += 1
    for c in live:
        if c["out"]:
            try:
                c["out"] = c["out"][c["sock"].send(c["out"]):]
            except BlockingIOError:
                pass
            except OSError as e:
                broken(c, e)
    if now - progress >= 0.5:
        progress = now
        print("progress %d" % sum(len(c["answered"]) for c in convs), flush=True)
    wake = start + seq * INTERVAL if sending else end + GRACE
    if sending:
        wake = min(wake, now + INTERVAL / n)
    socks = [c["sock"] for c in convs if not c["done"]]
    if not socks:
        time.sleep(max(0.0, min(wake, end + GRACE) - time.monotonic()))
        continue
    readable, _, _ = select.select(socks, [], [], max(0.0, min(wake - time.monotonic(), 0.1)))
    for s in readable:
        c = by_fd[s.fileno()]
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            broken(c, e)
            continue
        if not data:
            c["closed"], c["done"] = True, True
            continue
        c["in"] += data
        while b"\n" in c["in"]:
            line, c["in"] = c["in"].split(b"\n", 1)
            name, _, text = line.decode(errors="replace").partition(": ")
            try:
                k = int(text)
            except ValueError:
                c["error"] = "unexpected answer %r" % line
                continue
            t = time.monotonic()
            if c["last"] is not None:
                c["gap"] = max(c["gap"], t - c["last"])
            c["last"] = t
            c["answered"].add(k)
            if name not in c["servers"]:
                c["servers"].append(name)
probing.join(5)
report = {"conversations": [], "probe": probe}
for c in convs:
    if "sock" in c:
        c["sock"].close()
    report["conversations"].append({
        "source": c["source"], "port": c.get("port", 0), "sent": c["sent"],
        "answered": len(c["answered"]), "missing": c["sent"] - len(c["answered"]),
        "servers": c["servers"], "reset": c["reset"], "closed": c["closed"],
        "error": c["error"], "longest_gap_ms": round(c["gap"] * 1000, 1)})
print(json.dumps(report), flush=True)
"#;
