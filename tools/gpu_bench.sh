#!/usr/bin/env bash
# The prepared GPU run: the 4-bit judge's speed and memory on one GPU, through `python -m rrm.bench`.
#
#   OUT=/tmp/out bash tools/gpu_bench.sh          # on the GPU machine, from the repository root
#
# It installs the wheels that tools/gpu_wheels.sh places in .whl/, builds the 7B-size random-weight thinker once,
# then measures, in this order, each in its own `rrm.bench` run, skipping what would overrun the budget:
#   1. int4 (torchao) with the int8 head and embedding, static path (compiled on a GPU), then the same with the
#      deferred stop check (the compiled step is reused);
#   2. NF4 (bitsandbytes), plain generate;
#   3. int4 with gemlite's kernels (--quantization int4-gemlite), static path; skipped, saying why, without a
#      CUDA GPU or without gemlite (its wheel in .whl/: README says how to build it);
#   4. NF4, static path (rrm's decode loop compiles it; transformers' would not);
#   5. bf16, static path (compiled on a GPU).
# Each run prints its table as it finishes and writes $OUT/<name>.json. GPU_BENCH_SIZE (7b; tiny on CPU, as the
# test does), GPU_BENCH_BUDGET_S (540 s), GPU_BENCH_TOKENS (128), GPU_BENCH_MODALITIES (image video16), GPU_BENCH_WHEELS
# (.whl) and GPU_BENCH_SITE (where they are installed, /tmp/gpu-bench-site) change it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
PYTHON=${PYTHON:-python3}
SIZE=${GPU_BENCH_SIZE:-7b}
BUDGET=${GPU_BENCH_BUDGET_S:-540}
TOKENS=${GPU_BENCH_TOKENS:-128}
read -r -a MODALITIES <<< "${GPU_BENCH_MODALITIES:-image video16}"
mkdir -p "$OUT"
start=$(date +%s)
WHEELS=${GPU_BENCH_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then  # tools/gpu_wheels.sh writes them; beside the image's own packages
    site=${GPU_BENCH_SITE:-/tmp/gpu-bench-site}
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS/ into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target "$site" "$WHEELS"/*.whl || { echo "error: the wheels in $WHEELS/ did not install" >&2; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# What every run needs, and what only some need (their runs fail on their own, saying so), before any is started.
"$PYTHON" - "$OUT/versions.txt" <<'PY' || exit 1
import importlib, re, sys
needed = ["torch", "transformers", "peft", "accelerate", "huggingface_hub", "PIL", "cv2", "av", "soundfile", "soxr"]
pins = dict(re.findall(r"^([\w-]+)==(\S+)", open("requirements.txt").read(), re.M))
lines, missing = [], []
for name in [*needed, "torchao", "bitsandbytes", "gemlite"]:
    try:
        version = getattr(importlib.import_module(name), "__version__", "?")
        pin = pins.get(name.replace("_", "-"), pins.get(name, version))
        lines.append(f"{name} {version}" + ("" if version.split("+")[0] == pin else f" (requirements.txt: {pin})"))
    except Exception as e:  # gemlite, say, is optional: its run is skipped without it
        lines.append(f"{name} missing ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        missing += [name] if name in needed else []
torch = sys.modules.get("torch")  # imported above, unless it is missing
cuda = torch is not None and torch.cuda.is_available()
lines.append(f"GPU {torch.cuda.get_device_name(0)} · CUDA {torch.version.cuda}" if cuda else "no GPU")
print(" · ".join(lines))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
if missing:
    sys.exit(f"error: the benchmark needs {', '.join(missing)}: place the wheels from tools/gpu_wheels.sh in .whl/")
PY
work="$OUT/work"

measure() {  # name, then rrm.bench's --modes and --paths
    local name=$1 left=$(( BUDGET - ($(date +%s) - start) ))
    shift
    if (( left < 60 )); then
        echo "skipped $name: ${left} s of the ${BUDGET} s budget left" | tee -a "$OUT/skipped.txt"
        return
    fi
    echo "== $name (${left} s left)"
    timeout "$left" "$PYTHON" -m rrm.bench --sizes "$SIZE" --workdir "$work" --out "$OUT/$name.json" \
        --tokens "$TOKENS" --batch 2 --modalities "${MODALITIES[@]}" "$@" \
        || echo "$name: rrm.bench ended with status $? (see above)" | tee -a "$OUT/skipped.txt"
}

measure int4 --modes int4 --paths static deferred
measure nf4-plain --modes 4bit --paths plain
if "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" && "$PYTHON" -c "import gemlite" 2>/dev/null; then
    measure int4-gemlite --modes int4-gemlite --paths static
else
    echo "skipped int4-gemlite: needs a CUDA GPU and the gemlite package" | tee -a "$OUT/skipped.txt"
fi
measure nf4-static --modes 4bit --paths static
measure bf16-static --modes none --paths static
rm -rf "$work"
echo "done in $(( $(date +%s) - start )) s; JSON in $OUT"
