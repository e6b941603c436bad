//! The container files: Dockerfile, docker-compose.yml, the opt-in
//! docker-compose.publish.yml, .env.example and .dockerignore.
//!
//! There is no Docker engine on the machines that run this suite, so these
//! tests read the files the way Docker does (YAML; Dockerfile instructions with
//! `\` continuations) and check what they promise against the rest of the
//! repository: Kafka private and in KRaft mode, both topics created before the
//! service starts, the service unprivileged and healthy only when ready, the
//! image built with the commands scripts/run.sh uses, every file they refer to
//! present, and .env.example in step with config.toml.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::harness::*;

const TOPIC: &str = "appointments.created";
const DLQ_TOPIC: &str = "appointments.created.dlq";
const KAFKA: &str = "kafka";
const TOPIC_INIT: &str = "kafka-init";
const HOST: &str = "notify-host";
const COMPOSE: &str = "docker-compose.yml";
const PUBLISH_OVERRIDE: &str = "docker-compose.publish.yml";

// --- reading the files --------------------------------------------------------

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"))
}

fn toml_file(relative: &str) -> toml::Value {
    toml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative} is not TOML: {e}"))
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service `{name}` in the compose file"))
}

/// A scalar as compose reads it (environment values may be numbers).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text(v: &Value, what: &str) -> String {
    scalar(v).unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

/// A string or a list of strings (`command`, `entrypoint`, `env_file`, ...).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| match item {
                // env_file's long form: { path: .env, required: true }
                Value::Mapping(_) => text(&item["path"], "path"),
                other => text(other, "list item"),
            })
            .collect(),
        other => vec![text(other, "value")],
    }
}

/// `environment`, as a mapping or as a list of NAME=value.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (text(k, "variable name"), scalar(v).unwrap_or_default()))
            .collect(),
        Value::Sequence(_) => strings(&svc["environment"])
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect(),
        other => panic!("environment: unexpected {other:?}"),
    }
}

/// A service's networks, in the list or the mapping form.
fn networks(svc: &Value) -> Vec<String> {
    match &svc["networks"] {
        Value::Null => Vec::new(),
        Value::Mapping(m) => m.keys().map(|k| text(k, "network")).collect(),
        other => strings(other),
    }
}

fn network_is_internal(doc: &Value, name: &str) -> bool {
    let def = doc["networks"]
        .get(name)
        .unwrap_or_else(|| panic!("network `{name}` is used but not declared"));
    matches!(def["internal"], Value::Bool(true))
}

/// Published ports as (host ip, host port, container port); short syntax
/// ("127.0.0.1:9092:9092", "9092:9092", "9092") and long syntax.
fn ports(svc: &Value) -> Vec<(String, String, String)> {
    let Value::Sequence(items) = &svc["ports"] else {
        assert!(
            svc["ports"].is_null(),
            "ports: unexpected {:?}",
            svc["ports"]
        );
        return Vec::new();
    };
    items
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => (
                scalar(&p["host_ip"]).unwrap_or_else(|| "0.0.0.0".into()),
                scalar(&p["published"]).unwrap_or_default(),
                text(&p["target"], "ports target"),
            ),
            other => {
                let short = text(other, "port");
                let parts: Vec<&str> = short.rsplitn(3, ':').collect();
                match parts.as_slice() {
                    [c] => ("0.0.0.0".into(), String::new(), c.to_string()),
                    [c, h] => ("0.0.0.0".into(), h.to_string(), c.to_string()),
                    [c, h, ip] => (ip.to_string(), h.to_string(), c.to_string()),
                    _ => unreachable!(),
                }
            }
        })
        .collect()
}

/// `depends_on` as service -> condition ("service_started" for the list form).
fn depends_on(svc: &Value) -> BTreeMap<String, String> {
    match &svc["depends_on"] {
        Value::Null => BTreeMap::new(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let cond = scalar(&v["condition"]).unwrap_or_else(|| "service_started".into());
                (text(k, "service"), cond)
            })
            .collect(),
        other => strings(other)
            .into_iter()
            .map(|s| (s, "service_started".into()))
            .collect(),
    }
}

/// Named-volume mounts as (volume, target), short syntax or long syntax.
fn volume_mounts(doc: &Value, svc: &Value) -> Vec<(String, String)> {
    let Value::Sequence(items) = &svc["volumes"] else {
        return Vec::new();
    };
    let declared = |name: &str| doc["volumes"].get(name).is_some();
    items
        .iter()
        .filter_map(|v| match v {
            Value::Mapping(_) => Some((text(&v["source"], "source"), text(&v["target"], "target"))),
            other => {
                let short = text(other, "volume");
                let mut parts = short.split(':');
                let source = parts.next()?.to_string();
                let target = parts.next()?.to_string();
                Some((source, target))
            }
        })
        .filter(|(source, _)| declared(source))
        .collect()
}

/// KAFKA_ADVERTISED_LISTENERS as listener name -> host:port.
fn advertised_listeners(kafka_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let value = kafka_env
        .get("KAFKA_ADVERTISED_LISTENERS")
        .expect("kafka sets KAFKA_ADVERTISED_LISTENERS");
    value
        .split(',')
        .map(|l| {
            let (name, addr) = l
                .trim()
                .split_once("://")
                .unwrap_or_else(|| panic!("listener `{l}` is not NAME://host:port"));
            (name.to_string(), addr.to_string())
        })
        .collect()
}

/// Where containers on the compose networks reach the broker: the advertised
/// listener whose host is the kafka service's name.
fn internal_bootstrap(doc: &Value) -> String {
    let env = environment(service(doc, KAFKA));
    let on_service_name: Vec<String> = advertised_listeners(&env)
        .into_values()
        .filter(|addr| addr.split(':').next() == Some(KAFKA))
        .collect();
    assert_eq!(
        on_service_name.len(),
        1,
        "kafka advertises exactly one listener on its service name: {on_service_name:?}"
    );
    on_service_name[0].clone()
}

/// "15s", "1m30s" as seconds.
fn duration_seconds(s: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().unwrap_or_else(|_| panic!("duration `{s}`"));
        number.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => panic!("duration `{s}`: unit `{c}`"),
        };
    }
    assert!(number.is_empty(), "duration `{s}` has no unit");
    total
}

/// Variables config.toml reads, from its non-comment lines: name -> how.
#[derive(Debug, Clone, PartialEq)]
enum ConfigVar {
    Required,
    Default(String),
    Plain,
}

fn config_vars() -> BTreeMap<String, ConfigVar> {
    let mut vars = BTreeMap::new();
    for line in read("config.toml").lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .expect("`${` closed by `}` on the same line");
            let body = &after[..end];
            let name_len = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let (name, tail) = body.split_at(name_len);
            let how = if let Some(default) = tail.strip_prefix(":-") {
                ConfigVar::Default(default.to_string())
            } else if tail.starts_with(":?") {
                ConfigVar::Required
            } else {
                ConfigVar::Plain
            };
            let entry = vars.entry(name.to_string()).or_insert(how.clone());
            if how == ConfigVar::Required {
                *entry = how;
            }
            rest = &after[end + 1..];
        }
    }
    assert!(
        vars.len() > 10,
        "config.toml reads few variables ({vars:?}): did its syntax change?"
    );
    vars
}

/// One NAME=value line of .env.example; `active` is false for `# NAME=value`.
#[derive(Debug)]
struct EnvLine {
    active: bool,
    value: String,
}

fn env_example() -> BTreeMap<String, EnvLine> {
    let mut lines = BTreeMap::new();
    for line in read(".env.example").lines() {
        let trimmed = line.trim();
        let (active, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (false, rest.trim()),
            None => (true, trimmed),
        };
        let Some((name, value)) = body.split_once('=') else {
            assert!(!active || body.is_empty(), "not NAME=value: `{line}`");
            continue;
        };
        let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_name {
            assert!(!active, "not NAME=value: `{line}`");
            continue;
        }
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        let previous = lines.insert(
            name.to_string(),
            EnvLine {
                active,
                value: unquoted.to_string(),
            },
        );
        assert!(previous.is_none(), ".env.example sets {name} twice");
    }
    lines
}

// --- the Dockerfile -------------------------------------------------------------

#[derive(Debug)]
struct Instruction {
    /// 0 for the first FROM's stage, and so on.
    stage: usize,
    keyword: String,
    args: String,
}

/// Instructions with their arguments, `\` continuations joined and comment
/// lines dropped (also inside a continuation, as Docker does).
fn dockerfile() -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut froms = 0usize;
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            froms += 1;
        }
        assert!(froms > 0, "`{keyword}` before the first FROM");
        out.push(Instruction {
            stage: froms - 1,
            keyword,
            args: args.trim().to_string(),
        });
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

/// A FROM's image and stage name.
fn from_parts(args: &str) -> (String, Option<String>) {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    match words.as_slice() {
        [image] => (image.to_string(), None),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
            (image.to_string(), Some(name.to_string()))
        }
        _ => panic!("FROM {args}: cannot read it"),
    }
}

/// A COPY: its --from stage, sources and destination.
struct Copy {
    stage: usize,
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

fn copies(instructions: &[Instruction]) -> Vec<Copy> {
    instructions
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .map(|i| {
            let mut from = None;
            let mut rest = i.args.as_str();
            while let Some(flag_and_more) = rest.strip_prefix("--") {
                let (flag, more) = flag_and_more
                    .split_once(char::is_whitespace)
                    .unwrap_or((flag_and_more, ""));
                if let Some(stage) = flag.strip_prefix("from=") {
                    from = Some(stage.to_string());
                }
                rest = more.trim_start();
            }
            let mut paths: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest)
                    .unwrap_or_else(|e| panic!("{} {}: not a JSON array: {e}", i.keyword, i.args))
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            assert!(paths.len() >= 2, "{} {}: no destination", i.keyword, i.args);
            let dest = paths.pop().expect("a destination");
            Copy {
                stage: i.stage,
                from,
                sources: paths,
                dest,
            }
        })
        .collect()
}

/// The shell commands of the RUN instructions of one stage, split at `&&`,
/// `||` and `;`, as word lists; RUN's own --mount/--network flags dropped.
fn run_commands(instructions: &[Instruction], stage: usize) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for i in instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.stage == stage)
    {
        let mut words = i.args.split_whitespace().peekable();
        while words.peek().is_some_and(|w| w.starts_with("--")) {
            words.next();
        }
        let script: Vec<&str> = words.collect();
        commands.extend(shell_commands(&script.join(" ")));
    }
    commands
}

fn shell_commands(script: &str) -> Vec<Vec<String>> {
    script
        .replace("&&", "\n")
        .replace("||", "\n")
        .replace(';', "\n")
        .lines()
        .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The JSON (exec form) arguments of ENTRYPOINT / CMD.
fn exec_form(instructions: &[Instruction], stage: usize, keyword: &str) -> Vec<String> {
    let i = instructions
        .iter()
        .rfind(|i| i.stage == stage && i.keyword == keyword)
        .unwrap_or_else(|| panic!("the final stage has no {keyword}"));
    serde_json::from_str(&i.args)
        .unwrap_or_else(|e| panic!("{keyword} {} is not the exec (JSON) form: {e}", i.args))
}

/// ENV NAME=value pairs of one stage.
fn env_instructions(instructions: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ENV" && i.stage == stage)
        .flat_map(|i| {
            i.args.split_whitespace().map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {}: use the NAME=value form", i.args));
                (k.to_string(), v.to_string())
            })
        })
        .collect()
}

// --- .dockerignore ------------------------------------------------------------------

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect()
}

/// Whether one path segment matches a pattern segment with `*` wildcards.
fn segment_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| segment_matches(tail, &rest[i..]))
        }
    }
}

fn glob_matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_matches(&pattern[1..], path)
                || (!path.is_empty() && glob_matches(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => segment_matches(p, n) && glob_matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Whether .dockerignore keeps `path` (or a folder above it) out of the
/// build context. Negations (`!`) are not used, so not handled.
fn ignored(patterns: &[String], path: &str) -> bool {
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    patterns.iter().any(|p| {
        assert!(
            !p.starts_with('!'),
            "negated .dockerignore patterns: teach this test"
        );
        let pattern: Vec<&str> = p.split('/').collect();
        (1..=path.len()).any(|n| glob_matches(&pattern, &path[..n]))
    })
}

// --- docker-compose.yml --------------------------------------------------------------

#[test]
fn container_compose_keeps_kafka_private_and_in_kraft_mode() {
    let doc = compose();
    let kafka = service(&doc, KAFKA);

    let image = text(&kafka["image"], "kafka image");
    let tag = image
        .strip_prefix("apache/kafka:")
        .unwrap_or_else(|| panic!("kafka runs `{image}`, not the official apache/kafka image"));
    assert!(
        tag.starts_with("3.9.") || tag.starts_with("4."),
        "apache/kafka:{tag}: pin a 3.9.x or 4.x release"
    );

    let env = environment(kafka);
    let get = |k: &str| {
        env.get(k)
            .unwrap_or_else(|| panic!("kafka does not set {k}"))
            .clone()
    };
    let roles: BTreeSet<&str> = env
        .get("KAFKA_PROCESS_ROLES")
        .map(|r| r.split(',').map(str::trim).collect())
        .unwrap_or_default();
    assert_eq!(
        roles,
        BTreeSet::from(["broker", "controller"]),
        "one KRaft node is both broker and controller"
    );
    assert!(
        !env.keys().any(|k| k.contains("ZOOKEEPER")),
        "KRaft mode: no ZooKeeper settings: {env:?}"
    );
    assert!(!get("CLUSTER_ID").is_empty());
    let voters = get("KAFKA_CONTROLLER_QUORUM_VOTERS");
    assert_eq!(
        voters.split_once('@').map(|(id, _)| id.to_string()),
        Some(get("KAFKA_NODE_ID")),
        "the only voter is this node"
    );
    let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
    assert!(
        get("KAFKA_LISTENERS").contains(&format!("{controller}://")),
        "the controller listener {controller} is one of KAFKA_LISTENERS"
    );
    assert_eq!(
        get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"),
        "1",
        "one broker cannot hold 3 replicas of __consumer_offsets: consumer groups would never work"
    );
    assert_eq!(
        get("KAFKA_AUTO_CREATE_TOPICS_ENABLE"),
        "false",
        "topics come from kafka-init only"
    );
    let _ = internal_bootstrap(&doc);

    // Private: nothing published, and only internal networks.
    for (name, svc) in doc["services"].as_mapping().expect("services").iter() {
        assert_eq!(
            ports(svc),
            Vec::new(),
            "service {name:?} publishes ports; the base compose file publishes none"
        );
    }
    let nets = networks(kafka);
    assert!(!nets.is_empty(), "kafka must name its network explicitly");
    for net in &nets {
        assert!(
            network_is_internal(&doc, net),
            "kafka is on network `{net}`, which is not internal"
        );
    }

    // Its log (the events) survives a restart: on a named volume.
    let log_dirs = get("KAFKA_LOG_DIRS");
    assert!(
        volume_mounts(&doc, kafka)
            .iter()
            .any(|(_, target)| *target == log_dirs),
        "KAFKA_LOG_DIRS={log_dirs} is not on a named volume"
    );
    assert!(
        !strings(&kafka["healthcheck"]["test"]).is_empty(),
        "kafka needs a healthcheck: kafka-init waits for service_healthy"
    );
}

#[test]
fn container_compose_creates_both_topics_before_the_service_starts() {
    let doc = compose();
    let kafka = service(&doc, KAFKA);
    let init = service(&doc, TOPIC_INIT);

    assert_eq!(
        init["image"], kafka["image"],
        "kafka-init uses the broker's image"
    );
    assert_eq!(
        depends_on(init).get(KAFKA).map(String::as_str),
        Some("service_healthy")
    );
    let restart = scalar(&init["restart"]).unwrap_or_else(|| "no".into());
    assert!(
        restart == "no",
        "kafka-init is one-shot; restart: {restart}"
    );
    for net in networks(init) {
        assert!(
            network_is_internal(&doc, &net),
            "kafka-init needs no way out ({net})"
        );
    }

    let script = [strings(&init["entrypoint"]), strings(&init["command"])]
        .concat()
        .join(" ");
    let bootstrap = internal_bootstrap(&doc);
    let retention_hours = toml_file("config.toml")["ledger"]["retention_hours"]
        .as_integer()
        .expect("config.toml: ledger.retention_hours");
    let retention = format!("retention.ms={}", retention_hours * 3_600_000);

    let mut created = BTreeSet::new();
    for invocation in script.split("kafka-topics.sh").skip(1) {
        let words: Vec<&str> = invocation
            .split_whitespace()
            .filter(|w| *w != "\\")
            .collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        assert_eq!(
            after("--bootstrap-server"),
            Some(bootstrap.as_str()),
            "{words:?}"
        );
        if !words.contains(&"--create") {
            continue;
        }
        let topic = after("--topic").expect("--create names a --topic");
        assert!(
            words.contains(&"--if-not-exists"),
            "re-runs must succeed: {words:?}"
        );
        assert_eq!(
            after("--partitions"),
            Some("1"),
            "{topic}: one partition, as designed"
        );
        assert_eq!(
            after("--replication-factor"),
            Some("1"),
            "{topic}: one broker"
        );
        assert!(
            words.contains(&retention.as_str()),
            "{topic} must keep events as long as the ledger remembers them ({retention}): {words:?}"
        );
        created.insert(topic.to_string());
    }
    assert_eq!(
        created,
        BTreeSet::from([TOPIC.to_string(), DLQ_TOPIC.to_string()])
    );

    // The service starts only after the topics exist.
    assert_eq!(
        depends_on(service(&doc, HOST))
            .get(TOPIC_INIT)
            .map(String::as_str),
        Some("service_completed_successfully")
    );
}

#[test]
fn container_compose_runs_the_host_with_env_file_secrets_and_a_readiness_check() {
    let doc = compose();
    let host = service(&doc, HOST);
    let root = root();

    // Built from this repository's Dockerfile.
    let (context, dockerfile_name) = match &host["build"] {
        Value::Mapping(_) => (
            text(&host["build"]["context"], "build.context"),
            scalar(&host["build"]["dockerfile"]).unwrap_or_else(|| "Dockerfile".into()),
        ),
        other => (text(other, "build"), "Dockerfile".into()),
    };
    let dockerfile_path = root.join(&context).join(&dockerfile_name);
    assert!(
        dockerfile_path.is_file(),
        "{} is missing",
        dockerfile_path.display()
    );
    assert_eq!(context, ".", "the build context is the workspace root");

    // Secrets from .env, which is never committed; the example is.
    assert_eq!(strings(&host["env_file"]), vec![".env".to_string()]);
    assert!(
        root.join(".env.example").is_file(),
        ".env.example is missing"
    );
    let gitignored = read(".gitignore")
        .lines()
        .any(|l| matches!(l.trim(), ".env" | "/.env"));
    assert!(gitignored, ".gitignore must list .env");

    assert_eq!(ports(host), Vec::new(), "the host publishes no port");
    assert_eq!(text(&host["restart"], "restart"), "unless-stopped");

    // Readiness, probed inside the container by the binary itself (no curl),
    // on the port the admin server is told to listen on.
    let env = environment(host);
    let admin = env
        .get("NOTIFY_ADMIN_ADDR")
        .expect("notify-host sets NOTIFY_ADMIN_ADDR");
    let (admin_ip, admin_port) = admin
        .rsplit_once(':')
        .expect("NOTIFY_ADMIN_ADDR is ip:port");
    assert_eq!(admin_ip, "0.0.0.0", "other containers may scrape /metrics");
    let test = strings(&host["healthcheck"]["test"]);
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD"),
        "exec form: {test:?}"
    );
    assert_eq!(test.get(1).map(String::as_str), Some("/app/notify-host"));
    assert_eq!(test.get(2).map(String::as_str), Some("health"));
    assert!(
        test.contains(&format!("http://127.0.0.1:{admin_port}/health/ready")),
        "the healthcheck probes /health/ready on port {admin_port}: {test:?}"
    );

    // The ledger on a named volume, where the config puts it.
    let data_dir = env
        .get("NOTIFY_DATA_DIR")
        .expect("notify-host sets NOTIFY_DATA_DIR");
    assert!(
        volume_mounts(&doc, host)
            .iter()
            .any(|(_, target)| target == data_dir),
        "NOTIFY_DATA_DIR={data_dir} is not a named volume: deliveries would be forgotten on restart"
    );

    // On Kafka's internal network, and on one with a way out to the providers.
    let nets = networks(host);
    let kafka_nets = networks(service(&doc, KAFKA));
    assert!(
        nets.iter().any(|n| kafka_nets.contains(n)),
        "notify-host shares no network with kafka: {nets:?} / {kafka_nets:?}"
    );
    assert!(
        nets.iter().any(|n| !network_is_internal(&doc, n)),
        "notify-host cannot reach Mailgun or Twilio: every network is internal: {nets:?}"
    );

    // Docker kills the container after stop_grace_period: it must outlast the
    // host's own shutdown grace, or in-flight events are cut off.
    let grace = toml_file("config.toml")["pipeline"]["shutdown_grace_seconds"]
        .as_integer()
        .expect("config.toml: pipeline.shutdown_grace_seconds");
    let stop =
        duration_seconds(&scalar(&host["stop_grace_period"]).unwrap_or_else(|| "10s".into()));
    assert!(
        stop > u64::try_from(grace).expect("positive"),
        "stop_grace_period {stop}s must exceed shutdown_grace_seconds {grace}s"
    );
}

#[test]
fn container_compose_gives_each_container_its_own_static_member_id() {
    let doc = compose();
    let host = service(&doc, HOST);
    let entrypoint = strings(&host["entrypoint"]);
    let command = strings(&host["command"]);
    assert_eq!(
        entrypoint.get(..2),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..]),
        "{entrypoint:?}"
    );
    let script = &entrypoint[2];
    // Every `$` doubled: compose must leave the expansion to the container,
    // where HOSTNAME is that container's own (compose would give every
    // replica of --scale this machine's).
    assert!(
        !script.replace("$$", "").contains('$'),
        "compose would expand a variable of the script: {script}"
    );
    assert!(
        !environment(host).contains_key("KAFKA_INSTANCE_ID"),
        "a fixed id in `environment` is shared by every replica"
    );
    // An entrypoint in compose drops the image's CMD: it is given again.
    let instructions = dockerfile();
    let last = instructions.last().expect("instructions").stage;
    assert_eq!(command, exec_form(&instructions, last, "CMD"));
    assert_eq!(
        exec_form(&instructions, last, "ENTRYPOINT"),
        vec!["/app/notify-host".to_string()]
    );

    // Run the script as the container would, with `env` in place of the host.
    let unescaped = script.replace("$$", "$");
    let exec = r#"exec /app/notify-host "$@""#;
    assert!(unescaped.ends_with(exec), "{unescaped}");
    let probe = unescaped.replace(exec, r#"printf 'ARG:%s\n' "$@"; exec env"#);
    let run = |vars: &[(&str, &str)]| {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(&probe)
            .args(&entrypoint[3..])
            .args(&command);
        c.env_clear().env("PATH", "/usr/bin:/bin");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().expect("run the entrypoint script");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env = run(&[("HOSTNAME", "3f2a9c1b7d4e")]);
    assert!(
        env.lines()
            .any(|l| l == "KAFKA_INSTANCE_ID=notify-host-3f2a9c1b7d4e"),
        "{env}"
    );
    let args: Vec<String> = env
        .lines()
        .filter_map(|l| l.strip_prefix("ARG:"))
        .map(str::to_string)
        .collect();
    assert_eq!(args, command, "the command reaches the host unchanged");
    let env = run(&[("HOSTNAME", "3f2a9c1b7d4e"), ("KAFKA_INSTANCE_ID", "")]);
    assert!(
        env.lines()
            .any(|l| l == "KAFKA_INSTANCE_ID=notify-host-3f2a9c1b7d4e"),
        "an empty value in .env does not stop the default: {env}"
    );
    let env = run(&[("HOSTNAME", "3f2a9c1b7d4e"), ("KAFKA_INSTANCE_ID", "mine")]);
    assert!(env.lines().any(|l| l == "KAFKA_INSTANCE_ID=mine"), "{env}");
}

#[test]
fn container_publish_override_binds_kafka_to_loopback_only() {
    let base = compose();
    let over = yaml(PUBLISH_OVERRIDE);

    let names: Vec<String> = over["services"]
        .as_mapping()
        .expect("services")
        .keys()
        .map(|k| text(k, "service"))
        .collect();
    assert_eq!(
        names,
        vec![KAFKA.to_string()],
        "the override touches kafka only"
    );
    let kafka = service(&over, KAFKA);

    // Clients on this machine are told to use the EXTERNAL listener.
    let advertised = advertised_listeners(&environment(service(&base, KAFKA)));
    let external = advertised
        .get("EXTERNAL")
        .expect("kafka advertises an EXTERNAL listener");
    let (external_host, external_port) = external.rsplit_once(':').expect("host:port");
    assert_eq!(external_host, "localhost");
    let listeners = environment(service(&base, KAFKA))["KAFKA_LISTENERS"].clone();
    let external_listen_port = listeners
        .split(',')
        .find_map(|l| l.trim().strip_prefix("EXTERNAL://"))
        .and_then(|addr| addr.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
        .expect("KAFKA_LISTENERS has EXTERNAL://");

    let published = ports(kafka);
    assert!(!published.is_empty(), "the override publishes Kafka");
    for (ip, host_port, container_port) in &published {
        assert_eq!(ip, "127.0.0.1", "bound to loopback only, never 0.0.0.0");
        assert_eq!(
            host_port, external_port,
            "what is advertised is what is published"
        );
        assert_eq!(
            container_port, &external_listen_port,
            "the EXTERNAL listener's port"
        );
    }

    // Docker publishes no port of a container whose only network is
    // internal: the override must add an ordinary one.
    let declared = |name: &str| {
        over["networks"]
            .get(name)
            .or_else(|| base["networks"].get(name))
            .unwrap_or_else(|| panic!("network `{name}` is not declared"))
            .clone()
    };
    let nets = networks(kafka);
    assert!(
        nets.iter()
            .any(|n| !matches!(declared(n)["internal"], Value::Bool(true))),
        "kafka stays on internal networks only, so the port would not be published: {nets:?}"
    );
    for n in networks(service(&base, KAFKA)) {
        assert!(nets.contains(&n), "kafka leaves its network `{n}`");
        assert!(
            over["networks"].get(&n).is_none(),
            "the override redefines the private network `{n}`"
        );
    }
}

// --- .env.example ---------------------------------------------------------------------

#[test]
fn container_env_example_documents_exactly_what_config_toml_reads() {
    let config = config_vars();
    let example = env_example();
    let doc = compose();
    let host_env = environment(service(&doc, HOST));

    let in_config: BTreeSet<&String> = config.keys().collect();
    let in_example: BTreeSet<&String> = example.keys().collect();
    assert_eq!(
        in_example.difference(&in_config).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        ".env.example sets variables config.toml never reads"
    );
    assert_eq!(
        in_config.difference(&in_example).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "config.toml reads variables .env.example does not document"
    );

    for (name, line) in &example {
        match &config[name] {
            // Secrets and the like: a line to fill in, shipped empty.
            ConfigVar::Required => {
                assert!(line.active, "{name} is required: ship it as `{name}=`");
                assert_eq!(
                    line.value, "",
                    "{name}: .env.example ships no values for required settings"
                );
            }
            // A commented line shows what applies when it stays commented:
            // compose's value if compose sets it, else config.toml's default.
            ConfigVar::Default(default) if !line.active => {
                let applies = host_env.get(name).unwrap_or(default);
                assert_eq!(
                    &line.value, applies,
                    "{name}: the commented value is not what applies"
                );
            }
            _ => {}
        }
    }
    for secret in ["MAILGUN_API_KEY", "TWILIO_AUTH_TOKEN"] {
        assert_eq!(config.get(secret), Some(&ConfigVar::Required), "{secret}");
    }

    // Inside compose the broker is kafka's internal listener, not localhost.
    let bootstrap = example
        .get("KAFKA_BOOTSTRAP_SERVERS")
        .expect("KAFKA_BOOTSTRAP_SERVERS");
    assert!(bootstrap.active);
    assert_eq!(bootstrap.value, internal_bootstrap(&doc));

    // The topics the service reads are the ones kafka-init creates.
    assert_eq!(
        config.get("KAFKA_TOPIC_APPOINTMENTS_CREATED"),
        Some(&ConfigVar::Default(TOPIC.into()))
    );
    assert_eq!(
        config.get("KAFKA_TOPIC_APPOINTMENTS_CREATED_DLQ"),
        Some(&ConfigVar::Default(DLQ_TOPIC.into()))
    );

    // What compose and the image set must be something the config reads.
    let instructions = dockerfile();
    let last = instructions.last().expect("instructions").stage;
    let image_env = env_instructions(&instructions, last);
    for name in host_env.keys().chain(image_env.keys()) {
        assert!(
            config.contains_key(name),
            "{name} is set for the container but config.toml does not read it"
        );
    }
}

#[test]
fn container_env_example_as_shipped_passes_check_config() {
    // What a user does: copy .env.example, fill in the Mailgun values, leave
    // SMS off. compose then adds its `environment`; the data dir is a temp
    // dir here instead of the volume.
    let doc = compose();
    let work = Workdir::new();
    let mut env: Vec<(&str, String)> = Vec::new();
    let example = env_example();
    let host_env = environment(service(&doc, HOST));
    let filled = [
        ("MAILGUN_API_KEY", MAILGUN_KEY.to_string()),
        ("MAILGUN_DOMAIN", "mg.example.com".to_string()),
        (
            "MAILGUN_FROM_EMAIL",
            "Clinic <noreply@mg.example.com>".to_string(),
        ),
    ];
    for (name, line) in example.iter().filter(|(_, l)| l.active) {
        let value = filled
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| line.value.clone());
        env.push((name.as_str(), value));
    }
    for (name, value) in &host_env {
        env.retain(|(n, _)| n != name);
        env.push((name.as_str(), value.clone()));
    }
    env.retain(|(n, _)| *n != "NOTIFY_DATA_DIR");
    env.push(("NOTIFY_DATA_DIR", work.path().display().to_string()));

    let out = notify_host(&["check-config", "--config", "config.toml"], &env, &root());
    assert!(
        out.status.success(),
        "check-config with .env.example's values: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out);
    assert!(report.contains("channel email: enabled"), "{report}");
    assert!(
        report.contains("channel sms: on hold"),
        "SMS ships on hold (verification pending): {report}"
    );
    assert!(!report.contains(MAILGUN_KEY) && !stderr(&out).contains(MAILGUN_KEY));
}

// --- Dockerfile and .dockerignore -------------------------------------------------------

#[test]
fn container_dockerfile_builds_like_run_sh_and_runs_unprivileged() {
    let instructions = dockerfile();
    let froms: Vec<(String, Option<String>)> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .map(|i| from_parts(&i.args))
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    let last = froms.len() - 1;
    let stage_names: Vec<Option<String>> = froms.iter().map(|(_, n)| n.clone()).collect();

    // The build stage: the toolchain Cargo.toml asks for, on the Debian
    // release the runtime stage runs (same glibc).
    let cargo = toml_file("Cargo.toml");
    let rust_version = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("workspace.package.rust-version");
    let is_plugin_build =
        |c: &Vec<String>| c.first().map(String::as_str) == Some("./scripts/build-plugins.sh");
    let is_host_build = |c: &Vec<String>| {
        c.len() > 2
            && c[0] == "cargo"
            && c[1] == "build"
            && c.windows(2).any(|w| w == ["-p", "notify-host"])
    };
    let build_stage = (0..last)
        .find(|&s| run_commands(&instructions, s).iter().any(is_host_build))
        .expect("a stage before the last runs cargo build -p notify-host");
    let (build_image, _) = &froms[build_stage];
    assert!(
        build_image.starts_with(&format!("rust:{rust_version}")),
        "build image {build_image}: the workspace's rust-version is {rust_version}"
    );
    let codename = build_image
        .rsplit('-')
        .next()
        .expect("rust:<version>-<debian release>");
    let (runtime_image, _) = &froms[last];
    assert!(
        runtime_image.contains(codename),
        "built on {codename} but runs on {runtime_image}"
    );

    // The build commands of scripts/run.sh: the plugin script, and the very
    // cargo build (all its flags but --quiet).
    let run_sh: Vec<Vec<String>> = read("scripts/run.sh")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(shell_commands)
        .collect();
    assert!(
        run_sh.iter().any(is_plugin_build),
        "scripts/run.sh: {run_sh:?}"
    );
    let run_sh_build = run_sh
        .iter()
        .find(|c| is_host_build(c))
        .expect("scripts/run.sh builds the host");

    let build_cmds = run_commands(&instructions, build_stage);
    let plugin_build = build_cmds.iter().position(is_plugin_build);
    let host_build = build_cmds.iter().position(is_host_build);
    assert!(
        plugin_build.is_some(),
        "the Dockerfile does not run ./scripts/build-plugins.sh: {build_cmds:?}"
    );
    let host_build =
        host_build.expect("the Dockerfile builds the host with cargo build -p notify-host");
    let docker_build = &build_cmds[host_build];
    for flag in run_sh_build.iter().filter(|w| *w != "--quiet") {
        assert!(
            docker_build.contains(flag),
            "scripts/run.sh builds with `{flag}`, the Dockerfile does not: {docker_build:?}"
        );
    }

    // Every plugin config.toml loads is built into the image's /app/plugins.
    let config = toml_file("config.toml");
    let build_text = build_cmds
        .iter()
        .map(|c| c.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, channel) in config["channels"].as_table().expect("channels") {
        let plugin = channel["plugin"].as_str().expect("plugin");
        assert!(
            plugin.starts_with("plugins/"),
            "channel {name}: {plugin} is not under plugins/ (the image has /app/plugins only)"
        );
        assert!(
            build_text.contains(plugin),
            "channel {name}: the build stage does not collect {plugin}"
        );
    }

    // Sources: every COPY from the context exists and is not .dockerignore'd;
    // every COPY --from names an earlier stage.
    let root = root();
    let ignore = dockerignore();
    let all_copies = copies(&instructions);
    for c in &all_copies {
        match &c.from {
            Some(from) => assert!(
                stage_names[..c.stage]
                    .iter()
                    .any(|n| n.as_deref() == Some(from.as_str())),
                "COPY --from={from}: no earlier stage has that name"
            ),
            None => {
                for source in &c.sources {
                    assert!(
                        root.join(source).exists(),
                        "COPY {source}: not in the repository"
                    );
                    assert!(
                        !ignored(&ignore, source),
                        "COPY {source}: .dockerignore excludes it"
                    );
                }
            }
        }
    }
    // The whole workspace reaches the build stage: cargo loads every member.
    let context_sources: Vec<&String> = all_copies
        .iter()
        .filter(|c| c.from.is_none() && c.stage == build_stage)
        .flat_map(|c| c.sources.iter())
        .collect();
    let covered = |path: &str| {
        context_sources.iter().any(|s| {
            s.trim_end_matches('/') == path
                || path.starts_with(&format!("{}/", s.trim_end_matches('/')))
        })
    };
    let members = cargo["workspace"]["members"].as_array().expect("members");
    for member in members.iter().map(|m| m.as_str().expect("member")) {
        assert!(
            covered(member),
            "workspace member {member} is not copied into the build stage"
        );
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "wit",
        "scripts/build-plugins.sh",
    ] {
        assert!(
            covered(needed),
            "{needed} is not copied into the build stage"
        );
    }

    // The runtime stage: plugins and config where the entrypoint expects them.
    let runtime_copies: Vec<&Copy> = all_copies.iter().filter(|c| c.stage == last).collect();
    assert!(
        runtime_copies.iter().any(|c| {
            c.from.as_deref() == stage_names[build_stage].as_deref()
                && c.dest.trim_end_matches('/') == "/app/plugins"
        }),
        "the built plugins are not copied to /app/plugins"
    );
    assert!(
        runtime_copies.iter().any(|c| c.from.is_none()
            && c.sources == ["config.toml"]
            && c.dest == "/app/config.toml"),
        "config.toml is not copied to /app/config.toml"
    );
    assert_eq!(
        exec_form(&instructions, last, "ENTRYPOINT"),
        ["/app/notify-host"]
    );
    assert_eq!(
        exec_form(&instructions, last, "CMD"),
        ["run", "--config", "/app/config.toml"]
    );

    // Unprivileged: the final USER is not root.
    let user = instructions
        .iter()
        .rfind(|i| i.stage == last && i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("the final stage sets USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(!matches!(name, "root" | "0" | ""), "runs as `{user}`");
    let user_at = instructions
        .iter()
        .rposition(|i| i.stage == last && i.keyword == "USER")
        .expect("USER");
    assert!(
        !instructions[user_at..]
            .iter()
            .any(|i| i.keyword == "RUN" || i.keyword == "FROM"),
        "USER must come after the last RUN of the final stage"
    );

    // The data dir exists in the image and belongs to that user, so a fresh
    // named volume mounted on it is writable.
    let image_env = env_instructions(&instructions, last);
    let data_dir = image_env
        .get("NOTIFY_DATA_DIR")
        .expect("the image sets NOTIFY_DATA_DIR");
    assert_eq!(
        Some(data_dir),
        environment(service(&compose(), HOST)).get("NOTIFY_DATA_DIR"),
        "the image and compose agree on the data dir"
    );
    let runtime_cmds = run_commands(&instructions, last);
    assert!(
        runtime_cmds
            .iter()
            .any(|c| c[0] == "mkdir" && c.contains(data_dir)),
        "the image does not create {data_dir}: {runtime_cmds:?}"
    );
    assert!(
        runtime_cmds
            .iter()
            .any(|c| c[0] == "chown" && c.contains(data_dir)),
        "the image does not hand {data_dir} to the service user"
    );

    // The image's HEALTHCHECK is the compose one.
    let healthcheck = instructions
        .iter()
        .rfind(|i| i.stage == last && i.keyword == "HEALTHCHECK")
        .expect("the final stage has a HEALTHCHECK");
    let (_, probe) = healthcheck
        .args
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let probe: Vec<String> =
        serde_json::from_str(probe.trim()).expect("HEALTHCHECK CMD in exec form");
    let compose_probe = strings(&service(&compose(), HOST)["healthcheck"]["test"]);
    assert_eq!(probe, compose_probe[1..], "image and compose probe alike");
    assert!(probe.iter().any(|a| a.ends_with("/health/ready")));
}

#[test]
fn container_dockerignore_keeps_build_output_and_secrets_out() {
    let patterns = dockerignore();
    for path in [
        "target",
        "target/release/notify-host",
        ".tools/tansu",
        ".git",
        "data/ledger.redb",
        ".env",
        "plugins/mailgun.wasm",
        "tests/plugins/hostile.wasm",
    ] {
        assert!(ignored(&patterns, path), "{path} reaches the build context");
    }
    for path in [
        "Cargo.toml",
        "host/src/main.rs",
        "plugins/mailgun/src/lib.rs",
        "wit/channel.wit",
        "config.toml",
    ] {
        assert!(
            !ignored(&patterns, path),
            "{path} is kept out of the build context"
        );
    }
}

fn compose() -> Value {
    yaml(COMPOSE)
}
