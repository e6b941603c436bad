//! Request signatures for `auth = { type = "hmac" }`: the host, never the
//! plugin, signs what it sends, with a secret the plugin never sees.
//!
//! Invariant: the signature is computed at each send, over the exact body
//! that goes out and the time of that send, so a retry an hour later carries
//! a fresh timestamp a receiver's replay window accepts.
//!
//! The scheme (the receiver's side is in README, "Signed webhooks"):
//! `X-Notify-Timestamp: <unix seconds>` and
//! `X-Notify-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::config::Secret;

/// A channel's signing key and header names, carried by each prepared
/// request of the channel.
#[derive(Clone)]
pub(crate) struct Signer {
    pub(crate) secret: Secret,
    pub(crate) header: HeaderName,
    pub(crate) timestamp_header: HeaderName,
}

/// `sha256=<hex>` over `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length (RFC 2104): this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Signer {
    /// Adds the timestamp and signature headers for a send at `now_unix_s`.
    pub(crate) fn sign(&self, headers: &mut HeaderMap, body: &[u8], now_unix_s: u64) {
        let signature = signature(self.secret.expose().as_bytes(), now_unix_s, body);
        // Both are ASCII digits and hex: valid header values.
        if let (Ok(ts), Ok(mut sig)) = (
            HeaderValue::from_str(&now_unix_s.to_string()),
            HeaderValue::from_str(&signature),
        ) {
            sig.set_sensitive(true);
            headers.insert(self.timestamp_header.clone(), ts);
            headers.insert(self.header.clone(), sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec-test",
        //   b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"whsec-test", 1_700_000_000, br#"{"a":1}"#),
            "sha256=fed7a1a6c799a6367d73724d76bc70c16678908a32a879cd1ded6565ac05cece"
        );
    }

    #[test]
    fn time_and_body_both_change_the_signature() {
        let a = signature(b"k", 1, b"body");
        assert_ne!(a, signature(b"k", 2, b"body"));
        assert_ne!(a, signature(b"k", 1, b"bodz"));
        assert_ne!(a, signature(b"j", 1, b"body"));
    }
}
