#!/usr/bin/env bash
# The teacher at real size on a GPU (issue 10, item 5): the five diffusion denoisers of the paper at
# full depth and native resolution, random weights (no download, no internet needed), bf16, the
# paper's stride 100 (11 inversion steps), plus the student's latency at the same size.
#
#   scripts/gpu_rehearsal.sh                 # every row (estimated ~10 min on one H100/H200-class GPU; not yet run)
#   scripts/gpu_rehearsal.sh --only sd3,flux # some families
#
# Writes results/benchmarks/teacher_scale_gpu.{json,csv} (same row fields as the committed CPU
# rows in teacher_scale.json; docs/teacher.md "Cost at real size" says what each field means).
# Needs ~60 GB of GPU memory for FLUX.1 (12B parameters, initialised in fp32 on the GPU, then bf16)
# and the project's CUDA environment (envs/, PyTorch with CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TRACE_EDGES_NO_PROGRESS=1
python - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_rehearsal.sh: torch sees no CUDA device (torch %s); run it on a GPU machine with "
             "the CUDA environment" % torch.__version__)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
python benchmarks/bench_teacher_scale.py --preset gpu --note "scripts/gpu_rehearsal.sh on $(hostname)" "$@"
