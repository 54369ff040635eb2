//! A minimal HTTP/1.1 server: one thread per connection, one request per
//! connection (`Connection: close`), bounded header and body sizes, read
//! timeouts. The tool serves one reviewer on loopback, so this is all it
//! needs. (tiny_http was tried first: its keep-alive connections each hold a
//! pool thread, and a race in its pool left new connections queued behind
//! them until the browser closed one, so tiles stalled for seconds.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head (request line + headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 64;
/// Longest wait for any one read of a request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole request may take to arrive: a client trickling a byte
/// every few seconds would otherwise hold its connection (of
/// [`MAX_CONNECTIONS`]) for ever.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent (never decoded).
    pub url: String,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers besides Content-Length and Connection.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A stream whose reads give up at a deadline for the whole request.
struct DeadlineReader {
    stream: TcpStream,
    until: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request deadline passed"));
        }
        self.stream.set_read_timeout(Some(left.min(READ_TIMEOUT)))?;
        self.stream.read(buf)
    }
}

/// Reads one request; `Err(status)` for a malformed, oversized or too slow one.
fn read_request(stream: &TcpStream) -> Result<Request, u16> {
    read_request_within(stream, REQUEST_DEADLINE)
}

/// [`read_request`], the whole request due within `deadline`.
fn read_request_within(stream: &TcpStream, deadline: Duration) -> Result<Request, u16> {
    let stream = stream.try_clone().map_err(|_| 500u16)?;
    let mut reader = BufReader::new(DeadlineReader { stream, until: Instant::now() + deadline });
    let mut head = 0usize;
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> Result<(), u16> {
        line.clear();
        let n = (&mut reader).take((MAX_HEAD - head + 1) as u64).read_line(line).map_err(|_| 400u16)?;
        head += n;
        if head > MAX_HEAD {
            return Err(431);
        }
        if n == 0 {
            return Err(400);
        }
        Ok(())
    };
    read_line(&mut line)?;
    let mut parts = line.trim_end().split(' ');
    let (method, url, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method.is_empty() || url.is_empty() || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err(400);
    }
    let mut req = Request { method: method.to_owned(), url: url.to_owned(), ..Request::default() };
    loop {
        read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or(400u16)?;
        req.headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    if req.header("transfer-encoding").is_some() {
        return Err(411);
    }
    // Two lengths that disagree: which body is meant cannot be told.
    let mut lengths = req.headers.iter().filter(|(k, _)| k == "content-length").map(|(_, v)| v.as_str());
    let first = lengths.next();
    if lengths.any(|v| Some(v) != first) {
        return Err(400);
    }
    let len: usize = match first {
        Some(v) => v.parse().map_err(|_| 400u16)?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(413);
    }
    req.body = vec![0; len];
    reader.read_exact(&mut req.body).map_err(|_| 400u16)?;
    Ok(req)
}

fn write_response(mut stream: &TcpStream, resp: &Response, head_only: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        // A line break in a value would start a header of its own.
        let v: String = v.chars().filter(|c| !c.is_control()).collect();
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", resp.body.len()));
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&resp.body)?;
    }
    stream.flush()
}

/// A plain-text error response.
pub fn plain(status: u16, text: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: text.as_bytes().to_vec(),
    }
}

/// A listening server.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves each request on `listener` with `handler`, on its own thread.
    pub fn start<H>(listener: TcpListener, handler: H) -> std::io::Result<Self>
    where
        H: Fn(Request) -> Response + Send + Sync + 'static,
    {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let live = Arc::new(AtomicUsize::new(0));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    live.fetch_sub(1, Ordering::SeqCst);
                    let _ = write_response(&stream, &plain(503, "busy"), false);
                    continue;
                }
                let (handler, live) = (handler.clone(), live.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
                    let resp = match read_request(&stream) {
                        Ok(req) => {
                            let head = req.method == "HEAD";
                            let resp = handler(req);
                            (resp, head)
                        }
                        Err(status) => (plain(status, reason(status)), false),
                    };
                    if let Err(e) = write_response(&stream, &resp.0, resp.1) {
                        tracing::debug!("responding: {e}");
                    }
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Self { addr, stop, accept: Some(accept) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the server stops.
    pub fn wait(mut self) {
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }

    /// Stops accepting (in-flight requests finish on their own threads).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with one last connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (client, server side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn a_trickling_client_is_cut_off_at_the_deadline() {
        let (mut client, server) = pair();
        let writer = std::thread::spawn(move || {
            // One byte every 100 ms: each read succeeds, the request never ends.
            for b in b"GET / HTTP/1.1\r\nHost: x\r\n".iter().cycle().take(40) {
                if client.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        assert_eq!(read_request_within(&server, Duration::from_millis(500)).unwrap_err(), 400);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        drop(server);
        writer.join().unwrap();
    }

    #[test]
    fn lengths_that_disagree_and_line_breaks_in_headers_are_refused() {
        let (mut client, server) = pair();
        client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nab").unwrap();
        assert_eq!(read_request(&server).unwrap_err(), 400);
        let (mut client, server) = pair();
        client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab").unwrap();
        assert_eq!(read_request(&server).unwrap().body, b"ab", "the same length twice is one length");

        let (mut client, server) = pair();
        let resp = Response {
            status: 200,
            headers: vec![("Content-Disposition".into(), "attachment; x\r\nSet-Cookie: pwn=1".into())],
            body: Vec::new(),
        };
        write_response(&server, &resp, false).unwrap();
        drop(server);
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert!(!out.lines().any(|l| l.starts_with("Set-Cookie")), "{out}");
    }
}
