//! Opaque list cursors: a position (list ids below it) bound to the filter
//! it was made for, with a keyed checksum so that a cursor edited by hand,
//! or reused with other filters, is refused instead of silently listing
//! something else.
//!
//! The ids are assigned in creation order and never change, so a walk from
//! cursor to cursor sees every record that existed when it began exactly
//! once, however many arrive meanwhile (new ones get larger ids, above the
//! walk).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::Filter;

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 8 + 16;

fn fingerprint(filter: &Filter) -> [u8; 8] {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        filter.channel,
        filter.state.map(|s| s.as_str()),
        filter.purpose.map(|p| p.as_str()),
        filter.since.map(|t| t.timestamp_micros()),
        filter.until.map(|t| t.timestamp_micros()),
    );
    let digest = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(body);
    h.update(key);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The cursor for "ids below `before`" under `filter`.
pub fn encode(key: &[u8; 32], filter: &Filter, before: u64) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&before.to_be_bytes());
    bytes.extend_from_slice(&fingerprint(filter));
    let tag = mac(key, &bytes);
    bytes.extend_from_slice(&tag);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The position in `cursor`, or why it is refused (a sentence for a 400).
pub fn decode(key: &[u8; 32], filter: &Filter, cursor: &str) -> Result<u64, String> {
    const NOT_OURS: &str =
        "not a cursor this server issued (pass `next_cursor` from the previous page unchanged)";
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| NOT_OURS.to_string())?;
    if bytes.len() != LEN || bytes[0] != VERSION {
        return Err(NOT_OURS.to_string());
    }
    let (body, tag) = bytes.split_at(LEN - 16);
    if mac(key, body) != tag {
        return Err(NOT_OURS.to_string());
    }
    if body[9..17] != fingerprint(filter) {
        return Err(
            "this cursor belongs to a list with other filters; repeat the filters of the first page"
                .to_string(),
        );
    }
    let mut before = [0u8; 8];
    before.copy_from_slice(&body[1..9]);
    Ok(u64::from_be_bytes(before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::State;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let key = [7u8; 32];
        let filter = Filter {
            channel: Some("sms".into()),
            ..Filter::default()
        };
        let c = encode(&key, &filter, 4242);
        assert_eq!(decode(&key, &filter, &c), Ok(4242));

        // Every single-character change is refused.
        let chars: Vec<char> = c.chars().collect();
        for i in 0..chars.len() {
            let mut edited = chars.clone();
            edited[i] = if edited[i] == 'A' { 'B' } else { 'A' };
            let edited: String = edited.into_iter().collect();
            assert!(decode(&key, &filter, &edited).is_err(), "edit at {i}");
        }
        // Another ledger's key, other filters, garbage.
        assert!(decode(&[8u8; 32], &filter, &c).is_err());
        let other = Filter {
            state: Some(State::Held),
            ..filter.clone()
        };
        let err = decode(&key, &other, &c).expect_err("other filters");
        assert!(err.contains("other filters"), "{err}");
        assert!(decode(&key, &filter, "").is_err());
        assert!(decode(&key, &filter, "not base64!").is_err());
    }
}
