//! The recording proxy: `plansync fake-google --record DIR --upstream-api URL
//! --upstream-token URL [--scrub]`.
//!
//! It serves the emulator's paths, so a worker is pointed at it exactly as at
//! the emulator (`GOOGLE_CALENDAR_BASE_URL=http://ADDR/calendar/v3/`,
//! `GOOGLE_TOKEN_URL=http://ADDR/token`): `/calendar/v3/<rest>` goes to
//! `<upstream-api><rest>`, `/token` to the upstream token URL, with the
//! client's headers (its `Authorization` included — the upstream needs it)
//! but not `Host` or `Accept-Encoding` (so answers are recorded readable).
//!
//! Guarantees: every forwarded exchange is written to `DIR/NNNN.json` (numbered
//! in arrival order) before its answer is passed back, so a recording is
//! complete up to the last answer the client saw; nothing secret reaches the
//! disk ([`super::exchange`] redacts every exchange); the client gets the
//! upstream's answer unchanged (scrubbing applies to the file only); an answer
//! that is lost upstream (reset, timeout, broken body) is recorded as lost and
//! the client's connection is closed without an answer, as it would have been.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tracing::Instrument;

use super::conn::{self, Hangup, Reply, Server};
use super::exchange::{self, Exchange, Payload, RecordedAnswer, RecordedMessage, RecordingError};
use super::scrub::Scrubber;

/// The recorder's own client to the upstream (plain HTTP for the emulator,
/// HTTPS with the system's roots for Google): kept apart from the worker's
/// client so the emulator carries no dependency on `google`.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn build_http_client() -> Result<HttpClient, RecordError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(RecordError::Tls)?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// How to start a recorder.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    pub addr: SocketAddr,
    /// Where the exchanges go; created if missing, refused if it already
    /// holds a recording (one folder, one session).
    pub dir: PathBuf,
    /// The Calendar API root, e.g. `https://www.googleapis.com/calendar/v3/`.
    pub upstream_api: String,
    /// The token endpoint, e.g. `https://oauth2.googleapis.com/token`.
    pub upstream_token: String,
    /// Pseudonymise personal data in the files ([`Scrubber`]).
    pub scrub: bool,
    /// How long the upstream gets for a whole answer before it counts as lost.
    pub timeout: Duration,
}

impl RecorderOptions {
    pub fn new(dir: impl Into<PathBuf>, upstream_api: &str, upstream_token: &str) -> Self {
        RecorderOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.into(),
            upstream_api: upstream_api.to_owned(),
            upstream_token: upstream_token.to_owned(),
            scrub: false,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Why a recorder could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0} already holds a recording: record into an empty folder")]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS for the upstream")]
    Tls(#[source] std::io::Error),
}

struct State {
    dir: PathBuf,
    upstream_api: String,
    upstream_token: String,
    http: HttpClient,
    timeout: Duration,
    next: AtomicUsize,
    written: AtomicUsize,
    scrubber: Option<Mutex<Scrubber>>,
}

/// A running recorder. Dropping it stops accepting.
pub struct Recorder {
    server: Server,
    state: Arc<State>,
}

impl Recorder {
    pub async fn start(options: RecorderOptions) -> Result<Recorder, RecordError> {
        std::fs::create_dir_all(&options.dir).map_err(|source| RecordingError::Io {
            path: options.dir.clone(),
            source,
        })?;
        match exchange::load(&options.dir) {
            Ok(_) => return Err(RecordError::NotEmpty(options.dir)),
            Err(RecordingError::Empty(_)) => {}
            Err(err) => return Err(err.into()),
        }
        let mut upstream_api = options.upstream_api.clone();
        if !upstream_api.ends_with('/') {
            upstream_api.push('/');
        }
        let state = Arc::new(State {
            dir: options.dir,
            upstream_api,
            upstream_token: options.upstream_token,
            http: build_http_client()?,
            timeout: options.timeout,
            next: AtomicUsize::new(1),
            written: AtomicUsize::new(0),
            scrubber: options.scrub.then(|| Mutex::new(Scrubber::default())),
        });
        let server = Server::start(options.addr, Arc::clone(&state), handle)
            .await
            .map_err(|source| RecordError::Bind {
                addr: options.addr,
                source,
            })?;
        Ok(Recorder { server, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// What to give the worker as `GOOGLE_CALENDAR_BASE_URL`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// What to give the worker as `GOOGLE_TOKEN_URL`.
    pub fn token_url(&self) -> String {
        self.server.token_url()
    }

    /// How many exchanges are on disk so far.
    pub fn written(&self) -> usize {
        self.state.written.load(Ordering::SeqCst)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Headers that belong to one hop, never forwarded either way.
const HOP_HEADERS: [HeaderName; 6] = [
    header::HOST,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::ACCEPT_ENCODING,
    header::UPGRADE,
];

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let target = if let Some(rest) = path.strip_prefix("/calendar/v3/") {
        format!("{}{rest}", state.upstream_api)
    } else if path == "/token" {
        state.upstream_token.clone()
    } else {
        return Ok(conn::response(
            404,
            &[],
            Bytes::from(format!(
                "the recorder forwards /calendar/v3/... and /token, not {path}"
            )),
        ));
    };
    let target = match &query {
        Some(q) => format!("{target}?{q}"),
        None => target,
    };
    let seq = state.next.fetch_add(1, Ordering::SeqCst);
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Hangup(format!("reading the request body: {e}")))?;
    let span = tracing::info_span!("record", seq, method = %parts.method, %path);
    record(state, parts, path, query, target, bytes, seq)
        .instrument(span)
        .await
}

/// Forwards one request, writes the exchange, and passes the answer back.
async fn record(
    state: Arc<State>,
    parts: http::request::Parts,
    path: String,
    query: Option<String>,
    target: String,
    bytes: Bytes,
    seq: usize,
) -> Reply {
    let mut upstream = Request::builder().method(parts.method.clone()).uri(&target);
    for (name, value) in &parts.headers {
        if !HOP_HEADERS.contains(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(Full::new(bytes.clone()))
        .map_err(|e| Hangup(format!("building the upstream request to {target}: {e}")))?;

    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut exchange = Exchange {
        request: RecordedMessage {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: exchange::kept_headers(&parts.headers, &exchange::REQUEST_HEADERS),
            body: Payload::from_bytes(content_type, &bytes),
        },
        response: None,
        lost: None,
    };
    let answer = forward(&state, upstream).await;
    let reply = match answer {
        Ok((status, headers, body)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            exchange.response = Some(RecordedAnswer {
                status: status.as_u16(),
                headers: exchange::kept_headers(&headers, &exchange::RESPONSE_HEADERS),
                body: Payload::from_bytes(content_type, &body),
            });
            let passed: Vec<(String, String)> = headers
                .iter()
                .filter(|(name, _)| !HOP_HEADERS.contains(name))
                .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            Ok(conn::response(status.as_u16(), &passed, body))
        }
        Err(lost) => {
            tracing::info!(%lost, "the upstream's answer was lost");
            exchange.lost = Some(lost.clone());
            Err(Hangup(lost))
        }
    };
    exchange::redact_request(&mut exchange.request);
    if let Some(answer) = &mut exchange.response {
        exchange::redact_response(answer);
    }
    if let Some(scrubber) = &state.scrubber {
        scrubber
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .scrub(&mut exchange);
    }
    match exchange::write(&state.dir, seq, &exchange) {
        Ok(()) => {
            state.written.fetch_add(1, Ordering::SeqCst);
        }
        // The client still gets its answer; the gap in the numbering shows.
        Err(err) => tracing::error!(error = %err, "writing the exchange failed"),
    }
    reply
}

/// The upstream's whole answer, or why it was lost.
async fn forward(
    state: &State,
    request: Request<Full<Bytes>>,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
    let exchange = async {
        let response = state
            .http
            .request(request)
            .await
            .map_err(|e| format!("connection failed: {}", chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("connection broke mid-answer: {}", chain(&e)))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(state.timeout, exchange)
        .await
        .map_err(|_| format!("timeout: no complete answer within {:?}", state.timeout))?
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
