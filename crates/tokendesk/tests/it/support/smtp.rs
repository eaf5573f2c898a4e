//! A small, real SMTP server on 127.0.0.1:0 for tests.
//!
//! It speaks EHLO/HELO, MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP, VRFY and
//! QUIT with proper reply codes, handles any number of concurrent sessions and several messages
//! per session (lettre's pool reuses connections), and records every accepted message: envelope
//! sender, recipients and the raw DATA. [`Behavior`] makes it reject with a chosen code (451 for
//! a transient failure, 550 for a permanent one) at RCPT or after DATA, or never greet (to test
//! timeouts).
//!
//! [`Received`] also has small MIME helpers (headers with RFC 2047 decoding, the text and HTML
//! parts decoded from quoted-printable/base64) so tests can assert on what a person would read.
//!
//! ```ignore
//! let server = smtp::start().await;
//! sender(&server.smtp_settings()).send(&email).await?;
//! let got = server.wait_for(1, Duration::from_secs(5)).await;
//! assert!(got[0].text_body().unwrap().contains("https://"));
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the server does with mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Accept everything.
    #[default]
    Accept,
    /// Answer every RCPT TO with this code (e.g. 451 or 550).
    RejectRcpt(u16),
    /// Accept the envelope and the data, then answer the final "." with this code.
    RejectData(u16),
    /// Accept the connection but never send the greeting.
    NoGreeting,
    /// Take the start of the message after DATA, then hang up in the middle of it.
    CloseInData,
    /// Take the whole message after DATA, then never answer the final "." (a stalled relay).
    StallAfterData,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL FROM path, without angle brackets.
    pub from: String,
    /// The RCPT TO paths, without angle brackets.
    pub to: Vec<String>,
    /// The message as transmitted after DATA, dot-unstuffed, CRLF line endings, without the
    /// terminating ".".
    pub data: Vec<u8>,
}

/// A running server. Stops accepting when dropped.
pub struct SmtpServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

struct State {
    behavior: Mutex<Behavior>,
    messages: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
}

/// Starts a server that accepts everything.
pub async fn start() -> SmtpServer {
    start_with(Behavior::Accept).await
}

/// Starts a server with the given behavior.
pub async fn start_with(behavior: Behavior) -> SmtpServer {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind SMTP test server");
    let port = listener.local_addr().expect("local addr").port();
    let (count, _) = watch::channel(0);
    let state = Arc::new(State {
        behavior: Mutex::new(behavior),
        messages: Mutex::new(Vec::new()),
        count,
    });
    let accept_state = Arc::clone(&state);
    let accept_task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&accept_state);
            tokio::spawn(async move {
                // A client hanging up mid-session is not a test failure.
                let _ = session(stream, state).await;
            });
        }
    });
    SmtpServer {
        port,
        state,
        accept_task,
    }
}

impl State {
    fn behavior(&self) -> Behavior {
        *self.behavior.lock().unwrap()
    }
}

impl SmtpServer {
    /// Changes what the server does with the next sessions (e.g. start refusing, then recover).
    #[allow(dead_code)]
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }

    /// All messages accepted so far, in order of acceptance.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages have been accepted and returns them all; panics with
    /// a clear message after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.state.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        if waited.is_err() {
            panic!(
                "SMTP test server: expected {n} message(s) within {timeout:?}, got {}",
                self.messages().len()
            );
        }
        self.messages()
    }

    /// Settings for `SmtpSender` pointing at this server (plain text, no auth, 5 s timeout).
    pub fn smtp_settings(&self) -> tokendesk::delivery::email::SmtpSettings {
        tokendesk::delivery::email::SmtpSettings {
            host: "127.0.0.1".to_owned(),
            port: self.port,
            tls: tokendesk::delivery::email::SmtpTls::None,
            username: None,
            password: None,
            from: "tokendesk <tokendesk@example.edu>".to_owned(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn session(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let (reader, mut w) = stream.into_split();
    let mut r = BufReader::new(reader);
    if state.behavior() == Behavior::NoGreeting {
        // Hold the connection open, say nothing, until the client gives up.
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink).await;
        return Ok(());
    }
    w.write_all(b"220 localhost tokendesk test SMTP ready\r\n")
        .await?;

    let mut greeted = false;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut raw = Vec::new();
        if r.read_until(b'\n', &mut raw).await? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" | "HELO" => {
                if line.split_whitespace().nth(1).is_none() {
                    w.write_all(b"501 5.5.4 Syntax: EHLO hostname\r\n").await?;
                    continue;
                }
                greeted = true;
                from = None;
                rcpts.clear();
                if verb == "EHLO" {
                    w.write_all(
                        b"250-localhost greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n",
                    )
                    .await?;
                } else {
                    w.write_all(b"250 localhost\r\n").await?;
                }
            }
            "MAIL" => {
                if !greeted {
                    w.write_all(b"503 5.5.1 Send EHLO/HELO first\r\n").await?;
                } else if from.is_some() {
                    w.write_all(b"503 5.5.1 Nested MAIL command\r\n").await?;
                } else if let Some(path) = path_after(line, "MAIL FROM:") {
                    from = Some(path);
                    rcpts.clear();
                    w.write_all(b"250 2.1.0 OK\r\n").await?;
                } else {
                    w.write_all(b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
                        .await?;
                }
            }
            "RCPT" => {
                if from.is_none() {
                    w.write_all(b"503 5.5.1 Need MAIL before RCPT\r\n").await?;
                } else if let Some(path) = path_after(line, "RCPT TO:") {
                    if let Behavior::RejectRcpt(code) = state.behavior() {
                        w.write_all(rejection(code).as_bytes()).await?;
                    } else {
                        rcpts.push(path);
                        w.write_all(b"250 2.1.5 OK\r\n").await?;
                    }
                } else {
                    w.write_all(b"501 5.5.4 Syntax: RCPT TO:<address>\r\n")
                        .await?;
                }
            }
            "DATA" => {
                if from.is_none() || rcpts.is_empty() {
                    w.write_all(b"503 5.5.1 Need MAIL and RCPT before DATA\r\n")
                        .await?;
                    continue;
                }
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                if state.behavior() == Behavior::CloseInData {
                    let mut line = String::new();
                    let _ = r.read_line(&mut line).await;
                    return Ok(());
                }
                let Some(data) = read_data(&mut r).await? else {
                    return Ok(());
                };
                let envelope_from = from.take().unwrap_or_default();
                let envelope_to = std::mem::take(&mut rcpts);
                if let Behavior::RejectData(code) = state.behavior() {
                    w.write_all(rejection(code).as_bytes()).await?;
                    continue;
                }
                if state.behavior() == Behavior::StallAfterData {
                    // Hold the connection open without a word until the client gives up.
                    let mut rest = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest).await;
                    return Ok(());
                }
                let n = {
                    let mut messages = state.messages.lock().unwrap();
                    messages.push(Received {
                        from: envelope_from,
                        to: envelope_to,
                        data,
                    });
                    messages.len()
                };
                state.count.send_replace(n);
                w.write_all(format!("250 2.0.0 OK queued as {n}\r\n").as_bytes())
                    .await?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                w.write_all(b"250 2.0.0 OK\r\n").await?;
            }
            "NOOP" => w.write_all(b"250 2.0.0 OK\r\n").await?,
            "VRFY" => w.write_all(b"252 2.1.5 Cannot VRFY user\r\n").await?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "" => w.write_all(b"500 5.5.2 Empty command\r\n").await?,
            _ => {
                w.write_all(b"502 5.5.2 Command not implemented\r\n")
                    .await?
            }
        }
    }
}

/// Reads DATA lines up to the lone ".", undoing dot-stuffing. `None` if the client hung up.
async fn read_data<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(data));
        }
        let unstuffed = if line.starts_with(b".") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

/// The path in `MAIL FROM:<a@b> BODY=8BITMIME` (case-insensitive prefix), without brackets.
fn path_after(line: &str, prefix: &str) -> Option<String> {
    if line.len() < prefix.len() || !line[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim_start();
    let path = if let Some(inner) = rest.strip_prefix('<') {
        &inner[..inner.find('>')?]
    } else {
        rest.split_whitespace().next()?
    };
    Some(path.to_owned())
}

fn rejection(code: u16) -> String {
    let text = match code {
        421 => "4.3.2 Service not available, closing channel",
        450..=452 => "4.3.0 Temporary failure, please try again later",
        550 | 551 | 553 => "5.1.1 Mailbox unavailable",
        552 | 554 => "5.7.1 Message rejected",
        c if c >= 500 => "5.0.0 Rejected by test server",
        _ => "4.0.0 Try again later",
    };
    format!("{code} {text}\r\n")
}

// ---------------------------------------------------------------------------------------------
// MIME helpers
// ---------------------------------------------------------------------------------------------

/// A leaf MIME part, decoded.
#[derive(Debug, Clone)]
pub struct MimePart {
    /// The media type, lower-case, without parameters (`text/plain`).
    pub content_type: String,
    /// The decoded body as UTF-8 (lossy), line endings normalised to `\n`.
    pub body: String,
}

impl Received {
    /// The raw message as text (lossy).
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// A top-level header, unfolded and with RFC 2047 encoded-words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = split_head_body(&self.data);
        header_value(&parse_headers(head), name).map(|v| decode_rfc2047(&v))
    }

    /// All leaf parts (recursing into multiparts), decoded.
    pub fn parts(&self) -> Vec<MimePart> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The decoded `text/plain` part.
    pub fn text_body(&self) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == "text/plain")
            .map(|p| p.body)
    }

    /// The decoded `text/html` part.
    pub fn html_body(&self) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == "text/html")
            .map(|p| p.body)
    }

    /// The first `https?://…` URL in the text part that contains `needle` (e.g. `"/e/"` for a
    /// delivery link). The URL ends at whitespace, `"` or `<`.
    pub fn find_link(&self, needle: &str) -> Option<String> {
        let text = self.text_body()?;
        text.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
            .find(|w| (w.starts_with("https://") || w.starts_with("http://")) && w.contains(needle))
            .map(str::to_owned)
    }
}

fn split_head_body(data: &[u8]) -> (&[u8], &[u8]) {
    if let Some(i) = find(data, b"\r\n\r\n") {
        (&data[..i], &data[i + 4..])
    } else if let Some(i) = find(data, b"\n\n") {
        (&data[..i], &data[i + 2..])
    } else {
        (data, &[])
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
        }
    }
    headers
}

fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// `multipart/alternative; boundary="x"` → (`multipart/alternative`, Some("x")).
fn media_type_and_boundary(content_type: &str) -> (String, Option<String>) {
    let mut pieces = content_type.split(';');
    let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let boundary = pieces.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    });
    (media, boundary)
}

fn collect_parts(entity: &[u8], out: &mut Vec<MimePart>) {
    let (head, body) = split_head_body(entity);
    let headers = parse_headers(head);
    let content_type =
        header_value(&headers, "Content-Type").unwrap_or_else(|| "text/plain".to_owned());
    let (media, boundary) = media_type_and_boundary(&content_type);
    if media.starts_with("multipart/") {
        let Some(boundary) = boundary else { return };
        let delimiter = format!("--{boundary}");
        let text = body;
        let mut rest = text;
        // Skip the preamble.
        let Some(start) = find(rest, delimiter.as_bytes()) else {
            return;
        };
        rest = &rest[start + delimiter.len()..];
        loop {
            if rest.starts_with(b"--") {
                break; // closing delimiter
            }
            let Some(end) = find(rest, delimiter.as_bytes()) else {
                break;
            };
            let part = &rest[..end];
            let part = part
                .strip_prefix(b"\r\n")
                .or_else(|| part.strip_prefix(b"\n"))
                .unwrap_or(part);
            let part = part
                .strip_suffix(b"\r\n")
                .or_else(|| part.strip_suffix(b"\n"))
                .unwrap_or(part);
            collect_parts(part, out);
            rest = &rest[end + delimiter.len()..];
        }
        return;
    }
    let encoding = header_value(&headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("valid base64 body")
        }
        _ => body.to_vec(),
    };
    out.push(MimePart {
        content_type: media,
        body: String::from_utf8_lossy(&decoded).replace("\r\n", "\n"),
    });
}

/// RFC 2045 quoted-printable: `=XX` bytes and `=` soft line breaks.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'=' {
            if input[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if input[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if i + 2 < input.len() {
                let hex = std::str::from_utf8(&input[i + 1..i + 3]).ok();
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Decodes RFC 2047 encoded-words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two
/// adjacent encoded-words is dropped, as the RFC says.
pub fn decode_rfc2047(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, consumed)) = encoded_word(rest) {
            if last_was_word {
                // Drop the whitespace we emitted between two encoded-words.
                let trimmed = out.trim_end_matches([' ', '\t']).len();
                out.truncate(trimmed);
            }
            out.push_str(&decoded);
            rest = &rest[consumed..];
            last_was_word = true;
            continue;
        }
        let ch = rest.chars().next().unwrap_or(' ');
        if !ch.is_whitespace() {
            last_was_word = false;
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => decode_quoted_printable(text.replace('_', " ").as_bytes()),
        _ => return None,
    };
    let consumed = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
}
