//! The HTTP endpoint: `GET /metrics` on its own thread, `xvs-metrics`.
//!
//! tiny_http (a small blocking HTTP/1.1 server: keep-alive, `HEAD`, pipelining) reads the
//! requests on its own connection threads and hands them, whole, to this one thread, which
//! takes a [`Scrape`] from its source, renders it and answers, one request at a time. No
//! worker thread is ever involved. Binding comes first ([`MetricsServer::bind`]), so a
//! listen address that is taken stops the daemon before it changes anything; serving
//! comes once the director exists ([`MetricsServer::serve`]).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response};

use super::Scrape;
use super::exposition::{CONTENT_TYPE, render};

/// The page at `/`, as node_exporter has one: a pointer to `/metrics`.
const LANDING_PAGE: &str = "<html><head><title>xvs</title></head><body><h1>xvs</h1>\
<p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// The metrics endpoint; stopped when dropped.
pub struct MetricsServer {
    /// `None` once stopped (dropping the last handle closes the socket).
    http: Option<Arc<tiny_http::Server>>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (requests wait until [`MetricsServer::serve`]).
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(MetricsServer {
            http: Some(Arc::new(http)),
            addr,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests on the `xvs-metrics` thread, each scrape read from `source`.
    pub fn serve(&mut self, source: impl Fn() -> Scrape + Send + 'static) -> io::Result<()> {
        let Some(http) = self.http.clone() else {
            return Err(io::Error::other("the metrics endpoint was stopped"));
        };
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("xvs-metrics".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // An error is the unblock of `stop` or a failed accept; both loop back.
                    if let Ok(request) = http.recv() {
                        answer(request, &source);
                    }
                }
            })?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Stops serving and closes the socket.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(http) = self.http.take() else {
            return;
        };
        http.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the metrics thread panicked");
        }
        // The last handle: tiny_http wakes its accept thread, which closes the socket.
        drop(http);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request: `/metrics` the scrape, `/` the landing page, anything else 404; only GET
/// and HEAD.
fn answer(request: Request, source: &impl Fn() -> Scrape) {
    let path = request.url().split('?').next().unwrap_or_default();
    let response = match (request.method(), path) {
        (Method::Get | Method::Head, "/metrics") => text(render(source()), CONTENT_TYPE, 200),
        (Method::Get | Method::Head, "/") => text(LANDING_PAGE.into(), "text/html", 200),
        (Method::Get | Method::Head, _) => text("Not Found\n".into(), "text/plain", 404),
        _ => text("Method Not Allowed\n".into(), "text/plain", 405),
    };
    // A client that went away is no concern of the director's.
    let _ = request.respond(response);
}

fn text(body: String, content_type: &str, status: u16) -> Response<io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The status code of an HTTP answer.
    fn status(answer: &str) -> &str {
        answer.split_whitespace().nth(1).unwrap_or_default()
    }

    /// One HTTP/1.0 request over loopback; the whole answer.
    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_the_scrape_on_its_own_thread_and_stops() {
        let mut server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let scrapes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = scrapes.clone();
        server
            .serve(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                assert_eq!(std::thread::current().name(), Some("xvs-metrics"));
                Scrape::default()
            })
            .unwrap();
        let metrics = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status(&metrics), "200", "{metrics}");
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\r\n\r\n# HELP node_ipvs_connections_total "),
            "{metrics}"
        );
        let head = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(status(&head) == "200" && !head.contains("# HELP"), "{head}");
        assert!(get(addr, "GET / HTTP/1.0\r\n\r\n").contains("href=\"/metrics\""));
        assert_eq!(status(&get(addr, "GET /other HTTP/1.0\r\n\r\n")), "404");
        assert_eq!(status(&get(addr, "POST /metrics HTTP/1.0\r\n\r\n")), "405");
        assert_eq!(scrapes.load(Ordering::Relaxed), 2, "GET and HEAD scraped");
        server.stop();
        // tiny_http's accept thread closes the socket once it wakes.
        let closed = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::net::TcpStream::connect(addr).is_err()
        });
        assert!(closed, "the socket is closed once stopped");
    }

    #[test]
    fn a_taken_address_is_refused() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = MetricsServer::bind(first.local_addr());
        assert_eq!(
            taken.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }
}
