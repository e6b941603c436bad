//! The status API under `/v1`: read the delivery ledger, release a held
//! backlog, and the OpenAPI 3.1 document of it all, generated from these
//! handlers and the ledger's types (utoipa), never written by hand.
//!
//! - `GET /v1/events/{event_id}`: the event's deliveries with their
//!   attempts; 404 when the ledger has none.
//! - `GET /v1/appointments/{appointment_id}/deliveries`: newest first; an
//!   appointment without deliveries is an empty list (200), since the host
//!   cannot tell an unknown appointment from one that asked for nothing.
//! - `GET /v1/deliveries?channel=&state=&purpose=&since=&until=&limit=&cursor=`:
//!   newest first, `limit` 1 to 500 (default 100), an opaque `next_cursor`.
//! - `POST /v1/channels/{channel}/release?dry_run=`: re-publishes what was
//!   held while the channel was paused; 409 unless the channel is on.
//! - `GET /v1/openapi.json`: the document.
//!
//! Invariants:
//! - Everything under `/v1`, the document included, needs
//!   `Authorization: Bearer <admin.token>`, compared in constant time.
//!   Without a token configured every `/v1` path answers 404: the API is
//!   off, never open. The token is in no response and no log line.
//! - Every error is one [`Problem`] (`application/problem+json`); a bad or
//!   unknown query parameter is a 400 naming it, so a typo (`?stat=held`)
//!   never lists everything.
//! - Contact data leaves masked: the ledger stores it masked, and the short
//!   free-text fields (recipient, reason) are masked again on the way out,
//!   so a record written by an older or buggy writer cannot leak. Snippets
//!   (up to 8 KiB each) are passed as stored: masked when written, and
//!   masking them again would dominate a 500-record page's cost.

// A `Problem` is built only on the error path and answered at once; boxing
// it to make `Result` smaller would buy nothing but noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{kind, Problem, PROBLEM_JSON};
use super::AdminState;
use crate::config::ChannelMode;
use crate::ledger::{self, Delivery, Filter, ListError, Page, Purpose, State as DeliveryState};
use crate::replay::ReleaseReport;

/// A page when the request names no `limit`: a screenful for a person,
/// and (with up to five attempts per record) a body well under a megabyte.
pub const DEFAULT_LIMIT: usize = 100;

/// The deliveries of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventDeliveries {
    pub event_id: String,
    /// Oldest first (in the order the host recorded them).
    pub deliveries: Vec<Delivery>,
}

/// The deliveries of one appointment, over all its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppointmentDeliveries {
    pub appointment_id: String,
    /// Newest first; empty when none are on record.
    pub deliveries: Vec<Delivery>,
}

/// Open reminders (scheduled or being sent), earliest due first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reminders {
    pub reminders: Vec<Delivery>,
}

/// Where an appointment stands, as its events said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppointmentView {
    pub appointment_id: String,
    pub status: ledger::AppointmentStatus,
    /// The appointment's time as last announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The event that last changed it.
    pub last_event_id: String,
    /// The channels reminders and notices go to.
    pub channels: Vec<String>,
    pub reminders: bool,
    pub updated_at: DateTime<Utc>,
}

/// The reminders list's query parameters (see [`ListParams`] on why unused).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // never built: it exists for its derived documentation
struct ReminderParams {
    /// Only this appointment's reminders.
    #[param(required = false, min_length = 1)]
    appointment_id: String,
    /// Only this channel's reminders.
    #[param(required = false, min_length = 1)]
    channel: String,
    /// The most reminders returned.
    #[param(required = false, minimum = 1, maximum = 500, default = 100)]
    limit: u32,
}

/// The list's query parameters as the OpenAPI document shows them.
/// [`parse_list`] reads the query string itself, so each problem names
/// its parameter and unknown ones are refused; this type only documents.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // never built: it exists for its derived documentation
struct ListParams {
    /// Only this channel's deliveries (a `[channels.NAME]` of the config).
    #[param(required = false, min_length = 1)]
    channel: String,
    /// Only deliveries in this state.
    #[param(required = false)]
    state: DeliveryState,
    /// Only deliveries with this purpose.
    #[param(required = false)]
    purpose: Purpose,
    /// Only deliveries created at or after this time (RFC 3339; write `+`
    /// in an offset as `%2B`).
    #[param(required = false)]
    since: DateTime<Utc>,
    /// Only deliveries created before this time (RFC 3339).
    #[param(required = false)]
    until: DateTime<Utc>,
    /// The most deliveries in one page.
    #[param(required = false, minimum = 1, maximum = 500, default = 100)]
    limit: u32,
    /// `next_cursor` of the previous page, unchanged, with the same
    /// filters; absent for the first page.
    #[param(required = false, min_length = 1)]
    cursor: String,
}

/// The release's query parameters (see [`ListParams`] on why unused).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // never built: it exists for its derived documentation
struct ReleaseParams {
    /// Count what is held without re-publishing anything.
    #[param(required = false, default = false)]
    dry_run: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notify-host status API",
        description = "Read the delivery ledger of notify-host (what was sent, held, dead-lettered or \
            expired, with its attempts) and release a held backlog. Every request needs \
            `Authorization: Bearer <admin.token>`; errors are RFC 9457 `application/problem+json`. \
            Contact data is always masked."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem)),
    tags(
        (name = "deliveries", description = "The delivery ledger"),
        (name = "channels", description = "Operations on a channel")
    )
)]
struct ApiDoc;

/// Declares the bearer scheme the whole API uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The host's `admin.token` (e.g. NOTIFY_ADMIN_TOKEN)."))
                    .build(),
            ),
        );
    }
}

/// Adds the answers every operation can give (400 for a bad or unknown
/// parameter, 401, 503) to every operation, so no handler can forget one.
/// Runs on the finished document: the paths are added after `ApiDoc`.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, api: &mut openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                responses.entry("400".into()).or_insert_with(|| {
                    problem_response(
                        "A parameter is malformed or unknown; `parameter` names it.",
                        false,
                    )
                });
                responses.entry("401".into()).or_insert_with(|| {
                    problem_response("The bearer token is missing or wrong.", true)
                });
                responses.entry("503".into()).or_insert_with(|| {
                    problem_response(
                        "The ledger (or Kafka, for a release) is unavailable.",
                        false,
                    )
                });
            }
        }
    }
}

fn problem_response(description: &str, www_authenticate: bool) -> RefOr<openapi::Response> {
    let content = openapi::ContentBuilder::new()
        .schema(Some(openapi::Ref::from_schema_name("Problem")))
        .build();
    let mut response = openapi::ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
    if www_authenticate {
        response = response.header(
            "WWW-Authenticate",
            openapi::HeaderBuilder::new()
                .schema(Some(
                    openapi::ObjectBuilder::new().schema_type(openapi::Type::String),
                ))
                .description(Some("`Bearer realm=\"notify-host\"`"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// The `/v1` routes, guarded; merged into the admin router.
pub fn router(state: &AdminState) -> Router<AdminState> {
    let (routes, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(event))
        .routes(routes!(appointment))
        .routes(routes!(appointment_state))
        .routes(routes!(reminders))
        .routes(routes!(list))
        .routes(routes!(release))
        .split_for_parts();
    CommonErrors.modify(&mut api);
    // Serialised once: the document does not change while the host runs.
    let document: Arc<Result<Vec<u8>, String>> =
        Arc::new(serde_json::to_vec(&api).map_err(|e| e.to_string()));
    routes
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { openapi_json(&document) }
            }),
        )
        // Unknown paths under /v1 answer a problem too (after the guard,
        // so they do not tell a caller without the token what exists).
        .route("/v1", any(no_such_path))
        .route("/v1/", any(no_such_path))
        .route("/v1/{*rest}", any(no_such_path))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}

fn openapi_json(document: &Result<Vec<u8>, String>) -> Response {
    match document {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes.clone(),
        )
            .into_response(),
        Err(e) => Problem::unavailable(format!("the OpenAPI document cannot be written: {e}"))
            .at("/v1/openapi.json")
            .into_response(),
    }
}

async fn no_such_path(uri: Uri) -> Problem {
    Problem::not_found("no such path in the status API (see /v1/openapi.json)").at(uri.path())
}

async fn method_not_allowed(uri: Uri) -> Problem {
    // The router adds `Allow` to this answer.
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kind::METHOD_NOT_ALLOWED,
        "this path does not take that method (see Allow)",
    )
    .at(uri.path())
}

/// The gate in front of every `/v1` route: off without a token, 401
/// without the right one.
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.config.admin_token.as_ref() else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            kind::API_OFF,
            "the status API is off: set admin.token (e.g. token = \"${NOTIFY_ADMIN_TOKEN}\") and restart",
        )
        .at(request.uri().path())
        .into_response();
    };
    match bearer(request.headers()) {
        Some(given) if token_matches(given, expected.expose()) => next.run(request).await,
        given => {
            // RFC 6750: a request with no credentials gets the bare
            // challenge, one with wrong credentials says so.
            let (challenge, detail) = if given.is_some() {
                (
                    "Bearer realm=\"notify-host\", error=\"invalid_token\"",
                    "the bearer token is not the host's admin.token",
                )
            } else {
                (
                    "Bearer realm=\"notify-host\"",
                    "send Authorization: Bearer <admin.token> (the CLI reads NOTIFY_ADMIN_TOKEN)",
                )
            };
            tracing::debug!(
                path = request.uri().path(),
                token_given = given.is_some(),
                "status API request refused"
            );
            let mut response = Problem::new(StatusCode::UNAUTHORIZED, kind::UNAUTHORIZED, detail)
                .at(request.uri().path())
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            response
        }
    }
}

/// The credentials of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares digests of the two, byte by byte without stopping early: the
/// time taken tells neither where they differ nor the token's length.
fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    tag = "deliveries",
    summary = "The deliveries of one event",
    params(("event_id" = String, Path, description = "The event's `event_id`.")),
    responses(
        (status = 200, description = "Every delivery of the event, with its attempts.", body = EventDeliveries),
        (status = 404, description = "The ledger has no delivery of this event.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn event(
    State(state): State<AdminState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventDeliveries>, Problem> {
    let at = uri.path();
    query_params(uri.query(), &[]).map_err(|p| p.at(at))?;
    let event_id = path_param(path, "event_id").map_err(|p| p.at(at))?;
    let mut deliveries = state
        .ledger
        .event(&event_id)
        .await
        .map_err(|e| Problem::unavailable(e).at(at))?;
    if deliveries.is_empty() {
        return Err(Problem::not_found(
            "the ledger has no delivery of this event (or it is past the retention)",
        )
        .at(at));
    }
    deliveries.sort_by_key(|d| d.id);
    Ok(Json(EventDeliveries {
        event_id,
        deliveries: deliveries.into_iter().map(masked).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/appointments/{appointment_id}/deliveries",
    tag = "deliveries",
    summary = "The deliveries of one appointment",
    params(("appointment_id" = String, Path, description = "The event's `appointment.appointment_id`.")),
    responses(
        (status = 200, description = "The appointment's deliveries, newest first; empty when none are on record.", body = AppointmentDeliveries),
    )
)]
async fn appointment(
    State(state): State<AdminState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AppointmentDeliveries>, Problem> {
    let at = uri.path();
    query_params(uri.query(), &[]).map_err(|p| p.at(at))?;
    let appointment_id = path_param(path, "appointment_id").map_err(|p| p.at(at))?;
    let deliveries = state
        .ledger
        .appointment(&appointment_id)
        .await
        .map_err(|e| Problem::unavailable(e).at(at))?;
    Ok(Json(AppointmentDeliveries {
        appointment_id,
        deliveries: deliveries.into_iter().map(masked).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/appointments/{appointment_id}",
    tag = "deliveries",
    summary = "Where one appointment stands",
    params(("appointment_id" = String, Path, description = "The event's `appointment.appointment_id`.")),
    responses(
        (status = 200, description = "Its status (active or cancelled) and time, as its events said.", body = AppointmentView),
        (status = 404, description = "No event of this appointment is on record.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn appointment_state(
    State(state): State<AdminState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AppointmentView>, Problem> {
    let at = uri.path();
    query_params(uri.query(), &[]).map_err(|p| p.at(at))?;
    let appointment_id = path_param(path, "appointment_id").map_err(|p| p.at(at))?;
    let found = state
        .ledger
        .appointment_state(&appointment_id)
        .await
        .map_err(|e| Problem::unavailable(e).at(at))?;
    let Some(s) = found else {
        return Err(Problem::not_found(
            "no event of this appointment is on record (or it is past the retention)",
        )
        .at(at));
    };
    Ok(Json(AppointmentView {
        appointment_id: s.appointment_id,
        status: s.status,
        time: s.time,
        time_zone: s.time_zone,
        last_event_id: s.last_event_id,
        channels: s.channels,
        reminders: s.reminders,
        updated_at: s.updated_at,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/reminders",
    tag = "deliveries",
    summary = "Reminders not yet sent, earliest due first",
    description = "Every open reminder: `scheduled` (waiting for its `due_at`) or being sent \
        (`pending`, `retrying`, `waiting`). Finished ones are deliveries like any other \
        (`/v1/deliveries?purpose=reminder`).",
    params(ReminderParams),
    responses(
        (status = 200, description = "Open reminders, earliest due first.", body = Reminders),
    )
)]
async fn reminders(State(state): State<AdminState>, uri: Uri) -> Result<Json<Reminders>, Problem> {
    let at = uri.path();
    let params =
        query_params(uri.query(), &["appointment_id", "channel", "limit"]).map_err(|p| p.at(at))?;
    let limit = limit_param(params.get("limit")).map_err(|p| p.at(at))?;
    for name in ["appointment_id", "channel"] {
        if params.get(name).is_some_and(|v| v.is_empty()) {
            return Err(Problem::bad_parameter(name, format!("{name}: must not be empty")).at(at));
        }
    }
    let channel = params.get("channel");
    let mut found: Vec<Delivery> = match params.get("appointment_id") {
        Some(id) => state
            .ledger
            .appointment_timers(id)
            .await
            .map_err(|e| Problem::unavailable(e).at(at))?
            .into_iter()
            .map(|r| r.delivery)
            .filter(|d| channel.is_none_or(|c| *c == d.channel))
            .take(limit)
            .collect(),
        None => {
            // In due order; a channel filter reads on until the page is full
            // (bounded: a rare channel in a huge schedule answers short).
            let mut out = Vec::new();
            let mut after = None;
            let mut read = 0usize;
            while out.len() < limit && read < 20_000 {
                let batch = state
                    .ledger
                    .timers(after.as_ref(), 500)
                    .await
                    .map_err(|e| Problem::unavailable(e).at(at))?;
                if batch.is_empty() {
                    break;
                }
                read += batch.len();
                for (pos, r) in batch {
                    after = Some(pos);
                    if channel.is_none_or(|c| *c == r.delivery.channel) && out.len() < limit {
                        out.push(r.delivery);
                    }
                }
            }
            out
        }
    };
    found.sort_by_key(|d| d.due_at);
    Ok(Json(Reminders {
        reminders: found.into_iter().map(masked).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    summary = "List deliveries, newest first",
    description = "Pages through the ledger newest first. Pass `next_cursor` as `cursor`, with the \
        same filters, for the next page; deliveries recorded meanwhile are newer than the walk \
        and never shift it, so no record is repeated or skipped.",
    params(ListParams),
    responses(
        (status = 200, description = "One page; `next_cursor` is absent on the last.", body = Page),
    )
)]
async fn list(State(state): State<AdminState>, uri: Uri) -> Result<Json<Page>, Problem> {
    let at = uri.path();
    let request = parse_list(uri.query()).map_err(|p| p.at(at))?;
    let page = state
        .ledger
        .list(&request.filter, request.limit, request.cursor.as_deref())
        .await
        .map_err(|e| match e {
            ListError::BadCursor(why) => Problem::bad_parameter("cursor", format!("cursor: {why}")),
            ListError::Ledger(e) => Problem::unavailable(e),
        })
        .map_err(|p| p.at(at))?;
    Ok(Json(Page {
        deliveries: page.deliveries.into_iter().map(masked).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/release",
    tag = "channels",
    summary = "Release what was held while the channel was paused",
    description = "Re-publishes the event of every delivery held on the channel to its source \
        topic; the host then sends each once. The channel must be on (`mode = \"on\"`, after a \
        restart). Safe to repeat.",
    params(
        ("channel" = String, Path, description = "A `[channels.NAME]` of the config."),
        ReleaseParams,
    ),
    responses(
        (status = 200, description = "What was released (or, with `dry_run`, is held).", body = ReleaseReport),
        (status = 404, description = "The config has no such channel.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The channel is not on: held deliveries would be held again.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn release(
    State(state): State<AdminState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ReleaseReport>, Problem> {
    let at = uri.path();
    let dry_run = parse_release(uri.query()).map_err(|p| p.at(at))?;
    let channel = path_param(path, "channel").map_err(|p| p.at(at))?;
    let Some(config) = state.config.channels.get(&channel) else {
        let known: Vec<&str> = state.config.channels.keys().map(String::as_str).collect();
        return Err(Problem::not_found(format!(
            "no channel {} in the config (channels: {})",
            quoted(&channel),
            known.join(", ")
        ))
        .at(at));
    };
    if config.mode != ChannelMode::On {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            kind::CHANNEL_NOT_ON,
            format!(
                "channel {channel} is in mode \"{}\": set mode = \"on\" under [channels.{channel}] and restart the host, then release (released now, its deliveries would only be held again)",
                config.mode.as_str()
            ),
        )
        .at(at));
    }
    let Some(producer) = state.producer.as_ref() else {
        return Err(
            Problem::unavailable("this process has no Kafka producer to re-publish with").at(at),
        );
    };
    let report = crate::replay::release_held(&state.ledger, producer, &channel, dry_run)
        .await
        .map_err(|e| Problem::unavailable(e).at(at))?;
    Ok(Json(report))
}

/// The contact fields masked again (idempotent on masked values; see the
/// module's invariants).
fn masked(mut d: Delivery) -> Delivery {
    let mask = |v: &mut Option<String>| {
        if let Some(s) = v {
            if let std::borrow::Cow::Owned(m) = crate::redact::text(s) {
                *s = m;
            }
        }
    };
    mask(&mut d.recipient.email);
    mask(&mut d.recipient.phone);
    mask(&mut d.reason);
    d
}

/// One list request, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: Filter,
    pub limit: usize,
    pub cursor: Option<String>,
}

const LIST_PARAMS: [&str; 7] = [
    "channel", "state", "purpose", "since", "until", "limit", "cursor",
];

/// Reads a list's query string; a problem names the parameter at fault.
pub fn parse_list(query: Option<&str>) -> Result<ListRequest, Problem> {
    let params = query_params(query, &LIST_PARAMS)?;
    let text = |name: &str| -> Result<Option<&str>, Problem> {
        match params.get(name).map(String::as_str) {
            Some("") => Err(Problem::bad_parameter(
                name,
                format!("{name}: empty; leave it out to not filter by it"),
            )),
            other => Ok(other),
        }
    };
    let state = match params.get("state") {
        None => None,
        Some(v) => Some(DeliveryState::parse(v).ok_or_else(|| {
            let names = DeliveryState::ALL.map(DeliveryState::as_str);
            Problem::bad_parameter(
                "state",
                format!(
                    "state: {} is not a delivery state; use one of {}",
                    quoted(v),
                    names.join(", ")
                ),
            )
            .allowed(names)
        })?),
    };
    let purpose = match params.get("purpose") {
        None => None,
        Some(v) => Some(Purpose::parse(v).ok_or_else(|| {
            let names = Purpose::ALL.map(Purpose::as_str);
            Problem::bad_parameter(
                "purpose",
                format!(
                    "purpose: {} is not a purpose; use one of {}",
                    quoted(v),
                    names.join(", ")
                ),
            )
            .allowed(names)
        })?),
    };
    let limit = limit_param(params.get("limit"))?;
    Ok(ListRequest {
        filter: Filter {
            channel: text("channel")?.map(str::to_string),
            state,
            purpose,
            since: time_param("since", params.get("since"))?,
            until: time_param("until", params.get("until"))?,
        },
        limit,
        cursor: text("cursor")?.map(str::to_string),
    })
}

/// `dry_run` of a release (false when absent).
pub fn parse_release(query: Option<&str>) -> Result<bool, Problem> {
    let params = query_params(query, &["dry_run"])?;
    match params.get("dry_run").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(Problem::bad_parameter(
            "dry_run",
            format!("dry_run: {} is neither true nor false", quoted(v)),
        )
        .allowed(["true", "false"])),
    }
}

/// `limit` of a list: the default when absent.
fn limit_param(value: Option<&String>) -> Result<usize, Problem> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => parse_limit(v).ok_or_else(|| {
            Problem::bad_parameter(
                "limit",
                format!(
                    "limit: {} is not a whole number from 1 to {}",
                    quoted(v),
                    ledger::MAX_PAGE
                ),
            )
        }),
    }
}

/// Digits only (no sign, no spaces): what the document promises is what
/// is accepted.
fn parse_limit(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = v.parse().ok()?;
    (1..=ledger::MAX_PAGE).contains(&n).then_some(n)
}

fn time_param(name: &str, value: Option<&String>) -> Result<Option<DateTime<Utc>>, Problem> {
    let Some(v) = value else { return Ok(None) };
    DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            // A `+` in a query string decodes to a space.
            let hint = if v.contains(' ') {
                " (a + in the query string reads as a space: write it as %2B)"
            } else {
                ""
            };
            Problem::bad_parameter(
                name,
                format!(
                    "{name}: {} is not an RFC 3339 time like 2026-02-13T17:00:00Z{hint}",
                    quoted(v)
                ),
            )
        })
}

/// The query's parameters by name; one not in `known`, or one given twice,
/// is a problem naming it.
fn query_params(query: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, String>, Problem> {
    let mut params = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            let takes = if known.is_empty() {
                "this path takes no query parameters".to_string()
            } else {
                format!("this path takes {}", known.join(", "))
            };
            return Err(Problem::bad_parameter(
                &name,
                format!("unknown query parameter {}; {takes}", quoted(&name)),
            )
            .allowed(known.iter().copied()));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(Problem::bad_parameter(
                &name,
                format!("{name}: given more than once"),
            ));
        }
    }
    Ok(params)
}

fn path_param(path: Result<Path<String>, PathRejection>, name: &str) -> Result<String, Problem> {
    path.map(|Path(v)| v)
        .map_err(|e| Problem::bad_parameter(name, format!("{name}: {e}")))
}

/// A value from the request, quoted for a problem's detail: cut short,
/// and masked like a log line, so an address pasted into a filter is not
/// echoed whole.
fn quoted(v: &str) -> String {
    const SHOWN: usize = 64;
    let cut: String = v.chars().take(SHOWN).collect();
    let more = if cut.len() < v.len() { "…" } else { "" };
    format!("\"{}{more}\"", crate::redact::text(&cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn list_parameters_table() {
        let at = |h: u32| Utc.with_ymd_and_hms(2026, 2, 13, h, 0, 0).single();
        let ok: &[(&str, ListRequest)] = &[
            (
                "",
                ListRequest {
                    filter: Filter::default(),
                    limit: DEFAULT_LIMIT,
                    cursor: None,
                },
            ),
            (
                "channel=sms&state=held&purpose=reminder&limit=500",
                ListRequest {
                    filter: Filter {
                        channel: Some("sms".into()),
                        state: Some(DeliveryState::Held),
                        purpose: Some(Purpose::Reminder),
                        ..Filter::default()
                    },
                    limit: 500,
                    cursor: None,
                },
            ),
            (
                "since=2026-02-13T17:00:00Z&until=2026-02-13T20:00:00%2B02:00&limit=1&cursor=abc",
                ListRequest {
                    filter: Filter {
                        since: at(17),
                        until: at(18),
                        ..Filter::default()
                    },
                    limit: 1,
                    cursor: Some("abc".into()),
                },
            ),
            (
                "state=dead_lettered&limit=007",
                ListRequest {
                    filter: Filter {
                        state: Some(DeliveryState::DeadLettered),
                        ..Filter::default()
                    },
                    limit: 7,
                    cursor: None,
                },
            ),
        ];
        for (query, want) in ok {
            assert_eq!(parse_list(Some(query)).as_ref(), Ok(want), "{query}");
        }
        assert_eq!(parse_list(None).map(|r| r.limit), Ok(DEFAULT_LIMIT));

        // (query, the parameter named, a piece of the detail)
        let bad: &[(&str, &str, &str)] = &[
            ("limit=501", "limit", "from 1 to 500"),
            ("limit=0", "limit", "from 1 to 500"),
            ("limit=-1", "limit", "whole number"),
            ("limit=+5", "limit", "whole number"),
            ("limit=1.5", "limit", "whole number"),
            ("limit=", "limit", "whole number"),
            ("limit=99999999999999999999999", "limit", "whole number"),
            ("state=sent", "state", "pending, delivered, retrying"),
            ("state=Delivered", "state", "dead_lettered"),
            ("purpose=promo", "purpose", "confirmation, reminder"),
            ("since=yesterday", "since", "RFC 3339"),
            ("since=2026-02-13T17:00:00+02:00", "since", "%2B"),
            ("until=2026-02-13", "until", "RFC 3339"),
            ("channel=", "channel", "empty"),
            ("cursor=", "cursor", "empty"),
            ("stat=held", "stat", "unknown query parameter"),
            ("limit=1&limit=2", "limit", "more than once"),
            ("=x", "", "unknown query parameter"),
        ];
        for (query, parameter, detail) in bad {
            let p = parse_list(Some(query)).expect_err(query);
            assert_eq!(p.status, 400, "{query}");
            assert_eq!(p.parameter.as_deref(), Some(*parameter), "{query}");
            assert!(p.detail.contains(detail), "{query}: {}", p.detail);
        }
        let p = parse_list(Some("state=x")).expect_err("state");
        assert_eq!(p.allowed.len(), DeliveryState::ALL.len());
    }

    #[test]
    fn release_parameters_table() {
        let cases: &[(Option<&str>, Result<bool, &str>)] = &[
            (None, Ok(false)),
            (Some(""), Ok(false)),
            (Some("dry_run=true"), Ok(true)),
            (Some("dry_run=false"), Ok(false)),
            (Some("dry_run=1"), Err("dry_run")),
            (Some("dry_run=True"), Err("dry_run")),
            (Some("dry_run"), Err("dry_run")),
            (Some("dryrun=true"), Err("dryrun")),
        ];
        for (query, want) in cases {
            let got = parse_release(*query).map_err(|p| p.parameter.unwrap_or_default());
            assert_eq!(got, want.map_err(str::to_string), "{query:?}");
        }
    }

    #[test]
    fn echoed_values_are_cut_and_masked() {
        let p = parse_list(Some("state=user%40example.com")).expect_err("state");
        assert!(!p.detail.contains("user@example.com"), "{}", p.detail);
        let long = "x".repeat(1000);
        let p = parse_list(Some(&format!("state={long}"))).expect_err("state");
        assert!(p.detail.len() < 400, "{}", p.detail);
    }

    #[test]
    fn bearer_credentials_table() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer abc"), Some("abc")),
            (Some("BEARER   abc "), Some("abc")),
            (Some("Basic abc"), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (Some("abc"), None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            assert_eq!(bearer(&headers), *want, "{value:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        let token = "0123456789abcdef0123";
        assert!(token_matches(token, token));
        assert!(!token_matches("0123456789abcdef012", token));
        assert!(!token_matches("0123456789abcdef01234", token));
        assert!(!token_matches("", token));
        assert!(!token_matches("1123456789abcdef0123", token));
    }

    #[test]
    fn contact_fields_are_masked_again() {
        let key = ledger::DeliveryKey {
            event_id: "e".into(),
            channel: "email".into(),
            purpose: Purpose::Confirmation,
            reminder: None,
        };
        let mut d = Delivery::new(
            &key,
            "a",
            ledger::Recipient {
                email: Some("user@example.com".into()),
                phone: Some("+15555550123".into()),
            },
        );
        d.reason = Some("rejected user@example.com".into());
        let m = masked(d.clone());
        let text = serde_json::to_string(&m).expect("json");
        assert!(!text.contains("user@example.com"), "{text}");
        assert!(!text.contains("5555550123"), "{text}");
        // Masked values stay as they are.
        assert_eq!(masked(m.clone()), m);
    }

    /// A store that cannot be read: every call fails.
    struct Broken;

    impl ledger::Backend for Broken {
        fn get(
            &self,
            _: &ledger::DeliveryKey,
        ) -> futures_util::future::BoxFuture<'static, Result<Option<Delivery>, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn put(
            &self,
            _: ledger::Record,
        ) -> futures_util::future::BoxFuture<'static, Result<(), ledger::LedgerError>> {
            Box::pin(async { Err(broken()) })
        }
        fn event(
            &self,
            _: &str,
        ) -> futures_util::future::BoxFuture<'static, Result<Vec<Delivery>, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn appointment(
            &self,
            _: &str,
        ) -> futures_util::future::BoxFuture<'static, Result<Vec<Delivery>, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn list(
            &self,
            _: Filter,
            _: Option<u64>,
            _: usize,
        ) -> futures_util::future::BoxFuture<'static, Result<ledger::Scan, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn held(
            &self,
            _: &str,
            _: Option<u64>,
            _: usize,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<Vec<ledger::Record>, ledger::LedgerError>,
        > {
            Box::pin(async { Err(broken()) })
        }
        fn sweep(
            &self,
        ) -> futures_util::future::BoxFuture<'static, Result<ledger::Sweep, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn stats(
            &self,
        ) -> futures_util::future::BoxFuture<'static, Result<ledger::Stats, ledger::LedgerError>>
        {
            Box::pin(async { Err(broken()) })
        }
        fn cursor_key(&self) -> [u8; 32] {
            [1; 32]
        }
        fn info(&self) -> ledger::BackendInfo {
            ledger::BackendInfo {
                kind: "broken",
                location: String::new(),
                shared: false,
            }
        }
        fn timers(
            &self,
            _: Option<&ledger::TimerPos>,
            _: usize,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<Vec<(ledger::TimerPos, ledger::Record)>, ledger::LedgerError>,
        > {
            Box::pin(async { Err(broken()) })
        }
        fn appointment_timers(
            &self,
            _: &str,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<Vec<ledger::Record>, ledger::LedgerError>,
        > {
            Box::pin(async { Err(broken()) })
        }
        fn timer_count(
            &self,
        ) -> futures_util::future::BoxFuture<'static, Result<u64, ledger::LedgerError>> {
            Box::pin(async { Err(broken()) })
        }
        fn appointment_state(
            &self,
            _: &str,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<Option<ledger::AppointmentState>, ledger::LedgerError>,
        > {
            Box::pin(async { Err(broken()) })
        }
        fn put_appointment(
            &self,
            _: ledger::AppointmentState,
        ) -> futures_util::future::BoxFuture<'static, Result<(), ledger::LedgerError>> {
            Box::pin(async { Err(broken()) })
        }
    }

    fn broken() -> ledger::LedgerError {
        ledger::LedgerError::Store("the disk holding user@example.com's record is gone".into())
    }

    const TOKEN: &str = "unit-test-admin-token-0123";

    /// The admin router on 127.0.0.1:0 over a broken ledger, with the API on.
    async fn serve_broken() -> String {
        let env = |name: &str| (name == "TOKEN").then(|| TOKEN.to_string());
        let text = r#"
[admin]
token = "${TOKEN}"
[channels.email]
plugin = "plugins/mailgun.wasm"
base_url = "https://api.mailgun.net"
settings = { domain = "mg.example.com" }
"#;
        let config =
            crate::config::parse(text, std::path::Path::new("/etc/notify"), &env).expect("config");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = AdminState {
            health: Arc::new(crate::health::Health::new(&config, &metrics)),
            metrics,
            readiness: Arc::default(),
            ledger: ledger::Ledger::new(Arc::new(Broken)),
            dlq: Arc::default(),
            config: Arc::new(config),
            producer: None,
            scheduler: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(super::super::serve(listener, state, std::future::pending()));
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_ledger_that_fails_answers_503_problems_and_no_producer_503_too() {
        let base = serve_broken().await;
        let client = reqwest::Client::new();
        for (method, path) in [
            ("GET", "/v1/events/e-1"),
            ("GET", "/v1/appointments/a-1/deliveries"),
            ("GET", "/v1/deliveries?state=held"),
            ("POST", "/v1/channels/email/release"),
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let r = client
                .request(method, format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status().as_u16(), 503, "{path}");
            assert_eq!(
                r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(PROBLEM_JSON.as_bytes()),
                "{path}"
            );
            let body = r.text().await.expect("body");
            let p: Problem = serde_json::from_str(&body).expect("problem");
            assert_eq!(p.kind, kind::UNAVAILABLE, "{path}");
            assert!(!body.contains("user@example.com"), "{body}");
            assert!(!body.contains(TOKEN), "{body}");
        }
        // A bad parameter is answered before the ledger is asked.
        let r = client
            .get(format!("{base}/v1/deliveries?limit=501"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), 400);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_error_described() {
        let (_, mut api) = OpenApiRouter::<AdminState>::with_openapi(ApiDoc::openapi())
            .routes(routes!(event))
            .routes(routes!(appointment))
            .routes(routes!(list))
            .routes(routes!(release))
            .split_for_parts();
        CommonErrors.modify(&mut api);
        let v = serde_json::to_value(&api).expect("json");
        assert_eq!(v["openapi"], "3.1.0");
        for (path, item) in v["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let responses = op["responses"].as_object().expect("responses");
                for code in ["400", "401", "503"] {
                    assert!(responses.contains_key(code), "{method} {path}: {code}");
                }
                for (code, r) in responses {
                    assert!(r["description"].is_string(), "{method} {path} {code}");
                    if code != "200" {
                        assert!(
                            r["content"]["application/problem+json"].is_object(),
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
        assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    }
}
