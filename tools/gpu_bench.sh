#!/usr/bin/env bash
# The prepared GPU run: the 4-bit judge's speed and memory on one GPU, through `python -m rrm.bench`.
#
#   OUT=/tmp/out bash tools/gpu_bench.sh          # on the GPU machine, from the repository root
#
# It installs the wheels placed in .whl/ (README lists them), builds the 7B-size random-weight thinker once,
# then measures, in this order, each in its own `rrm.bench` run, skipping what would overrun the budget:
#   1. int4 (torchao) with the int8 head and embedding, static path (compiled on a GPU), then the same with the
#      deferred stop check (the compiled step is reused);
#   2. NF4 (bitsandbytes), plain generate;
#   3. int4 with gemlite's kernels (--quantization int4-gemlite), static path; skipped, saying why, without a
#      CUDA GPU or without gemlite (its wheel in .whl/: README says how to build it);
#   4. NF4, static path (rrm's decode loop compiles it; transformers' would not);
#   5. bf16, static path (compiled on a GPU).
# Each run prints its table as it finishes and writes $OUT/<name>.json. GPU_BENCH_SIZE (7b; tiny on CPU, as the
# test does), GPU_BENCH_BUDGET_S (540 s), GPU_BENCH_TOKENS (128) and GPU_BENCH_MODALITIES (image video16) change it.
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
if compgen -G ".whl/*.whl" > /dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/"
    "$PYTHON" -m pip install -q --no-deps .whl/*.whl || echo "warning: the wheels did not all install" >&2
fi
"$PYTHON" -c "import torch, transformers, bitsandbytes, torchao; print('torch', torch.__version__, '· transformers',
transformers.__version__, '· bitsandbytes', bitsandbytes.__version__, '· torchao', torchao.__version__, '·',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/versions.txt"
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
