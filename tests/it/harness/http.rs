//! Plain HTTP/1.1 GETs over a TCP stream, for the worker's and the
//! emulator's listeners (no client library: what is on the wire is checked).

use tokio::io::AsyncWriteExt;

/// A plain HTTP/1.1 GET (with an `Authorization` header when given): the
/// status and the whole response, headers and body.
pub async fn http_get_response(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

/// [`http_get_response`]'s status and body only.
pub async fn http_get_body(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let (code, response) = http_get_response(addr, path, authorization).await;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
