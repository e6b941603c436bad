//! What each event type does to its appointment: a booking confirms and
//! schedules its reminders, a reschedule moves them, a cancel removes them;
//! both may send a notice. And firing a due reminder, for the scheduler.
//!
//! Invariants:
//! - Every record and timer an event makes is durable before `work` returns,
//!   so its offset is committed only after them.
//! - The appointment's state (`ledger::AppointmentState`) is what later events
//!   and due reminders check: a booking after its cancel sends and schedules
//!   nothing; a reminder whose appointment was cancelled, or moved away from
//!   the time it was scheduled for, is `cancelled` before any send.
//! - Reminders fire at most once per (appointment, reminder, channel,
//!   appointment time): scheduling skips one that was already delivered.
//! - Events of one appointment are worked one at a time, in order (the
//!   pipeline's key is the appointment id), so their state changes never race.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::deadline;
use super::worker::{
    dead_letter_kept, deliver, note, on_record, recipient, send_out, useful_until, write_final,
    Arrived, ChannelOutcome, Shared,
};
use crate::config::ChannelMode;
use crate::event::{self, AppointmentEvent, EventKind};
use crate::ledger::{
    AppointmentState, AppointmentStatus, Claim, Delivery, DeliveryKey, HeldMessage, Purpose,
    Record, State,
};
use crate::plugin::{Message as PluginMessage, Purpose as PluginPurpose};
use crate::reminders::{self, rfc3339};

type Outcomes = Vec<(ChannelOutcome, Option<Delivery>)>;

/// Works one valid event on its `known` (configured) requested channels.
pub(super) async fn work(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    known: &[&str],
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    let appointment = &event.appointment_id;
    let state = match on_record(
        || shared.ledger.appointment_state(appointment),
        "appointment",
        revoked,
    )
    .await
    {
        Some(state) => state,
        None => return Vec::new(),
    };
    match event.kind {
        EventKind::Created => created(shared, event, known, state, revoked, arrived).await,
        EventKind::Rescheduled => rescheduled(shared, event, known, state, revoked, arrived).await,
        EventKind::Cancelled => cancelled(shared, event, known, state, revoked, arrived).await,
    }
}

/// Channels of one event go out concurrently: e-mail does not wait on SMS.
async fn deliver_all(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    channels: &[String],
    purpose: Purpose,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    let work = channels
        .iter()
        .map(|name| deliver(shared, event, name, purpose, revoked, arrived));
    futures_util::future::join_all(work).await
}

async fn created(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    known: &[&str],
    state: Option<AppointmentState>,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    let channels: Vec<String> = known.iter().map(|c| c.to_string()).collect();
    if let Some(s) = state
        .as_ref()
        .filter(|s| s.status == AppointmentStatus::Cancelled)
    {
        let reason = format!(
            "not sent: the appointment was cancelled (event {}) before this booking arrived",
            s.last_event_id
        );
        return cancel_unsent(shared, event, &channels, Purpose::Confirmation, &reason).await;
    }
    // A reschedule that came first set the time reminders are for.
    let time = state
        .as_ref()
        .and_then(|s| s.time)
        .or_else(|| useful_until(event));
    let reminders_wanted = event.reminders && state.as_ref().is_none_or(|s| s.reminders);
    let held = arrived.held_message();
    let confirm = deliver_all(
        shared,
        event,
        &channels,
        Purpose::Confirmation,
        revoked,
        arrived,
    );
    let schedule = async {
        if let (true, Some(time)) = (reminders_wanted, time) {
            schedule(shared, event, known, time, &held, arrived).await;
        }
        if state.is_none() {
            let s = AppointmentState {
                appointment_id: event.appointment_id.clone(),
                status: AppointmentStatus::Active,
                time,
                time_zone: event.time_zone.clone(),
                last_event_id: event.event_id.clone(),
                channels: channels.clone(),
                reminders: event.reminders,
                updated_at: Utc::now(),
                event: Some(held.clone()),
            };
            put_state(shared, s).await;
        }
    };
    let (outcomes, ()) = futures_util::future::join(confirm, schedule).await;
    outcomes
}

async fn rescheduled(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    known: &[&str],
    state: Option<AppointmentState>,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    if let Some(s) = state
        .as_ref()
        .filter(|s| s.status == AppointmentStatus::Cancelled)
    {
        tracing::info!(event_id = %event.event_id, appointment_id = %event.appointment_id, cancelled_by = %s.last_event_id, outcome = "ignored", "reschedule of a cancelled appointment; nothing scheduled or sent");
        return Vec::new();
    }
    // `event::parse` requires the new time of a reschedule.
    let Some(time) = useful_until(event) else {
        return Vec::new();
    };
    let (channels, held) = lifecycle_channels(event, known, state.as_ref(), arrived, Some(time));
    let reason = format!(
        "the appointment moved to {} (event {})",
        rfc3339(time),
        event.event_id
    );
    cancel_timers(shared, &event.appointment_id, Some(time), &reason).await;
    let reminders_wanted = event.reminders && state.as_ref().is_none_or(|s| s.reminders);
    if let (true, Some(held)) = (reminders_wanted, &held) {
        let names: Vec<&str> = channels.iter().map(String::as_str).collect();
        match event::parse(held.payload.as_bytes()) {
            Ok(mut base) => {
                base.event_id = event.event_id.clone();
                schedule(shared, &base, &names, time, held, arrived).await;
            }
            Err(e) => {
                tracing::error!(event_id = %event.event_id, error = %e, "the appointment's kept event no longer parses; no reminders scheduled");
            }
        }
    }
    put_state(
        shared,
        AppointmentState {
            appointment_id: event.appointment_id.clone(),
            status: AppointmentStatus::Active,
            time: Some(time),
            time_zone: event
                .time_zone
                .clone()
                .or_else(|| state.as_ref().and_then(|s| s.time_zone.clone())),
            last_event_id: event.event_id.clone(),
            channels: channels.clone(),
            reminders: reminders_wanted,
            updated_at: Utc::now(),
            event: held.clone(),
        },
    )
    .await;
    let notice: Vec<String> = shared
        .config
        .notices
        .rescheduled
        .iter()
        .filter(|c| channels.contains(c))
        .cloned()
        .collect();
    notify(
        shared,
        event,
        &notice,
        held.as_ref(),
        Purpose::Reschedule,
        revoked,
        arrived,
    )
    .await
}

async fn cancelled(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    known: &[&str],
    state: Option<AppointmentState>,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    let time = state
        .as_ref()
        .and_then(|s| s.time)
        .or_else(|| useful_until(event));
    let (channels, held) = lifecycle_channels(event, known, state.as_ref(), arrived, None);
    let reason = format!("the appointment was cancelled (event {})", event.event_id);
    cancel_timers(shared, &event.appointment_id, None, &reason).await;
    let already = state
        .as_ref()
        .is_some_and(|s| s.status == AppointmentStatus::Cancelled);
    if !already {
        put_state(
            shared,
            AppointmentState {
                appointment_id: event.appointment_id.clone(),
                status: AppointmentStatus::Cancelled,
                time,
                time_zone: state.as_ref().and_then(|s| s.time_zone.clone()),
                last_event_id: event.event_id.clone(),
                channels: channels.clone(),
                reminders: false,
                updated_at: Utc::now(),
                event: None,
            },
        )
        .await;
    }
    let notice: Vec<String> = shared
        .config
        .notices
        .cancelled
        .iter()
        .filter(|c| channels.contains(c))
        .cloned()
        .collect();
    // A notice is about the appointment's time: past it, it is not sent.
    let mut render = event.as_ref().clone();
    if render.time.is_none() {
        render.time = time.map(rfc3339);
    }
    notify(
        shared,
        &Arc::new(render),
        &notice,
        held.as_ref(),
        Purpose::Cancellation,
        revoked,
        arrived,
    )
    .await
}

/// The channels a reschedule or cancel is about, and the event with the
/// contact data to render from: its own when it names channels, else the
/// booking's (kept in the appointment's state), moved to `time` if given.
fn lifecycle_channels(
    event: &AppointmentEvent,
    known: &[&str],
    state: Option<&AppointmentState>,
    arrived: &Arrived,
    time: Option<DateTime<Utc>>,
) -> (Vec<String>, Option<HeldMessage>) {
    if event.has_notify {
        return (
            known.iter().map(|c| c.to_string()).collect(),
            Some(arrived.held_message()),
        );
    }
    let channels = state.map(|s| s.channels.clone()).unwrap_or_default();
    let held = state.and_then(|s| s.event.clone()).map(|mut h| {
        if let (Some(t), Ok(e)) = (time, event::parse(h.payload.as_bytes())) {
            h.payload = e.payload_with_time(&rfc3339(t));
        }
        h
    });
    (channels, held)
}

/// Sends a notice (`purpose`) on `channels`, rendered from `held` (the
/// event with contact data) under this event's id and type.
async fn notify(
    shared: &Arc<Shared>,
    event: &Arc<AppointmentEvent>,
    channels: &[String],
    held: Option<&HeldMessage>,
    purpose: Purpose,
    revoked: &CancellationToken,
    arrived: &Arrived,
) -> Outcomes {
    if channels.is_empty() {
        return Vec::new();
    }
    let render = if event.has_notify {
        event.clone()
    } else {
        let Some(base) = held.and_then(|h| event::parse(h.payload.as_bytes()).ok()) else {
            tracing::info!(event_id = %event.event_id, appointment_id = %event.appointment_id, "no contact data for a notice: the event names no channels and the booking is not on record");
            return Vec::new();
        };
        let mut base = base;
        base.event_id = event.event_id.clone();
        base.event_type = event.event_type.clone();
        base.kind = event.kind;
        if event.time.is_some() {
            base.time = event.time.clone();
        }
        Arc::new(base)
    };
    deliver_all(shared, &render, channels, purpose, revoked, arrived).await
}

/// Records deliveries of `event` on `channels` as `cancelled` without
/// sending (the appointment was cancelled first), unless already on record.
async fn cancel_unsent(
    shared: &Arc<Shared>,
    event: &AppointmentEvent,
    channels: &[String],
    purpose: Purpose,
    reason: &str,
) -> Outcomes {
    let mut out = Vec::new();
    for name in channels {
        let key = DeliveryKey::new(&event.event_id, name, purpose);
        let existing = shared.ledger.get(&key).await.ok().flatten();
        if let Some(d) = existing.filter(|d| !d.state.is_open()) {
            out.push((ChannelOutcome::AlreadyDone(d.state), None));
            continue;
        }
        let mut d = Delivery::new(&key, &event.appointment_id, recipient(event));
        d.useful_until = useful_until(event);
        d.set(State::Cancelled, Some(reason.to_string()));
        write_final(shared, &d, None).await;
        tracing::info!(event_id = %event.event_id, channel = %name, purpose = purpose.as_str(), outcome = "cancelled", reason, "not sent");
        bump(shared, name, "cancelled");
        out.push((ChannelOutcome::Cancelled(reason.to_string()), None));
    }
    out
}

fn bump(shared: &Shared, channel: &str, outcome: &str) {
    shared
        .metrics
        .deliveries
        .get_or_create(&crate::metrics::OutcomeLabels {
            channel: channel.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Open reminders of the appointment that have not started sending become
/// `cancelled`, except those for `keep_time` (a reschedule to the time they
/// are already for). One being sent is left to its send, which checks the
/// appointment before every attempt.
async fn cancel_timers(
    shared: &Arc<Shared>,
    appointment_id: &str,
    keep_time: Option<DateTime<Utc>>,
    reason: &str,
) {
    let timers = loop {
        match shared.ledger.appointment_timers(appointment_id).await {
            Ok(t) => break t,
            Err(e) => {
                tracing::error!(appointment_id, error = %e, "cannot read the appointment's reminders; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    for Record { mut delivery, .. } in timers {
        if delivery.state != State::Scheduled
            || (keep_time.is_some() && delivery.useful_until == keep_time)
        {
            continue;
        }
        delivery.set(State::Cancelled, Some(format!("not sent: {reason}")));
        write_final(shared, &delivery, None).await;
        shared
            .metrics
            .reminders_cancelled
            .get_or_create(&crate::metrics::Metrics::channel(&delivery.channel))
            .inc();
        tracing::info!(event_id = %delivery.event_id, channel = %delivery.channel, reminder = delivery.reminder.as_deref(), outcome = "cancelled", reason, "reminder cancelled");
    }
}

/// Schedules the policy's reminders of `event` (appointment at `time`) on
/// `channels`, each a durable timer keeping `held` to render from; or
/// records one `expired` that is already past. Idempotent: a reminder on
/// record is left as it is.
async fn schedule(
    shared: &Arc<Shared>,
    event: &AppointmentEvent,
    channels: &[&str],
    time: DateTime<Utc>,
    held: &HeldMessage,
    arrived: &Arrived,
) {
    let policies = &shared.config.reminders;
    if policies.is_empty() {
        return;
    }
    let tz = event
        .time_zone
        .as_deref()
        .and_then(|z| z.parse().ok())
        .unwrap_or(shared.config.scheduler.time_zone);
    let planned = reminders::plan(
        policies,
        time,
        Utc::now(),
        channels,
        |c| shared.config.channels.get(c).and_then(|c| c.quiet_hours),
        tz,
    );
    if planned.is_empty() {
        return;
    }
    // Reminders already delivered for this appointment at this time: never
    // again (a reschedule back to an earlier time, a replayed booking).
    let delivered: Vec<(String, String)> = match shared
        .ledger
        .appointment(&event.appointment_id)
        .await
    {
        Ok(all) => all
            .into_iter()
            .filter(|d| {
                d.purpose == Purpose::Reminder
                    && d.useful_until == Some(time)
                    && matches!(d.state, State::Delivered | State::DeadLettered)
            })
            .filter_map(|d| Some((d.reminder?, d.channel)))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the appointment's reminders; scheduling by key only");
            Vec::new()
        }
    };
    let mut scheduled = false;
    for p in planned {
        let mut key = DeliveryKey::new(&event.event_id, &p.channel, Purpose::Reminder);
        key.reminder = Some(p.name.clone());
        let existing = loop {
            match shared.ledger.get(&key).await {
                Ok(e) => break e,
                Err(e) => {
                    tracing::error!(error = %e, "ledger lookup failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        };
        if existing.is_some() || delivered.contains(&(p.name.clone(), p.channel.clone())) {
            continue;
        }
        let mut d = Delivery::new(&key, &event.appointment_id, recipient(event));
        d.useful_until = Some(time);
        d.due_at = Some(p.due);
        d.source = Some(arrived.source.clone());
        let metric = crate::metrics::Metrics::channel(&p.channel);
        match p.expired {
            Some(reason) => {
                d.set(State::Expired, Some(reason.clone()));
                write_final(shared, &d, None).await;
                shared
                    .metrics
                    .reminders_expired
                    .get_or_create(&metric)
                    .inc();
                tracing::info!(event_id = %event.event_id, channel = %p.channel, reminder = %p.name, outcome = "expired", reason = %reason, "reminder not scheduled");
            }
            None => {
                let why = match p.moved {
                    reminders::quiet::Moved::No => None,
                    reminders::quiet::Moved::Later => {
                        Some("moved later, to the end of the channel's quiet hours".to_string())
                    }
                    reminders::quiet::Moved::Earlier => Some(
                        "moved earlier, before the channel's quiet hours (after them is past the appointment)"
                            .to_string(),
                    ),
                };
                d.set(State::Scheduled, why);
                write_final(shared, &d, Some(held.clone())).await;
                scheduled = true;
                tracing::info!(event_id = %event.event_id, channel = %p.channel, reminder = %p.name, due_at = %rfc3339(p.due), outcome = "scheduled", "reminder scheduled");
            }
        }
    }
    if scheduled {
        shared.scheduler.wake();
    }
}

/// Writes the appointment's state, retrying until the ledger takes it: a
/// later event (a booking after this cancel) depends on it.
async fn put_state(shared: &Shared, state: AppointmentState) {
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match shared.ledger.put_appointment(state.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(appointment_id = %state.appointment_id, error = %e, "cannot record the appointment's state; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Why a reminder for an appointment at `time` must not be sent any more,
/// if so: the appointment was cancelled, or moved away from `time`.
fn no_longer_wanted(
    state: Option<&AppointmentState>,
    time: Option<DateTime<Utc>>,
) -> Option<String> {
    let s = state?;
    match s.status {
        AppointmentStatus::Cancelled => Some(format!(
            "not sent: the appointment was cancelled (event {})",
            s.last_event_id
        )),
        AppointmentStatus::Active if time.is_some() && s.time.is_some() && s.time != time => {
            Some(format!(
                "not sent: the appointment moved to {} (event {})",
                s.time.map(rfc3339).unwrap_or_default(),
                s.last_event_id
            ))
        }
        AppointmentStatus::Active => None,
    }
}

/// Fires one due reminder (the scheduler's `fire`): checks that it is still
/// wanted and worth sending, sends it through the channel as any delivery
/// (circuit, rate limit, retries), and records the outcome, which ends the
/// timer. Dead letters carry the kept event.
pub async fn fire(shared: Arc<Shared>, record: Record, shutdown: CancellationToken) {
    let started = Instant::now();
    // Whichever host claims a due timer fires it; the others let it be. A
    // claim granted after another host ended the timer finds it closed.
    let key = record.delivery.key();
    match shared.ledger.claim(&key).await {
        Ok(Claim::Granted) => {}
        Ok(Claim::Busy { .. }) => return,
        Err(e) => {
            tracing::warn!(channel = %key.channel, error = %e, "cannot claim a due reminder; trying again at the next pass");
            return;
        }
    }
    match shared.ledger.get(&key).await {
        Ok(Some(d)) if d.is_timer() => {}
        Ok(_) => {
            super::worker::release(&shared, &key).await;
            return;
        }
        Err(e) => {
            tracing::warn!(channel = %key.channel, error = %e, "cannot read a due reminder; trying again at the next pass");
            super::worker::release(&shared, &key).await;
            return;
        }
    }
    let Record { delivery, held } = record;
    let mut entry = delivery;
    let name = entry.channel.clone();
    let purpose = entry.purpose;
    let metric = crate::metrics::Metrics::channel(&name);
    let outcome = fire_inner(&shared, &mut entry, held.as_ref(), &shutdown).await;
    match &outcome {
        ChannelOutcome::Cancelled(_) => {
            shared
                .metrics
                .reminders_cancelled
                .get_or_create(&metric)
                .inc();
        }
        ChannelOutcome::Expired(_) => {
            shared
                .metrics
                .reminders_expired
                .get_or_create(&metric)
                .inc();
        }
        ChannelOutcome::Revoked => {}
        _ => {
            shared.metrics.reminders_fired.get_or_create(&metric).inc();
        }
    }
    if let ChannelOutcome::DeadLetter(letter) = &outcome {
        let written = match &held {
            Some(h) => dead_letter_kept(&shared, h, entry.source.as_ref(), letter, &shutdown).await,
            None => false,
        };
        if written {
            entry.error_class = Some(letter.class.as_str().to_string());
            entry.set(State::DeadLettered, Some(letter.reason.clone()));
            write_final(&shared, &entry, None).await;
        }
    }
    super::worker::report(&shared, &entry.event_id, &name, purpose, &outcome, started);
}

async fn fire_inner(
    shared: &Arc<Shared>,
    entry: &mut Delivery,
    held: Option<&HeldMessage>,
    shutdown: &CancellationToken,
) -> ChannelOutcome {
    let name = entry.channel.clone();
    let Some(event) = held.and_then(|h| event::parse(h.payload.as_bytes()).ok()) else {
        let reason = "not sent: the reminder's event was not kept or no longer parses".to_string();
        entry.set(State::Expired, Some(reason.clone()));
        write_final(shared, entry, None).await;
        return ChannelOutcome::Expired(reason);
    };
    let mut event = event;
    event.event_id = entry.event_id.clone();
    let mode = shared
        .config
        .channels
        .get(&name)
        .map_or(ChannelMode::Off, |c| c.mode);
    if mode != ChannelMode::On {
        let reason = format!(
            "not sent: channel `{name}` is {} at the reminder's due time (reminders are not held)",
            mode.as_str()
        );
        entry.set(State::Skipped, Some(reason));
        write_final(shared, entry, None).await;
        return ChannelOutcome::Disabled;
    }
    let appointment = entry.appointment_id.clone();
    let time = entry.useful_until;
    let ledger = shared.ledger.clone();
    let still_wanted = move || -> BoxFuture<'static, Option<String>> {
        let read = ledger.appointment_state(&appointment);
        Box::pin(async move {
            // A read failure is not a cancel: the send goes on, as it would
            // have without the check.
            no_longer_wanted(read.await.ok().flatten().as_ref(), time)
        })
    };
    if let Some(reason) = still_wanted().await {
        entry.set(State::Cancelled, Some(reason.clone()));
        write_final(shared, entry, None).await;
        return ChannelOutcome::Cancelled(reason);
    }
    if let Some(reason) = deadline::expired(Utc::now(), time, None, None) {
        entry.set(State::Expired, Some(reason.clone()));
        write_final(shared, entry, None).await;
        return ChannelOutcome::Expired(reason);
    }
    if let Some(due) = entry.due_at {
        let late = (Utc::now() - due).num_milliseconds().max(0) as f64 / 1000.0;
        shared.metrics.reminder_lateness.observe(late);
    }
    // Marked as being sent (kept as a timer): after a crash the boot scan
    // fires it again, the documented in-flight window.
    entry.set(State::Pending, None);
    note(shared, entry);
    let message = PluginMessage {
        purpose: PluginPurpose::Reminder,
        reminder: entry.reminder.clone(),
        useful_until: time.map(rfc3339),
    };
    send_out(
        shared,
        &event,
        &name,
        entry,
        &message,
        shutdown,
        &still_wanted,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::reminders::tests::t(s)
    }

    #[test]
    fn which_reminders_are_no_longer_wanted() {
        let state = |status, time: Option<&str>| AppointmentState {
            appointment_id: "a".into(),
            status,
            time: time.map(t),
            time_zone: None,
            last_event_id: "e9".into(),
            channels: vec![],
            reminders: true,
            updated_at: Utc::now(),
            event: None,
        };
        let at = Some(t("2026-12-10T15:00:00Z"));
        use AppointmentStatus::{Active, Cancelled};
        type Row = (
            Option<AppointmentState>,
            Option<DateTime<Utc>>,
            Option<&'static str>,
        );
        let rows: &[Row] = &[
            (None, at, None),
            (Some(state(Active, Some("2026-12-10T15:00:00Z"))), at, None),
            (Some(state(Active, None)), at, None),
            (
                Some(state(Active, Some("2026-12-11T09:00:00Z"))),
                at,
                Some("not sent: the appointment moved to 2026-12-11T09:00:00Z (event e9)"),
            ),
            (
                Some(state(Cancelled, Some("2026-12-10T15:00:00Z"))),
                at,
                Some("not sent: the appointment was cancelled (event e9)"),
            ),
        ];
        for (s, time, want) in rows {
            assert_eq!(
                no_longer_wanted(s.as_ref(), *time).as_deref(),
                *want,
                "{s:?}"
            );
        }
    }
}
