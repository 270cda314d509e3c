"""The benchmark's smoke run on CPU: the same code that measures the full-size judge on a GPU."""

import json

from rrm.bench import MODALITIES, Row, main, target_check


def test_bench_smoke_run_on_the_tiny_fixture(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--out", str(out), "--tokens", "6", "--batch", "2", "--workdir", str(tmp_path / "w")]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu" and report["tokens"] == 6
    rows = report["rows"]
    assert [(r["path"], r["modality"]) for r in rows] == [(p, m) for p in ("plain", "static", "deferred")
                                                                for m in MODALITIES]
    tokens = {r["modality"]: r["prompt_tokens"] for r in rows if r["path"] == "plain"}
    # Media add their own tokens: 8 frames of 448x448 are 1,024 more than none, 16 frames twice that.
    assert tokens["video16"] - tokens["video8"] == 1024 and tokens["video8"] > tokens["image"] > tokens["text"]
    assert tokens["audio30"] - tokens["audio10"] == 500  # 25 tokens per second of audio
    # A video's sound heard with its 16 frames: the same 25 a second, on top of the silent 16 frames.
    assert tokens["av30"] - tokens["av10"] == 500 and tokens["av10"] - tokens["video16"] >= 250
    assert all(r["ttft_s"] > 0 and r["decode_tps"] > 0 and r["peak_gib"] > 0.01 for r in rows)  # the process's RSS
    image = [r for r in rows if r["modality"] == "image"]
    assert all(r["swap_ratio"] > 0 and r["batch_jpm"] > 0 and r["batch_tps"] > 0 for r in image)
    second_path = rows[len(MODALITIES)]
    assert rows[0]["load_s"] > 0 and second_path["load_s"] is None and second_path["warm_up_s"] is not None
    assert 0.001 < rows[0]["weights_gib"] < 0.05 and second_path["weights_gib"] is None  # the tiny model: ~5 MiB
    printed = capsys.readouterr().out
    assert "| tiny | fp32 | static | video16 |" in printed and "batch 2 j/min" in printed
    assert (tmp_path / "w" / "media" / "video16.mp4").exists() and not (tmp_path / "w" / "tiny").exists()


def _row(path, modality, decode, ttft, peak, swap=None):
    return Row("7b", "NF4", path, modality, 1000, ttft, decode, peak, swap_ratio=swap)


def test_targets_are_read_from_the_fastest_4bit_path():
    rows = [_row("plain", "image", 35.0, 0.3, 6.5, swap=1.05), _row("plain", "video16", 34.0, 0.5, 8.6),
            _row("static", "image", 130.0, 0.4, 7.0, swap=1.2), _row("static", "video16", 128.0, 0.6, 12.5)]
    assert target_check(rows) == [
        "met  decode tokens/s: 130.00 (target >= 120)",
        "MISS swap check / one judgment: 1.20 (target <= 1.15)",
        "met  TTFT image s: 0.40 (target <= 0.5)",
        "met  peak GiB image: 7.00 (target <= 8)",
        "MISS peak GiB video16: 12.50 (target <= 12)",
    ]
    assert target_check([Row("3b", "NF4", "plain", "image", 1, 0.1, 50.0, 3.0)]) == []


def test_serve_bench_smoke_run_measures_both_settings_over_real_http(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(["serve", "--clients", "1", "4", "--requests", "2", "--tokens", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batching"], r["clients"], r["judgments"]) for r in rows] == [
        (False, 1, 2), (False, 4, 8), (True, 1, 2), (True, 4, 8)]
    assert all(r["judgments_per_min"] > 0 and 0 < r["p50_s"] <= r["p95_s"] for r in rows)
    assert rows[1]["rows_per_call"] == 2.0 and rows[3]["rows_per_call"] >= 2.0  # both orders of a pair, at least
    printed = capsys.readouterr().out
    assert "| on | 4 | 8 |" in printed and "batched / unbatched throughput at 4 clients:" in printed


def test_the_prepared_gpu_run_runs_end_to_end_on_cpu_on_the_tiny_model(tmp_path):
    """tools/gpu_bench.sh as the GPU machine runs it, on the tiny model: every configuration measured in turn
    (int4 first), the ones rrm cannot run said to be skipped, JSON per configuration."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "tools" / "gpu_bench.sh"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_BENCH_SIZE": "tiny",
           "GPU_BENCH_TOKENS": "4", "GPU_BENCH_MODALITIES": "image", "GPU_BENCH_WHEELS": str(tmp_path / "none")}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = ("int4", "nf4-plain", "nf4-static", "bf16-static")
    rows = {n: json.loads((tmp_path / f"{n}.json").read_text())["rows"] for n in names}
    assert [(r["weights"], r["path"]) for n in names for r in rows[n]] == [
        ("int4", "static"), ("int4", "deferred"), ("NF4", "plain"), ("NF4", "static"), ("fp32", "static")]
    assert all(r["decode_tps"] > 0 and r["swap_ratio"] > 0 and r["batch_tps"] > 0 for n in names for r in rows[n])
    stored = {n: rows[n][0]["weights_gib"] for n in names}
    assert stored["int4"] < stored["nf4-plain"] < stored["bf16-static"]  # int4 with int8 head and embedding
    assert "skipped int4-gemlite" in done.stdout and "torchao" in (tmp_path / "versions.txt").read_text()
    assert done.stdout.index("== int4") < done.stdout.index("== nf4-plain") < done.stdout.index("== bf16-static")
    assert not (tmp_path / "work").exists()


def test_the_prepared_gpu_run_stops_at_once_naming_a_package_it_lacks(tmp_path):
    """A GPU image without PyAV (the judge reads videos through it): one line names it, before any run starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    broken = tmp_path / "site" / "av"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no PyAV in this image')\n")
    script = Path(__file__).parents[1] / "tools" / "gpu_bench.sh"
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "GPU_BENCH_SIZE": "tiny",
           "GPU_BENCH_WHEELS": str(tmp_path / "none"), "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("error: the benchmark needs av: place the wheels from "
                                                    "tools/gpu_wheels.sh in .whl/")
    assert "av missing (ImportError: no PyAV in this image)" in (tmp_path / "out" / "versions.txt").read_text()
    assert "==" not in done.stdout and not list((tmp_path / "out").glob("*.json"))


def _wheel(path, libraries):
    """A real wheel of one package, `demo`, holding a module and the shared libraries named, with its RECORD."""
    import base64
    import hashlib
    import zipfile

    files = {"demo/__init__.py": b"VALUE = 7\n", **{f"demo/{name}": name.encode() * 64 for name in libraries},
             "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
             "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                         b"Tag: py3-none-any\n"}
    digest = {n: base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode() for n, d in files.items()}
    record = "".join(f"{n},sha256={digest[n]},{len(d)}\n" for n, d in files.items()) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in {**files, "demo-1.0.dist-info/RECORD": record.encode()}.items():
            wheel.writestr(name, data)
    return path


def test_slim_wheel_drops_the_libraries_not_kept_and_pip_installs_what_is_left(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tool = str(Path(__file__).parents[1] / "tools" / "slim_wheel.py")
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", ["libdemo_cpu.so", "libdemo_cuda118.so",
                                                            "libdemo_cuda130.so", "libdemo_rocm64.so"])
    keep = r"libdemo_(cpu|cuda13\d*)\.so"
    done = subprocess.run([sys.executable, tool, str(wheel), "--keep", keep], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dropped 2 shared libraries" in done.stdout and "dropped demo/libdemo_rocm64.so" in done.stdout
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    assert sorted(p.name for p in (target / "demo").glob("*.so")) == ["libdemo_cpu.so", "libdemo_cuda130.so"]
    assert "cuda118" not in (target / "demo-1.0.dist-info" / "RECORD").read_text()
    imported = subprocess.run([sys.executable, "-c", "import demo; print(demo.VALUE)"], env={"PYTHONPATH": str(target)},
                              capture_output=True, text=True)
    assert imported.stdout.strip() == "7"

    before = wheel.read_bytes()  # a pattern that would keep none is refused, and the wheel is left as it was
    refused = subprocess.run([sys.executable, tool, str(wheel), "--keep", "libother\\.so"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --keep") and wheel.read_bytes() == before
