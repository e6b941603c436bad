//! Scrubbing of credentials out of text that could carry them away: provider
//! answers before a plugin sees them, every string a plugin hands back, CLI
//! output, and every log line.
//!
//! Invariant: text that went through [`Secrets::scrub`] contains none of the
//! set's secret *forms*; each occurrence became [`REDACTED`]. The forms of a
//! credential are what a provider, a proxy or a plugin could plausibly
//! reflect: the value itself; for Basic auth also `username:password` and its
//! base64 (the `Authorization` header's payload); and each of these
//! percent-encoded (form and strict style) and JSON-escaped.
//!
//! What is not a secret: a Basic `username`. It is an account identifier
//! (Mailgun's is literally `api`; Twilio's account SID is in every request
//! URL), and scrubbing it would shred URLs and provider bodies while hiding
//! nothing that authenticates anyone.
//!
//! Short values: a credential shorter than [`MIN_SECRET_LEN`] bytes cannot be
//! scrubbed as a substring without shredding ordinary text (a secret `a`
//! would cut every word with an `a`), and not scrubbing it would let it leak.
//! So config validation refuses such a credential on an enabled channel
//! (every real provider key is 32+ characters), and a shorter value that
//! still reaches [`Secrets::new`] (a disabled channel's) is left out.
//!
//! [`known`] is the process-wide set: [`crate::config::parse`] adds every
//! configured credential (all channels) when it produces a [`Config`], and
//! nothing is ever removed (as a CI runner's secret masker works). The log
//! writer and the plugin boundary read it, so neither needs the config
//! threaded through to it.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

use crate::config::{Auth, Config};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Credentials shorter than this are refused at config load (see the module
/// doc): 8 bytes is below any real API key or token, and a run of 8 given
/// characters is rare enough in log text that scrubbing it costs nothing.
pub const MIN_SECRET_LEN: usize = 8;

/// A set of secret forms, matched in one pass (Aho-Corasick, leftmost
/// longest, so `user:password` wins over `password` inside it).
/// Cheap to clone (one `Arc`): the log writer takes one per line.
#[derive(Clone, Default)]
pub struct Secrets(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Sorted, without duplicates.
    forms: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} forms, [redacted])", self.0.forms.len())
    }
}

impl Secrets {
    /// The set of every form of every value in `values`; values shorter
    /// than [`MIN_SECRET_LEN`] are left out.
    pub fn new<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Secrets {
        let mut forms: Vec<String> = values
            .into_iter()
            .filter(|v| v.as_ref().len() >= MIN_SECRET_LEN)
            .flat_map(|v| encodings(v.as_ref()))
            .collect();
        forms.sort();
        forms.dedup();
        Secrets::from_forms(forms)
    }

    fn from_forms(forms: Vec<String>) -> Secrets {
        let matcher = if forms.is_empty() {
            None
        } else {
            // Building fails only past the automaton's size limits, far
            // beyond a config's handful of credentials; without a matcher
            // the set would scrub nothing, so fail closed instead: the
            // caller's text is replaced whole (see `scrub`).
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&forms)
                .ok()
        };
        Secrets(Arc::new(Inner { forms, matcher }))
    }

    /// The secret values of one channel's auth (before encoding).
    pub fn values_of(auth: &Auth) -> Vec<String> {
        match auth {
            Auth::None => Vec::new(),
            Auth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                // Padded as sent; unpadded as some servers echo it back.
                let header = base64::engine::general_purpose::STANDARD.encode(&pair);
                let unpadded = header.trim_end_matches('=').to_string();
                let mut values = vec![password.expose().to_string(), pair, header, unpadded];
                // A short password would make the pair short too: leave both
                // out, as `new` does for any short value.
                if password.expose().len() < MIN_SECRET_LEN {
                    values.clear();
                }
                values
            }
            Auth::Bearer { token } => vec![token.expose().to_string()],
            Auth::Header { value, .. } => vec![value.expose().to_string()],
            Auth::Hmac { secret, .. } => vec![secret.expose().to_string()],
        }
    }

    /// One channel's credentials.
    pub fn of_auth(auth: &Auth) -> Secrets {
        Secrets::new(Secrets::values_of(auth))
    }

    /// Every channel's credentials, enabled or not.
    pub fn of_config(config: &Config) -> Secrets {
        Secrets::new(
            config
                .channels
                .values()
                .flat_map(|c| Secrets::values_of(&c.auth))
                .chain(config.admin_token.as_ref().map(|t| t.expose().to_string()))
                .chain(Secrets::of_ledger(&config.ledger.backend)),
        )
    }

    /// The database URL and its password (a driver's error may quote either).
    fn of_ledger(backend: &crate::config::LedgerBackend) -> Vec<String> {
        let crate::config::LedgerBackend::Postgres(pg) = backend else {
            return Vec::new();
        };
        let url = pg.url.expose();
        let mut values = vec![url.to_string()];
        if let Ok(parsed) = url::Url::parse(url) {
            if let Some(p) = parsed.password() {
                values.push(p.to_string());
                // As typed, and as decoded.
                if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
                    values.push(decoded.into_owned());
                }
            }
            for (k, v) in parsed.query_pairs() {
                if k.eq_ignore_ascii_case("password") {
                    values.push(v.into_owned());
                }
            }
        }
        values
    }

    /// This set and `other`'s.
    pub fn union(&self, other: &Secrets) -> Secrets {
        let mut forms = self.0.forms.clone();
        forms.extend(other.0.forms.iter().cloned());
        forms.sort();
        forms.dedup();
        Secrets::from_forms(forms)
    }

    pub fn is_empty(&self) -> bool {
        self.0.forms.is_empty()
    }

    /// Whether every form of `other` is in this set.
    pub fn covers(&self, other: &Secrets) -> bool {
        other
            .0
            .forms
            .iter()
            .all(|f| self.0.forms.binary_search(f).is_ok())
    }

    /// `text` with every secret form replaced by [`REDACTED`]. Borrows when
    /// nothing matched, the common case.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.0.forms.is_empty() {
            return Cow::Borrowed(text);
        }
        let Some(matcher) = &self.0.matcher else {
            return Cow::Owned(REDACTED.to_string());
        };
        if matcher.find(text).is_none() {
            return Cow::Borrowed(text);
        }
        let replacements = vec![REDACTED; self.0.forms.len()];
        Cow::Owned(matcher.replace_all(text, &replacements))
    }

    /// [`Secrets::scrub`] for bytes (a provider body need not be UTF-8).
    pub fn scrub_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.0.forms.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let Some(matcher) = &self.0.matcher else {
            return Cow::Owned(REDACTED.as_bytes().to_vec());
        };
        if matcher.find(bytes).is_none() {
            return Cow::Borrowed(bytes);
        }
        let replacements = vec![REDACTED.as_bytes(); self.0.forms.len()];
        Cow::Owned(matcher.replace_all_bytes(bytes, &replacements))
    }
}

/// The forms of one value that could come back: itself, percent-encoded as
/// a form body does (`+` for space) and strictly (`%20`, every byte but
/// letters and digits), with upper- and lower-case hex, and JSON-escaped.
fn encodings(value: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let strict = percent_encode_strict(value);
    let json = serde_json::to_string(value)
        .map(|q| q[1..q.len() - 1].to_string())
        .unwrap_or_else(|_| value.to_string());
    let mut out = vec![
        value.to_string(),
        form.clone(),
        form.to_ascii_lowercase_hex(),
        strict.clone(),
        strict.to_ascii_lowercase_hex(),
        json,
    ];
    out.sort();
    out.dedup();
    out
}

fn percent_encode_strict(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

trait LowerHex {
    fn to_ascii_lowercase_hex(&self) -> String;
}

impl LowerHex for String {
    /// `%2B` → `%2b`; the rest unchanged.
    fn to_ascii_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut escape = 0;
        for c in self.chars() {
            if c == '%' {
                escape = 2;
                out.push(c);
            } else if escape > 0 {
                escape -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

static KNOWN: LazyLock<RwLock<Secrets>> = LazyLock::new(|| RwLock::new(Secrets::default()));

/// Every credential configured in this process so far.
pub fn known() -> Secrets {
    match KNOWN.read() {
        Ok(s) => s.clone(),
        // A writer panicked mid-update: the old set is still whole.
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Adds `secrets` to [`known`].
pub fn register(secrets: &Secrets) {
    if secrets.is_empty() || known().covers(secrets) {
        return;
    }
    let mut guard = match KNOWN.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    *guard = guard.union(secrets);
}

/// `text` cut to at most `max` bytes on a character boundary, with a marker
/// saying so when anything was cut.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("… [cut at {max} bytes]"));
    text
}

/// A string a plugin handed back, made safe to log, dead-letter and print:
/// every known credential scrubbed, then cut to `max` bytes. Scrubbing
/// comes first, so a cut can never leave half a secret behind.
pub fn plugin_text(text: String, max: usize) -> String {
    let scrubbed = match known().scrub(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    };
    cut(scrubbed, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn every_form_of_a_credential_is_scrubbed() {
        let auth = Auth::Basic {
            username: "api".into(),
            password: Secret::new("key-s3cr3t+/ value"),
        };
        let s = Secrets::of_auth(&auth);
        let b64 = base64::engine::general_purpose::STANDARD.encode("api:key-s3cr3t+/ value");
        let cases = [
            ("raw key-s3cr3t+/ value end", "raw [redacted] end"),
            ("pair api:key-s3cr3t+/ value", "pair [redacted]"),
            (
                &*format!("Authorization: Basic {b64}"),
                "Authorization: Basic [redacted]",
            ),
            ("form key-s3cr3t%2B%2F+value", "form [redacted]"),
            ("lower key-s3cr3t%2b%2f+value", "lower [redacted]"),
            ("strict key%2Ds3cr3t%2B%2F%20value", "strict [redacted]"),
            // The username alone is an account id, not a credential.
            ("user api here", "user api here"),
            ("nothing to see", "nothing to see"),
        ];
        for (input, want) in cases {
            assert_eq!(s.scrub(input), want, "{input}");
            assert_eq!(
                &*s.scrub_bytes(input.as_bytes()),
                want.as_bytes(),
                "{input}"
            );
        }
        let json = Secrets::new(["tok\"en\\with-quotes"]);
        assert_eq!(
            json.scrub(r#"{"t":"tok\"en\\with-quotes"}"#),
            r#"{"t":"[redacted]"}"#
        );
    }

    #[test]
    fn short_values_are_never_substrings_to_scrub() {
        let cases: &[(Auth, bool)] = &[
            (
                Auth::Bearer {
                    token: Secret::new("a"),
                },
                false,
            ),
            (
                Auth::Bearer {
                    token: Secret::new("1234567"),
                },
                false,
            ),
            (
                Auth::Bearer {
                    token: Secret::new("12345678"),
                },
                true,
            ),
            (
                Auth::Basic {
                    username: "longusername".into(),
                    password: Secret::new("pw"),
                },
                false,
            ),
            (Auth::None, false),
        ];
        for (auth, scrubbed) in cases {
            assert_eq!(!Secrets::of_auth(auth).is_empty(), *scrubbed, "{auth:?}");
        }
        assert_eq!(Secrets::new(["a"]).scrub("a banana"), "a banana");
    }

    #[test]
    fn debug_shows_no_value() {
        let s = Secrets::new(["super-secret-value"]);
        assert!(!format!("{s:?}").contains("super"));
    }

    #[test]
    fn cut_keeps_characters_whole_and_says_so() {
        let cases = [
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("abcdefghijk", 10, "abcdefghij… [cut at 10 bytes]"),
            // `é` is two bytes; byte 2 falls inside the second one.
            ("ééé", 3, "é… [cut at 3 bytes]"),
            ("💥💥", 5, "💥… [cut at 5 bytes]"),
            ("💥", 3, "… [cut at 3 bytes]"),
        ];
        for (input, max, want) in cases {
            assert_eq!(cut(input.to_string(), max), want, "{input} at {max}");
        }
    }

    #[test]
    fn registered_secrets_are_known_and_scrubbed_from_plugin_text() {
        register(&Secrets::new(["registered-secret-9f8e"]));
        assert_eq!(
            plugin_text("echo: registered-secret-9f8e!".into(), 1024),
            "echo: [redacted]!"
        );
        // Scrubbed before the cut: no prefix of the secret survives.
        let cut_text = plugin_text("0123 registered-secret-9f8e".into(), 12);
        assert!(!cut_text.contains("regis"), "{cut_text}");
    }
}
