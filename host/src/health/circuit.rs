//! The circuit of one channel, as a pure state machine: every input carries
//! the time, nothing here sleeps or locks, so it is tested as tables.
//!
//! # The breaker
//!
//! A channel is **closed** (sends go out), **open** (the provider is failing:
//! nothing is attempted) or **half-open** (one probe at a time).
//!
//! It opens on either of two signs that the *provider*, not one event, is in
//! trouble (the two breaker kinds of zalando/skipper):
//! - **consecutive**: `consecutive_failures` (5) transient failures in a row,
//!   counted across all events of the channel. Five independent events all
//!   failing is not a coincidence of payloads; fewer would open on a brief
//!   blip that the per-event retries ride out anyway.
//! - **rate**: at least `window_failures` (10) failures among the last
//!   `window` (20) outcomes. This catches a provider failing half of its calls,
//!   which never makes five in a row. The window counts outcomes, not
//!   seconds, so it behaves the same at 1 send a minute and 1,000 a second.
//!
//! Transient failures are what `classify` calls `retry` (5xx, 429, ...) and
//! every send that got no answer (timeout, connection refused or reset). A
//! `permanent` verdict is a success for the circuit: the provider answered and
//! judged the event, so the channel works. A `channel-down` verdict
//! (credentials rejected, account suspended) opens the circuit at once.
//!
//! While open, no send is attempted and the attempts that fail while the
//! circuit is not closed are not counted against any event's retry budget:
//! [`Circuit::finish`] says whether a failure counts. After
//! `probe_backoff_initial` (1 s) the first send to ask becomes the **probe**
//! (a real send of a waiting event, not a synthetic request); everyone else
//! keeps waiting. A probe that fails reopens the circuit for twice as long,
//! up to `probe_backoff_max` (60 s), with equal jitter (a wait drawn from
//! `[d/2, d]`) so hosts sharing a provider do not probe in lockstep. A probe
//! that succeeds closes the circuit; so does any success of a send that was
//! already on its way when the circuit opened.
//!
//! # The ramp
//!
//! A circuit that has just closed may have hundreds of sends waiting. They are
//! released by slow start, not all at once: right after closing at most
//! `ramp_start` (2) sends are in flight at once, and each success raises that
//! limit by one, so it doubles every round trip while the provider keeps
//! accepting; past `ramp_end` (512, the default in-flight limit) the limit is
//! lifted. A failure during the ramp counts as usual, so a provider that
//! falls over again reopens the circuit after a handful of sends, not a flood.
//!
//! # Throttling
//!
//! A provider's `Retry-After` on a 429 throttles the whole channel until then
//! (providers limit per account or sender, so the next event would get the
//! same answer): [`Circuit::throttle`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// When the circuit opens and how it probes; validated in `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    pub consecutive_failures: u32,
    pub window: u32,
    pub window_failures: u32,
    pub probe_backoff_initial: Duration,
    pub probe_backoff_max: Duration,
    pub ramp_start: u32,
    pub ramp_end: u32,
}

impl Default for CircuitPolicy {
    /// The reasons for each number are in the module doc.
    fn default() -> Self {
        CircuitPolicy {
            consecutive_failures: 5,
            window: 20,
            window_failures: 10,
            probe_backoff_initial: Duration::from_secs(1),
            probe_backoff_max: Duration::from_secs(60),
            ramp_start: 2,
            ramp_end: 512,
        }
    }
}

/// What one finished send says about the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The provider answered and judged the request (accepted, or refused
    /// this one event for good).
    Success,
    /// No answer, or an answer meaning "later" (5xx, 429, ...).
    Transient(String),
    /// The channel can send nothing now (credentials, account, sender).
    ChannelDown(String),
    /// Nothing learnt about the provider: the send was abandoned, or the
    /// plugin failed on an answer that was not a success.
    Neutral,
}

/// The state, as operators see it (metrics, readiness, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open. Anything above 0 is
    /// "the channel is not healthy", which is what an alert wants.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// What a send asking to go out is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send now; `probe` when this send decides whether the circuit closes.
    Go { probe: bool },
    /// Ask again at this time (open, or throttled), or when woken.
    WaitUntil(Instant),
    /// Ask again when woken: a probe is out, or the ramp is full.
    WaitForWake,
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened; `reason` is the last failure.
    Opened { reason: String },
    /// A probe failed; the next one goes out after `retry_in`.
    ProbeFailed { reason: String, retry_in: Duration },
    /// The circuit closed after being down for `down_for`.
    Closed { down_for: Duration, probes: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { retry_at: Instant },
    HalfOpen { probe_out: bool },
}

/// One channel's circuit.
#[derive(Debug, Clone)]
pub struct Circuit {
    policy: CircuitPolicy,
    phase: Phase,
    /// Sends admitted and not yet finished.
    in_flight: u32,
    /// The concurrency limit while ramping up after a close.
    ramp: Option<u32>,
    throttled_until: Option<Instant>,
    consecutive: u32,
    /// The last `window` outcomes while closed; `true` is a failure.
    recent: VecDeque<bool>,
    opened_at: Option<Instant>,
    reason: Option<String>,
    failed_probes: u32,
}

impl Circuit {
    pub fn new(policy: CircuitPolicy) -> Self {
        Circuit {
            policy,
            phase: Phase::Closed,
            in_flight: 0,
            ramp: None,
            throttled_until: None,
            consecutive: 0,
            recent: VecDeque::with_capacity(policy.window as usize),
            opened_at: None,
            reason: None,
            failed_probes: 0,
        }
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Why the circuit is not closed (the failure that opened it, or the
    /// last failed probe's).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Since when the circuit has not been closed.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    pub fn throttled_until(&self, now: Instant) -> Option<Instant> {
        self.throttled_until.filter(|t| *t > now)
    }

    /// A send asks to go out at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        if let Some(until) = self.throttled_until {
            if until > now {
                return Admission::WaitUntil(until);
            }
            self.throttled_until = None;
        }
        match self.phase {
            Phase::Closed => {
                if self.ramp.is_some_and(|limit| self.in_flight >= limit) {
                    return Admission::WaitForWake;
                }
                self.in_flight += 1;
                Admission::Go { probe: false }
            }
            Phase::Open { retry_at } if now < retry_at => Admission::WaitUntil(retry_at),
            Phase::Open { .. } | Phase::HalfOpen { probe_out: false } => {
                self.phase = Phase::HalfOpen { probe_out: true };
                self.in_flight += 1;
                Admission::Go { probe: true }
            }
            Phase::HalfOpen { probe_out: true } => Admission::WaitForWake,
        }
    }

    /// A send admitted by [`Circuit::admit`] finished with `signal`.
    /// `jitter(n)` is uniform in `0..=n` (injected for tests). Returns
    /// whether a failure counts against the event's attempts (only while the
    /// channel is healthy: closed before and after), and the transition, if
    /// any.
    pub fn finish(
        &mut self,
        probe: bool,
        signal: Signal,
        now: Instant,
        jitter: impl FnOnce(u64) -> u64,
    ) -> (bool, Option<Transition>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match (&self.phase, signal) {
            (Phase::Closed, Signal::Success) => {
                self.consecutive = 0;
                self.remember(false);
                if let Some(limit) = self.ramp {
                    self.ramp = (limit + 1 < self.policy.ramp_end).then_some(limit + 1);
                }
                (true, None)
            }
            (Phase::Closed, Signal::Transient(reason)) => {
                self.consecutive += 1;
                self.remember(true);
                let failures = self.recent.iter().filter(|f| **f).count() as u32;
                if self.consecutive >= self.policy.consecutive_failures
                    || failures >= self.policy.window_failures
                {
                    (false, Some(self.open(reason, now, jitter)))
                } else {
                    (true, None)
                }
            }
            (Phase::Closed, Signal::ChannelDown(reason)) => {
                (false, Some(self.open(reason, now, jitter)))
            }
            (Phase::Closed, Signal::Neutral) => (true, None),
            (_, Signal::Success) => (true, Some(self.close(now))),
            (Phase::HalfOpen { .. }, Signal::Transient(reason) | Signal::ChannelDown(reason))
                if probe =>
            {
                self.failed_probes += 1;
                let retry_in = self.backoff(jitter);
                self.phase = Phase::Open {
                    retry_at: now + retry_in,
                };
                self.reason = Some(reason.clone());
                (false, Some(Transition::ProbeFailed { reason, retry_in }))
            }
            (Phase::HalfOpen { .. }, Signal::Neutral) if probe => {
                // The probe told nothing: the next send to ask probes.
                self.phase = Phase::HalfOpen { probe_out: false };
                (false, None)
            }
            // A send that was already out when the circuit opened, failing
            // too: no news.
            _ => (false, None),
        }
    }

    /// How many more sends may go out at once now: `None` when there is no
    /// limit (closed, ramp over).
    pub fn free_slots(&self) -> Option<u32> {
        match self.phase {
            Phase::Closed => self.ramp.map(|l| l.saturating_sub(self.in_flight)),
            _ => Some(0),
        }
    }

    /// Slows the whole channel until `until` (a provider's Retry-After).
    pub fn throttle(&mut self, until: Instant) {
        self.throttled_until = Some(self.throttled_until.map_or(until, |t| t.max(until)));
    }

    fn remember(&mut self, failure: bool) {
        if self.recent.len() >= self.policy.window as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(failure);
    }

    fn open(
        &mut self,
        reason: String,
        now: Instant,
        jitter: impl FnOnce(u64) -> u64,
    ) -> Transition {
        self.failed_probes = 0;
        let wait = self.backoff(jitter);
        self.phase = Phase::Open {
            retry_at: now + wait,
        };
        self.opened_at = Some(now);
        self.reason = Some(reason.clone());
        self.ramp = None;
        Transition::Opened { reason }
    }

    fn close(&mut self, now: Instant) -> Transition {
        let down_for = self.opened_at.map_or(Duration::ZERO, |t| now - t);
        let probes = self.failed_probes + 1;
        self.phase = Phase::Closed;
        self.consecutive = 0;
        self.recent.clear();
        self.opened_at = None;
        self.reason = None;
        self.failed_probes = 0;
        self.ramp = Some(self.policy.ramp_start.max(1));
        Transition::Closed { down_for, probes }
    }

    /// The wait before the next probe: `initial * 2^failed_probes`, capped,
    /// drawn from its upper half.
    fn backoff(&self, jitter: impl FnOnce(u64) -> u64) -> Duration {
        let p = &self.policy;
        let ceiling = p
            .probe_backoff_initial
            .saturating_mul(1u32 << self.failed_probes.min(20))
            .min(p.probe_backoff_max)
            .as_millis() as u64;
        let half = ceiling / 2;
        Duration::from_millis(ceiling - half + jitter(half).min(half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn t(failure: &str) -> Signal {
        Signal::Transient(failure.into())
    }

    /// The upper end of every jitter range, so waits are their ceilings.
    fn top(n: u64) -> u64 {
        n
    }

    /// What an admission must be, with waits as offsets from the start.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        Go,
        Probe,
        WaitFor(Duration),
        Wake,
    }

    /// One step of a scripted run, at an offset from the start: a send asks
    /// to go out, or one finishes (probe?, signal, counted?, transition).
    enum Step {
        Admit(Duration, Want),
        Finish(Duration, bool, Signal, bool, Option<&'static str>),
    }

    fn run(policy: CircuitPolicy, steps: Vec<Step>) -> Circuit {
        let start = Instant::now();
        let mut c = Circuit::new(policy);
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Admit(at, want) => {
                    let got = match c.admit(start + at) {
                        Admission::Go { probe: false } => Want::Go,
                        Admission::Go { probe: true } => Want::Probe,
                        Admission::WaitUntil(t) => Want::WaitFor(t - start),
                        Admission::WaitForWake => Want::Wake,
                    };
                    assert_eq!(got, want, "step {i}: admission");
                }
                Step::Finish(at, probe, signal, counted, transition) => {
                    let (c_counted, tr) = c.finish(probe, signal, start + at, top);
                    assert_eq!(c_counted, counted, "step {i}: counted");
                    let kind = tr.as_ref().map(|t| match t {
                        Transition::Opened { .. } => "opened",
                        Transition::ProbeFailed { .. } => "probe_failed",
                        Transition::Closed { .. } => "closed",
                    });
                    assert_eq!(kind, transition, "step {i}: transition {tr:?}");
                }
            }
        }
        c
    }

    #[test]
    fn five_transient_failures_in_a_row_open_it_and_the_fifth_is_not_counted() {
        use Step::*;
        let go = Want::Go;
        let mut steps = Vec::new();
        for _ in 0..5 {
            steps.push(Admit(S(0), go));
        }
        for i in 0..4 {
            steps.push(Finish(S(0), false, t(&format!("503 #{i}")), true, None));
        }
        steps.push(Finish(S(0), false, t("503 #4"), false, Some("opened")));
        // Open: wait out the first backoff (1 s, its upper end here).
        steps.push(Admit(MS(10), Want::WaitFor(S(1))));
        let c = run(CircuitPolicy::default(), steps);
        assert_eq!(c.state(), State::Open);
        assert_eq!(c.reason(), Some("503 #4"));
    }

    #[test]
    fn a_success_between_failures_resets_the_run_but_the_rate_breaker_sees_them() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        // Rounds of 4 failures and 1 success: never 5 in a row.
        let mut failures = 0;
        for i in 0..15u32 {
            c.admit(start);
            let failure = i % 5 != 4;
            let signal = if failure {
                t("timeout")
            } else {
                Signal::Success
            };
            failures += u32::from(failure);
            let (counted, tr) = c.finish(false, signal, start, top);
            // The 10th failure of the last 20 outcomes opens it.
            assert_eq!(tr.is_some(), failures == 10 && failure, "outcome {i}");
            assert_eq!(counted, tr.is_none(), "outcome {i}");
            if tr.is_some() {
                assert_eq!(i, 11, "4 + 1 + 4 + 1 + 2 outcomes");
                break;
            }
        }
        assert_eq!(c.state(), State::Open);
    }

    #[test]
    fn the_rate_breaker_opens_at_half_of_the_window() {
        let policy = CircuitPolicy::default();
        let start = Instant::now();
        let mut c = Circuit::new(policy);
        // Alternate failure, success: never two in a row.
        let mut opened_after = None;
        for i in 0..40u32 {
            assert_eq!(c.admit(start), Admission::Go { probe: false });
            let signal = if i % 2 == 0 {
                t("500")
            } else {
                Signal::Success
            };
            let (_, tr) = c.finish(false, signal, start, top);
            if tr.is_some() {
                opened_after = Some(i + 1);
                break;
            }
        }
        // The 10th failure is outcome 19 (0-based 18).
        assert_eq!(opened_after, Some(19));
        assert_eq!(c.state(), State::Open);
    }

    #[test]
    fn one_in_five_failing_never_opens_it() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        for i in 0..10_000u32 {
            c.admit(start);
            let signal = if i % 5 == 0 {
                t("500")
            } else {
                Signal::Success
            };
            let (counted, tr) = c.finish(false, signal, start, top);
            assert!(counted && tr.is_none(), "outcome {i}");
        }
        assert_eq!(c.state(), State::Closed);
    }

    #[test]
    fn permanent_verdicts_are_successes_for_the_channel_and_neutral_is_nothing() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        for i in 0..100 {
            c.admit(start);
            let signal = match i % 3 {
                0 => t("503"),
                1 => Signal::Neutral,
                _ => Signal::Success,
            };
            c.finish(false, signal, start, top);
        }
        assert_eq!(c.state(), State::Closed);
    }

    #[test]
    fn channel_down_opens_at_once_and_is_not_counted() {
        use Step::*;
        let c = run(
            CircuitPolicy::default(),
            vec![
                Admit(S(0), Want::Go),
                Finish(
                    S(0),
                    false,
                    Signal::ChannelDown("HTTP 401".into()),
                    false,
                    Some("opened"),
                ),
                Admit(S(0), Want::WaitFor(S(1))),
            ],
        );
        assert_eq!(c.state(), State::Open);
        assert_eq!(c.reason(), Some("HTTP 401"));
    }

    #[test]
    fn probes_back_off_doubling_to_the_cap_and_one_success_closes() {
        use Step::*;
        let probe = Want::Probe;
        let mut steps = vec![
            Admit(S(0), Want::Go),
            Admit(S(0), Want::Go),
            Finish(
                S(0),
                false,
                Signal::ChannelDown("401".into()),
                false,
                Some("opened"),
            ),
            // A send that was already out fails too: no news, not counted.
            Finish(S(0), false, t("timeout"), false, None),
        ];
        // Probe waits: 1, 2, 4, 8, 16, 32, 60, 60 s (ceilings).
        let mut at = S(1);
        for wait in [2u64, 4, 8, 16, 32, 60, 60] {
            steps.push(Admit(at - MS(1), Want::WaitFor(at)));
            steps.push(Admit(at, probe));
            // Everyone else waits for the probe.
            steps.push(Admit(at, Want::Wake));
            steps.push(Finish(at, true, t("503"), false, Some("probe_failed")));
            at += S(wait);
        }
        steps.push(Admit(at, probe));
        steps.push(Finish(at, true, Signal::Success, true, Some("closed")));
        let c = run(CircuitPolicy::default(), steps);
        assert_eq!(c.state(), State::Closed);
    }

    #[test]
    fn probe_waits_are_jittered_within_their_upper_half() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        c.admit(start);
        c.finish(false, Signal::ChannelDown("x".into()), start, |_| 0);
        // Lowest draw: half of the 1 s ceiling.
        assert_eq!(c.admit(start), Admission::WaitUntil(start + MS(500)));
    }

    #[test]
    fn an_abandoned_probe_hands_the_probe_to_the_next_send() {
        use Step::*;
        run(
            CircuitPolicy::default(),
            vec![
                Admit(S(0), Want::Go),
                Finish(
                    S(0),
                    false,
                    Signal::ChannelDown("x".into()),
                    false,
                    Some("opened"),
                ),
                Admit(S(1), Want::Probe),
                Admit(S(1), Want::Wake),
                Finish(S(1), true, Signal::Neutral, false, None),
                Admit(S(1), Want::Probe),
            ],
        );
    }

    #[test]
    fn after_closing_sends_ramp_up_by_slow_start() {
        let policy = CircuitPolicy {
            ramp_start: 2,
            ramp_end: 16,
            ..CircuitPolicy::default()
        };
        let start = Instant::now();
        let mut c = Circuit::new(policy);
        c.admit(start);
        c.finish(false, Signal::ChannelDown("x".into()), start, top);
        let at = start + S(1);
        assert_eq!(c.admit(at), Admission::Go { probe: true });
        c.finish(true, Signal::Success, at, top);
        // Round by round, admit as many as allowed, then finish them all.
        let mut allowed = Vec::new();
        for _ in 0..5 {
            let mut n = 0;
            while n < 100 && c.admit(at) == (Admission::Go { probe: false }) {
                n += 1;
            }
            allowed.push(n);
            for _ in 0..n {
                c.finish(false, Signal::Success, at, top);
            }
        }
        // 2, then +1 per success: 4, 8; the next 8 successes reach
        // ramp_end (16) and the limit is lifted.
        assert_eq!(allowed, [2, 4, 8, 100, 100]);
    }

    #[test]
    fn a_failure_during_the_ramp_counts_and_can_reopen() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        c.admit(start);
        c.finish(false, Signal::ChannelDown("x".into()), start, top);
        let at = start + S(1);
        c.admit(at);
        c.finish(true, Signal::Success, at, top);
        for i in 0..5 {
            assert_eq!(c.admit(at), Admission::Go { probe: false });
            let (counted, tr) = c.finish(false, t("503"), at, top);
            assert_eq!(counted, i < 4);
            assert_eq!(tr.is_some(), i == 4);
        }
        assert_eq!(c.state(), State::Open);
    }

    #[test]
    fn throttling_holds_every_send_until_the_time_given() {
        let start = Instant::now();
        let mut c = Circuit::new(CircuitPolicy::default());
        c.throttle(start + S(30));
        c.throttle(start + S(10)); // a shorter one does not shorten it
        assert_eq!(c.admit(start), Admission::WaitUntil(start + S(30)));
        assert_eq!(c.admit(start + S(29)), Admission::WaitUntil(start + S(30)));
        assert_eq!(c.admit(start + S(30)), Admission::Go { probe: false });
        assert_eq!(c.state(), State::Closed);
    }

    #[test]
    fn states_have_stable_names_and_gauge_values() {
        let table = [
            (State::Closed, "closed", 0),
            (State::HalfOpen, "half_open", 1),
            (State::Open, "open", 2),
        ];
        for (state, name, gauge) in table {
            assert_eq!((state.as_str(), state.gauge()), (name, gauge));
        }
    }
}
