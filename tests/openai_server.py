"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, with scripted replies.

As a generator, model "strong" writes a detailed answer and "weak" a short one,
each saying which media parts it was sent. As a teacher it writes a rubric-v2
judgment that prefers the detailed answer (or, between two answers without
that marker, the one that sorts first), so it agrees with itself in both
orders; a teacher named "contrarian" prefers the other one on queries that
contain "contested". Queries with "close call" get close scores (an rl pair).
Faults are served first, in order: "429", "500", "timeout", "malformed".
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rrm.prompts import get_format
from rrm.rubric import DEFAULT_RUBRIC
from rrm.schema import CriterionResult, Judgment, ParseStatus

STRONG_MARK = "In detail"
_ANSWERS = re.compile(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\Z", re.S)


class ScriptedServer:
    def __init__(self, key: str | None = None, models=("strong", "weak", "teacher-1", "teacher-2", "contrarian"),
                 faults=(), delay_s: float = 0.0, timeout_sleep_s: float = 2.0):
        self.key, self.models, self.faults = key, set(models), list(faults)
        self.delay_s, self.timeout_sleep_s = delay_s, timeout_sleep_s
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ protocol

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        with self.lock:
            self.requests.append({"body": body, "auth": h.headers.get("Authorization")})
            fault = self.faults.pop(0) if self.faults else None
        if self.key and h.headers.get("Authorization") != f"Bearer {self.key}":
            return self._send(h, 401, {"error": {"message": "Incorrect API key provided"}})
        if body.get("model") not in self.models:
            return self._send(h, 404, {"error": {"message": f"The model {body.get('model')} does not exist"}})
        if fault == "429":
            return self._send(h, 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
        if fault == "500":
            return self._send(h, 500, {"error": {"message": "internal error"}})
        if fault == "timeout":
            time.sleep(self.timeout_sleep_s)
        if fault == "malformed":
            return self._send_raw(h, 200, b'{"choices": [{"message": ')
        time.sleep(self.delay_s)
        text = self.reply(body)
        self._send(h, 200, {"id": "x", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 100, "completion_tokens": len(text.split())}})

    def _send(self, h, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_raw(h, status, json.dumps(payload).encode(), headers)

    def _send_raw(self, h, status: int, data: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
            pass

    # ------------------------------------------------------------------ replies

    def reply(self, body: dict) -> str:
        user = body["messages"][-1]["content"]
        text = "\n".join(p["text"] for p in user if p["type"] == "text")
        images = sum(p["type"] == "image_url" for p in user)
        audio = sum(p["type"] == "input_audio" for p in user)
        match = _ANSWERS.search(text)
        if match is None:  # a generator
            seen = f"I was sent {images} picture(s) and {audio} audio clip(s)."
            if body["model"] == "strong":
                return f"{STRONG_MARK}: {seen} Here is a careful, complete answer to: {text}"
            return f"Short: {seen}"
        return self.judgment(body["model"], text, *match.groups())

    def judgment(self, teacher: str, text: str, first: str, second: str) -> str:
        if (STRONG_MARK in first) != (STRONG_MARK in second):
            a_better = STRONG_MARK in first
        else:
            a_better = first <= second
        if teacher == "contrarian" and "contested" in text:
            a_better = not a_better
        high, low = (6, 5) if "close call" in text else (8, 3)
        sa, sb = (high, low) if a_better else (low, high)
        criteria = [CriterionResult(c.key, c.title, f"On {c.title.lower()}, answer {'A' if a_better else 'B'} "
                                    "does better.", sa, sb) for c in DEFAULT_RUBRIC.criteria]
        verdict = "A" if a_better else "B"
        return get_format("rubric-v2").render(Judgment(verdict, sa, sb, criteria, "", ParseStatus(True, "rubric-v2")))
