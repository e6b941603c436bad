// A test plugin: the signed-webhook channel (plugins/webhook, Python) written
// again in JavaScript, built with jco's DEFAULT feature set (so the component
// imports wasi:http, which the host must link and deny), to prove a channel
// in another language needs no host change. Same behaviour as
// plugins/webhook/webhook_logic.py, byte for byte in the request body; only
// the name differs (`js-webhook`).
//
// Built by `scripts/build-plugins.sh --with-test-plugins` into
// tests/plugins/js-webhook.wasm:
//   jco componentize plugin.js --wit <wit> --world-name channel -o ...
//
// jco's mapping of the `channel` world: exports are named functions in camel
// case (checkSettings); records are objects with camel-case fields
// (appointmentId, phoneE164); an option is the value or undefined; an enum
// is its case name as a string; a variant is {tag, val}; list<u8> is a
// Uint8Array; u64 is a BigInt; a result's `err` is the value thrown.
//
// Pure: no I/O, and nothing kept between calls.

const NAME = "js-webhook";
const VERSION = "0.1.0";
const DEFAULT_PATH = "/";
const BODY_EXCERPT_CHARS = 200;
const U64_MAX = (1n << 64n) - 1n;
const RETRY_STATUSES = [408, 425, 429];
const CHANNEL_DOWN_STATUSES = [401, 403];

function settingsMap(settings) {
  const values = new Map();
  for (const { key, value } of settings) values.set(key, value);
  return values;
}

// Returns { url } or { problems: [...] }, each problem naming its setting.
function parseSettings(settings) {
  const values = settingsMap(settings);
  const problems = [];
  const baseUrl = (values.get("base_url") ?? "").trim();
  if (baseUrl === "") {
    problems.push("setting `base_url`: required (set channels.NAME.base_url)");
  }
  const path = values.has("path") ? values.get("path") : DEFAULT_PATH;
  if (!path.startsWith("/")) {
    problems.push(`setting \`path\`: must start with /, found ${JSON.stringify(path)}`);
  }
  if (problems.length > 0) return { problems };
  return { url: baseUrl.replace(/\/+$/, "") + path };
}

function idempotencyKey(eventId, purpose, reminder) {
  let key = `${eventId}:${purpose}`;
  if (reminder) key += `:${reminder}`;
  return key;
}

const orNull = (v) => (v === undefined ? null : v);

function renderBody(event, message) {
  const a = event.appointment;
  // Key order is the wire order (the same as the Python plugin's).
  return {
    event_id: event.eventId,
    event_type: event.eventType,
    purpose: message.purpose,
    reminder: orNull(message.reminder),
    useful_until: orNull(message.usefulUntil),
    occurred_at: orNull(event.occurredAt),
    appointment: {
      appointment_id: a.appointmentId,
      user_id: orNull(a.userId),
      time: orNull(a.time),
      email: orNull(a.email),
      phone_e164: orNull(a.phoneE164),
    },
  };
}

function header(headers, name) {
  for (const h of headers) {
    if (h.name.toLowerCase() === name) return h.value;
  }
  return undefined;
}

// Whole seconds only (an HTTP-date, a fraction or a sign gives none).
function retryAfterMs(value) {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (!/^[0-9]+$/.test(trimmed)) return undefined;
  const ms = BigInt(trimmed) * 1000n;
  return ms > U64_MAX ? U64_MAX : ms;
}

function decodeUtf8(bytes, fatal) {
  // ignoreBOM: keep a BOM in the text, as Python's decode does.
  return new TextDecoder("utf-8", { fatal, ignoreBOM: true }).decode(bytes);
}

function bodyJsonId(body) {
  let parsed;
  try {
    parsed = JSON.parse(decodeUtf8(body, true));
  } catch {
    return undefined;
  }
  if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
    const id = parsed.id;
    if (typeof id === "string" && id !== "") return id;
  }
  return undefined;
}

// The first 200 characters (code points, as in Python), invalid UTF-8 replaced.
function bodyExcerpt(body) {
  return Array.from(decodeUtf8(body, false)).slice(0, BODY_EXCERPT_CHARS).join("");
}

export function describe() {
  return { name: NAME, version: VERSION, requiredFields: [], knownSettings: ["path"] };
}

export function checkSettings(settings) {
  const parsed = parseSettings(settings);
  if (parsed.problems) throw parsed.problems;
}

export function render(event, message, settings) {
  const parsed = parseSettings(settings);
  if (parsed.problems) throw parsed.problems.join("; ");
  const body = new TextEncoder().encode(JSON.stringify(renderBody(event, message)));
  return [
    {
      method: "POST",
      url: parsed.url,
      headers: [
        { name: "content-type", value: "application/json" },
        { name: "idempotency-key", value: idempotencyKey(event.eventId, message.purpose, message.reminder) },
      ],
      body,
    },
  ];
}

export function classify(response, settings, context) {
  const { status, headers, body } = response;
  if (status >= 200 && status <= 299) {
    let id = bodyJsonId(body);
    if (id === undefined) {
      const requestId = header(headers, "x-request-id");
      if (requestId) id = requestId;
    }
    return { tag: "delivered", val: { providerMessageId: id } };
  }
  if (RETRY_STATUSES.includes(status) || (status >= 500 && status <= 599)) {
    return {
      tag: "retry",
      val: { afterMs: retryAfterMs(header(headers, "retry-after")), reason: `HTTP ${status}` },
    };
  }
  if (CHANNEL_DOWN_STATUSES.includes(status)) {
    return { tag: "channel-down", val: `HTTP ${status}: the receiver refused our signature or credentials` };
  }
  return { tag: "permanent", val: `HTTP ${status}: ${bodyExcerpt(body)}` };
}
