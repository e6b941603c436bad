//! Turning a rendered request into an [`OutboundRequest`]: the caps, the
//! channel's allow-lists (host, path, method), the reserved headers, auth.
//!
//! Invariant: every count and size a plugin controls is checked against
//! `[plugins.caps]` before anything is built from it (a request with 24,600
//! headers is refused by counting, not by allocating a header map first), and
//! every URL, method and header is built with a fallible call whose failure
//! is a [`Refusal`]: plugin output never panics the host.

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use url::Url;

use super::signing::Signer;
use super::{shown, OutboundRequest, Refusal};
use crate::config::{Auth, ChannelConfig, OutputCaps};
use crate::plugin::{Header, HttpRequest};

/// Headers the host owns: a plugin setting them could smuggle a request or
/// redirect it to another virtual host.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

/// How often a path segment is percent-decoded when looking for a hidden
/// `..` or `/`: a server or proxy that decodes twice would see through one
/// round (`%252e%252e`); three covers every decoder met in practice.
const DECODE_ROUNDS: usize = 3;

/// One of `[plugins.caps]` that bounds a rendered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    RequestsPerRender,
    HeadersPerRequest,
    HeaderBytes,
    UrlBytes,
    BodyBytes,
}

impl Cap {
    /// The config key that sets it, for the operator who hits it.
    pub fn key(self) -> &'static str {
        match self {
            Cap::RequestsPerRender => "plugins.caps.requests_per_render",
            Cap::HeadersPerRequest => "plugins.caps.headers_per_request",
            Cap::HeaderBytes => "plugins.caps.header_bytes",
            Cap::UrlBytes => "plugins.caps.url_bytes",
            Cap::BodyBytes => "plugins.caps.body_kib",
        }
    }

    pub(super) fn describe(self, found: usize, limit: usize) -> String {
        let key = self.key();
        match self {
            Cap::RequestsPerRender => {
                format!("render returned {found} requests, over the cap of {limit} ({key})")
            }
            Cap::HeadersPerRequest => {
                format!("request has {found} headers, over the cap of {limit} ({key})")
            }
            Cap::HeaderBytes => format!(
                "request headers are {found} bytes (names and values), over the cap of {limit} ({key})"
            ),
            Cap::UrlBytes => {
                format!("request URL is {found} bytes, over the cap of {limit} ({key})")
            }
            Cap::BodyBytes => format!(
                "request body is {found} bytes, over the cap of {limit} bytes ({key} = {})",
                limit / 1024
            ),
        }
    }
}

fn over(cap: Cap, found: usize, limit: usize) -> Result<(), Refusal> {
    if found > limit {
        Err(Refusal::OverCap { cap, found, limit })
    } else {
        Ok(())
    }
}

/// The render-wide cap: checked on the list before any request is prepared.
pub(crate) fn check_request_count(caps: &OutputCaps, count: usize) -> Result<(), Refusal> {
    over(Cap::RequestsPerRender, count, caps.requests_per_render)
}

/// Sizes of one request, all known without building anything.
fn check_caps(caps: &OutputCaps, request: &HttpRequest) -> Result<(), Refusal> {
    over(Cap::UrlBytes, request.url.len(), caps.url_bytes)?;
    over(Cap::BodyBytes, request.body.len(), caps.body_bytes)?;
    over(
        Cap::HeadersPerRequest,
        request.headers.len(),
        caps.headers_per_request,
    )?;
    let header_bytes = request.headers.iter().fold(0usize, |sum, h| {
        sum.saturating_add(h.name.len() + h.value.len())
    });
    over(Cap::HeaderBytes, header_bytes, caps.header_bytes)
}

/// Checks a rendered request against the caps and the channel's rules, and
/// attaches the channel's auth.
pub fn prepare(
    channel: &ChannelConfig,
    caps: &OutputCaps,
    request: HttpRequest,
) -> Result<OutboundRequest, Refusal> {
    check_caps(caps, &request)?;
    let url = Url::parse(&request.url).map_err(|e| Refusal::BadUrl {
        url: shown(&request.url),
        reason: e.to_string(),
    })?;
    // Parsing percent-encodes what needs it, which can make a URL longer
    // than the plugin's text: what goes out is what the cap bounds.
    over(Cap::UrlBytes, url.as_str().len(), caps.url_bytes)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::CredentialsInUrl);
    }
    if !channel.allows(&url) {
        let origin = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{}://{}:{}", url.scheme(), h, p),
            _ => shown(url.as_str()),
        };
        let allowed = channel
            .allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Refusal::HostNotAllowed {
            channel: channel.name.clone(),
            origin,
            allowed,
        });
    }
    check_path(channel, &url)?;
    let method = allowed_method(channel, &request.method)?;
    let mut headers = plugin_headers(channel, &request.headers)?;
    let auth_scheme = attach_auth(&channel.auth, &mut headers)?;
    let signer = signer(&channel.auth, &headers)?;

    Ok(OutboundRequest {
        method,
        url,
        headers,
        body: request.body,
        timeout: channel.timeout,
        proxy: channel.proxy.clone(),
        auth_scheme,
        signer,
    })
}

/// The channel's request signer, if it signs: its header names are the
/// host's, so a plugin that sets one is refused like any reserved header.
fn signer(auth: &Auth, headers: &HeaderMap) -> Result<Option<Signer>, Refusal> {
    let Auth::Hmac {
        secret,
        header,
        timestamp_header,
    } = auth
    else {
        return Ok(None);
    };
    let name =
        |n: &str| HeaderName::from_bytes(n.as_bytes()).map_err(|_| Refusal::BadHeader(shown(n)));
    let (header, timestamp_header) = (name(header)?, name(timestamp_header)?);
    for reserved in [&header, &timestamp_header] {
        if headers.contains_key(reserved) {
            return Err(Refusal::ReservedHeader(shown(reserved.as_str())));
        }
    }
    Ok(Some(Signer {
        secret: secret.clone(),
        header,
        timestamp_header,
    }))
}

/// The channel's allowed method matching `raw` (case-insensitively, as
/// plugins have always been allowed to write `post`). Matching against the
/// short list first means an arbitrary method is never parsed or copied.
fn allowed_method(channel: &ChannelConfig, raw: &str) -> Result<Method, Refusal> {
    let refused = || Refusal::MethodNotAllowed {
        channel: channel.name.clone(),
        method: shown(raw),
        allowed: channel.allowed_methods.join(", "),
    };
    let name = channel
        .allowed_methods
        .iter()
        .find(|m| m.eq_ignore_ascii_case(raw))
        .ok_or_else(refused)?;
    Method::from_bytes(name.as_bytes()).map_err(|_| refused())
}

/// Builds the plugin's headers. The caps have bounded their number, so the
/// map is allocated once at its final size.
fn plugin_headers(channel: &ChannelConfig, list: &[Header]) -> Result<HeaderMap, Refusal> {
    let full = |_| Refusal::HeaderMapFull(list.len());
    let mut headers = HeaderMap::try_with_capacity(list.len()).map_err(full)?;
    for Header { name, value } in list {
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| Refusal::BadHeader(shown(name)))?;
        if RESERVED_HEADERS.contains(&header.as_str())
            || (header == AUTHORIZATION && !matches!(channel.auth, Auth::None | Auth::Hmac { .. }))
        {
            return Err(Refusal::ReservedHeader(shown(name)));
        }
        let value = HeaderValue::from_str(value).map_err(|_| Refusal::BadHeader(shown(name)))?;
        headers.try_append(header, value).map_err(full)?;
    }
    Ok(headers)
}

/// Attaches the channel's credential; returns the scheme word `plugin render`
/// may show.
fn attach_auth(auth: &Auth, headers: &mut HeaderMap) -> Result<Option<&'static str>, Refusal> {
    let (name, value, scheme) = match auth {
        Auth::None | Auth::Hmac { .. } => return Ok(None),
        Auth::Basic { username, password } => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()));
            (AUTHORIZATION, format!("Basic {token}"), Some("Basic"))
        }
        Auth::Bearer { token } => (
            AUTHORIZATION,
            format!("Bearer {}", token.expose()),
            Some("Bearer"),
        ),
        Auth::Header { name, value } => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Refusal::BadHeader(shown(name)))?;
            (name, value.expose().to_string(), None)
        }
    };
    let reserved = || Refusal::ReservedHeader(shown(name.as_str()));
    if headers.contains_key(&name) {
        return Err(reserved());
    }
    // Config validation already refused newlines, so this only fails on
    // control characters, which are not a credential either.
    let mut value = HeaderValue::from_str(&value).map_err(|_| reserved())?;
    value.set_sensitive(true);
    headers
        .try_insert(name, value)
        .map_err(|_| Refusal::HeaderMapFull(headers.len() + 1))?;
    Ok(scheme)
}

/// With `allowed_paths` set, the URL's path (as the url crate normalised it:
/// `.` and `..` segments resolved, `%2e` counted as a dot, `\` as `/`) must
/// be one of the prefixes or lie below one, on a segment boundary. A segment
/// that still decodes to `.` or `..`, or to something holding `/` or `\`, is
/// refused: a server that decodes it (once or more) would resolve it and
/// leave the prefix.
fn check_path(channel: &ChannelConfig, url: &Url) -> Result<(), Refusal> {
    if channel.allowed_paths.is_empty() {
        return Ok(());
    }
    let path = url.path();
    let refused = |why: &str| Refusal::PathNotAllowed {
        channel: channel.name.clone(),
        path: shown(path),
        why: why.to_string(),
        allowed: channel.allowed_paths.join(", "),
    };
    if path.split('/').any(hides_traversal) {
        return Err(refused(
            "a segment decodes to `.` or `..` or holds an encoded `/` or `\\`",
        ));
    }
    if !channel
        .allowed_paths
        .iter()
        .any(|prefix| under_prefix(path, &normalised(prefix)))
    {
        return Err(refused("not under an allowed prefix"));
    }
    Ok(())
}

/// A prefix as the url crate would write it in a path (percent-encoding
/// included), so it compares with a parsed URL's path.
fn normalised(prefix: &str) -> String {
    match Url::parse("http://prefix.invalid/") {
        Ok(mut url) => {
            url.set_path(prefix);
            url.path().to_string()
        }
        Err(_) => prefix.to_string(),
    }
}

/// `/v3` covers `/v3` and `/v3/...` but not `/v3admin`; `/v3/` covers what
/// starts with it.
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

fn hides_traversal(segment: &str) -> bool {
    let mut text = segment.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        if is_traversal(&text) {
            return true;
        }
        let decoded = percent_decode(&text);
        if decoded == text {
            return false;
        }
        text = decoded;
    }
    false
}

fn is_traversal(segment: &[u8]) -> bool {
    // Matrix parameters: Tomcat and others read `..;x` as `..`.
    let name = segment.split(|&b| b == b';').next().unwrap_or_default();
    name == b"." || name == b".." || segment.contains(&b'/') || segment.contains(&b'\\')
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi << 4) | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(extra: &str) -> ChannelConfig {
        let text = format!(
            "[channels.hook]\nplugin = \"p.wasm\"\nbase_url = \"https://api.example.com\"\n{extra}\n"
        );
        let env = |name: &str| (name == "SECRET").then(|| "s3cr3t-value".to_string());
        let config = crate::config::parse(&text, std::path::Path::new("/"), &env)
            .unwrap_or_else(|p| panic!("test config: {p:?}"));
        config.channels["hook"].clone()
    }

    fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            url: url.to_string(),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            body: body.to_vec(),
        }
    }

    fn post(url: &str) -> HttpRequest {
        request("POST", url, &[], b"")
    }

    /// A refusal expected from a cap: which, what was found, the limit.
    type Over = (Cap, usize, usize);

    const SMALL: OutputCaps = OutputCaps {
        requests_per_render: 2,
        headers_per_request: 3,
        header_bytes: 40,
        url_bytes: 60,
        body_bytes: 10,
        text_bytes: 1024,
        output_line_bytes: 1024,
    };

    #[test]
    fn each_cap_refuses_one_past_it_and_allows_it_exactly() {
        let ch = channel("");
        let url_of = |len: usize| {
            let base = "https://api.example.com/";
            format!("{base}{}", "a".repeat(len - base.len()))
        };
        let names = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("x-{i}"), "v".to_string()))
                .collect()
        };
        let with_headers = |list: &[(String, String)]| {
            let list: Vec<(&str, &str)> =
                list.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            request("POST", "https://api.example.com/", &list, b"")
        };
        // 18 bytes each: a name of 3 and a value of 15.
        let sized = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("x-{i}"), "v".repeat(15))).collect()
        };
        let cases: Vec<(&str, HttpRequest, Option<Over>)> = vec![
            ("url at cap", post(&url_of(60)), None),
            (
                "url one over",
                post(&url_of(61)),
                Some((Cap::UrlBytes, 61, 60)),
            ),
            // 51 bytes as written, 69 once the url crate encodes the spaces.
            (
                "url over once encoded",
                post(&format!("https://api.example.com/{}", "a b".repeat(9))),
                Some((Cap::UrlBytes, 69, 60)),
            ),
            (
                "body at cap",
                request("POST", "https://api.example.com/", &[], &[b'x'; 10]),
                None,
            ),
            (
                "body one over",
                request("POST", "https://api.example.com/", &[], &[b'x'; 11]),
                Some((Cap::BodyBytes, 11, 10)),
            ),
            ("headers at cap", with_headers(&names(3)), None),
            (
                "headers one over",
                with_headers(&names(4)),
                Some((Cap::HeadersPerRequest, 4, 3)),
            ),
            (
                "header bytes at cap",
                with_headers(&[sized(2), vec![("x-z".into(), "v".into())]].concat()),
                None,
            ),
            (
                "header bytes one over",
                with_headers(&[sized(2), vec![("x-z".into(), "vv".into())]].concat()),
                Some((Cap::HeaderBytes, 41, 40)),
            ),
        ];
        for (what, req, want) in cases {
            let got = prepare(&ch, &SMALL, req);
            match (want, got) {
                (None, Ok(_)) => {}
                (
                    Some((cap, found, limit)),
                    Err(Refusal::OverCap {
                        cap: c,
                        found: f,
                        limit: l,
                    }),
                ) => {
                    assert_eq!((c, f, l), (cap, found, limit), "{what}")
                }
                (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
            }
        }
        assert!(check_request_count(&SMALL, 2).is_ok());
        assert_eq!(
            check_request_count(&SMALL, 3),
            Err(Refusal::OverCap {
                cap: Cap::RequestsPerRender,
                found: 3,
                limit: 2
            })
        );
    }

    #[test]
    fn cap_messages_name_the_cap_and_its_key() {
        let cases = [
            (Cap::RequestsPerRender, 17, 16, "render returned 17 requests, over the cap of 16 (plugins.caps.requests_per_render)"),
            (Cap::HeadersPerRequest, 24_600, 64, "request has 24600 headers, over the cap of 64 (plugins.caps.headers_per_request)"),
            (Cap::HeaderBytes, 16_385, 16_384, "request headers are 16385 bytes (names and values), over the cap of 16384 (plugins.caps.header_bytes)"),
            (Cap::UrlBytes, 8193, 8192, "request URL is 8193 bytes, over the cap of 8192 (plugins.caps.url_bytes)"),
            (Cap::BodyBytes, 1_048_577, 1_048_576, "request body is 1048577 bytes, over the cap of 1048576 bytes (plugins.caps.body_kib = 1024)"),
        ];
        for (cap, found, limit, want) in cases {
            assert_eq!(Refusal::OverCap { cap, found, limit }.to_string(), want);
        }
    }

    #[test]
    fn a_flood_of_headers_is_refused_by_counting_not_by_a_panic() {
        let ch = channel("");
        let list: Vec<(String, String)> = (0..24_600)
            .map(|i| (format!("x-h-{i}"), "v".into()))
            .collect();
        let list: Vec<(&str, &str)> = list.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = request("POST", "https://api.example.com/", &list, b"");
        let err = prepare(&ch, &OutputCaps::default(), req).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "request has 24600 headers, over the cap of 64 (plugins.caps.headers_per_request)"
        );
        // Past the header map's own limit (which panics in `append`): the
        // builder refuses too, so a cap raised by mistake cannot panic.
        let many: Vec<Header> = (0..40_000)
            .map(|i| Header {
                name: format!("x-h-{i}"),
                value: "v".into(),
            })
            .collect();
        assert_eq!(
            plugin_headers(&ch, &many).map(|h| h.len()),
            Err(Refusal::HeaderMapFull(40_000))
        );
    }

    #[test]
    fn malformed_output_is_a_refusal() {
        let ch = channel("");
        let long = "a".repeat(100_000);
        let cases: Vec<(&str, HttpRequest, &str)> = vec![
            ("relative url", post("/hook"), "request URL \"/hook\" is not a valid absolute URL: relative URL without a base"),
            ("credentials in url", post("https://u:p@api.example.com/"), "request URL must not carry credentials; the host attaches the channel's auth"),
            ("bad header name", request("POST", "https://api.example.com/", &[("bad name", "v")], b""), "header \"bad name\" is not a valid HTTP header"),
            ("newline in value", request("POST", "https://api.example.com/", &[("x-a", "v\r\nx-b: 1")], b""), "header \"x-a\" is not a valid HTTP header"),
            ("reserved", request("POST", "https://api.example.com/", &[("Host", "evil")], b""), "header \"Host\" is set by the host, not by a plugin"),
            ("long bad name", request("POST", "https://api.example.com/", &[(&format!("{long} x"), "v")], b""), "header \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"… (100002 bytes) is not a valid HTTP header"),
        ];
        let caps = OutputCaps {
            header_bytes: 1 << 20,
            ..OutputCaps::default()
        };
        for (what, req, want) in cases {
            match prepare(&ch, &caps, req) {
                Err(e) => assert_eq!(e.to_string(), want, "{what}"),
                Ok(r) => panic!("{what}: sent {r:?}"),
            }
        }
    }

    #[test]
    fn only_the_channels_methods_are_allowed_and_echoes_are_cut() {
        let any = channel("");
        let post_only = channel("allowed_methods = [\"post\"]");
        let long = "X".repeat(100_000);
        // (channel, method, allowed)
        let cases: Vec<(&ChannelConfig, &str, bool)> = vec![
            (&any, "GET", true),
            (&any, "POST", true),
            (&any, "post", true),
            (&any, "PUT", true),
            (&any, "PATCH", true),
            (&any, "DELETE", true),
            (&any, "CONNECT", false),
            (&any, "TRACE", false),
            (&any, "OPTIONS", false),
            (&any, "HEAD", false),
            (&any, "PURGE", false),
            (&any, "", false),
            (&any, " GET", false),
            (&any, "GET\r\nX-Injected: 1", false),
            (&any, &long, false),
            (&post_only, "POST", true),
            (&post_only, "GET", false),
            (&post_only, "DELETE", false),
        ];
        for (ch, method, allowed) in cases {
            let got = prepare(
                ch,
                &OutputCaps::default(),
                request(method, "https://api.example.com/", &[], b""),
            );
            match (allowed, got) {
                (true, Ok(r)) => assert_eq!(r.method.as_str(), method.to_ascii_uppercase()),
                (false, Err(e @ Refusal::MethodNotAllowed { .. })) => {
                    let text = e.to_string();
                    assert!(text.len() < 200, "the method is cut: {text}");
                    assert!(text.contains("channels.hook.allowed_methods"), "{text}");
                }
                (allowed, got) => {
                    panic!("{:?}: want allowed={allowed}, got {got:?}", shown(method))
                }
            }
        }
        assert_eq!(
            prepare(&any, &OutputCaps::default(), request(&long, "https://api.example.com/", &[], b""))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("method \"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\"… (100000 bytes) is not allowed on channel `hook` (allowed: GET, POST, PUT, PATCH, DELETE; channels.hook.allowed_methods)".to_string())
        );
    }

    #[test]
    fn paths_stay_under_the_allowed_prefixes() {
        let v3 = channel("allowed_paths = [\"/v3/\", \"/status\"]");
        let any = channel("");
        // (channel, URL path and query as rendered, allowed)
        let cases: Vec<(&ChannelConfig, &str, bool)> = vec![
            (&v3, "/v3/messages", true),
            (&v3, "/v3/", true),
            (&v3, "/v3/a/../b", true),
            (&v3, "/v3/./messages", true),
            (&v3, "/v3/messages?next=/../admin", true),
            (&v3, "/status", true),
            (&v3, "/status/detail", true),
            (&v3, "/statusx", false),
            (&v3, "/v3", false),
            (&v3, "/V3/messages", false),
            (&v3, "/admin", false),
            (&v3, "/", false),
            (&v3, "/v3/../admin", false),
            (&v3, "/v3/%2e%2e/admin", false),
            (&v3, "/v3/%2E%2e/admin", false),
            (&v3, "/v3/.%2e/admin", false),
            (&v3, "/v3/%2e./admin", false),
            (&v3, "/v3/..\\admin", false),
            (&v3, "/v3/%2e%2e%2fadmin", false),
            (&v3, "/v3/..%2fadmin", false),
            (&v3, "/v3/..%2Fadmin", false),
            (&v3, "/v3/..%5cadmin", false),
            (&v3, "/v3/%252e%252e/admin", false),
            (&v3, "/v3/%25252e%25252e/admin", false),
            (&v3, "/v3/..;/admin", false),
            (&v3, "/v3/%2e%2e;x/admin", false),
            (&v3, "/v3/a%2fb", false),
            (&v3, "/v3/%2e%2e", false),
            (&v3, "/v3/a..b", true),
            (&v3, "/v3/...", true),
            (&any, "/anything/at/all", true),
            (&any, "/v3/%2e%2e%2fadmin", true),
        ];
        for (ch, path, allowed) in cases {
            let url = format!("https://api.example.com{path}");
            match (allowed, prepare(ch, &OutputCaps::default(), post(&url))) {
                (true, Ok(_)) => {}
                (false, Err(e @ Refusal::PathNotAllowed { .. })) => {
                    assert!(e.to_string().contains("channels.hook.allowed_paths"), "{e}")
                }
                (allowed, got) => panic!("{path}: want allowed={allowed}, got {got:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_attached_and_redacted_by_kind() {
        let cases = [
            ("auth = { type = \"basic\", username = \"api\", password = \"${SECRET}\" }", "authorization", "Basic [redacted]"),
            ("auth = { type = \"bearer\", token = \"${SECRET}\" }", "authorization", "Bearer [redacted]"),
            ("auth = { type = \"header\", name = \"X-Api-Key\", value = \"${SECRET}\" }", "x-api-key", "[redacted]"),
            // A header credential that looks like a scheme and a token: its
            // first word may be the secret, so nothing of it shows.
            ("auth = { type = \"header\", name = \"X-Api-Key\", value = \"${SECRET} more\" }", "x-api-key", "[redacted]"),
            ("auth = { type = \"header\", name = \"Authorization\", value = \"Token ${SECRET}\" }", "authorization", "[redacted]"),
        ];
        for (auth, name, want) in cases {
            let ch = channel(auth);
            let req = prepare(
                &ch,
                &OutputCaps::default(),
                post("https://api.example.com/"),
            )
            .expect("prepared");
            let shown = req.redacted();
            let value = shown
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            assert_eq!(value, Some(want), "{auth}");
            let all = serde_json::to_string(&shown).unwrap_or_default();
            assert!(!all.contains("s3cr3t") && !all.contains("Token"), "{all}");
            // What is sent carries the real value.
            let sent = req
                .headers
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            assert!(String::from_utf8_lossy(&sent).contains("s3cr3t") || want.starts_with("Basic"));
        }
    }

    #[test]
    fn shown_text_is_quoted_escaped_and_cut() {
        let cases = [
            ("POST", "\"POST\"".to_string()),
            ("a\r\nb", "\"a\\r\\nb\"".to_string()),
            (
                &"é".repeat(50),
                format!("\"{}\"… (100 bytes)", "é".repeat(40)),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(super::shown(text), want);
        }
    }
}
