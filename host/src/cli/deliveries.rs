//! `notify-host deliveries show|list|release`: the delivery ledger for an
//! operator, read through the status API of a running host (so it works
//! against a container: `docker compose exec notify-host /app/notify-host
//! deliveries list`).
//!
//! Invariant: the token comes from NOTIFY_ADMIN_TOKEN only, never from a
//! flag (flags end up in shell history and `ps`), and is never printed:
//! not in a message, not in `--json` output.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{SecondsFormat, Utc};
use clap::{Args, Subcommand};
use notify_host::admin::api::EventDeliveries;
use notify_host::admin::problem::{kind, Problem, PROBLEM_JSON};
use notify_host::ledger::{Delivery, Page, MAX_PAGE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

/// Where the token is read from.
const TOKEN_ENV: &str = "NOTIFY_ADMIN_TOKEN";

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Every delivery of one event, with its attempts.
    Show {
        /// The event's event_id.
        event_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliveries, newest first, filtered.
    List(ListArgs),
    /// Re-publish what was held while a channel was paused; the channel
    /// must be on (mode = "on", host restarted).
    Release {
        /// The channel to release.
        #[arg(long)]
        channel: String,
        /// Count what is held; re-publish nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// How to reach the API. The token is read from NOTIFY_ADMIN_TOKEN.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The host's admin server (its `admin.listen`).
    #[arg(
        long,
        env = "NOTIFY_ADMIN_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    url: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout_seconds: f64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this channel (e.g. email, sms).
    #[arg(long)]
    channel: Option<String>,
    /// Only this state (pending, delivered, retrying, waiting, held,
    /// dead_lettered, expired, skipped, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only this purpose (confirmation, reminder, cancellation, reschedule).
    #[arg(long)]
    purpose: Option<String>,
    /// Created at or after: RFC 3339, or a duration ago (2h, 30m, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Created before: RFC 3339, or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// Deliveries per page (1-500); the API's default is 100, with --all 500.
    #[arg(long)]
    limit: Option<usize>,
    /// Every page, following next_cursor, instead of the first.
    #[arg(long, conflicts_with = "cursor")]
    all: bool,
    /// Start at this page (a previous answer's next_cursor).
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: DeliveriesCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            DeliveriesCommand::Show { event_id, api } => show(&event_id, &api).await,
            DeliveriesCommand::List(args) => list(&args).await,
            DeliveriesCommand::Release {
                channel,
                dry_run,
                api,
            } => release(&channel, dry_run, &api).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn show(event_id: &str, args: &ApiArgs) -> Result<()> {
    let api = Api::new(args)?;
    let url = api.url(&["v1", "events", event_id], &[])?;
    let answer: EventDeliveries = api.call(Method::GET, url).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "event {}: {} deliver{}",
        answer.event_id,
        answer.deliveries.len(),
        if answer.deliveries.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    for d in &answer.deliveries {
        print!("{}", describe(d));
    }
    Ok(())
}

async fn list(args: &ListArgs) -> Result<()> {
    let api = Api::new(&args.api)?;
    let now = Utc::now();
    let when = |flag: &str, v: &Option<String>| -> Result<Option<String>> {
        v.as_deref()
            .map(|s| {
                notify_host::replay::parse_when(s, now)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                    .map_err(|why| anyhow!("--{flag}: {why}"))
            })
            .transpose()
    };
    let since = when("since", &args.since)?;
    let until = when("until", &args.until)?;
    // With --all, big pages: fewer round trips for the same records.
    let limit = args.limit.or(args.all.then_some(MAX_PAGE));
    let mut filters: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("channel", args.channel.clone()),
        ("state", args.state.clone()),
        ("purpose", args.purpose.clone()),
        ("since", since),
        ("until", until),
        ("limit", limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = value {
            filters.push((name, v));
        }
    }
    let mut deliveries = Vec::new();
    let mut cursor = args.cursor.clone();
    let next_cursor = loop {
        let mut query = filters.clone();
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let url = api.url(&["v1", "deliveries"], &query)?;
        let page: Page = api.call(Method::GET, url).await?;
        deliveries.extend(page.deliveries);
        match page.next_cursor {
            Some(next) if args.all => cursor = Some(next),
            other => break other,
        }
    };
    if args.api.json {
        let page = Page {
            deliveries,
            next_cursor,
        };
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print!("{}", table(&deliveries));
    if let Some(next) = next_cursor {
        eprintln!("more deliveries: add --all, or --cursor {next} for the next page");
    }
    Ok(())
}

async fn release(channel: &str, dry_run: bool, args: &ApiArgs) -> Result<()> {
    let api = Api::new(args)?;
    let url = api.url(
        &["v1", "channels", channel, "release"],
        &[("dry_run", dry_run.to_string())],
    )?;
    // The report is printed as the host wrote it: the CLI needs only a
    // few of its fields.
    let report: serde_json::Value = api.call(Method::POST, url).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    if dry_run {
        println!(
            "channel {channel}: {} held (dry run: nothing re-published)",
            n("held")
        );
    } else {
        println!(
            "channel {channel}: {} held, {} event(s) re-published, {} left held (see the host's log)",
            n("held"),
            n("republished"),
            n("skipped")
        );
    }
    Ok(())
}

/// A client of one host's status API.
struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Api {
    fn new(args: &ApiArgs) -> Result<Api> {
        let base = Url::parse(&args.url)
            .with_context(|| format!("--url {}: not a URL like http://127.0.0.1:9090", args.url))?;
        if base.cannot_be_a_base() {
            bail!("--url {}: not a URL like http://127.0.0.1:9090", args.url);
        }
        let timeout = Duration::from_secs_f64(args.timeout_seconds.clamp(0.1, 3600.0));
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Api {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base,
            token,
        })
    }

    /// The base URL with `segments` appended, each percent-encoded (an
    /// event id may hold `/` or `?`).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("--url {}: cannot take a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, url: Url) -> Result<T> {
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the status API at {}: {e} (is the host running? set --url or NOTIFY_ADMIN_URL)",
                self.base
            )
        })?;
        let status = response.status();
        let is_problem = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROBLEM_JSON));
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {}", url.path()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).with_context(|| {
                format!(
                    "the answer of {} is not what this CLI expects (another notify-host version?)",
                    url.path()
                )
            });
        }
        let problem: Option<Problem> = if is_problem {
            serde_json::from_slice(&body).ok()
        } else {
            None
        };
        Err(anyhow!(self.explain(status, problem.as_ref())))
    }

    /// What a failed request means for the person at the terminal.
    fn explain(&self, status: StatusCode, problem: Option<&Problem>) -> String {
        match (status, problem) {
            (StatusCode::UNAUTHORIZED, _) if self.token.is_none() => format!(
                "the status API needs a token: set {TOKEN_ENV} to the host's admin.token"
            ),
            (StatusCode::UNAUTHORIZED, _) => format!(
                "the host refused the token in {TOKEN_ENV}: set it to the host's admin.token"
            ),
            (StatusCode::NOT_FOUND, Some(p)) if p.kind == kind::API_OFF => format!(
                "the status API is off at {}: set admin.token in the host's config (e.g. token = \"${{NOTIFY_ADMIN_TOKEN}}\") and restart the host",
                self.base
            ),
            (StatusCode::NOT_FOUND, None) => format!(
                "{} has no status API (is it a notify-host admin address? an older version?)",
                self.base
            ),
            (_, Some(p)) => format!("{} {}: {}", p.status, p.title, p.detail),
            (status, None) => format!("the status API answered {status}"),
        }
    }
}

fn time(t: &chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn recipient(d: &Delivery) -> String {
    let r = &d.recipient;
    match (&r.email, &r.phone) {
        (Some(e), Some(p)) => format!("{e} {p}"),
        (Some(v), None) | (None, Some(v)) => v.clone(),
        (None, None) => "-".into(),
    }
}

/// A line's last column is cut here so a table row stays one line.
const REASON_SHOWN: usize = 60;

fn cut(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.replace('\n', " ")
}

/// A table of deliveries, columns as wide as their widest cell.
fn table(deliveries: &[Delivery]) -> String {
    const HEAD: [&str; 9] = [
        "ID",
        "CREATED",
        "CHANNEL",
        "PURPOSE",
        "STATE",
        "ATTEMPTS",
        "EVENT",
        "RECIPIENT",
        "REASON",
    ];
    if deliveries.is_empty() {
        return "no deliveries\n".into();
    }
    let rows: Vec<[String; 9]> = deliveries
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                time(&d.created_at),
                d.channel.clone(),
                d.purpose.as_str().to_string(),
                d.state.as_str().to_string(),
                d.attempt_count.to_string(),
                d.event_id.clone(),
                recipient(d),
                cut(d.reason.as_deref().unwrap_or(""), REASON_SHOWN),
            ]
        })
        .collect();
    let mut widths = HEAD.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEAD);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// One delivery of `show`, with its attempts.
fn describe(d: &Delivery) -> String {
    let mut out = format!(
        "\n{} {} {}  (id {}, appointment {})\n",
        d.channel,
        d.purpose.as_str(),
        d.state.as_str(),
        d.id,
        d.appointment_id
    );
    out.push_str(&format!("  recipient    {}\n", recipient(d)));
    out.push_str(&format!(
        "  created      {}   updated {}\n",
        time(&d.created_at),
        time(&d.updated_at)
    ));
    if let Some(r) = &d.reason {
        out.push_str(&format!("  reason       {r}\n"));
    }
    if let Some(c) = &d.error_class {
        out.push_str(&format!("  error class  {c}\n"));
    }
    if let Some(m) = &d.provider_message_id {
        out.push_str(&format!("  message id   {m}\n"));
    }
    if let Some(u) = &d.useful_until {
        out.push_str(&format!("  useful until {}\n", time(u)));
    }
    if let Some(r) = &d.replay_of {
        out.push_str(&format!("  replay of    {r}\n"));
    }
    if d.duplicates > 0 {
        out.push_str(&format!("  duplicates   {}\n", d.duplicates));
    }
    let shown = d.attempts.len();
    out.push_str(&format!(
        "  attempts     {}{}\n",
        d.attempt_count,
        if (d.attempt_count as usize) > shown {
            format!(" (the newest {shown} kept)")
        } else {
            String::new()
        }
    ));
    for a in &d.attempts {
        let status = a
            .provider_status
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        let latency = a
            .latency_ms
            .map_or_else(|| "-".to_string(), |l| format!("{l} ms"));
        out.push_str(&format!(
            "    #{:<3} {}  {:<13} status {:<4} {}\n",
            a.number,
            time(&a.at),
            a.outcome,
            status,
            latency
        ));
        if let Some(s) = &a.snippet {
            out.push_str(&format!("         {}\n", cut(s, 200)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_host::ledger::{DeliveryKey, Purpose, Recipient};

    fn api(url: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: Url::parse(url).expect("url"),
            token: None,
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        let a = api("http://127.0.0.1:9090");
        let u = a.url(&["v1", "events", "a/b?c#d"], &[]).expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:9090/v1/events/a%2Fb%3Fc%23d");
        let a = api("http://proxy.local/notify/");
        let u = a
            .url(
                &["v1", "deliveries"],
                &[("since", "2026-02-13T17:00:00+02:00".into())],
            )
            .expect("url");
        assert_eq!(
            u.as_str(),
            "http://proxy.local/notify/v1/deliveries?since=2026-02-13T17%3A00%3A00%2B02%3A00"
        );
    }

    #[test]
    fn failures_are_explained() {
        let a = api("http://127.0.0.1:9090");
        let off = Problem::new(StatusCode::NOT_FOUND, kind::API_OFF, "off");
        let missing = Problem::not_found("no such event");
        let cases: &[(StatusCode, Option<&Problem>, &str)] = &[
            (StatusCode::UNAUTHORIZED, None, "set NOTIFY_ADMIN_TOKEN"),
            (StatusCode::NOT_FOUND, Some(&off), "the status API is off"),
            (StatusCode::NOT_FOUND, Some(&missing), "no such event"),
            (StatusCode::NOT_FOUND, None, "has no status API"),
            (StatusCode::BAD_GATEWAY, None, "502"),
        ];
        for (status, problem, want) in cases {
            let got = a.explain(*status, *problem);
            assert!(got.contains(want), "{status}: {got}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_delivery() {
        let key = DeliveryKey {
            event_id: "e-1".into(),
            channel: "email".into(),
            purpose: Purpose::Confirmation,
            reminder: None,
        };
        let mut d = Delivery::new(
            &key,
            "a-1",
            Recipient {
                email: Some("u***@example.com".into()),
                phone: None,
            },
        );
        d.id = 42;
        d.reason = Some("x".repeat(200));
        let t = table(&[d.clone(), d]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID"), "{t}");
        assert!(lines[1].contains("u***@example.com"), "{t}");
        assert!(lines[1].contains("…"), "the reason is cut: {t}");
        assert_eq!(table(&[]), "no deliveries\n");
    }
}
