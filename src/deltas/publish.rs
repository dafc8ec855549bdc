//! The Redis side of delta delivery: channel names, the two wire formats and
//! a pipelined publisher.
//!
//! `json` publishes `{"userId":<id>,"deltas":[...]}` on
//! `{PLANSYNC_REDIS_PREFIX}plan-deltas:user:<id>`. `socketio` publishes what
//! `@socket.io/redis-emitter` would: msgpack of `["emitter", packet, opts]`
//! (maps with field names) on `{PLANSYNC_SOCKETIO_KEY}#/#user:<id>#`, which a
//! stock Socket.IO server with `@socket.io/redis-adapter` delivers to the
//! room `user:<id>` as `plan:item-delta` with no glue code. `streams` appends
//! the same to the stream of `@socket.io/redis-streams-adapter` (see
//! [`super::streams`]). A mode may combine several formats; each group goes
//! out in every one of them within the same pipeline.
//!
//! [`Publisher`] connects lazily and drops its connection on any error, so a
//! Redis that went away and came back is picked up on the next attempt
//! without a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::Serialize;

use super::connect::{self, is_untrusted_certificate, ConnectError};
use super::streams::{self, EMITTER_UID};
use super::{PlanItemDelta, PlanItemDeltaPayload, UserDeltaMessage};
use crate::config::{redacted_url, RedisSettings};
use crate::ids::UserId;

pub use super::EVENT_NAME;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis is unreachable or failed the command: back off and try again;
    /// the outbox keeps everything meanwhile.
    #[error("redis at {url} is unavailable")]
    Unavailable {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The `rediss://` server's certificate failed verification: retrying
    /// helps only once someone fixes the CA or the server, so the message
    /// says where the trust comes from. The outbox keeps everything meanwhile.
    #[error(
        "redis at {url} presented a TLS certificate that is not trusted: \
         its CA must be in the system roots or in PLANSYNC_REDIS_CA_FILE"
    )]
    UntrustedCertificate {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The settings cannot make a Redis client: fix them.
    #[error(transparent)]
    Config(#[from] ConnectError),
    /// An outbox row is not valid JSON: only a hand-edited row can do this.
    #[error("an outbox row is not valid JSON")]
    Corrupt(#[source] serde_json::Error),
}

impl PublishError {
    /// Classifies a failed connection or command on the server at `url`
    /// (already redacted).
    fn redis(url: &str, source: redis::RedisError) -> PublishError {
        let url = url.to_owned();
        if is_untrusted_certificate(&source) {
            PublishError::UntrustedCertificate { url, source }
        } else {
            PublishError::Unavailable { url, source }
        }
    }
}

pub fn json_channel(prefix: &str, user: UserId) -> String {
    format!("{prefix}plan-deltas:user:{user}")
}

pub fn socketio_channel(key: &str, user: UserId) -> String {
    format!("{key}#/#{}#", room(user))
}

fn room(user: UserId) -> String {
    format!("user:{user}")
}

/// The JSON message from deltas already serialized (as the outbox keeps
/// them), spliced without parsing them again.
pub fn json_message_raw(user: UserId, deltas: &[&str]) -> Vec<u8> {
    let len: usize = deltas.iter().map(|d| d.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(format!("{{\"userId\":{user},\"deltas\":[").as_bytes());
    for (i, delta) in deltas.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(delta.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

pub fn json_message(user: UserId, deltas: &[PlanItemDelta]) -> Vec<u8> {
    serde_json::to_vec(&UserDeltaMessage {
        user_id: user,
        deltas: deltas.to_vec(),
    })
    .expect("deltas serialize")
}

#[derive(Serialize)]
struct EmitterPacket<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: u8,
    data: (&'static str, &'a P),
    nsp: &'static str,
}

#[derive(Serialize)]
struct EmitterOptions {
    rooms: Vec<String>,
    flags: BTreeMap<String, bool>,
    except: Vec<String>,
}

/// Socket.IO's packet type for an event.
const PACKET_EVENT: u8 = 2;

pub fn socketio_message(user: UserId, deltas: &[PlanItemDelta]) -> Vec<u8> {
    emitter_message(
        user,
        &PlanItemDeltaPayload {
            deltas: deltas.to_vec(),
        },
    )
}

/// The emitter message from deltas as the outbox keeps them (JSON text).
pub fn socketio_message_raw(user: UserId, deltas: &[&str]) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Payload {
        deltas: Vec<serde_json::Value>,
    }
    let deltas = deltas
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()?;
    Ok(emitter_message(user, &Payload { deltas }))
}

fn emitter_message<P: Serialize>(user: UserId, payload: &P) -> Vec<u8> {
    let message = (
        EMITTER_UID,
        EmitterPacket {
            kind: PACKET_EVENT,
            data: (EVENT_NAME, payload),
            nsp: "/",
        },
        EmitterOptions {
            rooms: vec![room(user)],
            flags: BTreeMap::new(),
            except: Vec::new(),
        },
    );
    rmp_serde::to_vec_named(&message).expect("deltas serialize to msgpack")
}

/// Publishes batches of deltas, one pipeline per call.
pub struct Publisher {
    settings: RedisSettings,
    /// `settings.url` without its password, for errors.
    url: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl Publisher {
    pub fn new(settings: RedisSettings) -> Result<Self, PublishError> {
        let client = connect::client(&settings)?;
        Ok(Publisher {
            url: redacted_url(&settings.url),
            settings,
            client,
            conn: None,
        })
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, PublishError> {
        if self.conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_secs(5));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| PublishError::redis(&self.url, e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Publishes each (user, deltas) group in the configured format(s), in
    /// order, in one round trip. Deltas are JSON text as the outbox keeps them.
    pub async fn publish(&mut self, groups: &[(UserId, Vec<&str>)]) -> Result<(), PublishError> {
        if groups.is_empty() {
            return Ok(());
        }
        let mode = self.settings.delta_mode;
        let mut pipe = redis::pipe();
        for (user, deltas) in groups {
            if mode.json() {
                pipe.publish(
                    json_channel(&self.settings.prefix, *user),
                    json_message_raw(*user, deltas),
                )
                .ignore();
            }
            if mode.socketio() {
                let message = socketio_message_raw(*user, deltas).map_err(PublishError::Corrupt)?;
                pipe.publish(
                    socketio_channel(&self.settings.socketio_key, *user),
                    message,
                )
                .ignore();
            }
            if mode.streams() {
                streams::xadd(
                    &mut pipe,
                    &self.settings.socketio_stream,
                    self.settings.socketio_stream_maxlen,
                    *user,
                    deltas,
                );
            }
        }
        let conn = self.connection().await?;
        let result: Result<(), redis::RedisError> = pipe.query_async(conn).await;
        if let Err(err) = result {
            // A broken connection is not reused: the next attempt reconnects.
            self.conn = None;
            return Err(PublishError::redis(&self.url, err));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AppointmentId;

    #[test]
    fn channel_names_follow_the_contract() {
        assert_eq!(json_channel("t1:", UserId(5)), "t1:plan-deltas:user:5");
        assert_eq!(
            socketio_channel("socket.io", UserId(5)),
            "socket.io#/#user:5#"
        );
    }

    #[test]
    fn socketio_message_is_the_emitter_wire_format() {
        let deltas = vec![PlanItemDelta::appointment_deleted(AppointmentId(9), 3)];
        let bytes = socketio_message(UserId(5), &deltas);
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                "emitter",
                {"type": 2, "data": ["plan:item-delta", {"deltas": [
                    {"itemType": "appointment", "entityId": 9, "action": "deleted",
                     "version": 3, "source": "google"}
                ]}], "nsp": "/"},
                {"rooms": ["user:5"], "flags": {}, "except": []}
            ])
        );
        // Maps carry field names (fixmap 0x8N with a "type" key), not arrays.
        assert!(bytes.windows(4).any(|w| w == b"type"));
    }

    #[test]
    fn raw_messages_equal_the_typed_ones() {
        let deltas = vec![
            PlanItemDelta::appointment_deleted(AppointmentId(9), 3),
            PlanItemDelta::plan_updated(4),
        ];
        let raw: Vec<String> = deltas
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        assert_eq!(
            json_message_raw(UserId(5), &raw),
            json_message(UserId(5), &deltas)
        );
        // Same content; map keys may come out in another order.
        let decode = |bytes: Vec<u8>| rmp_serde::from_slice::<serde_json::Value>(&bytes).unwrap();
        assert_eq!(
            decode(socketio_message_raw(UserId(5), &raw).unwrap()),
            decode(socketio_message(UserId(5), &deltas))
        );
    }

    #[test]
    fn json_message_names_the_user() {
        let deltas = vec![PlanItemDelta::plan_updated(4)];
        assert_eq!(
            String::from_utf8(json_message(UserId(5), &deltas)).unwrap(),
            r#"{"userId":5,"deltas":[{"itemType":"plan","entityId":0,"action":"updated","version":4,"source":"google"}]}"#
        );
    }
}
