//! `notify-host dlq list` and `notify-host dlq replay`: read the dead-letter
//! topic (`kafka.dlq_topic`) and re-publish what can be sent again.
//!
//! Invariant: these commands never join or commit a consumer group (see
//! [`notify_host::replay`]), and a replay re-publishes each source record at
//! most once per run; sending each channel at most once overall is the
//! ledger's job, so running a replay twice is safe.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use notify_host::dlq::ErrorClass;
use notify_host::replay::{
    self, coordinates, parse_when, DeadLetterRecord, DlqFilter, Plan, Planner, Publisher,
    Republish, Skip,
};

use super::{load_config, ConfigArg, EXIT_FAILURE};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (a table; --json for one JSON object a line).
    List(ListArgs),
    /// Re-publish matching dead letters' original events to their source
    /// topic, with `notify.replay_of`; the ledger sends only the channels
    /// not yet delivered.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Dead letters that failed at or after this: RFC 3339, or a duration
    /// ago (2h, 30m, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Dead letters that failed before this (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only this channel's dead letters (`notify.channel`).
    #[arg(long)]
    channel: Option<String>,
    /// Only this class (`notify.error_class`: permanent, retries_exhausted,
    /// rejected, refused, plugin_failed, host_failed, unknown_channel,
    /// invalid_event).
    #[arg(long)]
    class: Option<String>,
    /// Only this event's dead letters.
    #[arg(long)]
    event_id: Option<String>,
    /// Stop after this many matching dead letters.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Give up when the broker does not answer (or nothing arrives) for this
    /// many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_seconds: f64,
}

impl FilterArgs {
    fn filter(&self) -> Result<DlqFilter> {
        let now = chrono::Utc::now();
        let when = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_when(s, now).map_err(|e| anyhow::anyhow!("--{flag} {e}")))
                .transpose()
        };
        if let Some(class) = self.class.as_deref() {
            let known: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
            // A typo would otherwise match nothing and look like "no dead
            // letters".
            if !known.contains(&class) {
                anyhow::bail!(
                    "--class `{class}`: not a dead-letter class (one of {})",
                    known.join(", ")
                );
            }
        }
        Ok(DlqFilter {
            since: when("since", &self.since)?,
            until: when("until", &self.until)?,
            channel: self.channel.clone(),
            class: self.class.clone(),
            event_id: self.event_id.clone(),
        })
    }

    fn timeout(&self) -> Duration {
        // Below a second librdkafka cannot even connect; above ten minutes
        // an operator would rather know.
        Duration::from_secs_f64(self.timeout_seconds.clamp(1.0, 600.0))
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per dead letter and line, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// Say what would be replayed; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation (it is asked only on a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

pub fn run(cmd: DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List(args) => list(args),
        DlqCommand::Replay(args) => replay_cmd(args),
    }
}

/// Reads the whole dead-letter topic and returns the letters `filter` keeps
/// (at most `limit`), with the number read.
fn matching(
    config: &notify_host::config::Config,
    args: &FilterArgs,
) -> Result<(Vec<DeadLetterRecord>, usize)> {
    let filter = args.filter()?;
    let limit = args
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut out = Vec::new();
    let topic = &config.kafka.dlq_topic;
    let stats = replay::read_topic(&config.kafka, topic, args.timeout(), |letter| {
        if filter.matches(&letter) {
            out.push(letter);
        }
        if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .with_context(|| format!("reading the dead-letter topic {topic} (kafka.dlq_topic)"))?;
    Ok((out, stats.read))
}

/// One line of text for a table cell: masked, on one line, cut to `max`
/// characters.
fn cell(s: &str, max: usize) -> String {
    let masked = notify_host::redact::text(s);
    let one_line: String = masked
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

const REASON_WIDTH: usize = 60;
const EVENT_ID_WIDTH: usize = 36;

fn row(l: &DeadLetterRecord) -> [String; 6] {
    [
        l.failed_at()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into()),
        cell(l.error_class().unwrap_or("-"), 24),
        cell(l.channel().unwrap_or("-"), 24),
        cell(l.event_id().as_deref().unwrap_or("-"), EVENT_ID_WIDTH),
        l.source()
            .map(|s| cell(&coordinates(&s), 80))
            .unwrap_or_else(|| "-".into()),
        cell(l.reason().unwrap_or(""), REASON_WIDTH),
    ]
}

fn print_table(letters: &[DeadLetterRecord]) -> std::io::Result<()> {
    let header = [
        "FAILED_AT",
        "CLASS",
        "CHANNEL",
        "EVENT_ID",
        "SOURCE",
        "REASON",
    ];
    let rows: Vec<[String; 6]> = letters.iter().map(row).collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |out: &mut std::io::StdoutLock<'_>, cells: [&str; 6]| {
        let mut text = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut out, header)?;
    for r in &rows {
        line(&mut out, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]])?;
    }
    Ok(())
}

/// A dead letter as a JSON object (no payload: it holds contact data).
fn json_line(l: &DeadLetterRecord) -> serde_json::Value {
    let at = l.at();
    serde_json::json!({
        "dlq": { "topic": at.topic, "partition": at.partition, "offset": at.offset },
        "failed_at": l.failed_at().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "error_class": l.error_class(),
        "channel": l.channel(),
        "event_id": l.event_id(),
        "attempts": l.attempts(),
        "provider_status": l.provider_status(),
        "source": l.source(),
        "reason": l.reason().map(|r| notify_host::redact::text(r).into_owned()),
        "payload_omitted": l.payload_omitted(),
        "replay_of": l.replay_of(),
    })
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let config = match load_config(&args.config.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (letters, read) = matching(&config, &args.filter)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        for l in &letters {
            writeln!(out, "{}", json_line(l))?;
        }
    } else {
        print_table(&letters)?;
    }
    eprintln!(
        "{} dead letters matched, of {read} read from {}",
        letters.len(),
        config.kafka.dlq_topic
    );
    Ok(ExitCode::SUCCESS)
}

/// What a replay run did, for its summary line.
#[derive(Debug, Default)]
struct Summary {
    matched: usize,
    replayed: usize,
    skipped: std::collections::BTreeMap<&'static str, usize>,
}

impl Summary {
    fn skip(&mut self, s: &Skip) {
        *self.skipped.entry(s.word()).or_default() += 1;
    }

    fn line(&self, dry_run: bool) -> String {
        let skipped: usize = self.skipped.values().sum();
        let mut text = format!(
            "{}matched {}, {} {}, skipped {skipped}",
            if dry_run { "dry run: " } else { "" },
            self.matched,
            if dry_run { "would replay" } else { "replayed" },
            self.replayed,
        );
        if skipped > 0 {
            let why: Vec<String> = self
                .skipped
                .iter()
                .map(|(word, n)| match *word {
                    "invalid_event" => format!(
                        "{n} invalid_event: they would fail again; give --class invalid_event to replay them"
                    ),
                    "duplicate" => format!(
                        "{n} duplicate: another letter of the same event was replayed; the ledger retries each of its dead-lettered channels"
                    ),
                    "payload_omitted" => format!(
                        "{n} payload_omitted: the original is no longer in the source topic"
                    ),
                    other => format!("{n} {other}"),
                })
                .collect();
            text.push_str(&format!(" ({})", why.join("; ")));
        }
        text
    }
}

/// Whether the operator agrees; always yes off a terminal (scripts, CI).
fn confirm(prompt: &str) -> Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(true);
    }
    eprint!("{prompt} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn replay_cmd(args: ReplayArgs) -> Result<ExitCode> {
    let config = match load_config(&args.config.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let dlq_topic = config.kafka.dlq_topic.clone();
    let (letters, read) = matching(&config, &args.filter)?;
    let mut summary = Summary {
        matched: letters.len(),
        ..Summary::default()
    };
    let replay_invalid = args.filter.class.as_deref() == Some("invalid_event");
    let mut planner = Planner::new(&config.kafka.topic, replay_invalid);
    let mut to_send: Vec<(String, Republish)> = Vec::new();
    for letter in &letters {
        let at = coordinates(letter.at());
        let planned = match planner.plan(letter) {
            Plan::Replay(r) => Ok(r),
            Plan::Skip(skip) => Err(skip),
            Plan::FetchOriginal {
                source,
                sha256,
                replay_of,
            } => {
                let original = replay::read_record(&config.kafka, &source, args.filter.timeout())
                    .with_context(|| {
                    format!(
                        "reading the original of {at} from the source topic {}",
                        source.topic
                    )
                })?;
                replay::from_original(original, &source, sha256.as_deref(), &replay_of)
            }
        };
        match planned {
            Ok(r) => to_send.push((at, r)),
            Err(skip) => {
                eprintln!("skipped {at}: {}", skip.describe());
                summary.skip(&skip);
            }
        }
    }
    if args.dry_run || to_send.is_empty() {
        for (at, r) in &to_send {
            println!("would replay {at} to {}", r.topic);
        }
        summary.replayed = to_send.len();
        eprintln!("read {read} dead letters from {dlq_topic}");
        println!("{}", summary.line(args.dry_run));
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes
        && !confirm(&format!(
            "Re-publish {} events from {dlq_topic}?",
            to_send.len()
        ))?
    {
        eprintln!("nothing replayed");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let producer = notify_host::kafka::producer(&config.kafka)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Hidden when stderr is not a terminal (indicatif's default target).
    let bar = indicatif::ProgressBar::new(to_send.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} replayed {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = runtime.block_on(async {
        let mut publisher = Publisher::new(&producer);
        for (_, r) in &to_send {
            if let Err(e) = publisher.send(r).await {
                let _ = publisher.finish().await;
                return (publisher.acknowledged, Err(e));
            }
            bar.set_position(publisher.acknowledged as u64);
        }
        let done = publisher.finish().await;
        (publisher.acknowledged, done)
    });
    bar.finish_and_clear();
    let (acknowledged, done) = result;
    summary.replayed = acknowledged;
    // Acknowledgements come in order: the first `acknowledged` are out.
    for (at, r) in to_send.iter().take(acknowledged) {
        eprintln!("replayed {at} to {}", r.topic);
    }
    println!("{}", summary.line(false));
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}; {acknowledged} were re-published before it. Running the replay again is safe: the ledger skips what was delivered.");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_masked_one_line_and_cut() {
        let cases: &[(&str, usize, &str)] = &[
            ("short", 10, "short"),
            ("line\nbreak\ttab", 40, "line break tab"),
            ("abcdefghij", 5, "abcd…"),
            ("ééééé", 5, "ééééé"),
            ("éééééé", 5, "éééé…"),
        ];
        for (input, max, want) in cases {
            assert_eq!(cell(input, *max), *want, "{input}");
        }
        let masked = cell("Invalid 'To' +15555550123 for user@example.com", 80);
        assert!(
            !masked.contains("5555550123") && !masked.contains("user@"),
            "{masked}"
        );
    }

    #[test]
    fn the_summary_says_what_was_skipped_and_why() {
        let mut s = Summary {
            matched: 4,
            replayed: 1,
            ..Summary::default()
        };
        assert_eq!(s.line(false), "matched 4, replayed 1, skipped 0");
        s.skip(&Skip::InvalidEvent);
        s.skip(&Skip::InvalidEvent);
        s.skip(&Skip::Duplicate { of: "d/0/1".into() });
        let line = s.line(true);
        assert!(
            line.starts_with("dry run: matched 4, would replay 1, skipped 3 ("),
            "{line}"
        );
        assert!(
            line.contains("2 invalid_event") && line.contains("--class invalid_event"),
            "{line}"
        );
        assert!(line.contains("1 duplicate"), "{line}");
    }

    #[test]
    fn filter_flags_are_checked_and_name_their_flag() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            filter: FilterArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|c| c.filter.filter().map_err(|e| e.to_string()))
        };
        let cases: &[(&[&str], Result<(), &str>)] = &[
            (&[], Ok(())),
            (
                &["--since", "2h", "--until", "2026-02-13T17:00:00Z"],
                Ok(()),
            ),
            (&["--class", "permanent", "--channel", "sms"], Ok(())),
            (&["--class", "invalid_event"], Ok(())),
            (&["--limit", "5"], Ok(())),
            (&["--since", "last tuesday"], Err("--since `last tuesday`")),
            (&["--until", "soon"], Err("--until `soon`")),
            (
                &["--class", "Permanent"],
                Err("--class `Permanent`: not a dead-letter class"),
            ),
            (&["--limit", "0"], Err("--limit")),
        ];
        for (args, want) in cases {
            match (parse(args), want) {
                (Ok(_), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{args:?}: {got}"),
                (got, _) => panic!("{args:?}: {got:?}"),
            }
        }
        let f = parse(&[
            "--channel",
            "sms",
            "--event-id",
            "e1",
            "--since",
            "2026-02-13T17:00:00Z",
        ])
        .expect("filter");
        assert_eq!(f.channel.as_deref(), Some("sms"));
        assert_eq!(f.event_id.as_deref(), Some("e1"));
        assert_eq!(
            f.since.map(|t| t.to_rfc3339()),
            Some("2026-02-13T17:00:00+00:00".to_string())
        );
    }
}
