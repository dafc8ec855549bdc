//! `rediss://`: the worker binary publishing over TLS to a `redis-server`
//! of the test's own (`--tls-port`, plain port off) whose certificate a CA
//! made at test time with the `openssl` CLI signed, trusted through
//! `PLANSYNC_REDIS_CA_FILE`; and a server certificate from another CA
//! refused with an error that names the URL (without its password) and the
//! setting to fix.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::deltas::commit_deletes;
use crate::harness::{eventually, stderr, SyncApp};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `<name>-ca.pem` and a server certificate it signed for 127.0.0.1 and
/// localhost, `<name>-server.pem` with its key `<name>-server.key`.
fn make_pki(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let cert = format!("{name}-server.pem");
    let ext = format!("{name}-ext.cnf");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let subject = format!("/CN=plansync test CA {name}");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca, "-subj", &subject]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
    let mut args = vec!["req", "-nodes"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// A `redis-server` speaking TLS only, on a free port.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl TlsRedis {
    /// Serves `cert`/`key`; `ca` is the CA file of the test's own clients.
    async fn start(dir: &Path, cert: &str, key: &str, ca: &Path) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join(cert))
            .arg("--tls-key-file")
            .arg(dir.join(key))
            .arg("--tls-ca-cert-file")
            .arg(dir.join(ca))
            .args(["--tls-auth-clients", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = TlsRedis { port, child };
        let client = server.client(ca);
        eventually(Duration::from_secs(10), "the TLS redis to answer", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await;
        server
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The test's own client, straight from the redis crate, trusting `ca`.
    fn client(&self, ca: &Path) -> redis::Client {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(ca).unwrap()),
        };
        redis::Client::build_with_tls(self.url(), certificates).unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this machine's redis-server was built with TLS (Debian's is).
fn redis_has_tls() -> bool {
    // With TLS built in, a TLS port without certificates fails to configure
    // TLS; without it, `tls-port` is a bad directive. Either way it exits.
    let out = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", "1"])
        .args([
            "--tls-cert-file",
            "/nonexistent",
            "--tls-key-file",
            "/nonexistent",
        ])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains("Failed to configure TLS"),
        Err(_) => false,
    }
}

async fn backlog(app: &SyncApp) -> i64 {
    app.status().await["outbox"]["backlog"].as_i64().unwrap()
}

#[tokio::test]
async fn the_worker_publishes_json_and_streams_over_tls_trusting_the_ca_file() {
    assert!(redis_has_tls(), "redis-server must be built with TLS");
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), "good");
    let ca = dir.path().join("good-ca.pem");
    let redis = TlsRedis::start(dir.path(), "good-server.pem", "good-server.key", &ca).await;
    let app = SyncApp::spawn().await;
    app.app.add_user(1).await;
    let prefix = &app.app.redis_prefix;
    let stream = format!("{prefix}stream");

    let mut pubsub = redis.client(&ca).get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{prefix}plan-deltas:user:1"))
        .await
        .unwrap();
    commit_deletes(&app.app, 1, &[5, 6]).await;
    let mut cmd = app.command();
    cmd.env("REDIS_URL", redis.url())
        .env("PLANSYNC_REDIS_CA_FILE", &ca)
        .env("PLANSYNC_DELTA_MODE", "json,streams")
        .env("PLANSYNC_SOCKETIO_STREAM", &stream);
    let out = crate::harness::run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert_eq!(backlog(&app).await, 0, "{}", stderr(&out));

    // json: the message on the user's channel, through TLS.
    let mut messages = pubsub.into_on_message();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the json message arrives")
        .unwrap();
    let json: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
    assert_eq!(json["userId"], 1);
    let versions: Vec<i64> = json["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);

    // streams: one entry in the adapter's format with the same deltas.
    let mut conn = redis
        .client(&ca)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let entry = &entries.ids[0];
    assert_eq!(entry.get::<String>("uid").as_deref(), Some("emitter"));
    assert_eq!(entry.get::<String>("type").as_deref(), Some("3"));
    let data: Value = serde_json::from_str(&entry.get::<String>("data").unwrap()).unwrap();
    assert_eq!(data["packet"]["data"][1], json!({"deltas": json["deltas"]}));
    assert_eq!(data["opts"]["rooms"], json!(["user:1"]));
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    assert!(redis_has_tls(), "redis-server must be built with TLS");
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), "good");
    make_pki(dir.path(), "other");
    let trusted = dir.path().join("good-ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    let redis = TlsRedis::start(
        dir.path(),
        "other-server.pem",
        "other-server.key",
        &other_ca,
    )
    .await;
    let app = SyncApp::spawn().await;
    app.app.add_user(1).await;
    commit_deletes(&app.app, 1, &[5]).await;

    let url = format!("rediss://:s3cr3t-pw@127.0.0.1:{}", redis.port);
    for mode in ["json", "streams"] {
        let mut cmd = app.command();
        cmd.env("REDIS_URL", &url)
            .env("PLANSYNC_REDIS_CA_FILE", &trusted)
            .env("PLANSYNC_DELTA_MODE", mode);
        let out = crate::harness::run_command(cmd, &["run", "--once"], "").await;
        // The pass itself ran; the backlog waits for a Redis it can trust.
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        let expected = format!("redis at rediss://:REDACTED@127.0.0.1:{}", redis.port);
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("TLS certificate that is not trusted"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(err.contains("PLANSYNC_REDIS_CA_FILE"), "{err}");
        assert!(!err.contains("s3cr3t-pw"), "{err}");
        assert_eq!(backlog(&app).await, 1);
    }
}
