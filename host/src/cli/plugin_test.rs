//! `notify-host plugin test`: runs recorded cases (one JSON file each)
//! against a plugin, without a config file, and says step by step whether
//! the plugin's own output is what each case expects.
//!
//! Invariant: a case passes only for what the host would do as well. Its
//! event goes through the host's event contract and `to_plugin_event`, as
//! `plugin render` does, so a case cannot pass with an event the host would
//! dead-letter; the plugin's `required-fields` are checked as the host checks
//! them before `render`; a setting the plugin does not list in
//! `known-settings` fails the settings step, as it fails `check-config`.
//! What is compared is the plugin's output itself: its requests before the
//! host's allow-list, caps and auth, its dispositions as the host receives
//! them.
//!
//! Exit codes: 0 every step passed, 1 a step failed, 2 the input is unusable
//! (the case directory, a case file, the plugin file), with the file named
//! and, for a case file, the JSON path of the mistake.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use futures_executor::block_on;
use notify_host::channels::RenderError;
use notify_host::config::PluginRuntimeConfig;
use notify_host::event;
use notify_host::plugin::{
    CallContext, ChannelPlugin, Disposition, Header, HttpRequest, HttpResponse, LoadError, Message,
    PluginRuntime, Purpose, Setting,
};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::cli::EXIT_CONFIG;

/// Exit code for a failed step.
const EXIT_FAILED: u8 = 1;
/// Exit code for input that cannot be run at all. The same number as an
/// invalid config: in both the files, not the plugin, need fixing first.
const EXIT_UNUSABLE: u8 = EXIT_CONFIG;

/// The channel name the plugin is loaded under: it appears in the
/// plugin's log lines.
const PLUGIN_CHANNEL: &str = "test";

/// A value quoted in a FAIL detail is cut here: the table stays readable,
/// and `--json` has the same detail for a tool that wants all of it.
const SHOWN_CHARS: usize = 120;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The plugin to test: a WebAssembly component of the notify:channel
    /// world (a .wasm file).
    #[arg(long, value_name = "FILE.wasm")]
    plugin: PathBuf,
    /// The directory of case files: every `*.json` file in it is one case,
    /// run in name order.
    #[arg(long, value_name = "DIR")]
    cases: PathBuf,
    /// Print the results as one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// One case file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case shows, for the reader of the file and of `--json`.
    #[serde(default)]
    description: Option<String>,
    /// The channel's settings. Strings, numbers and booleans, as TOML's
    /// arrive (a number or boolean in its text form).
    #[serde(default)]
    settings: BTreeMap<String, Value>,
    /// The event as it would arrive on Kafka.
    #[serde(default)]
    event: Option<Value>,
    /// The message render is asked for; a confirmation when absent.
    #[serde(default)]
    message: Option<CaseMessage>,
    #[serde(default)]
    expect: Option<Expect>,
    /// Provider answers to classify, each with its expected disposition.
    #[serde(default)]
    responses: Vec<CaseResponse>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseMessage {
    #[serde(default)]
    purpose: CasePurpose,
    #[serde(default)]
    reminder: Option<String>,
    #[serde(default)]
    useful_until: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CasePurpose {
    #[default]
    Confirmation,
    Reminder,
    Cancellation,
    Reschedule,
}

impl From<CasePurpose> for Purpose {
    fn from(p: CasePurpose) -> Purpose {
        match p {
            CasePurpose::Confirmation => Purpose::Confirmation,
            CasePurpose::Reminder => Purpose::Reminder,
            CasePurpose::Cancellation => Purpose::Cancellation,
            CasePurpose::Reschedule => Purpose::Reschedule,
        }
    }
}

/// What the case expects of `check-settings` and `render`: exactly one of
/// the three keys.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Expect {
    /// Render succeeds with these requests, in this order.
    Requests(Vec<ExpectedRequest>),
    /// Render rejects the event with a reason containing this text.
    Rejected(String),
    /// `check-settings` fails with problems containing each of these.
    SettingsErrors(Vec<String>),
}

/// One expected request. Only what is given is compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedRequest {
    /// Compared case-insensitively.
    #[serde(default)]
    method: Option<String>,
    /// Compared exactly.
    #[serde(default)]
    url: Option<String>,
    /// Each must be among the request's headers: names case-insensitive,
    /// values exact. The request may have more.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The body, exactly.
    #[serde(default)]
    body: Option<String>,
    /// The body parsed as JSON, equal to this.
    #[serde(default)]
    body_json: Option<Value>,
    /// With `body_json`: compare only the keys given, in every object
    /// (nested ones too); arrays and other values are compared whole.
    #[serde(default)]
    body_json_subset: bool,
    /// Texts the body must contain.
    #[serde(default)]
    body_contains: Option<Vec<String>>,
}

/// One provider answer to classify.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseResponse {
    status: u16,
    /// Names are lower-cased before the plugin sees them, as the host does.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    /// Which send this answers: 1 for the first.
    #[serde(default)]
    attempt: Option<u32>,
    /// The purpose of the message answered; the case message's when absent.
    #[serde(default)]
    purpose: Option<CasePurpose>,
    expect: ExpectedDisposition,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedDisposition {
    disposition: DispositionKind,
    /// Given: compared (`null`: there must be none). Absent: not compared.
    #[serde(default, deserialize_with = "present")]
    provider_message_id: Option<Option<String>>,
    /// Given: compared (`null`: there must be none). Absent: not compared.
    #[serde(default, deserialize_with = "present")]
    after_ms: Option<Option<u64>>,
    /// Text the reason (of retry, permanent or channel-down) must contain.
    #[serde(default)]
    reason_contains: Option<String>,
}

/// A key that is present, even as `null`, is `Some`: `null` then means
/// "must be absent", which is a different claim from not saying.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DispositionKind {
    Delivered,
    Retry,
    Permanent,
    ChannelDown,
}

impl DispositionKind {
    fn of(d: &Disposition) -> DispositionKind {
        match d {
            Disposition::Delivered(_) => DispositionKind::Delivered,
            Disposition::Retry(_) => DispositionKind::Retry,
            Disposition::Permanent(_) => DispositionKind::Permanent,
            Disposition::ChannelDown(_) => DispositionKind::ChannelDown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DispositionKind::Delivered => "delivered",
            DispositionKind::Retry => "retry",
            DispositionKind::Permanent => "permanent",
            DispositionKind::ChannelDown => "channel-down",
        }
    }
}

/// Why the cases cannot be run: the file and what is wrong with it.
#[derive(Debug)]
struct Unusable {
    file: PathBuf,
    message: String,
    /// The message names the file itself (the runtime's load errors do).
    names_file: bool,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.names_file {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

impl Unusable {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        Unusable {
            file: file.to_path_buf(),
            message: message.into(),
            names_file: false,
        }
    }

    /// A mistake at a JSON path of a case file.
    fn at(file: &Path, path: &str, message: impl std::fmt::Display) -> Self {
        Unusable::new(file, format!("at `{path}`: {message}"))
    }

    /// The plugin file cannot be loaded. The runtime's message names the
    /// file; the channel name it starts with is this command's own
    /// stand-in, which would only puzzle.
    fn plugin(file: &Path, e: &LoadError) -> Self {
        let text = e.to_string();
        let prefix = format!("channel `{PLUGIN_CHANNEL}`: ");
        let message = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
        Unusable {
            file: file.to_path_buf(),
            names_file: message.contains(&file.display().to_string()),
            message,
        }
    }
}

/// A case file read and checked, ready to run.
struct LoadedCase {
    file: PathBuf,
    case: Case,
    settings: Vec<Setting>,
}

/// One step's verdict.
struct Step {
    name: String,
    /// `None`: passed; else what differed.
    failure: Option<String>,
}

impl Step {
    fn pass(name: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            failure: None,
        }
    }

    fn check(name: impl Into<String>, failures: Vec<String>) -> Step {
        Step {
            name: name.into(),
            failure: (!failures.is_empty()).then(|| failures.join("; ")),
        }
    }

    fn fail(name: impl Into<String>, why: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            failure: Some(why.into()),
        }
    }
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let cases = match load_cases(&args.cases) {
        Ok(cases) => cases,
        Err(problems) => return Ok(unusable(args.json, &problems)),
    };
    let loaded = match load_plugin(&args.plugin) {
        Ok(p) => p,
        Err(e) => return Ok(unusable(args.json, &[e])),
    };
    let plugin = &loaded.plugin;
    let results: Vec<(&LoadedCase, Vec<Step>)> = cases
        .iter()
        .map(|case| (case, run_case(plugin, case)))
        .collect();
    let failed = results
        .iter()
        .flat_map(|(_, steps)| steps)
        .filter(|s| s.failure.is_some())
        .count();
    if args.json {
        print_json(&args.plugin, plugin, &results)?;
    } else {
        print_table(&args.plugin, &args.cases, plugin, &results);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

fn unusable(json: bool, problems: &[Unusable]) -> ExitCode {
    for p in problems {
        eprintln!("error: {p}");
    }
    if json {
        let errors: Vec<Value> = problems
            .iter()
            .map(|p| json!({ "file": p.file, "error": p.message }))
            .collect();
        println!("{}", json!({ "errors": errors }));
    }
    ExitCode::from(EXIT_UNUSABLE)
}

/// Every case file of `dir`, in name order, each parsed and checked; on
/// failure, every file that is unusable (so one run names them all).
fn load_cases(dir: &Path) -> Result<Vec<LoadedCase>, Vec<Unusable>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![Unusable::new(
            dir,
            format!("cannot read the case directory: {e}"),
        )]
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            vec![Unusable::new(
                dir,
                format!("cannot read the case directory: {e}"),
            )]
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(vec![Unusable::new(
            dir,
            "no case files (*.json) in this directory",
        )]);
    }
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match load_case(&file) {
            Ok(case) => cases.push(case),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

fn load_case(file: &Path) -> Result<LoadedCase, Unusable> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Unusable::new(file, format!("cannot read: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let case: Case = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Unusable::new(file, e.into_inner().to_string())
        } else {
            Unusable::at(file, &path, e.into_inner())
        }
    })?;
    de.end()
        .map_err(|e| Unusable::new(file, format!("after the case: {e}")))?;
    let settings = check_case(file, &case)?;
    Ok(LoadedCase {
        file: file.to_path_buf(),
        case,
        settings,
    })
}

/// What the types cannot say: which fields go together. Returns the
/// settings as the plugin gets them.
fn check_case(file: &Path, case: &Case) -> Result<Vec<Setting>, Unusable> {
    let mut settings = Vec::new();
    for (key, value) in &case.settings {
        let value = match value {
            Value::String(s) => s.clone(),
            // TOML's non-string values reach a plugin in their text form.
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(Unusable::at(
                    file,
                    &format!("settings.{key}"),
                    "a setting is a string, a number or a boolean",
                ))
            }
        };
        settings.push(Setting {
            key: key.clone(),
            value,
        });
    }
    let renders = matches!(
        case.expect,
        Some(Expect::Requests(_)) | Some(Expect::Rejected(_))
    );
    if renders && case.event.is_none() {
        return Err(Unusable::at(
            file,
            "event",
            "required when `expect` has `requests` or `rejected`: the event to render",
        ));
    }
    if let Some(Expect::Requests(requests)) = &case.expect {
        for (i, r) in requests.iter().enumerate() {
            let bodies = [
                r.body.is_some(),
                r.body_json.is_some(),
                r.body_contains.is_some(),
            ];
            if bodies.iter().filter(|b| **b).count() > 1 {
                return Err(Unusable::at(
                    file,
                    &format!("expect.requests[{i}]"),
                    "give one of `body`, `body_json` and `body_contains`",
                ));
            }
            if r.body_json_subset && r.body_json.is_none() {
                return Err(Unusable::at(
                    file,
                    &format!("expect.requests[{i}].body_json_subset"),
                    "only goes with `body_json`",
                ));
            }
        }
    }
    for (i, r) in case.responses.iter().enumerate() {
        if r.attempt == Some(0) {
            return Err(Unusable::at(
                file,
                &format!("responses[{i}].attempt"),
                "attempts count from 1 (the first send)",
            ));
        }
        let e = &r.expect;
        let kind = e.disposition;
        let misplaced = if e.provider_message_id.is_some() && kind != DispositionKind::Delivered {
            Some(("provider_message_id", "delivered"))
        } else if e.after_ms.is_some() && kind != DispositionKind::Retry {
            Some(("after_ms", "retry"))
        } else if e.reason_contains.is_some() && kind == DispositionKind::Delivered {
            Some(("reason_contains", "retry, permanent and channel-down"))
        } else {
            None
        };
        if let Some((key, only)) = misplaced {
            return Err(Unusable::at(
                file,
                &format!("responses[{i}].expect.{key}"),
                format!("only for disposition {only}, not {}", kind.name()),
            ));
        }
    }
    Ok(settings)
}

/// A plugin with the runtime it runs in.
struct Loaded {
    plugin: ChannelPlugin,
    // Owns the epoch ticker that stops a call at its deadline: kept alive
    // for as long as the plugin is called.
    _runtime: PluginRuntime,
}

fn load_plugin(path: &Path) -> Result<Loaded, Unusable> {
    let config = PluginRuntimeConfig::default();
    let limits = config.default_limits;
    eprintln!("compiling {} ...", path.display());
    let runtime =
        PluginRuntime::new(&config, limits.memory_bytes).map_err(|e| Unusable::plugin(path, &e))?;
    let plugin = runtime
        .load(PLUGIN_CHANNEL, path, limits)
        .map_err(|e| Unusable::plugin(path, &e))?;
    Ok(Loaded {
        plugin,
        _runtime: runtime,
    })
}

fn run_case(plugin: &ChannelPlugin, loaded: &LoadedCase) -> Vec<Step> {
    let case = &loaded.case;
    let mut steps = vec![settings_step(plugin, case, &loaded.settings)];
    let message = match &case.message {
        Some(m) => Message {
            purpose: m.purpose.into(),
            reminder: m.reminder.clone(),
            useful_until: m.useful_until.clone(),
        },
        None => Message::confirmation(),
    };
    let settings_only = matches!(case.expect, Some(Expect::SettingsErrors(_)));
    if let (Some(event), false) = (&case.event, settings_only) {
        steps.push(render_step(
            plugin,
            event,
            &message,
            &loaded.settings,
            case.expect.as_ref(),
        ));
    }
    for (i, response) in case.responses.iter().enumerate() {
        steps.push(response_step(
            plugin,
            i + 1,
            response,
            message.purpose,
            &loaded.settings,
        ));
    }
    steps
}

/// The settings as the host vets them at start: the plugin's own check,
/// and (like `check-config`) any key the plugin does not know.
fn settings_step(plugin: &ChannelPlugin, case: &Case, settings: &[Setting]) -> Step {
    const NAME: &str = "settings";
    let info = plugin.info();
    let mut problems: Vec<String> = Vec::new();
    if !info.known_settings.is_empty() {
        for s in settings {
            // `base_url` is the host's (channels.NAME.base_url): a plugin
            // need not list it to be told it.
            if s.key != "base_url" && !info.known_settings.contains(&s.key) {
                problems.push(format!(
                    "setting `{}`: plugin `{}` does not know this setting (it knows: {})",
                    s.key,
                    info.name,
                    info.known_settings.join(", ")
                ));
            }
        }
    }
    match plugin.check_settings(settings) {
        Ok(Ok(())) => {}
        Ok(Err(list)) => problems.extend(list),
        Err(e) => return Step::fail(NAME, format!("plugin error: {e}")),
    }
    match &case.expect {
        Some(Expect::SettingsErrors(wanted)) => {
            if problems.is_empty() {
                return Step::fail(
                    NAME,
                    format!(
                        "expected check-settings to fail with {}, but it accepted the settings",
                        quoted_list(wanted)
                    ),
                );
            }
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !problems.iter().any(|p| p.contains(w.as_str())))
                .map(|w| format!("no problem contains {}", shown(w)))
                .collect();
            if missing.is_empty() {
                Step::pass(NAME)
            } else {
                Step::fail(
                    NAME,
                    format!("{}; got {}", missing.join("; "), quoted_list(&problems)),
                )
            }
        }
        _ if problems.is_empty() => Step::pass(NAME),
        _ => Step::fail(
            NAME,
            format!(
                "the host would refuse these settings at start: {}",
                quoted_list(&problems)
            ),
        ),
    }
}

/// What a render came to, as the host would see it.
enum Rendered {
    Requests(Vec<HttpRequest>),
    /// The event cannot go out here: the plugin's rejection, or the host's
    /// (a missing required field, no request at all).
    Rejected(String),
}

fn render_step(
    plugin: &ChannelPlugin,
    event: &Value,
    message: &Message,
    settings: &[Setting],
    expect: Option<&Expect>,
) -> Step {
    const NAME: &str = "render";
    let payload = event.to_string();
    let event = match event::parse(payload.as_bytes()) {
        Ok(e) => e,
        Err(v) => {
            return Step::fail(
                NAME,
                format!("the event breaks the host's event contract ({v}): the host dead-letters it before any plugin sees it"),
            )
        }
    };
    let info = plugin.info();
    let rendered = if let Some(field) = info.required_fields.iter().find(|f| !event.has_field(f)) {
        Rendered::Rejected(
            RenderError::MissingField {
                plugin: info.name.clone(),
                field: field.clone(),
            }
            .to_string(),
        )
    } else {
        match block_on(plugin.render(&event.to_plugin_event(), message, settings)) {
            Ok(Ok(requests)) if requests.is_empty() => Rendered::Rejected(
                RenderError::Empty {
                    plugin: info.name.clone(),
                }
                .to_string(),
            ),
            Ok(Ok(requests)) => Rendered::Requests(requests),
            Ok(Err(reason)) => Rendered::Rejected(reason),
            Err(e) => return Step::fail(NAME, format!("plugin error: {e}")),
        }
    };
    match (expect, rendered) {
        (Some(Expect::Requests(wanted)), Rendered::Requests(got)) => {
            Step::check(NAME, compare_requests(wanted, &got))
        }
        (Some(Expect::Requests(wanted)), Rendered::Rejected(reason)) => Step::fail(
            NAME,
            format!(
                "expected {}, but the event was rejected: {}",
                count(wanted.len(), "request"),
                shown(&reason)
            ),
        ),
        (Some(Expect::Rejected(needle)), Rendered::Rejected(reason)) => {
            if reason.contains(needle.as_str()) {
                Step::pass(NAME)
            } else {
                Step::fail(
                    NAME,
                    format!(
                        "rejection: expected a reason containing {}, got {}",
                        shown(needle),
                        shown(&reason)
                    ),
                )
            }
        }
        (Some(Expect::Rejected(needle)), Rendered::Requests(got)) => Step::fail(
            NAME,
            format!(
                "expected a rejection containing {}, got {}: {}",
                shown(needle),
                count(got.len(), "request"),
                summary(&got)
            ),
        ),
        // An event with nothing said about it must at least render.
        (_, Rendered::Requests(_)) => Step::pass(NAME),
        (_, Rendered::Rejected(reason)) => Step::fail(
            NAME,
            format!(
                "the event was rejected: {} (say `expect.rejected` if that is right)",
                shown(&reason)
            ),
        ),
    }
}

fn compare_requests(wanted: &[ExpectedRequest], got: &[HttpRequest]) -> Vec<String> {
    if wanted.len() != got.len() {
        return vec![format!(
            "expected {}, got {}: {}",
            count(wanted.len(), "request"),
            got.len(),
            summary(got)
        )];
    }
    let many = wanted.len() > 1;
    let mut failures = Vec::new();
    for (i, (w, g)) in wanted.iter().zip(got).enumerate() {
        let prefix = if many {
            format!("request {}: ", i + 1)
        } else {
            String::new()
        };
        failures.extend(
            compare_request(w, g)
                .into_iter()
                .map(|f| format!("{prefix}{f}")),
        );
    }
    failures
}

fn compare_request(w: &ExpectedRequest, g: &HttpRequest) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(method) = &w.method {
        if !method.eq_ignore_ascii_case(&g.method) {
            failures.push(differs("method", method, &g.method));
        }
    }
    if let Some(url) = &w.url {
        if *url != g.url {
            failures.push(differs("url", url, &g.url));
        }
    }
    for (name, value) in &w.headers {
        let values: Vec<&str> = g
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
            .collect();
        if values.is_empty() {
            failures.push(format!(
                "header {name}: expected {}, got none",
                shown(value)
            ));
        } else if !values.contains(&value.as_str()) {
            let got: Vec<String> = values.iter().map(|v| shown(v)).collect();
            failures.push(format!(
                "header {name}: expected {}, got {}",
                shown(value),
                got.join(", ")
            ));
        }
    }
    let body = String::from_utf8_lossy(&g.body);
    if let Some(want) = &w.body {
        if *want != body {
            failures.push(differs("body", want, &body));
        }
    }
    if let Some(want) = &w.body_json {
        match serde_json::from_slice::<Value>(&g.body) {
            Err(e) => failures.push(format!(
                "body_json: the body is not JSON ({e}): {}",
                shown(&body)
            )),
            Ok(got) => {
                if let Some(d) = json_difference(want, &got, "body_json", w.body_json_subset) {
                    failures.push(d);
                }
            }
        }
    }
    for needle in w.body_contains.iter().flatten() {
        if !body.contains(needle.as_str()) {
            failures.push(format!(
                "body_contains: {} not in the body {}",
                shown(needle),
                shown(&body)
            ));
        }
    }
    failures
}

/// The first place where `got` differs from `want`, as `path: expected
/// X, got Y`. With `subset`, keys of `got` objects that `want` does not name
/// are not compared.
fn json_difference(want: &Value, got: &Value, path: &str, subset: bool) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, wv) in w {
                let here = format!("{path}.{key}");
                match g.get(key) {
                    None => {
                        return Some(format!(
                            "{here}: expected {}, got no such key",
                            shown(&wv.to_string())
                        ))
                    }
                    Some(gv) => {
                        if let Some(d) = json_difference(wv, gv, &here, subset) {
                            return Some(d);
                        }
                    }
                }
            }
            if !subset {
                if let Some(extra) = g.keys().find(|k| !w.contains_key(*k)) {
                    return Some(format!(
                        "{path}.{extra}: not expected, got {} (set `body_json_subset` to compare only the keys given)",
                        shown(&g[extra].to_string())
                    ));
                }
            }
            None
        }
        _ if want == got => None,
        _ => Some(differs(path, &want.to_string(), &got.to_string())),
    }
}

fn response_step(
    plugin: &ChannelPlugin,
    number: usize,
    r: &CaseResponse,
    message_purpose: Purpose,
    settings: &[Setting],
) -> Step {
    let name = format!("response {number}");
    let response = HttpResponse {
        status: r.status,
        headers: r
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.to_ascii_lowercase(),
                value: value.clone(),
            })
            .collect(),
        body: r.body.as_bytes().to_vec(),
    };
    let context = CallContext {
        attempt: r.attempt.unwrap_or(1),
        now_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        purpose: r.purpose.map(Purpose::from).unwrap_or(message_purpose),
    };
    let got = match block_on(plugin.classify(&response, settings, context)) {
        Ok(d) => d,
        Err(e) => return Step::fail(name, format!("plugin error: {e}")),
    };
    let want = &r.expect;
    let kind = DispositionKind::of(&got);
    if kind != want.disposition {
        return Step::fail(
            name,
            format!(
                "expected {}, got {}",
                want.disposition.name(),
                describe(&got)
            ),
        );
    }
    let mut failures = Vec::new();
    match &got {
        Disposition::Delivered(d) => {
            if let Some(id) = &want.provider_message_id {
                if *id != d.provider_message_id {
                    failures.push(format!(
                        "provider_message_id: expected {}, got {}",
                        optional(id.as_deref()),
                        optional(d.provider_message_id.as_deref())
                    ));
                }
            }
        }
        Disposition::Retry(retry) => {
            if let Some(after) = &want.after_ms {
                if *after != retry.after_ms {
                    failures.push(format!(
                        "after_ms: expected {}, got {}",
                        optional(after.map(|a| a.to_string()).as_deref()),
                        optional(retry.after_ms.map(|a| a.to_string()).as_deref())
                    ));
                }
            }
        }
        Disposition::Permanent(_) | Disposition::ChannelDown(_) => {}
    }
    if let (Some(needle), Some(reason)) = (&want.reason_contains, reason_of(&got)) {
        if !reason.contains(needle.as_str()) {
            failures.push(format!(
                "reason: expected it to contain {}, got {}",
                shown(needle),
                shown(reason)
            ));
        }
    }
    Step::check(name, failures)
}

fn reason_of(d: &Disposition) -> Option<&str> {
    match d {
        Disposition::Delivered(_) => None,
        Disposition::Retry(r) => Some(&r.reason),
        Disposition::Permanent(reason) | Disposition::ChannelDown(reason) => Some(reason),
    }
}

/// A disposition in a line: `retry (after 7000 ms): "..."`.
fn describe(d: &Disposition) -> String {
    match d {
        Disposition::Delivered(d) => format!(
            "delivered (provider_message_id {})",
            optional(d.provider_message_id.as_deref())
        ),
        Disposition::Retry(r) => match r.after_ms {
            Some(ms) => format!("retry (after_ms {ms}): {}", shown(&r.reason)),
            None => format!("retry: {}", shown(&r.reason)),
        },
        Disposition::Permanent(reason) => format!("permanent: {}", shown(reason)),
        Disposition::ChannelDown(reason) => format!("channel-down: {}", shown(reason)),
    }
}

fn differs(what: &str, want: &str, got: &str) -> String {
    format!("{what}: expected {}, got {}", shown(want), shown(got))
}

fn optional(v: Option<&str>) -> String {
    v.map_or_else(|| "none".to_string(), shown)
}

/// A value in backquotes (in double quotes when it has backquotes of its
/// own, as plugins' messages often do), cut at [`SHOWN_CHARS`].
fn shown(v: &str) -> String {
    let mut chars = v.chars();
    let head: String = chars.by_ref().take(SHOWN_CHARS).collect();
    let cut = if chars.next().is_some() { "…" } else { "" };
    if v.contains('`') {
        format!("\"{head}{cut}\"")
    } else {
        format!("`{head}{cut}`")
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| shown(i))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The requests in a line: `POST https://a/b, GET https://c`.
fn summary(requests: &[HttpRequest]) -> String {
    let parts: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.url))
        .collect();
    shown(&parts.join(", "))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn print_table(
    plugin_path: &Path,
    cases_dir: &Path,
    plugin: &ChannelPlugin,
    results: &[(&LoadedCase, Vec<Step>)],
) {
    let info = plugin.info();
    println!(
        "plugin {} {} (notify:channel@{}) from {}, cases from {}",
        info.name,
        info.version,
        plugin.contract_version(),
        plugin_path.display(),
        cases_dir.display()
    );
    let rows: Vec<(String, &str, &str, &str)> = results
        .iter()
        .flat_map(|(case, steps)| {
            let file = file_name(&case.file);
            steps.iter().map(move |s| {
                let (result, detail) = match &s.failure {
                    None => ("PASS", ""),
                    Some(why) => ("FAIL", why.as_str()),
                };
                (file.clone(), s.name.as_str(), result, detail)
            })
        })
        .collect();
    let case_width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let step_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(4);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:case_width$}  {:step_width$}  RESULT  DETAIL",
        "CASE", "STEP"
    );
    for (file, step, result, detail) in &rows {
        let line = format!("{file:case_width$}  {step:step_width$}  {result:6}  {detail}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    print!("{out}");
    let failed = rows.iter().filter(|r| r.2 == "FAIL").count();
    let failed_cases = results
        .iter()
        .filter(|(_, steps)| steps.iter().any(|s| s.failure.is_some()))
        .count();
    println!(
        "{}, {}: {} passed, {} failed{}",
        count(results.len(), "case"),
        count(rows.len(), "step"),
        rows.len() - failed,
        failed,
        if failed_cases > 0 {
            format!(" (in {})", count(failed_cases, "case"))
        } else {
            String::new()
        }
    );
}

fn print_json(
    plugin_path: &Path,
    plugin: &ChannelPlugin,
    results: &[(&LoadedCase, Vec<Step>)],
) -> Result<()> {
    let info = plugin.info();
    let mut passed = 0;
    let mut failed = 0;
    let cases: Vec<Value> = results
        .iter()
        .map(|(case, steps)| {
            let steps: Vec<Value> = steps
                .iter()
                .map(|s| {
                    if s.failure.is_some() {
                        failed += 1;
                    } else {
                        passed += 1;
                    }
                    json!({
                        "step": s.name,
                        "result": if s.failure.is_some() { "fail" } else { "pass" },
                        "detail": s.failure,
                    })
                })
                .collect();
            json!({
                "file": file_name(&case.file),
                "description": case.case.description,
                "passed": steps.iter().all(|s| s["result"] == "pass"),
                "steps": steps,
            })
        })
        .collect();
    let doc = json!({
        "plugin": {
            "file": plugin_path,
            "name": info.name,
            "version": info.version,
            "contract": plugin.contract_version(),
        },
        "cases": cases,
        "passed": passed,
        "failed": failed,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
