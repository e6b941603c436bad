//! The plugin authoring kit as an author meets it: `plugin test` on the
//! bundled plugins' recorded cases, what it says about a wrong or a
//! malformed case, `plugin new` for every language built and tested end to
//! end, and `plugin render` loading only the channel it is asked about.
//!
//! The Python and JavaScript skeletons need componentize-py and jco, which
//! ./scripts/test.sh installs and exports (NOTIFY_COMPONENTIZE_PY,
//! NOTIFY_JCO); without them those tests fail, saying so, rather than skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::harness::*;

fn plugin_test(plugin: &Path, cases: &Path, extra: &[&str]) -> Output {
    let plugin = plugin.to_string_lossy();
    let cases = cases.to_string_lossy();
    let mut args = vec!["plugin", "test", "--plugin", &plugin, "--cases", &cases];
    args.extend_from_slice(extra);
    notify_host(&args, &[], &root())
}

/// `plugin test` passed every step: exit 0 and a summary without failures.
fn assert_all_pass(out: &Output, what: &str) {
    let text = stdout(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: plugin test failed\n{text}\n{}",
        stderr(out)
    );
    assert!(text.contains(" 0 failed"), "{what}:\n{text}");
    assert!(!text.contains("FAIL"), "{what}:\n{text}");
}

fn bundled_cases_pass(name: &str) {
    let out = plugin_test(
        &wasm(&format!("plugins/{name}.wasm")),
        &root().join(format!("plugins/{name}/cases")),
        &[],
    );
    assert_all_pass(&out, name);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("plugin {name} ")),
        "names the plugin: {text}"
    );
    // Every case file shows up, with at least its settings step.
    let cases = std::fs::read_dir(root().join(format!("plugins/{name}/cases")))
        .expect("case dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert!(cases >= 4, "{name} has {cases} cases");
    assert!(
        text.contains(&format!("{cases} cases,")),
        "{name}: every case ran\n{text}"
    );
}

#[test]
fn mailgun_passes_its_recorded_cases() {
    bundled_cases_pass("mailgun");
}

#[test]
fn twilio_passes_its_recorded_cases() {
    bundled_cases_pass("twilio");
}

/// The webhook plugin is built by scripts/build-plugins.sh once its
/// toolchain is there; its cases are checked whenever it is.
#[test]
fn webhook_passes_its_recorded_cases_when_built() {
    let built = root().join("plugins/webhook.wasm");
    if !built.exists() {
        eprintln!(
            "note: {} is not built (scripts/build-plugins.sh builds it): its cases were not run",
            built.display()
        );
        return;
    }
    let out = plugin_test(&built, &root().join("plugins/webhook/cases"), &[]);
    assert_all_pass(&out, "webhook");
}

/// A copy of a passing Twilio case with three things wrong in it.
fn wrong_case() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("plugins/twilio/cases/01-confirmation.json"))
        .expect("twilio case");
    let mut case: serde_json::Value = serde_json::from_str(&text).expect("case JSON");
    case["expect"]["requests"][0]["url"] = "https://api.twilio.com/2010-04-01/Messages.json".into();
    case["responses"][0]["expect"]["provider_message_id"] = "SM-other".into();
    case["responses"][2]["expect"] = serde_json::json!({ "disposition": "permanent" });
    case
}

#[test]
fn a_wrong_case_fails_and_says_what_differed() {
    let w = Workdir::new();
    w.write(
        "01-wrong.json",
        &serde_json::to_string_pretty(&wrong_case()).expect("json"),
    );
    let out = plugin_test(&wasm("plugins/twilio.wasm"), w.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    for line in [
        "01-wrong.json  settings    PASS",
        "01-wrong.json  render      FAIL    url: expected `https://api.twilio.com/2010-04-01/Messages.json`, got `https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json`",
        "01-wrong.json  response 1  FAIL    provider_message_id: expected `SM-other`, got `SM0123456789abcdef0123456789abcdef`",
        "01-wrong.json  response 2  PASS",
        "01-wrong.json  response 3  FAIL    expected permanent, got retry: `twilio: HTTP 503: Service Unavailable`",
        "1 case, 5 steps: 2 passed, 3 failed (in 1 case)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    // The same as JSON, for tools.
    let out = plugin_test(&wasm("plugins/twilio.wasm"), w.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json_stdout(&out);
    assert_eq!(doc["passed"], 2, "{doc}");
    assert_eq!(doc["failed"], 3, "{doc}");
    assert_eq!(doc["plugin"]["name"], "twilio");
    let steps = &doc["cases"][0]["steps"];
    assert_eq!(steps[1]["step"], "render");
    assert_eq!(steps[1]["result"], "fail");
    assert!(
        steps[1]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("url: expected")),
        "{doc}"
    );
}

#[test]
fn a_malformed_case_is_unusable_input_naming_the_file_and_the_path() {
    let w = Workdir::new();
    let mut case = wrong_case();
    case["message"]["purpose"] = "remnder".into();
    w.write(
        "bad-purpose.json",
        &serde_json::to_string_pretty(&case).expect("json"),
    );
    w.write("broken.json", "{\"settings\": {\"a\": 1},\n \"expect\": {");
    w.write(
        "misplaced.json",
        r#"{"settings": {}, "responses": [{"status": 200, "expect": {"disposition": "delivered", "after_ms": 5}}]}"#,
    );
    w.write("notes.txt", "not a case: ignored");
    let out = plugin_test(&wasm("plugins/twilio.wasm"), w.path(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}\n{err}", stdout(&out));
    for want in [
        "bad-purpose.json: at `message.purpose`: unknown variant `remnder`",
        "broken.json: ",
        "misplaced.json: at `responses[0].expect.after_ms`: only for disposition retry, not delivered",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(!err.contains("notes.txt"), "{err}");
    assert!(
        !stdout(&out).contains("PASS"),
        "nothing runs: {}",
        stdout(&out)
    );

    // No case files at all, or no directory, is unusable too.
    let empty = Workdir::new();
    let out = plugin_test(&wasm("plugins/twilio.wasm"), empty.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no case files"), "{}", stderr(&out));
    let out = plugin_test(
        &wasm("plugins/twilio.wasm"),
        &empty.path().join("missing"),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the case directory"),
        "{}",
        stderr(&out)
    );
}

/// The fixed target directory of the Rust skeleton's builds, so repeated
/// runs (and CI with a cached target/) compile its dependencies once.
fn rust_plugin_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new")
}

/// `plugin new NAME --lang LANG` into a temp dir, its build.sh, then
/// `plugin test` on the built file and the skeleton's own cases.
fn new_builds_and_passes(lang: &str, env: &[(&str, String)]) {
    let parent = Workdir::new();
    let name = format!("acme-{lang}");
    let started = Instant::now();
    let new = || {
        notify_host(
            &[
                "plugin",
                "new",
                &name,
                "--lang",
                lang,
                "--dir",
                &parent.path().to_string_lossy(),
            ],
            &[],
            &root(),
        )
    };
    let out = new();
    assert!(out.status.success(), "plugin new: {}", stderr(&out));
    let dir = parent.path().join(&name);
    let text = stdout(&out);
    for want in [
        format!("created {}", dir.display()),
        format!("{}", dir.join("build.sh").display()),
        format!(
            "notify-host plugin test --plugin {} --cases {}",
            dir.join(format!("{name}.wasm")).display(),
            dir.join("cases").display()
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // The contract is the one this host speaks, byte for byte.
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/channel.wit")).expect("wit"),
        std::fs::read_to_string(root().join("wit/channel.wit")).expect("repo wit"),
    );
    assert!(dir.join("README.md").exists());

    let mut build = Command::new(dir.join("build.sh"));
    build.current_dir(&dir);
    for (k, v) in env {
        build.env(k, v);
    }
    let built = build.output().expect("run build.sh");
    assert!(
        built.status.success(),
        "{lang} build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm_file = dir.join(format!("{name}.wasm"));
    assert!(wasm_file.exists(), "{} was not built", wasm_file.display());
    let build_time = started.elapsed();

    let out = plugin_test(&wasm_file, &dir.join("cases"), &[]);
    assert_all_pass(&out, &format!("{lang} skeleton"));
    eprintln!(
        "{lang} skeleton: new + build {:.1} s, plugin test {:.1} s",
        build_time.as_secs_f64(),
        started.elapsed().saturating_sub(build_time).as_secs_f64()
    );

    // A second `new` into the same place refuses, naming it.
    let again = new();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains(&format!("{} exists and is not empty", dir.display())),
        "{}",
        stderr(&again)
    );
}

/// The toolchain a language's build.sh needs, from the environment the
/// test command sets up.
fn toolchain(var: &str, lang: &str) -> String {
    match std::env::var(var) {
        Ok(path) if !path.trim().is_empty() => path,
        _ => panic!(
            "{var} is not set: the {lang} plugin skeleton cannot be built. Run ./scripts/test.sh, which installs the plugin toolchains and exports it (or eval \"$(./scripts/plugin-toolchains.sh)\" first)"
        ),
    }
}

#[test]
fn new_rust_plugin_builds_and_passes_its_cases() {
    new_builds_and_passes(
        "rust",
        &[(
            "CARGO_TARGET_DIR",
            rust_plugin_target_dir().to_string_lossy().into_owned(),
        )],
    );
}

#[test]
fn new_python_plugin_builds_and_passes_its_cases() {
    let tool = toolchain("NOTIFY_COMPONENTIZE_PY", "Python");
    new_builds_and_passes("python", &[("NOTIFY_COMPONENTIZE_PY", tool)]);
}

#[test]
fn new_js_plugin_builds_and_passes_its_cases() {
    let tool = toolchain("NOTIFY_JCO", "JavaScript");
    new_builds_and_passes("js", &[("NOTIFY_JCO", tool)]);
}

#[test]
fn new_refuses_a_bad_name() {
    let parent = Workdir::new();
    for name in ["Acme", "9lives", "a/b", "fn"] {
        let out = notify_host(
            &[
                "plugin",
                "new",
                name,
                "--lang",
                "rust",
                "--dir",
                &parent.path().to_string_lossy(),
            ],
            &[],
            &root(),
        );
        assert!(!out.status.success(), "{name}");
        assert!(
            stderr(&out).contains(&format!("plugin name {name:?}")),
            "{name}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_dir(parent.path()).expect("dir").count(),
        0,
        "nothing written"
    );
}

/// `plugin render` about one channel loads that channel only: another
/// channel whose plugin file is missing does not stop it, though it stops
/// `check-config`, which loads them all.
#[test]
fn render_loads_only_the_channel_asked_about() {
    let w = Workdir::new();
    let config = w.write(
        "config.toml",
        &format!(
            "[channels.email]\nplugin = {:?}\nbase_url = \"https://api.mailgun.net\"\nsettings = {{ domain = \"mg.example.com\", from = \"noreply@mg.example.com\" }}\n\n[channels.sms]\nplugin = \"plugins/missing.wasm\"\nbase_url = \"https://api.twilio.com\"\nsettings = {{ account_sid = \"AC0123456789abcdef0123456789abcdef\", from = \"+15005550006\" }}\n",
            mailgun_wasm()
        ),
    );
    let event = w.write("event.json", SAMPLE_EVENT);

    let out = notify_host(
        &["check-config", "--config", &config.to_string_lossy()],
        &[],
        w.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("channels.sms.plugin"),
        "{}",
        stderr(&out)
    );

    let out = plugin_with_event("render", &config, "email", &event, &[], w.path());
    assert!(
        out.status.success(),
        "render email: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let doc = json_stdout(&out);
    assert_eq!(doc["channel"], "email");
    assert_eq!(
        doc["requests"][0]["url"], "https://api.mailgun.net/v3/mg.example.com/messages",
        "{doc}"
    );

    let out = notify_host(
        &[
            "plugin",
            "classify",
            "--config",
            &config.to_string_lossy(),
            "--channel",
            "email",
            "--status",
            "503",
        ],
        &[],
        w.path(),
    );
    assert!(out.status.success(), "classify email: {}", stderr(&out));
    assert_eq!(json_stdout(&out)["disposition"], "retry");

    // Asked about the broken channel itself, the problem is named.
    let out = plugin_with_event("render", &config, "sms", &event, &[], w.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("channels.sms.plugin"),
        "{}",
        stderr(&out)
    );
}
