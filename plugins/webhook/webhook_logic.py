"""The signed-webhook channel's logic, as plain functions of plain values.

Nothing here imports the componentize-py bindings, so the logic runs (and is
unit-tested, see test_app.py) under any Python 3.8+. `app.py` is the thin
adapter between these functions and the `notify:channel@0.2.0` world.

The plugin does no I/O and keeps no state between calls: every function is a
pure function of its arguments.

The host signs each request (`auth = { type = "hmac" }`) and attaches any
credentials itself; this plugin never sets Authorization or signature
headers (the host refuses a request that sets the signature header).
"""

import json
import re

NAME = "webhook"
VERSION = "0.1.0"
# `base_url` comes from channels.NAME.base_url, passed by the host (which
# exempts it from the known-settings check), so it is not listed.
KNOWN_SETTINGS = ["path"]

DEFAULT_PATH = "/"
BODY_EXCERPT_CHARS = 200
U64_MAX = (1 << 64) - 1

# Statuses worth trying again: timeout, too early, rate limit (and 5xx).
RETRY_STATUSES = (408, 425, 429)
# The receiver refused our signature or the credentials the host attaches.
CHANNEL_DOWN_STATUSES = (401, 403)

_DIGITS = re.compile(r"[0-9]+")


class Rejected(Exception):
    """`render` cannot produce a request for this event (the host
    dead-letters it with the message)."""


def plugin_info():
    """What `describe` returns, as a dict."""
    return {
        "name": NAME,
        "version": VERSION,
        "required_fields": [],
        "known_settings": list(KNOWN_SETTINGS),
    }


def parse_settings(pairs):
    """Reads the settings, an iterable of (key, value) string pairs (the last
    of a repeated key wins). Returns (config, problems): config is a dict with
    `url` (base_url without trailing slashes, plus path) when problems is
    empty; problems is a list of messages, each naming its setting."""
    values = {}
    for key, value in pairs:
        values[key] = value
    problems = []

    base_url = values.get("base_url", "").strip()
    if not base_url:
        problems.append("setting `base_url`: required (set channels.NAME.base_url)")

    path = values.get("path")
    if path is None:
        path = DEFAULT_PATH
    if not path.startswith("/"):
        problems.append("setting `path`: must start with /, found %s" % json.dumps(path, ensure_ascii=False))

    if problems:
        return None, problems
    return {"url": base_url.rstrip("/") + path}, []


def check_settings(pairs):
    """The problems `check-settings` reports (empty: the settings are fine)."""
    return parse_settings(pairs)[1]


def idempotency_key(event_id, purpose, reminder):
    """`<event-id>:<purpose>`, plus `:<reminder>` for a named reminder."""
    key = "%s:%s" % (event_id, purpose)
    if reminder:
        key += ":" + reminder
    return key


def render_body(event, message):
    """The JSON object sent, as a dict (keys in wire order).

    `event` is a dict with event_id, event_type, occurred_at and appointment
    (a dict with appointment_id, user_id, time, email, phone_e164; absent
    values None); `message` a dict with purpose (lower-case text), reminder and
    useful_until."""
    appointment = event.get("appointment") or {}
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "purpose": message["purpose"],
        "reminder": message.get("reminder"),
        "useful_until": message.get("useful_until"),
        "occurred_at": event.get("occurred_at"),
        "appointment": {
            "appointment_id": appointment.get("appointment_id"),
            "user_id": appointment.get("user_id"),
            "time": appointment.get("time"),
            "email": appointment.get("email"),
            "phone_e164": appointment.get("phone_e164"),
        },
    }


def encode_json(value):
    """Compact JSON, UTF-8, non-ASCII kept as is (the same bytes as
    JavaScript's JSON.stringify gives)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def render(event, message, settings):
    """The requests to send, a list of dicts (method, url, headers as a list
    of (name, value) pairs, body as bytes). Raises Rejected when the settings
    are unusable (check-settings reports the same problems at start)."""
    config, problems = parse_settings(settings)
    if problems:
        raise Rejected("; ".join(problems))
    headers = [
        ("content-type", "application/json"),
        ("idempotency-key", idempotency_key(event["event_id"], message["purpose"], message.get("reminder"))),
    ]
    return [
        {
            "method": "POST",
            "url": config["url"],
            "headers": headers,
            "body": encode_json(render_body(event, message)),
        }
    ]


def header(headers, name):
    """The first value of header `name` (case-insensitive), else None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def retry_after_ms(value):
    """A `Retry-After` of whole seconds in milliseconds; None for anything
    else (absent, an HTTP-date, a fraction, a negative number)."""
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        return None
    return min(int(value) * 1000, U64_MAX)


def body_json_id(body):
    """The string `id` of a JSON object body, else None."""
    try:
        parsed = json.loads(bytes(body).decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if isinstance(parsed, dict):
        value = parsed.get("id")
        if isinstance(value, str) and value:
            return value
    return None


def body_excerpt(body):
    """The first 200 characters of the body, invalid UTF-8 replaced."""
    return bytes(body).decode("utf-8", errors="replace")[:BODY_EXCERPT_CHARS]


def classify(status, headers, body):
    """The verdict on one response, a tuple:
    ("delivered", provider_message_id or None) | ("retry", after_ms or None,
    reason) | ("permanent", reason) | ("channel-down", reason).
    `headers` is a list of (name, value) pairs, `body` bytes."""
    if 200 <= status <= 299:
        message_id = body_json_id(body)
        if message_id is None:
            message_id = header(headers, "x-request-id") or None
        return ("delivered", message_id)
    if status in RETRY_STATUSES or 500 <= status <= 599:
        return ("retry", retry_after_ms(header(headers, "retry-after")), "HTTP %d" % status)
    if status in CHANNEL_DOWN_STATUSES:
        return ("channel-down", "HTTP %d: the receiver refused our signature or credentials" % status)
    return ("permanent", "HTTP %d: %s" % (status, body_excerpt(body)))
