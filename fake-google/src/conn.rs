//! The bare HTTP/1 server under the recorder and the replayer.
//!
//! They need what axum cannot give: to close a connection *without* an
//! answer (a lost answer, recorded or replayed), which hyper does when the
//! service returns an error. This module owns the accept loop and that rule:
//! a handler returns `Ok(response)` or [`Hangup`], and a hangup closes the
//! connection before any byte of a response is written.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The handler's verdict: close the connection without answering.
#[derive(Debug)]
pub struct Hangup(pub String);

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hung up: {}", self.0)
    }
}

impl std::error::Error for Hangup {}

pub type Reply = Result<Response<Full<Bytes>>, Hangup>;

/// A running server; dropping it stops accepting (open keep-alive
/// connections end with their client).
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// What to give the worker as `GOOGLE_CALENDAR_BASE_URL`: the emulator's
    /// API paths on this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/calendar/v3/", self.addr)
    }

    /// What to give the worker as `GOOGLE_TOKEN_URL`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Binds `addr` and serves every connection with `handler`.
    pub async fn start<S, H, F>(
        addr: SocketAddr,
        state: Arc<S>,
        handler: H,
    ) -> std::io::Result<Server>
    where
        S: Send + Sync + 'static,
        H: Fn(Arc<S>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(err) => {
                            tracing::warn!(error = %err, "accepting a connection failed");
                            continue;
                        }
                    },
                };
                let state = Arc::clone(&state);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let fut = handler(Arc::clone(&state), request);
                        async move { fut.await.map_err(Box::new) }
                    });
                    // An error here is a hangup we chose or a client that
                    // went away: nothing to do either way.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Server {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A complete answer.
pub fn response(status: u16, headers: &[(String, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
