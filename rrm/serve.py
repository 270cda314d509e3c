"""`python -m rrm serve`: the judge as an HTTP JSON API, with dynamic batching.

    python -m rrm serve --model Omni-RRM/Omni-RRM-7B --port 8000
    curl -s localhost:8000/v1/judge -d '{"query": "2+2?", "response_a": "4", "response_b": "5"}'

Routes:
    POST /v1/judge             one pair (a pairs-file record) -> a Judgment; {"pairs": [...]} or a list -> a list;
                               "stream": true -> server-sent events (partial, then judgment)
    POST /v1/grade             {"query", "response", "media"} -> a Grade
    POST /v1/best_of_n         {"query", "responses", "media"} -> the winner, wins and every match
    POST /v1/chat/completions  the OpenAI-compatible chat API over the same model (what --backend endpoint calls)
    POST /get_reward           OpenRLHF's remote reward model: {"query", "prompts", "labels"} -> {"rewards"}
                               (rrm.openrlhf; media paths in labels are read only under --reward-media-root)
    GET  /v1/models            the model, adapter, prompt format, rubric, media bounds and backend
    GET  /health
Media arrive as base64 in the JSON body or as multipart uploads (rrm.api_inputs). The server listens on
loopback unless told otherwise; --api-key-env NAME requires `Authorization: Bearer $NAME` on every route but
/health. A bad request gets a 4xx with one line of JSON, {"error": {"message", "type"}}, and the server goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from .api_inputs import BadRequest, Uploads, chat_row, flag, pair_sample, settings_from
from .cli import add_listen_arguments
from .errors import RRMError, first_line
from .generation import BackendUnavailable, GenerationSettings, OutOfMemory
from .judge import Judge
from .media import MediaLimits
from .openrlhf import RewardSettings, get_reward
from .reward import SCORINGS
from .redact import redact, register_secret
from .schema import Sample

log = logging.getLogger(__name__)

MAX_BODY_MB = 64
MAX_PAIRS = 64  # pairs in one request
MAX_UPLOADS = 32  # files in one multipart request


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = MAX_BODY_MB * 1024**2
    max_pairs: int = MAX_PAIRS
    max_uploads: int = MAX_UPLOADS


_REQUEST_FOLDER = re.compile(r"\S*rrm-(?:serve|stream)-[^/\s]+/")


def public(message: str) -> str:
    """A message fit for the client: no key, and no server folder (a request's media are named by their file)."""
    return _REQUEST_FOLDER.sub("", redact(message))


def _error(status: int, message: str, kind: str = "invalid_request_error"):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": public(message), "type": kind}}, status_code=status)


def _status_of(e: BaseException) -> tuple[int, str]:
    if isinstance(e, PayloadTooLarge):
        return 413, "invalid_request_error"
    if isinstance(e, OutOfMemory):
        return 503, "out_of_memory"
    if isinstance(e, BackendUnavailable):
        return 502, "backend_unavailable"
    if isinstance(e, RRMError):
        return 400, "invalid_request_error"
    return 500, "server_error"


class _BodyLimit:
    """ASGI middleware: a body over the limit is refused with 413: at once when its length is declared, else
    where the count passes the limit (the body is cut there and the route sees `rrm.too_big`)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _error(413, too_big(self.max_bytes))(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                scope["rrm.too_big"] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, counted, send)


def too_big(max_bytes: int) -> str:
    return f"the request body is over the {max_bytes // 1024**2} MB limit (--max-body-mb)"


class PayloadTooLarge(RRMError):
    pass


class JudgeServer:
    """The routes over one judge. Blocking judge calls run in worker threads; each request has its own folder."""

    def __init__(self, judge: Judge, served_name: str, api_key: str | None = None,
                 limits: ServeLimits = ServeLimits(), reward: RewardSettings = RewardSettings()):
        self.judge, self.served_name, self.limits, self.reward = judge, served_name, limits, reward
        self._key = api_key
        register_secret(api_key)
        self.started = time.time()

    # ------------------------------------------------------------------ plumbing

    def authorized(self, request) -> bool:
        if not self._key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._key}".encode())

    @contextmanager
    def uploads(self):
        with tempfile.TemporaryDirectory(prefix="rrm-serve-") as folder:
            yield Uploads(Path(folder))

    async def body(self, request, uploads: Uploads):
        """The JSON body (or multipart: a "request" field holding JSON, and files)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            body = await self._multipart(request, uploads)
            self._check_size(request)
            return body
        raw = await request.body()
        self._check_size(request)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON") from None

    def _check_size(self, request) -> None:
        if request.scope.get("rrm.too_big"):
            raise PayloadTooLarge(too_big(self.limits.max_body_bytes))

    async def _multipart(self, request, uploads: Uploads):
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=self.limits.max_uploads, max_fields=64)
        except Exception as e:  # a malformed or oversized form
            raise BadRequest(f"the multipart body cannot be read: {first_line(e)}") from None
        text = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.files[name] = (Path(value.filename or name).name, await value.read())
            elif name == "request":
                text = value
        if text is None:
            raise BadRequest('a multipart request needs a "request" field holding the JSON body')
        try:
            return json.loads(text)
        except ValueError:
            raise BadRequest('the "request" field is not valid JSON') from None

    @staticmethod
    async def call(fn, *args):
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args)

    async def call_until_gone(self, request, fn):
        """`fn(cancel)` in a worker thread; `cancel` is set if the client goes away (its rows are then freed)."""
        import anyio

        cancel, result, failure = threading.Event(), [], []

        async def watch():
            while not cancel.is_set():
                if await request.is_disconnected():
                    cancel.set()
                await anyio.sleep(0.1)

        async def work():
            try:
                result.append(await self.call(fn, cancel))
            except Exception as e:  # raised below, outside the task group
                failure.append(e)
            finally:
                cancel.set()

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            group.start_soon(work)
        if failure:
            raise failure[0]
        return result[0]

    # ------------------------------------------------------------------ routes

    async def judge_route(self, request):
        with self.uploads() as uploads:
            body = await self.body(request, uploads)
            records, many = _pair_records(body)
            options = body if isinstance(body, dict) else {}
            if len(records) > self.limits.max_pairs:
                raise BadRequest(f"the request holds {len(records):,} pairs; the limit is {self.limits.max_pairs} "
                                 f"(--max-pairs)")
            settings = settings_from(options, self.judge.generation)
            swap_check = flag(options, "swap_check", True)
            if flag(options, "stream", False):
                if many:
                    raise BadRequest('"stream" takes one pair, not a list')
                return self.stream_response(pair_sample(records[0], uploads), swap_check, settings, uploads)
            if not many:
                sample = pair_sample(records[0], uploads)
                judgment = await self.call_until_gone(
                    request, lambda cancel: self.judge.judge(sample, swap_check, settings, cancel))
                return _json(judgment.to_dict())
            samples = [pair_sample(r, uploads) for r in records]
            judgments = await self.call_until_gone(request, lambda cancel: self.judge.judge_batch(
                samples, batch_size=len(samples), swap_check=swap_check, progress=False, settings=settings,
                cancel=cancel))
            return _json([j.to_dict() for j in judgments])

    def stream_response(self, sample: Sample, swap_check: bool, settings: GenerationSettings, uploads: Uploads):
        """Server-sent events: `partial` as the text grows, then `judgment` (or `error`). The request's media
        folder is kept until the stream ends; a client that goes away stops generation."""
        folder = tempfile.mkdtemp(prefix="rrm-stream-")
        for f in uploads.folder.iterdir():  # the request's own folder goes when the handler returns
            f.rename(Path(folder) / f.name)
        sample = dataclasses.replace(sample, media=[dataclasses.replace(m, path=str(Path(folder) / Path(m.path).name))
                                                    for m in sample.media])
        cancel = threading.Event()
        updates = self.judge.stream(sample, swap_check, cancel, settings)

        def render(update):
            if update.judgment is not None:
                return [_sse("judgment", update.judgment.to_dict())]
            return [_sse("partial", {"text": update.text, "swapped_text": update.swapped_text,
                                     "partial": dataclasses.asdict(update.partial)})]

        def stop():
            cancel.set()
            _close_then_remove(updates, folder)

        return self.event_stream(updates, render, lambda error: _sse("error", error), stop)

    def event_stream(self, steps, render, error_event, stop, last: str = ""):
        """Server-sent events from a blocking iterator of steps, pulled in a worker thread: `render(step)` gives
        each step's events, a failure ends the stream with `error_event`, and `stop` runs however it ends (the
        client gone included)."""
        from starlette.responses import StreamingResponse

        async def events():
            try:
                while True:
                    try:
                        step = await self.call(next, steps, None)
                    except Exception as e:
                        yield error_event({"error": {"message": public(first_line(e)), "type": _status_of(e)[1]}})
                        return
                    if step is None:
                        break
                    for event in render(step):
                        yield event
                if last:
                    yield last
            finally:
                await self.call(stop)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def grade_route(self, request):
        with self.uploads() as uploads:
            body = await self.body(request, uploads)
            if not isinstance(body, dict):
                raise BadRequest('the body must be an object with "query" and "response"')
            sample = pair_sample({**body, "response_a": body.get("response", ""), "response_b": "-"}, uploads)
            grade = await self.call(self.judge.grade, sample, settings_from(body, self.judge.generation))
            return _json(grade.to_dict())

    async def best_of_n_route(self, request):
        with self.uploads() as uploads:
            body = await self.body(request, uploads)
            responses = body.get("responses") if isinstance(body, dict) else None
            if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
                raise BadRequest('"responses" must be a list of strings')
            sample = pair_sample({**body, "response_a": "-", "response_b": "-"}, uploads)
            swap_check, settings = flag(body, "swap_check", True), settings_from(body, self.judge.generation)
            result = await self.call_until_gone(request, lambda cancel: self.judge.best_of_n(
                sample.query, responses, sample.media, swap_check=swap_check, settings=settings, cancel=cancel))
            return _json({"best": result.best, "wins": result.wins,
                          "matches": [{"a": a, "b": b, "judgment": j.to_dict()} for a, b, j in result.matches]})

    async def reward_route(self, request):
        with self.uploads() as uploads:  # OpenRLHF sends JSON; media come from --reward-media-root, not uploads
            body = await self.body(request, uploads)
        return _json(await self.call(get_reward, self.judge, body, self.reward, self.limits.max_pairs))

    def model_card(self) -> dict:
        judge = self.judge
        return {"id": self.served_name, "object": "model", "created": int(self.started), "owned_by": "omni-rrm",
                "rrm": {**judge.backend.info(), "prompt_format": judge.format.name, "rubric": judge.rubric.keys,
                        "media_limits": dataclasses.asdict(judge.limits), "judge_config": judge.record()}}

    async def models_route(self, request):
        return _json({"object": "list", "data": [self.model_card()]})

    async def health_route(self, request):
        return _json({"status": "ok", "model": self.served_name, "waiting": getattr(self.judge.backend, "waiting", 0)})

    async def chat_route(self, request):
        with self.uploads() as uploads:
            body = await self.body(request, uploads)
            if not isinstance(body, dict):
                raise BadRequest("the body must be a chat-completions object")
            if body.get("model") not in (None, self.served_name):
                return _error(404, f"model {body.get('model')!r} is not served here; this server serves "
                                   f"{self.served_name!r}", "model_not_found")
            settings = _chat_settings(body, self.judge.generation)
            row = chat_row(body.get("messages"), uploads, _chat_limits(body, self.judge.limits))
            if flag(body, "stream", False):
                return self.chat_stream(row, settings)
            output = (await self.call_until_gone(request, lambda cancel: self.judge.backend.generate(
                [row], settings, self.judge.limits, cancel)))[0]
            return _json(_completion(self.served_name, output, settings))

    def chat_stream(self, row, settings: GenerationSettings):
        cancel = threading.Event()
        steps = self.judge.backend.stream([row], settings, self.judge.limits, cancel)
        name, ident, sent = self.served_name, f"chatcmpl-{uuid.uuid4().hex[:24]}", [0]

        def render(step):
            text, events = step.texts[0], []
            if len(text) > sent[0]:
                events.append(_data(_chunk(ident, name, {"content": text[sent[0]:]})))
                sent[0] = len(text)
            if step.outputs is not None:
                done = _completion(name, step.outputs[0], settings)
                events.append(_data(_chunk(ident, name, {}, done["choices"][0]["finish_reason"], done["usage"])))
            return events

        def stop():
            cancel.set()
            steps.close()

        return self.event_stream(steps, render, _data, stop, last="data: [DONE]\n\n")


def _pair_records(body) -> tuple[list, bool]:
    if isinstance(body, list):
        if not body:
            raise BadRequest("the list of pairs is empty")
        return body, True
    if not isinstance(body, dict):
        raise BadRequest("the body must be a pair (a JSON object), a list of pairs, or {\"pairs\": [...]}")
    if "pairs" in body:
        if not isinstance(body["pairs"], list) or not body["pairs"]:
            raise BadRequest('"pairs" must be a non-empty list')
        return body["pairs"], True
    return [body], False


def _close_then_remove(updates, folder: str) -> None:
    import shutil

    updates.close()
    shutil.rmtree(folder, ignore_errors=True)


def _chat_limits(body: dict, limits: MediaLimits) -> MediaLimits:
    """The server's media bounds, with a video's sound heard or not as the request's `mm_processor_kwargs`
    asks (`use_audio_in_video`, as vLLM takes it); without it, as the server is set (--video-audio)."""
    asked = (body.get("mm_processor_kwargs") or {}).get("use_audio_in_video") \
        if isinstance(body.get("mm_processor_kwargs"), dict) else None
    if asked is None:
        return limits
    if not isinstance(asked, bool):
        raise BadRequest("mm_processor_kwargs.use_audio_in_video must be true or false")
    return limits.replace(video_audio="on" if asked else "off")


def _chat_settings(body: dict, base: GenerationSettings) -> GenerationSettings:
    """A chat request's settings: the OpenAI names (and vLLM's min_tokens) read as rrm's. A chat may answer in
    any form, so a reply that opens no JSON object is not stopped early."""
    settings = settings_from({**body, "max_new_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
                              "min_new_tokens": body.get("min_tokens")}, base)
    return dataclasses.replace(settings, judgment_start_tokens=None)


def _completion(name: str, output, settings: GenerationSettings) -> dict:
    tokens = output.timing.generated_tokens or 0
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": output.text},
                                        "finish_reason": "length" if tokens >= settings.max_new_tokens else "stop"}],
            "usage": {"prompt_tokens": output.timing.prompt_tokens or 0, "completion_tokens": tokens,
                      "total_tokens": (output.timing.prompt_tokens or 0) + tokens}}


def _chunk(ident: str, name: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    chunk = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _json(payload):
    from starlette.responses import JSONResponse

    return JSONResponse(payload)


def _sse(event: str, payload) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _data(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# ------------------------------------------------------------------ the app

def create_app(server: JudgeServer):
    """The ASGI app: routes, auth, body bounds and one-line JSON errors (FastAPI, so /docs lists the routes)."""
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException

    app = FastAPI(title="Omni-RRM judge", docs_url="/docs", redoc_url=None)
    routes = [("POST", "/v1/judge", server.judge_route), ("POST", "/v1/grade", server.grade_route),
              ("POST", "/v1/best_of_n", server.best_of_n_route), ("POST", "/v1/chat/completions", server.chat_route),
              ("POST", "/get_reward", server.reward_route), ("GET", "/v1/models", server.models_route),
              ("GET", "/health", server.health_route)]
    for method, path, handler in routes:
        app.add_api_route(path, _guarded(server, handler, path != "/health"), methods=[method])

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # unknown route, wrong method
        return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    return _BodyLimit(app, server.limits.max_body_bytes)


def _guarded(server: JudgeServer, handler, needs_key: bool):
    async def route(request: Request):
        if needs_key and not server.authorized(request):
            return _error(401, "missing or wrong API key: send Authorization: Bearer <key>", "authentication_error")
        try:
            return await handler(request)
        except Exception as e:
            status, kind = _status_of(e)
            if status == 500:
                log.exception("internal error on %s", request.url.path)
            return _error(status, first_line(e), kind)

    route.__name__ = handler.__name__
    return route


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    web = parser.add_argument_group("serving")
    add_listen_arguments(web, port=8000)
    web.add_argument("--api-key-env", metavar="NAME", help="require `Authorization: Bearer $NAME` (the key is read "
                                                           "from that environment variable)")
    web.add_argument("--served-model-name", help="the model name clients send (default: --model)")
    web.add_argument("--max-batch-rows", type=int, default=16,
                     help="rows (two per swap-checked pair) per generate call")
    web.add_argument("--max-wait-ms", type=float, default=10.0,
                     help="how long a request waits for others to batch with")
    web.add_argument("--no-batching", action="store_true", help="one request per generate call")
    web.add_argument("--max-body-mb", type=int, default=MAX_BODY_MB)
    web.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="pairs (or /get_reward rows) in one request")
    reward = parser.add_argument_group("POST /get_reward (OpenRLHF)")
    reward.add_argument("--reward-media-root", metavar="DIR",
                        help="read the media paths labels name under DIR, and nowhere else (default: read none)")
    reward.add_argument("--reward-scoring", choices=SCORINGS, default="outcome",
                        help="outcome: win 1, tie 0, loss -1 against the reference; margin: the score margin / 10")
    reward.add_argument("--reward-if-unread", type=float, metavar="X",
                        help="send X for a judgment with no verdict (default: null; OpenRLHF takes numbers only)")


def server_from_args(args, judge: Judge) -> JudgeServer:
    """Wrap the judge's backend for batching and read the API key, as the flags say."""
    from .batching import DynamicBatcher

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise RRMError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    if not args.no_batching:
        judge.backend = DynamicBatcher(judge.backend, args.max_batch_rows, args.max_wait_ms)
    root = Path(args.reward_media_root) if args.reward_media_root else None
    if root is not None and not root.is_dir():
        raise RRMError(f"--reward-media-root {root} is not a folder")
    return JudgeServer(judge, args.served_model_name or args.model, key,
                       ServeLimits(max_body_bytes=args.max_body_mb * 1024**2, max_pairs=args.max_pairs),
                       RewardSettings(root, args.reward_scoring, args.reward_if_unread))


@contextmanager
def running(server: JudgeServer, host: str = "127.0.0.1", port: int = 0):
    """Serve in a background thread (tests, benchmarks); yields the base URL, e.g. http://127.0.0.1:41234."""
    import uvicorn

    web = uvicorn.Server(uvicorn.Config(create_app(server), host=host, port=port, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=web.run, name="rrm-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RRMError(f"the server could not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{web.servers[0].sockets[0].getsockname()[1]}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)


def serve(args, judge: Judge) -> int:
    import uvicorn

    server = server_from_args(args, judge)
    print(f"serving {server.served_name} on http://{args.host}:{args.port} ({judge.description})", flush=True)
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["JudgeServer", "ServeLimits", "create_app", "add_serve_arguments", "server_from_args", "serve", "running"]
