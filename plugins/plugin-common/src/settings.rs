use crate::{is_http_url, NamedValue};

/// A channel's settings, as the host passes them: `(key, value)` pairs whose
/// non-string TOML values arrive in TOML text form (`true`, `42`).
#[derive(Debug, Clone, Default)]
pub struct Settings<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Settings<'a> {
    pub fn new<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        Settings {
            pairs: pairs.into_iter().collect(),
        }
    }

    /// Borrows owned pairs, e.g. from a test table.
    pub fn from_pairs(pairs: &'a [(String, String)]) -> Self {
        Self::new(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The value of `key`. A TOML table cannot repeat a key, but the WIT list
    /// can; the last one wins, as a later assignment would.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn get_or(&self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of a setting the plugin cannot work without. A blank value
    /// counts as missing: it is what an unset `${VAR:-}` expands to.
    pub fn required(&self, key: &str) -> Result<&'a str, String> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(format!("setting `{key}` is required")),
        }
    }

    /// The value of an optional setting; blank counts as unset, so
    /// `${VAR:-}` can switch a feature off.
    pub fn optional(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|v| !v.trim().is_empty())
    }

    /// A boolean setting: TOML `true`/`false`, or the same as a string.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key).map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!(
                "setting `{key}` must be true or false, not `{other}`"
            )),
        }
    }

    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32, String> {
        match self.get(key).map(str::trim) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                format!(
                    "setting `{key}` must be a whole number from 0 to {}, not `{v}`",
                    u32::MAX
                )
            }),
        }
    }

    /// An optional absolute http(s) URL, such as a status callback.
    pub fn optional_http_url(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.optional(key) {
            None => Ok(None),
            Some(url) if is_http_url(url) => Ok(Some(url)),
            Some(url) => Err(format!(
                "setting `{key}` must be an absolute http(s) URL, not `{url}`"
            )),
        }
    }

    /// `base_url` without a trailing `/`, else the vendor's `default`. The
    /// host passes one for every configured channel, and tests point it at a
    /// stand-in, so the default mostly serves `check-settings`.
    pub fn base_url_or(&self, default: &str) -> Result<String, String> {
        Ok(self
            .optional_http_url("base_url")?
            .map_or(default, |url| url.trim_end_matches('/'))
            .to_string())
    }
}

/// Settings as the host passed them, for the helpers here to read.
pub fn settings_of<S: NamedValue>(settings: &[S]) -> Settings<'_> {
    Settings::new(settings.iter().map(|s| (s.name(), s.value())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lookup_required_and_typed_values() {
        let owned = pairs(&[
            ("domain", "mg.example.com"),
            ("blank", "  "),
            ("flag", "true"),
            ("n", "7"),
            ("n", "8"),
        ]);
        let s = Settings::from_pairs(&owned);
        assert_eq!(s.get("domain"), Some("mg.example.com"));
        assert_eq!(s.get("nope"), None);
        assert_eq!(s.get_or("nope", "dflt"), "dflt");
        assert_eq!(s.required("domain"), Ok("mg.example.com"));
        assert_eq!(
            s.required("from"),
            Err("setting `from` is required".to_string())
        );
        assert_eq!(
            s.required("blank"),
            Err("setting `blank` is required".to_string())
        );
        assert_eq!(s.bool_or("flag", false), Ok(true));
        assert_eq!(s.bool_or("absent", true), Ok(true));
        assert!(s
            .bool_or("domain", false)
            .expect_err("an error")
            .contains("`domain` must be true or false"));
        assert_eq!(s.u32_or("n", 3), Ok(8), "the last duplicate wins");
        assert_eq!(s.u32_or("absent", 3), Ok(3));
        assert!(s
            .u32_or("flag", 3)
            .expect_err("an error")
            .contains("`flag` must be a whole number"));
    }

    #[test]
    fn builds_from_borrowed_pairs() {
        let s = Settings::new([("a", "1")]);
        assert_eq!(s.get("a"), Some("1"));
        let named = [("a", "1"), ("a", "2")];
        assert_eq!(settings_of(&named).get("a"), Some("2"));
    }

    #[test]
    fn urls_and_the_base_url() {
        let owned = pairs(&[
            ("base_url", "http://127.0.0.1:8080//"),
            ("status_callback", "/callback"),
            ("blank", " "),
        ]);
        let s = Settings::from_pairs(&owned);
        assert_eq!(
            s.optional_http_url("base_url"),
            Ok(Some("http://127.0.0.1:8080//"))
        );
        assert_eq!(s.optional_http_url("blank"), Ok(None));
        assert_eq!(
            s.optional_http_url("status_callback"),
            Err(
                "setting `status_callback` must be an absolute http(s) URL, not `/callback`"
                    .to_string()
            )
        );
        assert_eq!(
            s.base_url_or("https://api.example.com"),
            Ok("http://127.0.0.1:8080".to_string())
        );
        assert_eq!(
            Settings::default().base_url_or("https://api.example.com"),
            Ok("https://api.example.com".to_string())
        );
        let bad = pairs(&[("base_url", "api.example.com")]);
        assert_eq!(
            Settings::from_pairs(&bad).base_url_or("https://api.example.com"),
            Err(
                "setting `base_url` must be an absolute http(s) URL, not `api.example.com`"
                    .to_string()
            )
        );
    }
}
