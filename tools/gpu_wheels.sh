#!/usr/bin/env bash
# The wheels that the prepared GPU run (tools/gpu_bench.sh) installs, written to the ignored .whl/ from PyPI:
#
#   bash tools/gpu_wheels.sh          # here, where PyPI is reachable (the GPU machine reaches nothing)
#
# They are the packages the GPU machine's image lacks or holds at another version than requirements.txt, for its
# Python 3.12 on x86-64 with torch 2.11 built for CUDA 13 (torchao 0.18 needs torch 2.11 or later):
# transformers, bitsandbytes and torchao at requirements.txt's versions; PyAV (the judge reads videos and their
# sound tracks through it); soundfile (with cffi and pycparser) and soxr for audio; gemlite, for
# --quantization int4-gemlite (PyPI has it as a source archive only: its pure-Python wheel is built here).
# huggingface_hub is the image's own 1.33 (transformers 5.24 needs 1.31 or later; 2.x would need httpx2, which
# the image lacks), carried at that version so that the run does not depend on it.
# bitsandbytes ships its kernels for every CUDA and ROCm release (41 MiB); only its CPU and CUDA 13 libraries
# are kept (GPU_WHEELS_CUDA, default cuda13), so that everything that travels stays under the 64 MiB limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CUDA=${GPU_WHEELS_CUDA:-cuda13}
rm -rf .whl
mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    transformers==5.24.0 bitsandbytes==0.50.2 torchao==0.18.0 huggingface_hub==1.33.0 \
    av==18.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0
"$PYTHON" -m pip wheel -q --no-deps -w .whl gemlite==0.6.0.post2
"$PYTHON" tools/slim_wheel.py .whl/bitsandbytes-*.whl --keep "libbitsandbytes_(cpu|${CUDA}[0-9]*)\.so"
ls -l .whl
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "wheels $(( wheels / 1048576 )) MiB + the repository $(( tree / 1048576 )) MiB travel (64 MiB at most)"
if (( wheels + tree > 64 * 1048576 )); then
    echo "error: more than the 64 MiB that travels to the GPU machine" >&2
    exit 1
fi
