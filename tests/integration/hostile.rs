//! Misbehaving plugins are stopped or refused with a clear error, and the
//! next call to a good plugin works. The hostile plugin is a real component
//! (tests/plugins/hostile) whose misbehaviour is chosen by its settings.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use notify_host::channels::{Channels, RenderError};
use notify_host::config;
use notify_host::event;
use notify_host::plugin::PluginError;
use notify_host::transport::Refusal;

use crate::harness::*;

struct Fixture {
    channels: Channels,
    listener: TcpListener,
    secret_file: std::path::PathBuf,
    _dir: Workdir,
}

fn fixture() -> Fixture {
    let dir = Workdir::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let secret_file = dir.write("secret.txt", "top secret file contents");
    let hostile = hostile_wasm();
    let channel = |name: &str, extra: &str, settings: &str| {
        format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"http://127.0.0.1:9\"\n{extra}\nsettings = {{ {settings} }}\n"
        )
    };
    let target = listener.local_addr().expect("addr").to_string();
    let text = [
        "[plugins]\ndeadline_ms = 200\nmemory_limit_mib = 16\noutput_limit_kib = 64\n".to_string(),
        channel("loop", "", r#"behavior = "loop""#),
        channel("hog", "", r#"behavior = "hog""#),
        channel("trap", "", r#"behavior = "trap""#),
        channel("flood", "", r#"behavior = "stdout-flood""#),
        channel("socket", "", &format!(r#"behavior = "socket", target = "{target}""#)),
        channel("file", "", &format!(r#"behavior = "read-file", path = {:?}"#, secret_file.display().to_string())),
        channel("env", "", r#"behavior = "read-env""#),
        channel("foreign", "", r#"behavior = "foreign-host""#),
        channel(
            "setauth",
            r#"auth = { type = "bearer", token = "${HOSTILE_TEST_TOKEN}" }"#,
            r#"behavior = "set-auth""#,
        ),
        channel("good", "", r#"behavior = "ok""#),
        format!(
            "[channels.email]\nplugin = {:?}\nbase_url = \"http://127.0.0.1:9\"\nsettings = {{ domain = \"mg.example.com\", from = \"a@mg.example.com\" }}\n",
            mailgun_wasm()
        ),
    ]
    .join("\n");
    let env = |name: &str| (name == "HOSTILE_TEST_TOKEN").then(|| "token-abc".to_string());
    let config = config::parse(&text, dir.path(), &env).expect("config parses");
    let channels = Channels::load(&config).expect("all plugins load");
    Fixture {
        channels,
        listener,
        secret_file,
        _dir: dir,
    }
}

fn render(
    f: &Fixture,
    channel: &str,
) -> Result<Vec<notify_host::transport::OutboundRequest>, RenderError> {
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    futures_executor::block_on(f.channels.get(channel).expect("channel").render(&event))
}

/// The host still serves: a good plugin renders right after.
fn good_plugins_still_work(f: &Fixture) {
    let requests = render(f, "email").expect("mailgun still renders");
    assert_eq!(requests.len(), 1);
    let requests = render(f, "good").expect("well-behaved hostile still renders");
    assert_eq!(requests[0].url.path(), "/hook");
}

#[test]
fn every_hostile_plugin_is_contained() {
    let f = fixture();

    let started = Instant::now();
    match render(&f, "loop") {
        Err(RenderError::Plugin(PluginError::Deadline { deadline, .. })) => {
            assert_eq!(deadline, Duration::from_millis(200))
        }
        other => panic!("endless loop: {other:?}"),
    }
    // Stopped near its 200 ms deadline, not left running.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "loop ran {:?}",
        started.elapsed()
    );
    good_plugins_still_work(&f);

    match render(&f, "hog") {
        Err(RenderError::Plugin(PluginError::MemoryLimit {
            limit, requested, ..
        })) => {
            assert_eq!(limit, 16 * 1024 * 1024);
            assert!(requested > limit);
        }
        other => panic!("memory hog: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "trap") {
        Err(RenderError::Plugin(PluginError::Trap { message, .. })) => {
            assert!(
                message.contains("deliberate trap"),
                "the panic message reaches the error: {message}"
            )
        }
        other => panic!("trap: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "flood") {
        Err(RenderError::Plugin(PluginError::OutputLimit { limit, .. })) => {
            assert_eq!(limit, 64 * 1024)
        }
        other => panic!("stdout flood: {other:?}"),
    }
    good_plugins_still_work(&f);

    match render(&f, "socket") {
        Err(RenderError::Rejected { reason, .. }) => {
            assert!(reason.starts_with("socket refused"), "{reason}")
        }
        other => panic!("socket: {other:?}"),
    }
    match f.listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the plugin reached the listener: {other:?}"),
    }

    match render(&f, "file") {
        Err(RenderError::Rejected { reason, .. }) => {
            assert!(reason.starts_with("file refused"), "{reason}")
        }
        other => panic!("read {}: {other:?}", f.secret_file.display()),
    }

    match render(&f, "env") {
        Err(RenderError::Rejected { reason, .. }) => assert_eq!(reason, "environment is empty"),
        other => panic!("environment: {other:?}"),
    }

    match render(&f, "foreign") {
        Err(RenderError::Refused(Refusal::HostNotAllowed { origin, .. })) => {
            assert_eq!(origin, "https://evil.example.com:443")
        }
        other => panic!("foreign host: {other:?}"),
    }

    match render(&f, "setauth") {
        Err(RenderError::Refused(Refusal::ReservedHeader(name))) => {
            // Quoted and cut, as every plugin-supplied text in a refusal.
            assert_eq!(name, "\"Authorization\"")
        }
        other => panic!("plugin-set auth: {other:?}"),
    }

    good_plugins_still_work(&f);
}

#[test]
fn instances_do_not_leak_between_calls() {
    // Many calls in a row on one loaded plugin: each gets a fresh instance
    // (the pool would run dry, or state would pile up, otherwise).
    let f = fixture();
    for _ in 0..300 {
        render(&f, "good").expect("renders");
    }
    match render(&f, "trap") {
        Err(RenderError::Plugin(PluginError::Trap { .. })) => {}
        other => panic!("{other:?}"),
    }
    render(&f, "good").expect("a trap leaves nothing behind");
}

// ---------------------------------------------------------------------------
// Outbound: what a plugin renders is capped and checked before it leaves.

/// A config with one hostile channel per `(name, extra keys, settings)`, plus
/// a well-behaved `good` channel, all aimed at a port nothing listens on.
fn outbound_config(dir: &Workdir, prelude: &str, channels: &[(&str, &str, &str)]) -> String {
    let hostile = hostile_wasm();
    let mut text = format!("{prelude}\n");
    for (name, extra, settings) in channels.iter().chain([&("good", "", r#"behavior = "ok""#)]) {
        text.push_str(&format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"http://127.0.0.1:9\"\n{extra}\nsettings = {{ {settings} }}\n"
        ));
    }
    dir.write("config.toml", &text);
    text
}

fn load(dir: &Workdir, prelude: &str, channels: &[(&str, &str, &str)]) -> Channels {
    let text = outbound_config(dir, prelude, channels);
    let config = config::parse(&text, dir.path(), &|_: &str| None).expect("config parses");
    Channels::load(&config).expect("plugins load")
}

fn render_on(
    channels: &Channels,
    name: &str,
) -> Result<Vec<notify_host::transport::OutboundRequest>, RenderError> {
    let event = event::parse(SAMPLE_EVENT.as_bytes()).expect("sample event");
    futures_executor::block_on(channels.get(name).expect("channel").render(&event))
}

/// The host refuses each outbound misbehaviour with the refusal that names
/// its cap or rule, and keeps serving.
#[test]
fn outbound_misbehaviour_is_refused_naming_the_cap_or_rule() {
    let dir = Workdir::new();
    let hundred_k_method = r#"behavior = "method", bytes = "100000""#;
    let cases: [(&str, &str, &str, &str); 14] = [
        ("headers", "", r#"behavior = "many-headers", count = "24600""#,
         "request has 24600 headers, over the cap of 64 (plugins.caps.headers_per_request)"),
        ("hugeheader", "", r#"behavior = "huge-header-value", bytes = "1048576""#,
         "request headers are 1048581 bytes (names and values), over the cap of 16384 (plugins.caps.header_bytes)"),
        ("requests", "", r#"behavior = "many-requests", count = "10000""#,
         "render returned 10000 requests, over the cap of 16 (plugins.caps.requests_per_render)"),
        ("bigbody", "", r#"behavior = "big-body", bytes = "2097152""#,
         "request body is 2097152 bytes, over the cap of 1048576 bytes (plugins.caps.body_kib = 1024)"),
        ("longurl", "", r#"behavior = "long-url", bytes = "100000""#,
         "request URL is 100028 bytes, over the cap of 8192 (plugins.caps.url_bytes)"),
        ("trace", "", r#"behavior = "method", method = "TRACE""#,
         "method \"TRACE\" is not allowed on channel `trace` (allowed: GET, POST, PUT, PATCH, DELETE; channels.trace.allowed_methods)"),
        ("connect", "", r#"behavior = "method", method = "CONNECT""#,
         "method \"CONNECT\" is not allowed on channel `connect` (allowed: GET, POST, PUT, PATCH, DELETE; channels.connect.allowed_methods)"),
        ("custom", "", r#"behavior = "method", method = "PURGE""#,
         "method \"PURGE\" is not allowed on channel `custom` (allowed: GET, POST, PUT, PATCH, DELETE; channels.custom.allowed_methods)"),
        ("hugemethod", "", hundred_k_method,
         "method \"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\"… (100000 bytes) is not allowed on channel `hugemethod` (allowed: GET, POST, PUT, PATCH, DELETE; channels.hugemethod.allowed_methods)"),
        ("postonly", r#"allowed_methods = ["PUT"]"#, r#"behavior = "method", method = "POST""#,
         "method \"POST\" is not allowed on channel `postonly` (allowed: PUT; channels.postonly.allowed_methods)"),
        ("dotdot", r#"allowed_paths = ["/hook"]"#, r#"behavior = "path", path = "/hook/../admin""#,
         "path \"/admin\" is not allowed on channel `dotdot`: not under an allowed prefix (allowed: /hook; channels.dotdot.allowed_paths)"),
        ("encoded", r#"allowed_paths = ["/hook"]"#, r#"behavior = "path", path = "/hook/%2e%2E/admin""#,
         "path \"/admin\" is not allowed on channel `encoded`: not under an allowed prefix (allowed: /hook; channels.encoded.allowed_paths)"),
        ("slash", r#"allowed_paths = ["/hook"]"#, r#"behavior = "path", path = "/hook/..%2fadmin""#,
         "path \"/hook/..%2fadmin\" is not allowed on channel `slash`: a segment decodes to `.` or `..` or holds an encoded `/` or `\\` (allowed: /hook; channels.slash.allowed_paths)"),
        ("sibling", r#"allowed_paths = ["/hook"]"#, r#"behavior = "path", path = "/hookish""#,
         "path \"/hookish\" is not allowed on channel `sibling`: not under an allowed prefix (allowed: /hook; channels.sibling.allowed_paths)"),
    ];
    let list: Vec<(&str, &str, &str)> = cases.iter().map(|(n, e, s, _)| (*n, *e, *s)).collect();
    let channels = load(&dir, "", &list);
    for (name, _, _, want) in cases {
        match render_on(&channels, name) {
            Err(RenderError::Refused(refusal)) => assert_eq!(refusal.to_string(), want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        // The host still serves.
        let good = render_on(&channels, "good").expect("a good plugin renders after it");
        assert_eq!(good[0].url.path(), "/hook");
    }
}

/// What is inside the rules goes out: the boundaries are the caps and
/// prefixes, not something stricter.
#[test]
fn outbound_requests_within_the_rules_are_prepared() {
    let dir = Workdir::new();
    let channels = load(
        &dir,
        "",
        &[
            ("headers", "", r#"behavior = "many-headers", count = "64""#),
            (
                "requests",
                "",
                r#"behavior = "many-requests", count = "16""#,
            ),
            ("bigbody", "", r#"behavior = "big-body", bytes = "1048576""#),
            (
                "under",
                r#"allowed_paths = ["/hook"]"#,
                r#"behavior = "path", path = "/hook/a/../b""#,
            ),
            ("lower", "", r#"behavior = "method", method = "delete""#),
        ],
    );
    assert_eq!(
        render_on(&channels, "headers").expect("64 headers")[0]
            .headers
            .len(),
        64
    );
    assert_eq!(
        render_on(&channels, "requests").expect("16 requests").len(),
        16
    );
    assert_eq!(
        render_on(&channels, "bigbody").expect("1 MiB body")[0]
            .body
            .len(),
        1 << 20
    );
    assert_eq!(
        render_on(&channels, "under").expect("under /hook")[0]
            .url
            .path(),
        "/hook/b"
    );
    assert_eq!(
        render_on(&channels, "lower").expect("delete")[0]
            .method
            .as_str(),
        "DELETE"
    );
}

/// `[plugins.caps]` from the config is what is enforced, one past each.
#[test]
fn configured_caps_are_the_ones_enforced() {
    let dir = Workdir::new();
    let prelude = "[plugins.caps]\nrequests_per_render = 2\nheaders_per_request = 3\nheader_bytes = 100\nurl_bytes = 100\nbody_kib = 1\n";
    let cases: [(&str, &str, &str); 5] = [
        ("requests", r#"behavior = "many-requests", count = "3""#,
         "render returned 3 requests, over the cap of 2 (plugins.caps.requests_per_render)"),
        ("headers", r#"behavior = "many-headers", count = "4""#,
         "request has 4 headers, over the cap of 3 (plugins.caps.headers_per_request)"),
        ("hugeheader", r#"behavior = "huge-header-value", bytes = "96""#,
         "request headers are 101 bytes (names and values), over the cap of 100 (plugins.caps.header_bytes)"),
        ("longurl", r#"behavior = "long-url", bytes = "73""#,
         "request URL is 101 bytes, over the cap of 100 (plugins.caps.url_bytes)"),
        ("bigbody", r#"behavior = "big-body", bytes = "1025""#,
         "request body is 1025 bytes, over the cap of 1024 bytes (plugins.caps.body_kib = 1)"),
    ];
    let list: Vec<(&str, &str, &str)> = cases.iter().map(|(n, s, _)| (*n, "", *s)).collect();
    let channels = load(&dir, prelude, &list);
    for (name, _, want) in cases {
        match render_on(&channels, name) {
            Err(RenderError::Refused(refusal)) => assert_eq!(refusal.to_string(), want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// `plugin render` and `plugin send` on hostile output exit 3 (a request the
/// host refused), never 101 (a panic), and send nothing.
#[test]
fn cli_refuses_hostile_output_with_the_refusal_exit_code() {
    let dir = Workdir::new();
    let provider = StandIn::start(vec![Reply::new(200, "{}")]);
    let hostile = hostile_wasm();
    let mut text = String::new();
    for (name, settings) in [
        ("headers", r#"behavior = "many-headers", count = "24600""#),
        ("hugemethod", r#"behavior = "method", bytes = "100000""#),
        ("requests", r#"behavior = "many-requests", count = "10000""#),
    ] {
        text.push_str(&format!(
            "[channels.{name}]\nplugin = {hostile:?}\nbase_url = \"{}\"\nsettings = {{ {settings} }}\n",
            provider.url()
        ));
    }
    let config = dir.write("config.toml", &text);
    let event = dir.write("event.json", SAMPLE_EVENT);
    for command in ["render", "send"] {
        for (channel, want) in [
            (
                "headers",
                "over the cap of 64 (plugins.caps.headers_per_request)",
            ),
            ("hugemethod", "is not allowed on channel `hugemethod`"),
            (
                "requests",
                "over the cap of 16 (plugins.caps.requests_per_render)",
            ),
        ] {
            let out = plugin_with_event(command, &config, channel, &event, &[], dir.path());
            assert_eq!(
                out.status.code(),
                Some(3),
                "plugin {command} --channel {channel}: {}",
                stderr(&out)
            );
            let json = json_stdout(&out);
            let refused = json["refused"].as_str().unwrap_or_default();
            assert!(refused.contains(want), "{command} {channel}: {json}");
            assert!(refused.len() < 300, "the refusal is short: {refused}");
        }
    }
    assert!(provider.received().is_empty(), "nothing was sent");
}

/// End to end: the 24,600-header render is dead-lettered as `refused` with
/// the cap in its reason, and the next event of the same appointment (same
/// key, so it waited behind the first) is delivered.
#[test]
fn a_header_flood_is_dead_lettered_and_the_same_key_moves_on() {
    use crate::kafka_harness::*;
    let s = crate::pipeline::setup("headerflood", vec![], vec![]);
    let hook = StandIn::start(vec![Reply::new(204, "")]);
    let config = s.config("");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[channels.flood]\nplugin = {:?}\nbase_url = \"{}\"\nsettings = {{ behavior = \"many-headers\", count = \"24600\", poison_event_id = \"f-1\" }}\n",
        hostile_wasm(),
        hook.url()
    ));
    std::fs::write(&config, text).expect("config");
    let host = Host::start(&config);
    let payload = |id: &str| {
        format!(r#"{{"event_id":"{id}","notify":{{"flood":true}},"appointment":{{"appointment_id":"a-shared"}}}}"#)
            .into_bytes()
    };
    publish(&s.t.topic, &[payload("f-1"), payload("f-2")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.committed() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "offset 2 not committed; host log:\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let letters = read_topic(&s.t.dlq, 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1, "{}", host.log_text());
    assert_eq!(letters[0].header("notify.event_id"), Some("f-1"));
    assert_eq!(letters[0].header("notify.error_class"), Some("refused"));
    assert_eq!(letters[0].header("notify.channel"), Some("flood"));
    assert_eq!(
        letters[0].header("notify.reason"),
        Some("request has 24600 headers, over the cap of 64 (plugins.caps.headers_per_request)")
    );
    let sent = hook.received();
    assert_eq!(sent.len(), 1, "only the second event went out");
    assert_eq!(sent[0].body, b"f-2");
    assert!(!host.log_text().contains("panicked"), "{}", host.log_text());
}

// ---------------------------------------------------------------------------
// Plugin files: regular files of bounded size only.

/// A FIFO, a device, a directory, a socket and an oversized file are each
/// refused with what they are, and start-up does not hang on any of them
/// (a hang would time the test out).
#[test]
fn only_regular_plugin_files_within_the_size_limit_are_read() {
    let dir = Workdir::new();
    let fifo = dir.path().join("plugin.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let socket = dir.path().join("plugin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
    let subdir = dir.path().join("plugin.d");
    std::fs::create_dir(&subdir).expect("mkdir");
    let limit = 1024 * 1024;
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; limit + 1]).expect("write big");
    // Exactly at the limit: read, then refused as what it is (not wasm).
    let at_limit = dir.path().join("at-limit.wasm");
    std::fs::write(&at_limit, vec![0u8; limit]).expect("write at limit");

    let cases: [(&str, &std::path::Path, String); 6] = [
        (
            "fifo",
            &fifo,
            format!(
                "{} is a FIFO (named pipe), not a regular file",
                fifo.display()
            ),
        ),
        (
            "zero",
            std::path::Path::new("/dev/zero"),
            "/dev/zero is a character device, not a regular file".to_string(),
        ),
        (
            "dir",
            &subdir,
            format!("{} is a directory, not a regular file", subdir.display()),
        ),
        (
            "socket",
            &socket,
            format!("{} is a socket, not a regular file", socket.display()),
        ),
        (
            "big",
            &big,
            format!(
                "{} is 1048577 bytes, over the limit of 1048576 bytes (plugins.max_file_mib)",
                big.display()
            ),
        ),
        (
            "atlimit",
            &at_limit,
            format!(
                "{} is not a WebAssembly component: not a WebAssembly file (no `\\0asm` header)",
                at_limit.display()
            ),
        ),
    ];
    let mut text = "[plugins]\nmax_file_mib = 1\n".to_string();
    for (name, path, _) in &cases {
        text.push_str(&format!(
            "[channels.{name}]\nplugin = {:?}\nbase_url = \"http://127.0.0.1:9\"\n",
            path.display().to_string()
        ));
    }
    let config = config::parse(&text, dir.path(), &|_: &str| None).expect("config parses");
    let problems = match Channels::load(&config) {
        Err(problems) => problems,
        Ok(_) => panic!("every channel's plugin file is refused"),
    };
    for (name, _, want) in &cases {
        let key = format!("channels.{name}.plugin");
        let got: Vec<&str> = problems
            .iter()
            .filter(|p| p.key == key)
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(got, [want.as_str()], "{name}");
    }

    // The binary's check-config says the same, exit 2.
    let config = dir.write("config.toml", &text);
    let out = notify_host(
        &["check-config", "--config", &config.to_string_lossy()],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a FIFO (named pipe), not a regular file"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// Proxies: none unless configured.

/// A TCP stand-in that records what arrives and answers each request with
/// 200: as a proxy it answers for the provider without forwarding.
struct Recorder {
    addr: std::net::SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let mut conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => return,
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                // The request head, then as much body as it announces.
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                sink.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&data).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        Recorder {
            addr,
            received,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `plugin send` for channel `hook` of a config with `extra` keys,
/// aimed at `provider`, with `env`.
fn plugin_send(provider: &str, extra: &str, env: &[(&str, String)]) -> std::process::Output {
    let dir = Workdir::new();
    let config = dir.write(
        "config.toml",
        &format!(
            "[channels.hook]\nplugin = {:?}\nbase_url = \"{provider}\"\n{extra}\nsettings = {{ behavior = \"ok\" }}\n",
            hostile_wasm()
        ),
    );
    let event = dir.write("event.json", SAMPLE_EVENT);
    plugin_with_event("send", &config, "hook", &event, env, dir.path())
}

/// `HTTP_PROXY`, `http_proxy`, `HTTPS_PROXY` and `ALL_PROXY` in the
/// environment do not route requests: the proxy stand-in hears nothing and
/// the provider gets the request. (Without `no_proxy()` on the client, the
/// proxy stand-in gets it instead and this test fails.)
#[test]
fn proxies_in_the_environment_are_ignored() {
    let proxy = Recorder::start();
    let provider = StandIn::start(vec![Reply::new(200, "{}")]);
    let env: Vec<(&str, String)> = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, proxy.url()))
    .collect();
    let out = plugin_send(&provider.url(), "", &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(provider.received().len(), 1, "the provider got the request");
    assert_eq!(
        proxy.received(),
        Vec::<String>::new(),
        "the proxy heard nothing"
    );
}

/// A channel with `proxy` set sends through it (as an HTTP forward proxy:
/// the absolute URL in the request line), whatever the environment says.
#[test]
fn a_configured_proxy_is_used() {
    let proxy = Recorder::start();
    let env_proxy = Recorder::start();
    let provider = StandIn::start(vec![Reply::new(200, "{}")]);
    let env = vec![
        ("HTTP_PROXY", env_proxy.url()),
        ("ALL_PROXY", env_proxy.url()),
    ];
    let out = plugin_send(
        &provider.url(),
        &format!("proxy = \"{}\"", proxy.url()),
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let heard = proxy.received();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(
        heard[0].starts_with(&format!("POST {}/hook HTTP/1.1\r\n", provider.url())),
        "{}",
        heard[0]
    );
    assert!(provider.received().is_empty(), "the proxy answered for it");
    assert!(
        env_proxy.received().is_empty(),
        "the environment's proxy heard nothing"
    );
}
