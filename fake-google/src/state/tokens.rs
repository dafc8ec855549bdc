//! Sync and page tokens: opaque to clients, a snapshot of the change
//! sequence to us. A sync token names its calendar and the sequence number a
//! listing started at; a page token carries the same snapshot and the sort
//! key of the last item served (a keyset cursor).

use base64::Engine;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(super) fn encode_sync_token(calendar: &str, seq: u64) -> String {
    B64.encode(format!("s1|{seq}|{calendar}"))
}

pub(super) fn decode_sync_token(token: &str) -> Option<(u64, String)> {
    let text = String::from_utf8(B64.decode(token).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "s1").then_some(())?;
    let seq = parts.next()?.parse().ok()?;
    Some((seq, parts.next()?.to_owned()))
}

pub(super) fn encode_page_token(snapshot: u64, key: &str) -> String {
    B64.encode(format!("p1|{snapshot}|{key}"))
}

pub(super) fn decode_page_token(token: &str) -> Option<(u64, String)> {
    let text = String::from_utf8(B64.decode(token).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "p1").then_some(())?;
    let snapshot = parts.next()?.parse().ok()?;
    Some((snapshot, parts.next()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            decode_sync_token(&encode_sync_token("a@b", 42)),
            Some((42, "a@b".into()))
        );
        assert_eq!(
            decode_page_token(&encode_page_token(7, "k:1|x")),
            Some((7, "k:1|x".into()))
        );
        assert_eq!(decode_sync_token("garbage"), None);
    }
}
