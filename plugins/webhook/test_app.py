"""Unit tests of the webhook plugin's logic (webhook_logic.py), runnable
without componentize-py:

    python3 -m unittest discover -s plugins/webhook
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import webhook_logic as logic  # noqa: E402

SETTINGS = [("base_url", "https://hooks.example.com/"), ("path", "/notify")]

EVENT = {
    "event_id": "e-1",
    "event_type": "appointments.created",
    "occurred_at": "2026-02-20T10:00:00Z",
    "appointment": {
        "appointment_id": "a-1",
        "user_id": "u-1",
        "time": "2026-02-21T15:00:00Z",
        "email": "pat@example.com",
        "phone_e164": "+15555550123",
    },
}

CONFIRMATION = {"purpose": "confirmation", "reminder": None, "useful_until": None}
REMINDER = {"purpose": "reminder", "reminder": "day-before", "useful_until": "2026-02-21T15:00:00Z"}


def render_one(event=EVENT, message=CONFIRMATION, settings=SETTINGS):
    requests = logic.render(event, message, settings)
    assert len(requests) == 1, requests
    return requests[0]


def headers_of(request):
    return {name: value for name, value in request["headers"]}


class DescribeTest(unittest.TestCase):
    def test_info(self):
        self.assertEqual(
            logic.plugin_info(),
            {"name": "webhook", "version": "0.1.0", "required_fields": [], "known_settings": ["path"]},
        )


class CheckSettingsTest(unittest.TestCase):
    def test_fine(self):
        self.assertEqual(logic.check_settings(SETTINGS), [])

    def test_path_defaults_to_root(self):
        self.assertEqual(logic.check_settings([("base_url", "https://h.example")]), [])
        self.assertEqual(render_one(settings=[("base_url", "https://h.example")])["url"], "https://h.example/")

    def test_path_must_start_with_slash(self):
        self.assertEqual(
            logic.check_settings([("base_url", "https://h.example"), ("path", "notify")]),
            ['setting `path`: must start with /, found "notify"'],
        )

    def test_base_url_required(self):
        want = "setting `base_url`: required (set channels.NAME.base_url)"
        self.assertEqual(logic.check_settings([]), [want])
        self.assertEqual(logic.check_settings([("base_url", "  ")]), [want])

    def test_every_problem_reported(self):
        problems = logic.check_settings([("path", "x")])
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(problems[0].startswith("setting `base_url`"))
        self.assertTrue(problems[1].startswith("setting `path`"))

    def test_render_rejects_bad_settings(self):
        with self.assertRaises(logic.Rejected) as e:
            logic.render(EVENT, CONFIRMATION, [("path", "/x")])
        self.assertIn("setting `base_url`: required", str(e.exception))


class RenderTest(unittest.TestCase):
    def test_one_post_to_base_url_and_path(self):
        r = render_one()
        self.assertEqual(r["method"], "POST")
        self.assertEqual(r["url"], "https://hooks.example.com/notify")

    def test_all_trailing_slashes_trimmed(self):
        r = render_one(settings=[("base_url", "http://127.0.0.1:9999//"), ("path", "/hook")])
        self.assertEqual(r["url"], "http://127.0.0.1:9999/hook")

    def test_headers(self):
        r = render_one()
        self.assertEqual(
            r["headers"],
            [("content-type", "application/json"), ("idempotency-key", "e-1:confirmation")],
        )

    def test_no_credentials_or_signature(self):
        names = {name.lower() for name, _ in render_one(message=REMINDER)["headers"]}
        self.assertEqual(names, {"content-type", "idempotency-key"})

    def test_idempotency_key_with_reminder(self):
        self.assertEqual(headers_of(render_one(message=REMINDER))["idempotency-key"], "e-1:reminder:day-before")

    def test_idempotency_key_function(self):
        self.assertEqual(logic.idempotency_key("e-9", "cancellation", None), "e-9:cancellation")
        self.assertEqual(logic.idempotency_key("e-9", "reminder", "hour-before"), "e-9:reminder:hour-before")

    def test_body_fields(self):
        body = json.loads(render_one(message=REMINDER)["body"])
        self.assertEqual(
            body,
            {
                "event_id": "e-1",
                "event_type": "appointments.created",
                "purpose": "reminder",
                "reminder": "day-before",
                "useful_until": "2026-02-21T15:00:00Z",
                "occurred_at": "2026-02-20T10:00:00Z",
                "appointment": {
                    "appointment_id": "a-1",
                    "user_id": "u-1",
                    "time": "2026-02-21T15:00:00Z",
                    "email": "pat@example.com",
                    "phone_e164": "+15555550123",
                },
            },
        )

    def test_body_is_compact_in_key_order(self):
        body = render_one()["body"]
        self.assertIsInstance(body, bytes)
        self.assertTrue(
            body.startswith(b'{"event_id":"e-1","event_type":"appointments.created","purpose":"confirmation",'
                            b'"reminder":null,"useful_until":null,"occurred_at":"2026-02-20T10:00:00Z",'
                            b'"appointment":{"appointment_id":"a-1",'),
            body,
        )
        self.assertNotIn(b" ", body)

    def test_absent_fields_are_null(self):
        event = {
            "event_id": "e-2",
            "event_type": "appointments.cancelled",
            "occurred_at": None,
            "appointment": {"appointment_id": "a-2", "user_id": None, "time": None, "email": None,
                            "phone_e164": None},
        }
        body = json.loads(render_one(event=event, message={"purpose": "cancellation", "reminder": None,
                                                           "useful_until": None})["body"])
        self.assertIsNone(body["occurred_at"])
        self.assertIsNone(body["reminder"])
        self.assertEqual(body["purpose"], "cancellation")
        self.assertEqual(body["appointment"], {"appointment_id": "a-2", "user_id": None, "time": None,
                                               "email": None, "phone_e164": None})

    def test_non_ascii_kept_as_utf8(self):
        event = dict(EVENT, appointment=dict(EVENT["appointment"], email="zoë@example.com"))
        body = render_one(event=event)["body"]
        self.assertIn("zoë".encode("utf-8"), body)

    def test_pure(self):
        self.assertEqual(render_one(), render_one())


class ClassifyTest(unittest.TestCase):
    def test_delivered_with_json_id(self):
        self.assertEqual(logic.classify(200, [("x-request-id", "req-1")], b'{"id":"wh-1"}'), ("delivered", "wh-1"))

    def test_delivered_any_2xx(self):
        self.assertEqual(logic.classify(204, [], b""), ("delivered", None))
        self.assertEqual(logic.classify(299, [], b'{"id":"x"}'), ("delivered", "x"))

    def test_delivered_falls_back_to_request_id_header(self):
        for body in (b"accepted", b'{"id":42}', b'["id"]', b'"id"', b'{"ok":true}', b'{"id":""}', b"\xff\xfe"):
            self.assertEqual(logic.classify(202, [("X-Request-Id", "req-7")], body), ("delivered", "req-7"), body)

    def test_delivered_without_any_id(self):
        self.assertEqual(logic.classify(200, [], b"not json"), ("delivered", None))
        self.assertEqual(logic.classify(200, [("x-request-id", "")], b""), ("delivered", None))

    def test_retry_statuses(self):
        for status in (408, 425, 429, 500, 502, 503, 599):
            self.assertEqual(logic.classify(status, [], b"busy"), ("retry", None, "HTTP %d" % status))

    def test_retry_after_seconds(self):
        self.assertEqual(logic.classify(503, [("retry-after", "7")], b""), ("retry", 7000, "HTTP 503"))
        self.assertEqual(logic.classify(429, [("Retry-After", " 120 ")], b""), ("retry", 120000, "HTTP 429"))
        self.assertEqual(logic.classify(429, [("retry-after", "0")], b""), ("retry", 0, "HTTP 429"))

    def test_retry_after_not_whole_seconds(self):
        for value in ("Wed, 21 Oct 2026 07:28:00 GMT", "1.5", "-3", "", "soon", "+5", "٣"):
            self.assertEqual(logic.classify(503, [("retry-after", value)], b""), ("retry", None, "HTTP 503"), value)

    def test_retry_after_huge_is_capped_to_u64(self):
        self.assertEqual(logic.retry_after_ms("9" * 30), logic.U64_MAX)

    def test_channel_down(self):
        for status in (401, 403):
            self.assertEqual(
                logic.classify(status, [], b"bad signature"),
                ("channel-down", "HTTP %d: the receiver refused our signature or credentials" % status),
            )

    def test_permanent_with_body_excerpt(self):
        self.assertEqual(logic.classify(400, [], b'{"error":"bad"}'), ("permanent", 'HTTP 400: {"error":"bad"}'))
        self.assertEqual(logic.classify(404, [], b""), ("permanent", "HTTP 404: "))
        self.assertEqual(logic.classify(302, [], b"moved"), ("permanent", "HTTP 302: moved"))

    def test_permanent_body_cut_at_200_chars(self):
        kind, reason = logic.classify(422, [], ("é" * 300).encode("utf-8"))
        self.assertEqual(kind, "permanent")
        self.assertEqual(reason, "HTTP 422: " + "é" * 200)

    def test_permanent_non_utf8_body(self):
        self.assertEqual(logic.classify(400, [], b"bad \xff byte"), ("permanent", "HTTP 400: bad \ufffd byte"))


class CasesTest(unittest.TestCase):
    """The `cases/*.json` files (for `notify-host plugin test`) agree with
    the logic, so they cannot drift from it unnoticed."""

    PURPOSES = {"confirmation", "reminder", "cancellation", "reschedule"}

    def test_cases(self):
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
        self.assertTrue(3 <= len(names) <= 5, names)
        for name in names:
            with self.subTest(case=name):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    case = json.load(f)
                self.check_case(case)

    def check_case(self, case):
        self.assertIsInstance(case["description"], str)
        settings = list(case["settings"].items())
        raw = case["event"]
        appointment = raw["appointment"]
        event = {
            "event_id": raw["event_id"],
            "event_type": raw.get("event_type", "appointments.created"),
            "occurred_at": raw.get("occurred_at"),
            "appointment": {k: (None if appointment.get(k) is None else str(appointment[k]))
                            for k in ("appointment_id", "user_id", "time", "email", "phone_e164")},
        }
        message = case.get("message") or {"purpose": "confirmation"}
        self.assertIn(message["purpose"], self.PURPOSES)
        message = {"purpose": message["purpose"], "reminder": message.get("reminder"),
                   "useful_until": message.get("useful_until")}
        expect = case["expect"]
        if "rejected" in expect:
            with self.assertRaises(logic.Rejected) as e:
                logic.render(event, message, settings)
            self.assertIn(expect["rejected"], str(e.exception))
            return
        got = logic.render(event, message, settings)
        self.assertEqual(len(got), len(expect["requests"]))
        for request, want in zip(got, expect["requests"]):
            self.assertEqual(request["method"], want["method"])
            self.assertEqual(request["url"], want["url"])
            headers = {n.lower(): v for n, v in request["headers"]}
            for n, v in want.get("headers", {}).items():
                self.assertEqual(headers.get(n.lower()), v, n)
            if "body_json" in want:
                self.assertEqual(json.loads(request["body"]), want["body_json"])
            if "body" in want:
                self.assertEqual(request["body"].decode("utf-8"), want["body"])
            for part in want.get("body_contains", []):
                self.assertIn(part, request["body"].decode("utf-8"))
        for response in case.get("responses", []):
            headers = [(n.lower(), v) for n, v in response.get("headers", {}).items()]
            verdict = logic.classify(response["status"], headers, response.get("body", "").encode("utf-8"))
            want = response["expect"]
            self.assertEqual(verdict[0], want["disposition"], response)
            if verdict[0] == "delivered" and "provider_message_id" in want:
                self.assertEqual(verdict[1], want["provider_message_id"])
            if verdict[0] == "retry" and "after_ms" in want:
                self.assertEqual(verdict[1], want["after_ms"])
            if "reason_contains" in want:
                reason = verdict[2] if verdict[0] == "retry" else verdict[-1]
                self.assertIn(want["reason_contains"], reason)


if __name__ == "__main__":
    unittest.main()
