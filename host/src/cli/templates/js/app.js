// `{{name}}`: a notify-host channel plugin that POSTs each event, as JSON,
// to a webhook at `base_url` + the setting `path`.
//
// Invariant: the plugin is a pure function of its inputs (see
// wit/channel.wit). It does no I/O: the host sends the request, attaches the
// credentials configured under `auth`, keeps requests to the channel's
// allowed hosts, retries and dead-letters.
//
// jco maps the world's exports to this module's exports: WIT names in
// camelCase, `result` errors thrown, `u64` as BigInt, `list<u8>` as
// Uint8Array, variants as `{ tag, val }`.

// The plugin's name, as it appears in the host's logs and reasons.
const NAME = "{{name}}";
const VERSION = "0.1.0";

// A provider's body is quoted in a reason up to this many characters: enough
// to show an error message, short enough for a log line.
const SNIPPET_CHARS = 200;

export function describe() {
  return {
    name: NAME,
    version: VERSION,
    // Fields the host must guarantee before calling render, e.g.
    // "appointment.email"; the webhook takes any event.
    requiredFields: [],
    knownSettings: ["base_url", "path"],
  };
}

export function checkSettings(settings) {
  const { problems } = targetUrl(settings);
  if (problems.length > 0) {
    throw problems;
  }
}

export function render(event, message, settings) {
  const { url, problems } = targetUrl(settings);
  if (problems.length > 0) {
    throw "invalid settings: " + problems.join("; ");
  }
  return [
    {
      method: "POST",
      url,
      headers: [
        { name: "content-type", value: "application/json" },
        // Lets the receiver drop a resend (the host sends at least once)
        // without mixing up the messages of one event.
        { name: "idempotency-key", value: idempotencyKey(event, message) },
      ],
      // The event exactly as the host received it.
      body: new TextEncoder().encode(event.rawJson),
    },
  ];
}

export function classify(response, _settings, _context) {
  const status = response.status;
  const why = reason(status, response.body);
  if (status >= 200 && status <= 299) {
    return { tag: "delivered", val: { providerMessageId: messageId(response.body) } };
  }
  if (status === 408 || status === 425 || status === 429 || (status >= 500 && status <= 599)) {
    return { tag: "retry", val: { afterMs: retryAfterMs(response.headers), reason: why } };
  }
  if (status === 401 || status === 403) {
    // The host attaches the credentials: a refusal is about the channel,
    // not this event, so the host holds the channel.
    return { tag: "channel-down", val: why };
  }
  return { tag: "permanent", val: why };
}

// `<event-id>:<purpose>`, and for a reminder `:<its name>` too: the
// reminders of one booking share its event id, and a receiver that drops
// repeated keys must not drop the second reminder.
function idempotencyKey(event, message) {
  const key = `${event.eventId}:${message.purpose}`;
  return message.purpose === "reminder" && message.reminder ? `${key}:${message.reminder}` : key;
}

// The last value of `key`; blank counts as unset (an unset `${VAR:-}`).
function setting(settings, key) {
  for (let i = settings.length - 1; i >= 0; i--) {
    if (settings[i].key === key) {
      const value = settings[i].value.trim();
      return value === "" ? undefined : value;
    }
  }
  return undefined;
}

// `base_url` + `path`, and every problem with the settings, each naming its
// key (the host files "setting `KEY` ..." under that key).
function targetUrl(settings) {
  const problems = [];
  let base = setting(settings, "base_url");
  if (base === undefined) {
    problems.push("setting `base_url` is required (channels.NAME.base_url in config.toml)");
    base = "";
  } else if (!base.startsWith("https://") && !base.startsWith("http://")) {
    problems.push(`setting \`base_url\` must be an http(s) URL, not \`${base}\``);
    base = "";
  }
  const path = setting(settings, "path") ?? "/";
  if (!path.startsWith("/")) {
    problems.push(`setting \`path\` must start with \`/\`, not \`${path}\``);
  }
  return { url: base.replace(/\/+$/, "") + path, problems };
}

// `Retry-After` in whole seconds, as milliseconds (a BigInt: WIT's u64).
// An HTTP-date is left to the host's own backoff.
function retryAfterMs(headers) {
  const h = headers.find((h) => h.name.toLowerCase() === "retry-after");
  if (h === undefined) {
    return undefined;
  }
  const value = h.value.trim();
  return /^[0-9]+$/.test(value) ? BigInt(value) * 1000n : undefined;
}

// The receiver's id for the message: `id` in a JSON object body.
function messageId(body) {
  try {
    const doc = JSON.parse(new TextDecoder().decode(body));
    if (doc !== null && typeof doc === "object" && typeof doc.id === "string" && doc.id !== "") {
      return doc.id;
    }
  } catch (_) {
    // Not JSON: no id.
  }
  return undefined;
}

// `NAME: HTTP 503`, with the start of the body when there is one.
function reason(status, body) {
  const snippet = Array.from(new TextDecoder().decode(body).trim()).slice(0, SNIPPET_CHARS).join("");
  return snippet === "" ? `${NAME}: HTTP ${status}` : `${NAME}: HTTP ${status}: ${snippet}`;
}
