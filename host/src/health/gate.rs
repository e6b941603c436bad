//! The async side of a channel's circuit: sends wait here while the channel
//! is down, throttled, ramping up or over its rate, and report back how they
//! went.
//!
//! Invariant: every send that [`ChannelGate::admit`] lets out holds a
//! [`Permit`] until it reports its [`Signal`]; a permit dropped without a
//! report (the event's task was cancelled) reports `Neutral`, so a probe can
//! never be lost and leave the channel half-open for good.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::circuit::{Admission, Circuit, CircuitPolicy, Signal, State, Transition};
use crate::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// While a circuit stays open, one log line per this long, not one per event.
const STILL_DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// A channel's send rate: one send per `period` on average, up to `burst`
/// at once after a quiet spell (GCRA, the `governor` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub period: Duration,
    pub burst: NonZeroU32,
}

/// What an operator sees of one channel (readiness body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelHealth {
    pub channel: String,
    pub state: &'static str,
    /// Why it is not closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since it stopped being closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_seconds: Option<u64>,
    /// Seconds until the provider's Retry-After throttle ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_for_seconds: Option<u64>,
    /// Sends waiting to go out.
    pub waiting: u64,
}

/// One channel's gate.
pub struct ChannelGate {
    channel: String,
    circuit: Mutex<Inner>,
    wake: Notify,
    rate: Option<DefaultDirectRateLimiter>,
    // The channel's series, looked up once: publishing is then two atomic
    // stores per send instead of two label lookups and an allocation.
    state_gauge: Gauge,
    waiting_gauge: Gauge,
    opens: Counter,
}

struct Inner {
    circuit: Circuit,
    waiting: u64,
    last_down_log: Option<Instant>,
}

impl std::fmt::Debug for ChannelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelGate")
            .field("channel", &self.channel)
            .field("state", &self.lock().circuit.state())
            .finish_non_exhaustive()
    }
}

impl ChannelGate {
    pub fn new(
        channel: &str,
        policy: CircuitPolicy,
        rate: Option<Rate>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let labels = Metrics::channel(channel);
        let gate = ChannelGate {
            channel: channel.to_string(),
            circuit: Mutex::new(Inner {
                circuit: Circuit::new(policy),
                waiting: 0,
                last_down_log: None,
            }),
            wake: Notify::new(),
            rate: rate
                .and_then(|r| Quota::with_period(r.period).map(|q| q.allow_burst(r.burst)))
                .map(RateLimiter::direct),
            // Created here, so every series is present at 0 from the start
            // and rate() and alerts work on a fresh host.
            state_gauge: metrics.circuit_state.get_or_create(&labels).clone(),
            waiting_gauge: metrics.waiting.get_or_create(&labels).clone(),
            opens: metrics.circuit_opens.get_or_create(&labels).clone(),
        };
        gate.publish(&gate.lock());
        gate
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The circuit is never left inconsistent by a panic (every change is a
    /// plain assignment), so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().circuit.state()
    }

    pub fn health(&self) -> ChannelHealth {
        let inner = self.lock();
        let now = Instant::now();
        let c = &inner.circuit;
        ChannelHealth {
            channel: self.channel.clone(),
            state: c.state().as_str(),
            reason: c.reason().map(|r| crate::redact::text(r).into_owned()),
            down_for_seconds: c.opened_at().map(|t| (now - t).as_secs()),
            throttled_for_seconds: c.throttled_until(now).map(|t| (t - now).as_secs()),
            waiting: inner.waiting,
        }
    }

    /// Waits until a send may go out, or returns `None` once `cancel` is
    /// cancelled (the event's partition was revoked).
    pub async fn admit(&self, cancel: &CancellationToken) -> Option<Permit<'_>> {
        let mut counted_waiting = false;
        let permit = loop {
            // Registered before looking, so a wake between the look and the
            // wait is not lost.
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let admission = {
                let mut inner = self.lock();
                let admission = inner.circuit.admit(Instant::now());
                match admission {
                    Admission::Go { .. } if counted_waiting => inner.waiting -= 1,
                    Admission::WaitUntil(_) | Admission::WaitForWake if !counted_waiting => {
                        inner.waiting += 1;
                        counted_waiting = true;
                    }
                    _ => {}
                }
                self.publish(&inner);
                admission
            };
            let until = match admission {
                Admission::Go { probe } => {
                    if probe {
                        tracing::info!(channel = %self.channel, "probing the channel with a waiting send");
                    }
                    break Permit {
                        gate: self,
                        probe,
                        reported: false,
                    };
                }
                Admission::WaitUntil(t) => Some(t),
                Admission::WaitForWake => None,
            };
            let sleep = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut wake => {}
                _ = sleep => {}
                _ = cancel.cancelled() => {
                    let mut inner = self.lock();
                    inner.waiting -= 1;
                    self.publish(&inner);
                    return None;
                }
            }
        };
        // The rate limit applies to what the circuit lets out. The permit is
        // held meanwhile, so the ramp counts a send waiting for its token.
        if let Some(limiter) = &self.rate {
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            // Dropping the permit reports Neutral.
                            _ = cancel.cancelled() => return None,
                        }
                    }
                }
            }
        }
        Some(permit)
    }

    /// Slows the whole channel for `for_` (a provider's Retry-After).
    pub fn throttle(&self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut inner = self.lock();
        let was = inner.circuit.throttled_until(Instant::now());
        inner.circuit.throttle(until);
        if was.is_none_or(|w| w < until) {
            tracing::info!(channel = %self.channel, throttle_ms = for_.as_millis() as u64, "provider asked to slow down: holding the channel's sends");
        }
        self.publish(&inner);
    }

    fn finish(&self, probe: bool, signal: Signal) -> bool {
        let now = Instant::now();
        let (counted, wake) = {
            let mut inner = self.lock();
            let (counted, transition) = inner
                .circuit
                .finish(probe, signal, now, |n| fastrand::u64(0..=n));
            self.log(&mut inner, transition.as_ref(), now);
            self.publish(&inner);
            let wake = match inner.circuit.free_slots() {
                _ if inner.waiting == 0 => Wake::None,
                _ if transition.is_some() || probe => Wake::All,
                None => Wake::All,
                // During the ramp a success frees its own slot and adds one:
                // wake as many as may go, not everyone.
                Some(n) => Wake::Some(n.min(inner.waiting.min(u64::from(u32::MAX)) as u32)),
            };
            (counted, wake)
        };
        match wake {
            Wake::None => {}
            Wake::All => self.wake.notify_waiters(),
            Wake::Some(n) => (0..n).for_each(|_| self.wake.notify_one()),
        }
        counted
    }

    fn log(&self, inner: &mut Inner, transition: Option<&Transition>, now: Instant) {
        let channel = self.channel.as_str();
        match transition {
            Some(Transition::Opened { reason }) => {
                inner.last_down_log = Some(now);
                self.opens.inc();
                tracing::warn!(channel, reason = %reason, "channel circuit opened: holding its sends (nothing is dead-lettered or committed past them) and probing until the provider recovers");
            }
            Some(Transition::ProbeFailed { reason, retry_in })
                if inner
                    .last_down_log
                    .is_none_or(|t| now - t >= STILL_DOWN_LOG_EVERY) =>
            {
                inner.last_down_log = Some(now);
                let down_for_s = inner.circuit.opened_at().map(|t| (now - t).as_secs());
                tracing::warn!(channel, reason = %reason, down_for_s, waiting = inner.waiting, next_probe_ms = retry_in.as_millis() as u64, "channel still down");
            }
            Some(Transition::ProbeFailed { .. }) => {}
            Some(Transition::Closed { down_for, probes }) => {
                inner.last_down_log = None;
                tracing::info!(
                    channel,
                    down_for_ms = down_for.as_millis() as u64,
                    probes,
                    waiting = inner.waiting,
                    "channel circuit closed: the provider accepts again; releasing waiting sends"
                );
            }
            None => {}
        }
    }

    fn publish(&self, inner: &Inner) {
        self.state_gauge.set(inner.circuit.state().gauge());
        self.waiting_gauge.set(inner.waiting as i64);
    }
}

enum Wake {
    None,
    All,
    Some(u32),
}

/// Leave to send once; report how it went with [`Permit::finish`].
pub struct Permit<'a> {
    gate: &'a ChannelGate,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    /// Reports the send's outcome. Returns whether a failure counts against
    /// the event's attempts: only while the channel is healthy.
    pub fn finish(mut self, signal: Signal) -> bool {
        self.reported = true;
        self.gate.finish(self.probe, signal)
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.gate.finish(self.probe, Signal::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: Option<Rate>) -> Arc<ChannelGate> {
        Arc::new(ChannelGate::new(
            "sms",
            CircuitPolicy::default(),
            rate,
            Arc::new(Metrics::new()),
        ))
    }

    /// Opens the gate's circuit with a channel-level failure.
    async fn open(g: &ChannelGate) {
        let p = g.admit(&CancellationToken::new()).await.expect("admitted");
        assert!(!p.finish(Signal::ChannelDown("HTTP 401".into())));
        assert_eq!(g.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sends_are_held_while_open_and_one_probe_goes_out_after_the_backoff() {
        let g = gate(None);
        open(&g).await;
        let opened = Instant::now();
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let admitted = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..10 {
            let (g, cancel, admitted) = (g.clone(), cancel.clone(), admitted.clone());
            tasks.spawn(async move {
                let p = g.admit(&cancel).await.expect("admitted");
                admitted
                    .lock()
                    .expect("lock")
                    .push((i, p.is_probe(), Instant::now()));
                // The probe succeeds after 100 ms; the others just succeed.
                tokio::time::sleep(Duration::from_millis(100)).await;
                p.finish(Signal::Success);
            });
        }
        // Nothing goes out before the first backoff (0.5 .. 1 s).
        tokio::time::sleep(Duration::from_millis(499)).await;
        assert!(admitted.lock().expect("lock").is_empty());
        assert_eq!(g.health().waiting, 10);
        while tasks.join_next().await.is_some() {}
        let admitted = admitted.lock().expect("lock").clone();
        assert_eq!(admitted.len(), 10);
        let probes: Vec<_> = admitted.iter().filter(|a| a.1).collect();
        assert_eq!(probes.len(), 1, "one probe: {admitted:?}");
        let probe_at = probes[0].2;
        assert!(probe_at - opened >= Duration::from_millis(500));
        assert!(probe_at - opened <= Duration::from_secs(1));
        // The rest went out only after the probe's success (100 ms later).
        for a in admitted.iter().filter(|a| !a.1) {
            assert!(a.2 - probe_at >= Duration::from_millis(100), "{a:?}");
        }
        assert_eq!(g.state(), State::Closed);
        assert_eq!(g.health().waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_recovery_the_backlog_is_released_by_slow_start() {
        let g = gate(None);
        open(&g).await;
        let cancel = CancellationToken::new();
        let concurrent = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let peaks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (g, cancel, concurrent, peaks) =
                (g.clone(), cancel.clone(), concurrent.clone(), peaks.clone());
            tasks.spawn(async move {
                let p = g.admit(&cancel).await.expect("admitted");
                let now = concurrent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peaks.lock().expect("lock").push((Instant::now(), now));
                tokio::time::sleep(Duration::from_millis(50)).await;
                concurrent.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                p.finish(Signal::Success);
            });
        }
        while tasks.join_next().await.is_some() {}
        let peaks = peaks.lock().expect("lock").clone();
        let first = peaks[0].0;
        // Per 50 ms round after the probe: at most 2, then about double.
        let most_in = |round: u32| {
            peaks
                .iter()
                .filter(|(t, _)| *t - first < Duration::from_millis(50) * (round + 1))
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        };
        assert_eq!(most_in(0), 1, "the probe alone: {peaks:?}");
        assert!(most_in(1) <= 2, "{peaks:?}");
        assert!(most_in(2) <= 4, "{peaks:?}");
        assert!(most_in(3) <= 8, "{peaks:?}");
        // And it does ramp: the 100 sends take far fewer than 100 rounds.
        let last = peaks.last().expect("sends").0;
        assert!(last - first < Duration::from_secs(1), "{:?}", last - first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_waiter_stops_waiting_and_is_not_counted() {
        let g = gate(None);
        open(&g).await;
        let cancel = CancellationToken::new();
        let waiter = {
            let (g, cancel) = (g.clone(), cancel.clone());
            tokio::spawn(async move { g.admit(&cancel).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(g.health().waiting, 1);
        cancel.cancel();
        assert!(
            !waiter.await.expect("task"),
            "a cancelled waiter is not admitted"
        );
        assert_eq!(g.health().waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_permit_hands_the_probe_on() {
        let g = gate(None);
        open(&g).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cancel = CancellationToken::new();
        let p = g.admit(&cancel).await.expect("probe");
        assert!(p.is_probe());
        drop(p);
        let next = tokio::time::timeout(Duration::from_millis(1), g.admit(&cancel))
            .await
            .expect("admitted at once")
            .expect("not cancelled");
        assert!(next.is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_throttles_every_send_of_the_channel() {
        let g = gate(None);
        g.throttle(Duration::from_secs(30));
        let started = Instant::now();
        let p = g.admit(&CancellationToken::new()).await.expect("admitted");
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        assert!(p.finish(Signal::Success));
    }

    #[tokio::test(start_paused = true)]
    async fn the_state_and_waiting_sends_are_in_the_metrics() {
        let metrics = Arc::new(Metrics::new());
        let g = ChannelGate::new("email", CircuitPolicy::default(), None, metrics.clone());
        let text = metrics.encode_prometheus();
        assert!(
            text.contains("notify_channel_circuit_state{channel=\"email\"} 0"),
            "{text}"
        );
        open(&g).await;
        let text = metrics.encode_prometheus();
        assert!(
            text.contains("notify_channel_circuit_state{channel=\"email\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("notify_channel_circuit_opens_total{channel=\"email\"} 1"),
            "{text}"
        );
    }
}
