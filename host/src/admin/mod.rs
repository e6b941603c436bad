//! The admin HTTP server: liveness, readiness, Prometheus metrics and the
//! status API.
//!
//! - `GET /health/live`: 200 while the process serves requests.
//! - `GET /health/ready`: 200 only when Kafka is reachable and partitions are
//!   assigned, every enabled plugin is loaded, the ledger answers and
//!   the dead-letter topic can be written (a missing topic or a denied write
//!   fails it until a write succeeds); otherwise 503 with a JSON body naming
//!   each failing check. Either way
//!   the body lists each channel's circuit (`closed`, `half_open`, `open`),
//!   why it is not closed, and how many sends wait for it: a provider
//!   outage does not make the host unready (a restart would not help).
//! - `GET /metrics`: Prometheus text exposition.
//! - `/v1/...`: the status API ([`api`]), behind the bearer token; off (404)
//!   without one. Health and metrics need no token.
//!
//! It listens on a private address by default (127.0.0.1:9090): health and
//! metrics are for the operator's tooling, not the internet.

pub mod api;
pub mod problem;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::dlq::DlqHealth;
use crate::health::Health;
use crate::kafka::HostProducer;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::reminders::scheduler::Scheduler;

/// What readiness is made of; the pipeline and Kafka callbacks update it.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Partitions currently assigned to this member.
    pub assigned_partitions: AtomicUsize,
    /// At least one broker connection is up (from librdkafka statistics and
    /// errors).
    pub broker_up: AtomicBool,
    /// Every enabled channel's plugin loaded and checked its settings.
    pub plugins_loaded: AtomicBool,
}

/// Shared state of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub ledger: Ledger,
    pub health: Arc<Health>,
    pub dlq: Arc<DlqHealth>,
    /// The running config: the API token, channel modes (release).
    pub config: Arc<Config>,
    /// Re-publishes held events on release; `None` in tools without Kafka.
    pub producer: Option<HostProducer>,
    /// The reminder scheduler's state; `None` where none runs.
    pub scheduler: Option<Scheduler>,
}

/// A scheduler whose loop has not passed for this long is stuck (it passes
/// at least every second).
const SCHEDULER_STUCK_MS: i64 = 30_000;

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { (StatusCode::OK, Json(json!({ "status": "live" }))) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api::router(&state))
        .with_state(state)
}

/// Serves until `shutdown` resolves. The listener comes from outside so
/// tests can bind port 0.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The longest readiness waits for the ledger (twice: check and count).
const LEDGER_PROBE: std::time::Duration = std::time::Duration::from_millis(1500);

async fn ready(State(state): State<AdminState>) -> Response {
    let r = &state.readiness;
    let mut failing = Vec::new();
    if !r.broker_up.load(Ordering::Relaxed) {
        failing.push(json!({ "check": "kafka", "reason": "no broker connection is up" }));
    }
    let partitions = r.assigned_partitions.load(Ordering::Relaxed);
    if partitions == 0 {
        failing.push(json!({ "check": "partitions", "reason": "no partitions assigned (joining the consumer group, or more members than partitions)" }));
    }
    if !r.plugins_loaded.load(Ordering::Relaxed) {
        failing.push(json!({ "check": "plugins", "reason": "plugins not loaded" }));
    }
    if let Some(reason) = state.dlq.unavailable() {
        failing.push(json!({ "check": "dead_letter_topic", "reason": reason }));
    }
    // Bounded: a database that does not answer must not hold the probe
    // past its own timeout.
    match tokio::time::timeout(LEDGER_PROBE, state.ledger.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failing.push(json!({ "check": "ledger", "reason": e.to_string() })),
        Err(_) => failing.push(json!({ "check": "ledger", "reason": format!("no answer within {} ms", LEDGER_PROBE.as_millis()) })),
    }
    // Overdue reminders (a provider outage, a backlog after downtime) are
    // reported, not failed on: a restart would not help. A loop that stopped
    // passing is a failure.
    let scheduled = tokio::time::timeout(LEDGER_PROBE, state.ledger.timer_count())
        .await
        .ok()
        .and_then(Result::ok);
    let scheduler = state.scheduler.as_ref().map(|s| {
        let (tick_age_ms, overdue_s, in_flight) = s.status.read(chrono::Utc::now());
        json!({
            "last_tick_age_ms": tick_age_ms,
            "overdue_seconds": overdue_s,
            "in_flight": in_flight,
            "scheduled": scheduled,
        })
    });
    if let Some(s) = &state.scheduler {
        match s.status.read(chrono::Utc::now()).0 {
            None => failing.push(json!({ "check": "scheduler", "reason": "the reminder scheduler has not started" })),
            Some(age) if age > SCHEDULER_STUCK_MS => failing.push(json!({ "check": "scheduler", "reason": format!("the reminder scheduler last ran {} s ago", age / 1000) })),
            Some(_) => {}
        }
    }
    // A provider outage does not make the host unready: restarting it would
    // not help, and the work is held, not lost. The channels' states are in
    // the body for whoever looks.
    let channels = state.health.report();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "assigned_partitions": partitions, "channels": channels, "scheduler": scheduler })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "failing": failing, "channels": channels, "scheduler": scheduler })),
        )
            .into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic
/// text format otherwise.
async fn metrics(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.encode_prometheus(),
        )
            .into_response()
    }
}

/// Sets a readiness flag.
pub fn set(flag: &AtomicBool, value: bool) {
    flag.store(value, Ordering::Relaxed);
}
