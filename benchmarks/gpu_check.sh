#!/usr/bin/env bash
# Everything vgbench measures on a GPU, in one command; sized to end within 10 minutes on
# an H100/H200 (each step has its own time cap, below; a capped step is reported, and the
# next one runs).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: vg-out/gpu-check in the repo)
#
# On a machine where torch sees no CUDA device it writes OUT_DIR/env.txt and stops at once
# (exit 2), saying so: nothing is measured on the CPU by mistake.
#
# OUT_DIR afterwards:
#   env.txt             GPU (nvidia-smi), torch and CUDA versions, the Python packages
#   unit.log            pytest tests -n 8 -rfEs: every unit test, the GPU ones included
#   baseline.log        speed.py --remedy baseline --device cuda --epochs 10: the baseline's
#                       epoch with the CUDA graph and eagerly, side by side, and its floor
#   group.log           speed.py --group 5 --device cuda --epochs 3: each group of the course
#                       suite at 5 seeds (a remedy's seeds and the remedies that differ only in
#                       init or learning rate, one CUDA graph per group) against its members
#                       one by one, ms per epoch side by side
#   suite-batched.log   pytest benchmarks -n 4 --vg-device cuda --vg-seeds 5 --vg-batch-seeds
#                       on: the course suite in groups, full budget (the wall time the README
#                       quotes, target <= 60 s); its vg-out in suite-batched/
#   suite.log           the same one by one (CUDA graphs), at --vg-epochs 10 (enough for the
#                       epoch times; its checks, meant for the full budget, fail); its vg-out
#                       in suite/
#   speed.log           speed.py --all --device cuda: every remedy's epoch against its GEMM
#                       floor, graph and eager side by side
#   times.tsv           step, exit status (124: hit its cap), wall seconds, cap seconds
#   summary.txt         what the README's speed section quotes, pulled from the above: each
#                       suite's median epoch per remedy, its self-checks, the unit failures
# Caps (seconds) can be changed through the environment: GC_UNIT, GC_BASELINE, GC_GROUP,
# GC_BATCHED, GC_SUITE, GC_SPEED. A step stopped at its cap is interrupted (SIGINT), so pytest still
# prints its failures and summary.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/vg-out/gpu-check}  # vg-out/ is git-ignored: nothing new in the work tree
py=${PYTHON:-$(command -v python || command -v python3)}
mkdir -p "$out"
cd "$root" || exit 1

{
  echo "# gpu_check $(date -u +%FT%TZ) in $root"
  "$py" - <<'PY'
import platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available:", torch.cuda.is_available(),
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$py" -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|numpy|pytest|pytest-benchmark|pytest-xdist|tabulate|matplotlib) "
} >"$out/env.txt" 2>&1

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  msg="gpu_check: torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) sees no CUDA device, so nothing was measured (see $out/env.txt). Run it on a machine with an NVIDIA GPU and driver; on the CPU use benchmarks/speed.py and pytest benchmarks -n auto."
  echo "$msg" | tee -a "$out/env.txt" >&2
  exit 2
fi

printf "step\tstatus\twall_s\tcap_s\n" >"$out/times.tsv"
step() {  # step NAME CAP_SECONDS LOG COMMAND...
  local name=$1 cap=$2 log=$3
  shift 3
  echo "gpu_check: $name (cap ${cap} s) ..." >&2
  local t0=$SECONDS
  PYTHONUNBUFFERED=1 timeout -s INT --kill-after=20 "$cap" "$@" >"$log" 2>&1
  local rc=$?
  printf "%s\t%s\t%s\t%s\n" "$name" "$rc" "$((SECONDS - t0))" "$cap" >>"$out/times.tsv"
  [ "$rc" = 124 ] && echo "gpu_check: $name hit its ${cap} s cap" | tee -a "$log" >&2
  return 0
}

step unit "${GC_UNIT:-110}" "$out/unit.log" "$py" -m pytest tests -n 8 -rfEs -p no:cacheprovider
step baseline "${GC_BASELINE:-40}" "$out/baseline.log" \
  "$py" benchmarks/speed.py --remedy baseline --device cuda --epochs 10
step group "${GC_GROUP:-60}" "$out/group.log" \
  "$py" benchmarks/speed.py --group 5 --device cuda --epochs 3
step suite-batched "${GC_BATCHED:-150}" "$out/suite-batched.log" \
  "$py" -m pytest benchmarks -n 4 --vg-device cuda --vg-seeds 5 --vg-batch-seeds on \
  -p no:cacheprovider --vg-out "$out/suite-batched"
step suite "${GC_SUITE:-100}" "$out/suite.log" \
  "$py" -m pytest benchmarks -n 4 --vg-device cuda --vg-seeds 5 --vg-epochs 10 \
  -p no:cacheprovider --vg-out "$out/suite"
step speed "${GC_SPEED:-90}" "$out/speed.log" "$py" benchmarks/speed.py --all --device cuda

"$py" benchmarks/gpu_summary.py "$out" >"$out/summary.txt" 2>&1
cat "$out/summary.txt"
