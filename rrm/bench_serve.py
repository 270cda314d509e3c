"""Throughput and latency of `rrm serve`, with and without dynamic batching, at 1, 4 and 16 concurrent clients.

    python -m rrm.bench serve                       # on a GPU: the 7B-size thinker (random weights, bf16)
    python -m rrm.bench serve --out serve.json      # on CPU: the tiny fixture's shape (a smoke run)

For each batching setting it starts `rrm serve` on a loopback port (a real
uvicorn server in this process), and for each number of clients sends
`--requests` swap-checked pairs per client over real HTTP, each client one
request at a time. Every judgment generates exactly `--tokens` tokens, so
settings differ only in how the server schedules them. Columns: judgments per
minute over the whole run, the median and 95th-percentile latency of one
request, and the mean rows per generate call. The last line is the ratio the
README quotes: batched throughput at the most clients over the same clients
without batching.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import RRMError
from .quantization import QUANTIZATIONS

CLIENTS = (1, 4, 16)


@dataclass
class ServeRow:
    batching: bool
    clients: int
    judgments: int
    wall_s: float
    judgments_per_min: float
    p50_s: float
    p95_s: float
    rows_per_call: float | None


def _pair(i: int) -> dict:
    return {"query": f"Request {i}: which answer explains why the sky looks blue in the day?",
            "response_a": "Air molecules scatter short blue wavelengths of sunlight more than red ones.",
            "response_b": "The sky reflects the colour of the oceans, which are blue.", "id": f"r{i}"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, clients: int, requests: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) of `clients` clients sending `requests` pairs each."""
    import httpx

    def client(c: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=600) as http:
            for r in range(requests):
                started = time.perf_counter()
                reply = http.post(f"{url}/v1/judge", json=_pair(c * requests + r))
                if reply.status_code != 200:
                    raise RRMError(f"the server answered {reply.status_code}: {reply.text[:200]}")
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for per in pool.map(client, range(clients)) for x in per]
    return time.perf_counter() - started, latencies


def run(judge_for, clients: tuple[int, ...], requests: int, max_batch_rows: int, max_wait_ms: float,
        out: Path) -> list[ServeRow]:
    from tqdm.auto import tqdm

    from .batching import DynamicBatcher
    from .serve import JudgeServer, running

    rows: list[ServeRow] = []
    bar = tqdm(total=2 * len(clients), desc="bench serve", unit="setting")
    for batching in (False, True):
        judge = judge_for()
        if batching:
            judge.backend = DynamicBatcher(judge.backend, max_batch_rows, max_wait_ms)
        with running(JudgeServer(judge, "bench")) as url:
            measure(url, 1, 1)  # warm-up: first-call costs are not the server's throughput
            for n in clients:
                calls_before = judge.backend.stats.calls if batching else 0
                wall, latencies = measure(url, n, requests)
                calls = judge.backend.stats.calls - calls_before if batching else None
                done = len(latencies)
                rows.append(ServeRow(batching, n, done, wall, 60 * done / wall, statistics.median(latencies),
                                     _percentile(latencies, 0.95), 2 * done / calls if calls else 2.0))
                out.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows]}, indent=1))
                bar.update()
    bar.close()
    return rows


def ratio(rows: list[ServeRow]) -> float | None:
    """Batched over unbatched judgments per minute, at the most clients measured."""
    most = max(r.clients for r in rows)
    by = {r.batching: r.judgments_per_min for r in rows if r.clients == most}
    return by[True] / by[False] if True in by and False in by else None


def table(rows: list[ServeRow]) -> str:
    lines = ["| batching | clients | judgments | judgments/min | p50 s | p95 s | rows per call |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'on' if r.batching else 'off'} | {r.clients} | {r.judgments} | {r.judgments_per_min:.1f} | "
                     f"{r.p50_s:.2f} | {r.p95_s:.2f} | {r.rows_per_call:.1f} |")
    x = ratio(rows)
    if x is not None:
        lines += ["", f"batched / unbatched throughput at {max(r.clients for r in rows)} clients: {x:.2f}x"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from .bench import build_checkpoint
    from .generation import GenerationSettings
    from .judge import Judge

    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m rrm.bench serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", nargs="+", type=int, default=list(CLIENTS))
    parser.add_argument("--requests", type=int, default=4, help="pairs each client sends")
    parser.add_argument("--tokens", type=int, default=128 if gpu else 64, help="generated tokens per judgment")
    parser.add_argument("--quantization", default="none", choices=[q for q in QUANTIZATIONS if q != "auto"])
    parser.add_argument("--max-batch-rows", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--out", default="bench-serve.json", help="JSON results (rewritten after every row)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.tokens < 1 or min(args.clients) < 1:
        parser.error("--requests, --tokens and --clients must be at least 1")
    device = "cuda:0" if gpu else "cpu"
    scratch = Path(tempfile.mkdtemp(prefix="rrm-bench-serve-"))
    settings = GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    try:
        checkpoint = build_checkpoint("7b" if gpu else "tiny", scratch / "model", device)
        loaded = []

        def judge_for():
            if not loaded:
                from .model import load_model

                loaded.append(load_model(str(checkpoint), quantization=args.quantization, device=device))
            return Judge(loaded[0], prompt_format="rubric-v2", generation=settings)

        rows = run(judge_for, tuple(args.clients), args.requests, args.max_batch_rows, args.max_wait_ms,
                   Path(args.out))
    except RRMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{device} · {'7B-size thinker' if gpu else 'tiny fixture'} · {args.tokens} tokens per judgment · "
          f"swap check on · max {args.max_batch_rows} rows, {args.max_wait_ms:g} ms wait")
    print(table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
