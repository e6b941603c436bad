"""`{{name}}`: a notify-host channel plugin that POSTs each event, as JSON,
to a webhook at `base_url` + the setting `path`.

Invariant: the plugin is a pure function of its inputs (see
wit/channel.wit). It does no I/O: the host sends the request, attaches the
credentials configured under `auth`, keeps requests to the channel's allowed
hosts, retries and dead-letters.

componentize-py generates the `wit_world` package from wit/ at build time;
`WitWorld` below implements the world's exports.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

# The plugin's name, as it appears in the host's logs and reasons.
NAME = "{{name}}"
VERSION = "0.1.0"

# A provider's body is quoted in a reason up to this many characters: enough
# to show an error message, short enough for a log line.
SNIPPET_CHARS = 200


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name=NAME,
            version=VERSION,
            # Fields the host must guarantee before calling render, e.g.
            # "appointment.email"; the webhook takes any event.
            required_fields=[],
            known_settings=["base_url", "path"],
        )

    def check_settings(self, settings: list[types.Setting]) -> None:
        _, problems = target_url(settings)
        if problems:
            raise Err(problems)

    def render(
        self,
        event: types.Event,
        message: types.Message,
        settings: list[types.Setting],
    ) -> list[types.HttpRequest]:
        url, problems = target_url(settings)
        if problems:
            raise Err("invalid settings: " + "; ".join(problems))
        return [
            types.HttpRequest(
                method="POST",
                url=url,
                headers=[
                    types.Header(name="content-type", value="application/json"),
                    # Lets the receiver drop a resend (the host sends at least
                    # once) without mixing up the messages of one event.
                    types.Header(name="idempotency-key", value=idempotency_key(event, message)),
                ],
                # The event exactly as the host received it.
                body=event.raw_json.encode("utf-8"),
            )
        ]

    def classify(
        self,
        response: types.HttpResponse,
        settings: list[types.Setting],
        context: types.CallContext,
    ) -> types.Disposition:
        status = response.status
        why = reason(status, response.body)
        if 200 <= status <= 299:
            return types.Disposition_Delivered(
                types.Delivered(provider_message_id=message_id(response.body))
            )
        if status in (408, 425, 429) or 500 <= status <= 599:
            return types.Disposition_Retry(
                types.RetryLater(after_ms=retry_after_ms(response.headers), reason=why)
            )
        if status in (401, 403):
            # The host attaches the credentials: a refusal is about the
            # channel, not this event, so the host holds the channel.
            return types.Disposition_ChannelDown(why)
        return types.Disposition_Permanent(why)


def idempotency_key(event: types.Event, message: types.Message) -> str:
    """`<event-id>:<purpose>`, and for a reminder `:<its name>` too: the
    reminders of one booking share its event id, and a receiver that drops
    repeated keys must not drop the second reminder."""
    key = f"{event.event_id}:{message.purpose.name.lower()}"
    if message.purpose == types.Purpose.REMINDER and message.reminder:
        key += f":{message.reminder}"
    return key


def setting(settings: list[types.Setting], key: str) -> str | None:
    """The last value of `key`; blank counts as unset (an unset `${VAR:-}`)."""
    for s in reversed(settings):
        if s.key == key:
            value = s.value.strip()
            return value or None
    return None


def target_url(settings: list[types.Setting]) -> tuple[str, list[str]]:
    """`base_url` + `path`, and every problem with the settings, each naming
    its key (the host files "setting `KEY` ..." under that key)."""
    problems = []
    base = setting(settings, "base_url")
    if base is None:
        problems.append(
            "setting `base_url` is required (channels.NAME.base_url in config.toml)"
        )
        base = ""
    elif not base.startswith(("https://", "http://")):
        problems.append(f"setting `base_url` must be an http(s) URL, not `{base}`")
        base = ""
    path = setting(settings, "path") or "/"
    if not path.startswith("/"):
        problems.append(f"setting `path` must start with `/`, not `{path}`")
    return base.rstrip("/") + path, problems


def retry_after_ms(headers: list[types.Header]) -> int | None:
    """`Retry-After` in whole seconds, as milliseconds. An HTTP-date is left
    to the host's own backoff."""
    for h in headers:
        if h.name.lower() == "retry-after":
            value = h.value.strip()
            return int(value) * 1000 if value.isdigit() else None
    return None


def message_id(body: bytes) -> str | None:
    """The receiver's id for the message: `id` in a JSON object body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("id"), str) and doc["id"]:
        return doc["id"]
    return None


def reason(status: int, body: bytes) -> str:
    """`NAME: HTTP 503`, with the start of the body when there is one."""
    snippet = body.decode("utf-8", errors="replace").strip()[:SNIPPET_CHARS]
    if snippet:
        return f"{NAME}: HTTP {status}: {snippet}"
    return f"{NAME}: HTTP {status}"
