//! The `streams` delta format: entries of the Redis stream that
//! `@socket.io/redis-streams-adapter` reads, written exactly as one of its
//! Socket.IO server nodes writes `io.to("user:<id>").emit("plan:item-delta",
//! {deltas})`, so stock servers deliver them and replay them on connection
//! state recovery.
//!
//! The format, from the adapter's source (0.3.x, `RedisStreamsAdapter#encode`
//! over socket.io-adapter 2.5's `ClusterAdapter#broadcast`): one `XADD <stream>
//! MAXLEN ~ <n> *` with four string fields
//! - `uid`: `emitter`, the uid `ClusterAdapterWithHeartbeat` never counts as a
//!   peer node (so servers neither track nor time out the worker);
//! - `nsp`: `/`;
//! - `type`: `3`, `MessageType.BROADCAST` in decimal (recovery replays only
//!   entries whose type is the string `"3"`);
//! - `data`: `JSON.stringify({packet, opts})` with the packet `{type: 2
//!   (EVENT), data: [event, payload]}` and the options as `encodeOptions`
//!   writes them, `{rooms, except, flags}`. The adapter JSON-parses a `data`
//!   that starts with `{` (base64 msgpack is only for binary payloads).
//!
//! Each server appends the entry id to the packet's data as the offset a
//! client reports when it reconnects; `restoreSession` then replays the
//! entries after it whose rooms the client's session had joined.
//!
//! Guarantee: the entry carries the same deltas, in the same order, as the
//! `json` message of the same group; deltas are spliced as the outbox keeps
//! them (JSON text from a `jsonb` column), not parsed again.

use super::EVENT_NAME;
use crate::ids::UserId;

/// The adapter's uid for messages that come from no server node.
pub const EMITTER_UID: &str = "emitter";
/// The default namespace, the only one the worker writes to.
pub const NAMESPACE: &str = "/";
/// `MessageType.BROADCAST` of socket.io-adapter, as the string the adapter
/// stores.
pub const BROADCAST_TYPE: &str = "3";

/// The `data` field of the entry for `deltas` of `user`.
pub fn entry_data_raw(user: UserId, deltas: &[&str]) -> Vec<u8> {
    let len: usize = deltas.iter().map(|d| d.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 128);
    out.extend_from_slice(b"{\"packet\":{\"type\":2,\"data\":[");
    // Event names and rooms are fixed ASCII without quotes or escapes.
    out.extend_from_slice(format!("\"{EVENT_NAME}\",{{\"deltas\":[").as_bytes());
    for (i, delta) in deltas.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(delta.as_bytes());
    }
    out.extend_from_slice(
        format!("]}}]}},\"opts\":{{\"rooms\":[\"user:{user}\"],\"except\":[],\"flags\":{{}}}}}}")
            .as_bytes(),
    );
    out
}

/// The entry's fields in the order the adapter writes them.
pub fn entry_fields(data: Vec<u8>) -> [(&'static str, Vec<u8>); 4] {
    [
        ("uid", EMITTER_UID.as_bytes().to_vec()),
        ("nsp", NAMESPACE.as_bytes().to_vec()),
        ("type", BROADCAST_TYPE.as_bytes().to_vec()),
        ("data", data),
    ]
}

/// Appends the entry for one group to `pipe`: `XADD stream MAXLEN ~ maxlen *
/// uid emitter nsp / type 3 data {...}`.
pub fn xadd(pipe: &mut redis::Pipeline, stream: &str, maxlen: u64, user: UserId, deltas: &[&str]) {
    let cmd = pipe
        .cmd("XADD")
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*");
    for (field, value) in entry_fields(entry_data_raw(user, deltas)) {
        cmd.arg(field).arg(value);
    }
    cmd.ignore();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deltas::PlanItemDelta;
    use crate::ids::AppointmentId;

    #[test]
    fn data_is_the_adapters_broadcast_message() {
        let deltas = [
            PlanItemDelta::appointment_deleted(AppointmentId(9), 3),
            PlanItemDelta::plan_updated(4),
        ];
        let raw: Vec<String> = deltas
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        let data = entry_data_raw(UserId(5), &raw);
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "packet": {"type": 2, "data": ["plan:item-delta", {"deltas": [
                    {"itemType": "appointment", "entityId": 9, "action": "deleted",
                     "version": 3, "source": "google"},
                    {"itemType": "plan", "entityId": 0, "action": "updated",
                     "version": 4, "source": "google"}
                ]}]},
                "opts": {"rooms": ["user:5"], "except": [], "flags": {}}
            })
        );
        // The adapter picks JSON over base64 msgpack by the first byte, and
        // the key order is that of JSON.stringify on a server node.
        assert!(data.starts_with(b"{\"packet\":{\"type\":2,\"data\":[\"plan:item-delta\","));
        let fields = entry_fields(data);
        let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
        assert_eq!(names, ["uid", "nsp", "type", "data"]);
        assert_eq!(fields[0].1, b"emitter");
        assert_eq!(fields[2].1, b"3");
    }
}
