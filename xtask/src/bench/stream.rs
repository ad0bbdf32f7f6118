//! A small streaming HTTP/1.1 client on tokio: each task sends streamed requests one after
//! another, on one kept-alive connection or on a new connection each, and times the first and
//! the last event of each answer (NDJSON objects or SSE `data:` lines).
//!
//! `oha` times whole responses only; this client decodes the chunked body as it arrives, so it
//! sees when the first event of a stream reaches the client, and it holds thousands of
//! connections on one thread when asked to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a stream's events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Ollama's NDJSON: one object a line, the last with `"done":true`.
    Ndjson,
    /// OpenAI's server-sent events: `data: {…}` lines, ended by `data: [DONE]`.
    Sse,
}

/// One kind of streamed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `host:port`.
    pub addr: String,
    /// Path of the request, e.g. `/api/chat`.
    pub path: String,
    /// JSON body.
    pub body: String,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    /// How the answer is framed.
    pub framing: Framing,
    /// Whether connections are reused; otherwise each stream opens its own.
    pub keep_alive: bool,
}

/// What the streams measured.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Streams that ended with their final event.
    pub streams: usize,
    /// Streams that failed or ended early.
    pub errors: usize,
    /// Events received, over all complete streams.
    pub chunks: u64,
    /// Events in each complete stream.
    pub per_stream: Vec<u64>,
    /// Time to the first event of each stream.
    pub first: Vec<Duration>,
    /// Time to the last event of each stream.
    pub last: Vec<Duration>,
    /// Wall time of the whole scenario.
    pub wall: Duration,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl StreamStats {
    /// Adds another run's figures to these (wall times add up).
    pub fn absorb(&mut self, other: StreamStats) {
        self.streams += other.streams;
        self.errors += other.errors;
        self.chunks += other.chunks;
        self.per_stream.extend(other.per_stream);
        self.first.extend(other.first);
        self.last.extend(other.last);
        self.wall += other.wall;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, outcome: Result<Timed>) {
        match outcome {
            Ok(t) => {
                self.streams += 1;
                self.chunks += t.events;
                self.per_stream.push(t.events);
                self.first.push(t.first);
                self.last.push(t.last);
            }
            Err(err) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }

    /// Streams completed per second of wall time.
    pub fn per_sec(&self) -> f64 {
        self.streams as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// One complete stream's timings.
pub struct Timed {
    /// Time to the first event.
    pub first: Duration,
    /// Time to the last event.
    pub last: Duration,
    /// Events received.
    pub events: u64,
}

/// A multi-threaded tokio runtime for the load client (two threads: the machine's cores are
/// shared with the servers under test).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the client runtime")
}

/// Runs `concurrency` tasks, each sending `req` one stream after another until `duration` has
/// passed (or `limit` streams each, if given).
pub fn run(
    rt: &tokio::runtime::Runtime,
    req: &Request,
    concurrency: usize,
    duration: Duration,
    limit: Option<usize>,
) -> StreamStats {
    rt.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let req = req.clone();
                tokio::spawn(async move {
                    let mut mine = StreamStats::default();
                    let mut conn: Option<Conn> = None;
                    let mut done = 0;
                    while Instant::now() < deadline && limit.is_none_or(|l| done < l) {
                        done += 1;
                        let c = match conn.take() {
                            Some(c) => c,
                            None => match Conn::open(&req.addr).await {
                                Ok(c) => c,
                                Err(err) => {
                                    mine.record(Err(err));
                                    continue;
                                }
                            },
                        };
                        match c.stream(&req, None).await {
                            Ok((timed, reusable)) => {
                                mine.record(Ok(timed));
                                if req.keep_alive {
                                    conn = reusable;
                                }
                            }
                            Err(err) => mine.record(Err(err)),
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all = StreamStats::default();
        for t in tasks {
            if let Ok(s) = t.await {
                all.absorb(s);
            }
        }
        all.wall = start.elapsed();
        all
    })
}

/// Counters a crowd of streams shares while it runs.
#[derive(Debug, Default)]
pub struct Live {
    /// Streams whose response head has arrived and whose body has not ended.
    pub open: AtomicUsize,
    /// The most `open` has been.
    pub peak: AtomicUsize,
}

impl Live {
    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends `n` streams at once, each on its own connection, at most `connecting` of them
/// waiting for their response head at a time (so the servers' accept queues do not
/// overflow); `live` counts the streams in progress.
pub async fn crowd(req: &Request, n: usize, connecting: usize, live: Arc<Live>) -> StreamStats {
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(connecting.max(1)));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (req, gate, live) = (req.clone(), gate.clone(), live.clone());
            tokio::spawn(async move {
                let mut mine = StreamStats::default();
                let permit = gate.acquire_owned().await.ok();
                let outcome = match Conn::open(&req.addr).await {
                    Ok(c) => c.stream(&req, Some((&live, permit))).await.map(|(t, _)| t),
                    Err(err) => Err(err),
                };
                mine.record(outcome);
                mine
            })
        })
        .collect();
    let mut all = StreamStats::default();
    for t in tasks {
        match t.await {
            Ok(s) => all.absorb(s),
            Err(err) => all.record(Err(err.into())),
        }
    }
    all.wall = start.elapsed();
    all
}

/// One client connection and the bytes read past the last response.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// How long the client waits for any bytes before it calls a stream failed.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl Conn {
    async fn open(addr: &str) -> Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            tcp,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn fill(&mut self) -> Result<()> {
        // Into the buffer's spare room: no large buffer lives in each of thousands of tasks.
        self.buf.reserve(4096);
        let n = tokio::time::timeout(READ_TIMEOUT, self.tcp.read_buf(&mut self.buf))
            .await
            .context("no bytes for 60 s")??;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    /// Sends one request and reads its whole answer; gives back the connection when it may be
    /// reused. `live` is told when the response head arrives and when the body ends, and the
    /// permit is released at the head.
    async fn stream(
        mut self,
        req: &Request,
        mut live: Option<(&Live, Option<tokio::sync::OwnedSemaphorePermit>)>,
    ) -> Result<(Timed, Option<Conn>)> {
        let start = Instant::now();
        let connection = if req.keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            req.path,
            req.addr,
            req.headers,
            req.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(req.body.as_bytes());
        self.tcp.write_all(&out).await?;

        // The response head.
        let (status, body_kind, close, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(used) = resp.parse(&self.buf)? {
                let status = resp.code.unwrap_or(0);
                let value = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                let length = value("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let close = value("connection").is_some_and(|v| v.contains("close"));
                let kind = match (chunked, length) {
                    (true, _) => BodyKind::Chunked,
                    (false, Some(n)) => BodyKind::Length(n),
                    (false, None) => BodyKind::Eof,
                };
                break (status, kind, close, used);
            }
            self.fill().await?;
        };
        self.buf.drain(..used);
        // The stream is under way: the gateway accepted it and the instance answered.
        let counted = status == 200;
        if let Some((live, permit)) = live.as_mut() {
            permit.take();
            if counted {
                live.opened();
            }
        }

        let mut events = Events::new(req.framing);
        let mut first = None;
        let mut decode = Decoder::new(body_kind);
        let mut body = Vec::new();
        loop {
            let complete = decode.feed(&mut self.buf, &mut body)?;
            if !body.is_empty() {
                let before = events.count;
                events.push(&body);
                body.clear();
                if events.count > before && first.is_none() {
                    first = Some(start.elapsed());
                }
            }
            if complete {
                break;
            }
            match self.fill().await {
                Ok(()) => {}
                Err(_) if decode.kind == BodyKind::Eof => break,
                Err(err) => {
                    if let Some((live, _)) = live.filter(|_| counted) {
                        live.closed();
                    }
                    return Err(err.context(format!("after {} events", events.count)));
                }
            }
        }
        let last = start.elapsed();
        if let Some((live, _)) = live.filter(|_| counted) {
            live.closed();
        }
        if status != 200 {
            bail!("status {status}: {}", String::from_utf8_lossy(&events.sample));
        }
        if !events.finished {
            bail!("the stream ended without its final event after {} events", events.count);
        }
        let timed = Timed {
            first: first.unwrap_or(last),
            last,
            events: events.count,
        };
        let reusable = (!close && decode.kind != BodyKind::Eof).then_some(self);
        Ok((timed, reusable))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Chunked,
    Length(usize),
    Eof,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
}

/// Takes a response body out of the connection's buffer, undoing the chunked framing.
struct Decoder {
    kind: BodyKind,
    state: Chunk,
    left: usize,
}

impl Decoder {
    fn new(kind: BodyKind) -> Decoder {
        let left = match kind {
            BodyKind::Length(n) => n,
            _ => 0,
        };
        Decoder {
            kind,
            state: Chunk::Size,
            left,
        }
    }

    /// Moves body bytes from `buf` to `out`; true once the body is complete.
    fn feed(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool> {
        match self.kind {
            BodyKind::Eof => {
                out.append(buf);
                Ok(false)
            }
            BodyKind::Length(_) => {
                let take = self.left.min(buf.len());
                out.extend(buf.drain(..take));
                self.left -= take;
                Ok(self.left == 0)
            }
            BodyKind::Chunked => {
                let mut pos = 0;
                let done = loop {
                    let rest = &buf[pos..];
                    match self.state {
                        Chunk::Size => match httparse::parse_chunk_size(rest) {
                            Ok(httparse::Status::Complete((used, 0))) => {
                                pos += used;
                                self.state = Chunk::Trailer;
                            }
                            Ok(httparse::Status::Complete((used, size))) => {
                                pos += used;
                                self.state = Chunk::Data(usize::try_from(size)?);
                            }
                            Ok(httparse::Status::Partial) => break false,
                            Err(_) => bail!("bad chunk size line"),
                        },
                        Chunk::Data(n) => {
                            if rest.is_empty() {
                                break false;
                            }
                            let take = n.min(rest.len());
                            out.extend_from_slice(&rest[..take]);
                            pos += take;
                            self.state = if take == n {
                                Chunk::DataEnd
                            } else {
                                Chunk::Data(n - take)
                            };
                        }
                        Chunk::DataEnd => {
                            if rest.len() < 2 {
                                break false;
                            }
                            pos += 2;
                            self.state = Chunk::Size;
                        }
                        Chunk::Trailer => {
                            // No trailers are sent: the body ends with an empty line.
                            if rest.len() < 2 {
                                break false;
                            }
                            pos += 2;
                            break true;
                        }
                    }
                };
                buf.drain(..pos);
                Ok(done)
            }
        }
    }
}

/// Counts the events of a body as its bytes arrive.
struct Events {
    framing: Framing,
    line: Vec<u8>,
    count: u64,
    finished: bool,
    /// The start of the body, to show when the answer is an error.
    sample: Vec<u8>,
}

impl Events {
    fn new(framing: Framing) -> Events {
        Events {
            framing,
            line: Vec::new(),
            count: 0,
            finished: false,
            sample: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.sample.len() < 200 {
            self.sample.extend_from_slice(&bytes[..bytes.len().min(200)]);
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.line_done(&rest[..nl]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..nl]);
                self.line_done(&line);
            }
            rest = &rest[nl + 1..];
        }
        self.line.extend_from_slice(rest);
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        match self.framing {
            Framing::Ndjson => {
                self.count += 1;
                if contains(line, b"\"done\":true") {
                    self.finished = true;
                }
            }
            Framing::Sse => {
                if let Some(data) = line.strip_prefix(b"data:") {
                    if data.trim_ascii() == b"[DONE]" {
                        self.finished = true;
                    } else {
                        self.count += 1;
                    }
                }
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `p`-th percentile (0 to 100) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}
