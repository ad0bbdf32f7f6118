//! Socket options on both sides of the gateway, read from the live sockets themselves.
//!
//! A stream ends with small writes (the last chunk, the chunked terminator) and a request is
//! written as a head and then a body. With Nagle's algorithm on, such a small write behind
//! unacknowledged data waits for the peer's delayed ACK: about 40 ms on every stream over a
//! reused connection. The gateway must switch it off on the sockets it accepts and on those
//! it opens to instances. The test finds those sockets among this process's own descriptors
//! (the gateway runs in it) and reads `TCP_NODELAY` from them.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use futures_util::StreamExt;

use crate::support::{chat_body, client, sim, Gateway};

/// This process's TCP sockets as (local, remote, descriptor), read from `/proc`.
fn own_tcp_sockets() -> Vec<(SocketAddr, SocketAddr, OwnedFd)> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let mut by_inode = std::collections::HashMap::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let addr = |hex: &str| -> SocketAddr {
            let (ip, port) = hex.split_once(':').unwrap();
            let ip = u32::from_str_radix(ip, 16).unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(ip)), port))
        };
        by_inode.insert(cols[9].to_owned(), (addr(cols[1]), addr(cols[2])));
    }
    let pidfd = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) else {
            continue;
        };
        let Some((local, remote)) = by_inode.get(inode) else {
            continue;
        };
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        let Ok(dup) = rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty()) else {
            continue;
        };
        found.push((*local, *remote, dup));
    }
    found
}

fn nodelay(fd: &OwnedFd) -> bool {
    rustix::net::sockopt::tcp_nodelay(fd).unwrap()
}

#[actix_web::test]
async fn the_gateway_switches_off_nagle_on_client_and_upstream_sockets() {
    let upstream = sim().await;
    let gw = Gateway::in_front_of(&upstream.url()).await;
    let gw_addr: SocketAddr = gw.url.trim_start_matches("http://").parse().unwrap();
    let sim_addr: SocketAddr = upstream.url().trim_start_matches("http://").parse().unwrap();
    let client = client();
    // Two streams on one kept-alive connection, so the upstream connection is reused too.
    for _ in 0..2 {
        let mut resp = client
            .post(gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 5, true))
            .await
            .unwrap();
        assert!(resp.status().is_success());
        while let Some(chunk) = resp.next().await {
            chunk.unwrap();
        }
    }
    let sockets = own_tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, remote, _)| *local == gw_addr && remote.port() != 0)
        .collect();
    let upstream_side: Vec<_> = sockets
        .iter()
        .filter(|(local, remote, _)| *remote == sim_addr && *local != gw_addr)
        .collect();
    assert!(
        !accepted.is_empty(),
        "no accepted gateway socket found among {}",
        sockets.len()
    );
    assert!(!upstream_side.is_empty(), "no gateway-to-instance socket found");
    for (local, remote, fd) in accepted {
        assert!(
            nodelay(fd),
            "the gateway's socket {local} <- {remote} has Nagle's algorithm on"
        );
    }
    // The simulator's own accepted sockets have `local == sim_addr`; the gateway's client
    // sockets towards it are the ones whose remote end is the simulator.
    for (local, remote, fd) in upstream_side {
        assert!(
            nodelay(fd),
            "the gateway's upstream socket {local} -> {remote} has Nagle's algorithm on"
        );
    }
    gw.stop().await;
}

/// The paths of the requests a [`flaky_instance`] dropped.
#[derive(Clone, Default)]
struct Dropped(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Dropped {
    fn count(&self, path: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}

/// Which requests a [`flaky_instance`] reads and then drops, closing the connection unanswered.
#[derive(Clone, Copy)]
enum Drops {
    /// Every request but the first on a connection, at once: one request per connection,
    /// though the instance says keep-alive, as a server closes an idle connection at the
    /// moment a client reuses it (the simulator's, Node's and uvicorn's idle timeout is 5 s).
    Reused,
    /// The `n`th request (from 1) to `path`, after `hold`: an instance that took the request
    /// up and then lost the connection.
    Nth(&'static str, usize, std::time::Duration),
}

/// What a raw instance holding `m:latest` answers to the gateway's discovery and health
/// requests, if `path` is one of them.
fn discovery_answer(path: &str) -> Option<&'static str> {
    match path {
        "/api/tags" => Some(
            r#"{"models":[{"name":"m:latest","model":"m:latest","modified_at":"2026-01-01T00:00:00Z","size":1,"digest":"d","details":{"format":"gguf","family":"llama"}}]}"#,
        ),
        "/api/ps" => Some(r#"{"models":[]}"#),
        "/api/version" => Some(r#"{"version":"0.12.0"}"#),
        _ => None,
    }
}

/// A whole `200 OK` answer with the JSON `body`, head included.
fn json_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one request (head and a `Content-Length` body) off a raw connection: its path and
/// headers, or none at the end.
fn read_request(reader: &mut std::io::BufReader<std::net::TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().ok()?;
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers))
}

/// An Ollama-shaped instance holding `m:latest` that answers every request at once, but those
/// `drops` names. Returns its URL and the paths of the requests it dropped.
fn flaky_instance(drops: Drops) -> (String, Dropped) {
    use std::io::{BufReader, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dropped = Dropped::default();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let record = dropped.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (record, seen) = (record.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                let mut on_this_connection = 0;
                while let Some((path, _)) = read_request(&mut reader) {
                    on_this_connection += 1;
                    let nth = {
                        let mut seen = seen.lock().unwrap();
                        let n = seen.entry(path.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let hold = match drops {
                        Drops::Reused if on_this_connection > 1 => Some(std::time::Duration::ZERO),
                        Drops::Nth(p, n, hold) if p == path && n == nth => Some(hold),
                        _ => None,
                    };
                    if let Some(hold) = hold {
                        record.0.lock().unwrap().push(path);
                        std::thread::sleep(hold);
                        // Dropping both halves closes the connection, the request unanswered.
                        return;
                    }
                    let body = discovery_answer(&path).unwrap_or(match path.as_str() {
                        "/api/pull" => r#"{"status":"success"}"#,
                        _ => {
                            r#"{"model":"m:latest","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"hi"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":1}"#
                        }
                    });
                    if writer.write_all(&json_answer(body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, dropped)
}

#[actix_web::test]
async fn a_request_on_a_connection_the_instance_closed_is_sent_again_on_a_new_one() {
    let (url, dropped) = flaky_instance(Drops::Reused);
    let mut settings = crate::support::settings_for(&[&url]);
    // Only the requests below reach the instance, one at a time.
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    let client = client();
    for i in 0..5 {
        let mut resp = client
            .post(gw.at("/api/chat"))
            .send_json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false}),
            )
            .await
            .unwrap();
        let body = crate::support::body_of(&mut resp).await;
        assert_eq!(
            resp.status(),
            actix_web::http::StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The gateway did reuse connections (so the case was met: every other request here, since a
    // request sent again leaves the pool empty), and never failed a request for it.
    assert!(
        dropped.count("/api/chat") >= 2,
        "the instance dropped {} chats on reused connections",
        dropped.count("/api/chat")
    );
    let status: serde_json::Value = client
        .get(gw.at("/ollama/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["instances"][0]["health"], "healthy", "{status}");
    gw.stop().await;
}

#[actix_web::test]
async fn each_client_connection_costs_the_gateway_one_descriptor() {
    let upstream = sim().await;
    let gw = Gateway::in_front_of(&upstream.url()).await;
    let gw_addr: SocketAddr = gw.url.trim_start_matches("http://").parse().unwrap();
    // Five clients, each with a kept-alive connection that has served a request.
    let clients: Vec<_> = (0..5).map(|_| client()).collect();
    for client in &clients {
        let mut resp = client
            .post(gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 2, false))
            .await
            .unwrap();
        assert!(resp.status().is_success());
        crate::support::body_of(&mut resp).await;
    }
    let mut per_connection: std::collections::HashMap<SocketAddr, usize> = std::collections::HashMap::new();
    for (local, remote, _) in own_tcp_sockets() {
        if local == gw_addr && remote.port() != 0 {
            *per_connection.entry(remote).or_default() += 1;
        }
    }
    assert!(per_connection.len() >= 5, "{per_connection:?}");
    // Noticing a client that leaves needs no second handle on its socket.
    assert!(
        per_connection.values().all(|&n| n == 1),
        "client connections held by more than one descriptor: {per_connection:?}"
    );
    drop(clients);
    gw.stop().await;
}

/// A request to `path` through `gw`: its status and body.
async fn chat_through(gw: &Gateway, path: &str, body: serde_json::Value) -> (actix_web::http::StatusCode, String) {
    let mut resp = client().post(gw.at(path)).send_json(&body).await.unwrap();
    let text = crate::support::body_of(&mut resp).await;
    (resp.status(), String::from_utf8_lossy(&text).into_owned())
}

/// Sends `body` to `path` twice through a gateway in front of a [`flaky_instance`] that drops
/// the second after `hold`: the first is answered, the second fails with 502 and reached the
/// instance once (it was not sent again).
async fn second_fails_without_a_resend(path: &'static str, body: serde_json::Value, hold: std::time::Duration) {
    let (url, dropped) = flaky_instance(Drops::Nth(path, 2, hold));
    let mut settings = crate::support::settings_for(&[&url]);
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    let (first, text) = chat_through(&gw, path, body.clone()).await;
    assert_eq!(first, actix_web::http::StatusCode::OK, "{text}");
    let (second, text) = chat_through(&gw, path, body).await;
    assert_eq!(second, actix_web::http::StatusCode::BAD_GATEWAY, "{text}");
    assert_eq!(dropped.count(path), 1, "{path} was sent again");
    gw.stop().await;
}

#[actix_web::test]
async fn a_request_the_instance_took_up_before_its_connection_broke_is_not_sent_again() {
    // The instance holds the second chat for longer than a closed connection takes to show,
    // then drops it: that request may have run, so it fails (and fails over where there is
    // another holder) instead of running again here.
    let chat = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    second_fails_without_a_resend("/api/chat", chat, std::time::Duration::from_millis(1500)).await;
}

#[actix_web::test]
async fn a_long_job_is_never_sent_twice() {
    // A pull that does not stream answers only when it is done; one that met a closed
    // connection is not sent again, even at once.
    let pull = serde_json::json!({"model": "m", "stream": false});
    second_fails_without_a_resend("/api/pull", pull, std::time::Duration::ZERO).await;
}

#[actix_web::test]
async fn a_client_that_closes_only_its_sending_side_still_gets_a_quick_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = sim().await;
    let gw = Gateway::in_front_of(&upstream.url()).await;
    let body = chat_body("llama3.2", 2, false).to_string();
    let mut conn = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // As `nc -N` and some probes do: the request is sent, and the sending side shut.
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"done\":true"), "{answer}");
    gw.stop().await;
}

/// The client the gateway sends requests to instances with shares one codec configuration per
/// thread (`vendor/awc/PATCHED.md`: each request made its own, spawning a task and arming a
/// timer every time). A thread that runs one actix system after another, as tests do, must not
/// keep using the configuration of a system that has ended: its date service no longer runs,
/// so requests would go on carrying the `date` it last wrote.
#[test]
fn requests_sent_from_a_later_runtime_on_the_same_thread_carry_the_current_date() {
    use std::io::{BufReader, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut dates = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (_, headers) = read_request(&mut reader).unwrap();
            let date = headers
                .into_iter()
                .find(|(name, _)| name == "date")
                .map(|(_, value)| value);
            (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            dates.push(date.expect("the request carries a date"));
        }
        dates
    });
    for round in 0..2 {
        let url = url.clone();
        actix_rt::System::new().block_on(async move {
            let resp = awc::Client::default().get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        });
        if round == 0 {
            // Past the next whole second and the date service's 500 ms tick.
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }
    }
    let dates = server.join().unwrap();
    let parse = |d: &str| chrono::DateTime::parse_from_rfc2822(&d.replace("GMT", "+0000")).unwrap();
    let apart = parse(&dates[1]) - parse(&dates[0]);
    assert!(
        apart >= chrono::Duration::seconds(2),
        "the second request carried {:?}, the first {:?}",
        dates[1],
        dates[0]
    );
}

/// `body` in chunks of `sizes` (then the rest in one), chunked transfer encoding, one piece
/// per chunk and the last chunk.
pub(crate) fn chunks_of(body: &str, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut rest = body.as_bytes();
    for &size in sizes.iter().chain([&usize::MAX]) {
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(chunk);
        piece.extend_from_slice(b"\r\n");
        pieces.push(piece);
        rest = after;
    }
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

/// An instance holding `m:latest` whose chat answers are the chunked body `pieces`, each
/// written on its own, Nagle off, a moment apart, so that each reaches the gateway in a read
/// of its own.
fn chunked_instance(pieces: Vec<Vec<u8>>) -> String {
    chunked_instance_with_head(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
        pieces,
    )
}

/// [`chunked_instance`] whose chat answers (native, or its own OpenAI layer's) start with
/// `head`.
pub(crate) fn chunked_instance_with_head(head: &'static [u8], pieces: Vec<Vec<u8>>) -> String {
    use std::io::{BufReader, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            conn.set_nodelay(true).unwrap();
            let pieces = pieces.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                while let Some((path, _)) = read_request(&mut reader) {
                    let mut out = Vec::new();
                    if path == "/api/chat" || path == "/v1/chat/completions" {
                        out.push(head.to_vec());
                        out.extend(pieces.iter().cloned());
                    } else {
                        out.push(json_answer(
                            discovery_answer(&path).unwrap_or(r#"{"version":"0.12.0"}"#),
                        ));
                    }
                    for piece in out {
                        if writer.write_all(&piece).is_err() {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            });
        }
    });
    url
}

/// A header an instance sends several times reaches the client with every value, in order
/// (the header maps on both of the gateway's sides keep one value of a name inline and the
/// rest beside it: `vendor/actix-http/PATCHED.md`).
#[actix_rt::test]
async fn every_value_of_a_repeated_header_is_relayed_in_order() {
    let url = chunked_instance_with_head(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nset-cookie: a=1\r\nx-multi: one\r\n\
          set-cookie: b=2\r\nx-multi: two\r\nx-multi: three\r\nx-multi: four\r\nx-multi: five\r\n\
          x-single: only\r\ntransfer-encoding: chunked\r\n\r\n",
        chunks_of(&long_chat_stream(), &[10]),
    );
    let mut settings = crate::support::settings_for(&[&url]);
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let values = |name: &str| -> Vec<String> {
        resp.headers()
            .get_all(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(values("x-multi"), ["one", "two", "three", "four", "five"]);
    assert_eq!(values("x-single"), ["only"]);
    let body = crate::support::body_of(&mut resp).await;
    assert_eq!(body, long_chat_stream().as_bytes());
    gw.stop().await;
}

/// Two streamed chats on one raw connection to a gateway in front of `url`: each answer's body
/// and the digits of its chunk sizes (read strictly).
async fn two_streamed_chats(url: &str) -> Vec<(Vec<u8>, Vec<usize>)> {
    let mut settings = crate::support::settings_for(&[url]);
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    let addr = gw.at("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let answers = actix_web::rt::task::spawn_blocking(move || {
        use std::io::Write;
        let request = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        // A framing the gateway got wrong fails the test rather than hanging it.
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        // Twice on one connection: the second answer's framing follows the first's end.
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut answers = Vec::new();
        for _ in 0..2 {
            write!(
                conn,
                "POST /api/chat HTTP/1.1\r\nhost: corral\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{request}",
                request.len()
            )
            .unwrap();
            answers.push(read_chunked_strictly(&mut reader));
        }
        answers
    })
    .await
    .unwrap();
    gw.stop().await;
    answers
}

/// Three long lines of a chat stream and its last one.
fn long_chat_stream() -> String {
    let line = |pad: usize| {
        format!(
            r#"{{"model":"m:latest","message":{{"role":"assistant","content":"{}"}},"done":false}}"#,
            "x".repeat(pad)
        ) + "\n"
    };
    [line(3000), line(3000), line(3000)].concat()
        + r#"{"model":"m:latest","message":{"role":"assistant","content":""},"done":true,"prompt_eval_count":3,"eval_count":8}"#
        + "\n"
}

/// Reads one chunked answer off `reader` after its head, checking every chunk-size line is
/// upper-case hexadecimal without leading zeros, as the gateway writes them; returns the body
/// and the number of digits of each size line but the last.
fn read_chunked_strictly(reader: &mut std::io::BufReader<std::net::TcpStream>) -> (Vec<u8>, Vec<usize>) {
    use std::io::{BufRead, Read};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the answer ended in its head: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let (mut body, mut digits) = (Vec::new(), Vec::new());
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = size.strip_suffix("\r\n").expect("a chunk size line ends with CRLF");
        assert!(
            !size.is_empty()
                && size.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                && (size == "0" || !size.starts_with('0')),
            "chunk size line {size:?}"
        );
        let len = usize::from_str_radix(size, 16).unwrap();
        let mut data = vec![0; len + 2];
        reader.read_exact(&mut data).unwrap();
        assert_eq!(&data[len..], b"\r\n", "chunk of {len} bytes not followed by CRLF");
        if len == 0 {
            return (body, digits);
        }
        digits.push(size.len());
        body.extend_from_slice(&data[..len]);
    }
}

#[actix_web::test]
async fn streamed_chunks_of_every_size_keep_their_framing() {
    // Chunks across each number of hex digits the gateway relays whole (it reads an instance's
    // answer in pieces of less than 4 KB and relays each as it comes, so a larger chunk leaves
    // it as several); the hex writer's loop is the same for every digit.
    const SIZES: &[usize] = &[1, 15, 16, 255, 256, 2000, 4000];
    let body = long_chat_stream();
    assert!(body.len() > SIZES.iter().sum::<usize>());
    let url = chunked_instance(chunks_of(&body, SIZES));
    for (got, digits) in two_streamed_chats(&url).await {
        assert_eq!(String::from_utf8(got).unwrap(), body);
        for n in 1..=3 {
            assert!(digits.contains(&n), "no chunk size of {n} digits among {digits:?}");
        }
    }
}

#[actix_web::test]
async fn an_instance_s_chunk_size_lines_are_read_in_every_form_and_split_anywhere() {
    // Upper and lower case, leading zeros, an extension, white space before the CRLF, and size
    // lines and CRLFs cut across the instance's writes.
    let body = long_chat_stream();
    let b = body.as_bytes();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    let mut chunk = |size_line: &str, len: usize, pieces: &mut Vec<Vec<u8>>| {
        let mut piece = size_line.as_bytes().to_vec();
        piece.extend_from_slice(&b[at..at + len]);
        piece.extend_from_slice(b"\r\n");
        at += len;
        pieces.push(piece);
    };
    chunk("1F\r\n", 0x1f, &mut pieces);
    chunk("1f\r\n", 0x1f, &mut pieces);
    chunk("0000a\r\n", 0xa, &mut pieces);
    chunk("10;name=value\r\n", 0x10, &mut pieces);
    chunk("20 \t\r\n", 0x20, &mut pieces);
    // A size line, its CRLF and the one after the data, each cut in two.
    let cut = |piece: Vec<u8>, at: usize, pieces: &mut Vec<Vec<u8>>| {
        pieces.push(piece[..at].to_vec());
        pieces.push(piece[at..].to_vec());
    };
    let mut one = Vec::new();
    chunk("7D0\r\n", 2000, &mut one);
    cut(one.pop().unwrap(), 1, &mut pieces);
    chunk("7d0\r\n", 2000, &mut one);
    cut(one.pop().unwrap(), 4, &mut pieces);
    chunk("100\r\n", 0x100, &mut one);
    let last = one.pop().unwrap();
    let len = last.len();
    cut(last, len - 1, &mut pieces);
    // The chunks above took 0x1f + 0x1f + 0xa + 0x10 + 0x20 + 2000 + 2000 + 0x100 bytes.
    let rest = b.len() - 4376;
    chunk(&format!("{rest:X}\r\n"), rest, &mut pieces);
    pieces.push(b"0\r\n\r\n".to_vec());
    let url = chunked_instance(pieces);
    for (got, _) in two_streamed_chats(&url).await {
        assert_eq!(String::from_utf8(got).unwrap(), body);
    }
}

#[actix_web::test]
async fn an_instance_s_broken_chunk_size_line_ends_the_stream_with_an_error_line() {
    // After a first good chunk: an empty size line, a size of seventeen hex digits (past
    // 64 bits), a CR not followed by LF. Each must end the client's stream with an error line,
    // never pass as data or as a clean end.
    let body = long_chat_stream();
    let first = &body[..100];
    for bad in ["\r\n", "10000000000000000\r\n", "1a\rX"] {
        let pieces = vec![
            format!("{:x}\r\n{first}\r\n", first.len()).into_bytes(),
            bad.as_bytes().to_vec(),
            b"0123456789abcdef\r\n0\r\n\r\n".to_vec(),
        ];
        let url = chunked_instance(pieces);
        let mut settings = crate::support::settings_for(&[&url]);
        settings.balance.health_interval = 0.0;
        // A size misread as larger than what follows would wait for the rest: not for long.
        settings.upstream.idle_timeout = 2.0;
        let gw = Gateway::start(settings).await;
        let mut resp = client()
            .post(gw.at("/api/chat"))
            .send_json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
            )
            .await
            .unwrap();
        let got = String::from_utf8(crate::support::body_of(&mut resp).await.to_vec()).unwrap();
        assert!(got.starts_with(first), "{bad:?}: {got}");
        let last = got.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("{\"error\":") && last.contains("broke off"),
            "{bad:?}: the stream ended with {last:?}"
        );
        gw.stop().await;
    }
}
