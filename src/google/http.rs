//! The process's one HTTP client to Google, and the raw requests sent on it.
//!
//! One hyper-util client (connection pool) over rustls on `ring` serves every
//! hub, every token refresh and every raw request, so a fleet worker keeps a
//! bounded set of connections to Google. Plain `http` is allowed so tests and
//! the demo can point at the emulator. [`send`] puts one deadline over the whole
//! exchange, headers and body, because a server that stalls mid-body is as
//! stuck as one that never answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The connector every hub and raw request uses.
pub type Connector = HttpsConnector<HttpConnector>;

/// The shared client (cheap to clone: clones share the pool).
pub type HttpClient = google_calendar3::common::Client<Connector>;

/// A request body as the shared client takes it.
pub(crate) type Body = google_calendar3::common::Body;

/// The TLS setup failed (no usable root certificates on this machine).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for Google")]
pub struct TlsSetupError(#[source] std::io::Error);

/// The connector of every client: rustls with the `ring` provider named
/// explicitly (never whatever provider happens to be compiled in) and the
/// system's roots. Shared by the main client and yup-oauth2's, whose body
/// type differs.
pub(crate) fn build_connector() -> Result<Connector, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(TlsSetupError)?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

/// The shared client over `connector`.
pub(crate) fn http_client_over(connector: Connector) -> HttpClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

pub(crate) fn body(bytes: impl Into<Bytes>) -> Body {
    google_calendar3::common::to_body(Some(bytes.into()))
}

pub(crate) fn empty_body() -> Body {
    google_calendar3::common::to_body::<Bytes>(None)
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `Err` when the body broke off (connection closed mid-body).
    pub body: Result<Bytes, String>,
}

/// Why no answer arrived.
#[derive(Debug)]
pub(crate) enum SendError {
    Timeout(Duration),
    Connection(String),
}

/// Sends `request` and reads the whole answer within `timeout`.
pub(crate) async fn send(
    http: &HttpClient,
    request: Request<Body>,
    timeout: Duration,
) -> Result<RawResponse, SendError> {
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|e| SendError::Connection(describe(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| describe(&e));
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

/// An error with its causes, which is where hyper puts the useful part.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
