//! Golden config errors: each tests/config/invalid/NAME.toml sits beside
//! NAME.err, the exact text `check-config` must print (exit 2). Run with
//! UPDATE_GOLDEN=1 to rewrite the .err files after an intended change, then
//! review the diff.

use crate::harness::*;

/// Values the secret cases interpolate; none may appear in any output.
const GOLDEN_SECRET_KEY: &str = "key-golden-0f1e2d3c4b5a6978";
const GOLDEN_CONTROL_TOKEN: &str = "token-golden-\u{1b}[31m-0f1e2d";
const GOLDEN_SHORT_TOKEN: &str = "tok3n";

fn golden_env() -> Vec<(&'static str, String)> {
    vec![
        ("GOLDEN_MULTILINE", "line one\nline two".to_string()),
        ("GOLDEN_SECRET_KEY", GOLDEN_SECRET_KEY.to_string()),
        ("GOLDEN_CONTROL_TOKEN", GOLDEN_CONTROL_TOKEN.to_string()),
        ("GOLDEN_SHORT_TOKEN", GOLDEN_SHORT_TOKEN.to_string()),
    ]
}

#[test]
fn invalid_configs_produce_their_golden_errors() {
    // The hostile and wrong-world components are referenced by some cases.
    let _ = (
        hostile_wasm(),
        wasm("tests/plugins/not-a-channel.wasm"),
        mailgun_wasm(),
    );
    let dir = root().join("tests/config/invalid");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("read golden dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases went missing: {cases:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let relative = format!(
            "tests/config/invalid/{}",
            case.file_name().unwrap_or_default().to_string_lossy()
        );
        let out = notify_host(
            &["check-config", "--config", &relative],
            &golden_env(),
            &root(),
        );
        let golden = case.with_extension("err");
        let got = stderr(&out);
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| format!("<{} missing>", golden.display()));
        // Whatever the golden text says, no case may print a secret.
        let output = format!("{}{got}", stdout(&out));
        for secret in [GOLDEN_SECRET_KEY, GOLDEN_CONTROL_TOKEN, GOLDEN_SHORT_TOKEN] {
            if output.contains(secret) {
                failures.push(format!(
                    "{relative}: printed the value of a variable: {output}"
                ));
            }
        }
        if out.status.code() != Some(2) || got != want {
            failures.push(format!(
                "{relative}: exit {:?}\n--- want\n{want}--- got\n{got}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
