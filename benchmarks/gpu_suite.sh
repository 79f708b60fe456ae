#!/usr/bin/env bash
# One command for a GPU machine that has torch + Triton and the project's files (no SGLang, FlashInfer,
# pytest or internet needed): the kernels against their references, the copy ceilings, and the decode
# step's latency table; every step's output and one results.json in the output folder.
#
#   bash benchmarks/gpu_suite.sh                   # CUDA machine: < 8 min on an H200; writes gpu_suite_out/
#   bash benchmarks/gpu_suite.sh --out DIR         # (or $OUT when set, e.g. the device tool's folder)
#   bash benchmarks/gpu_suite.sh --quick --out DIR # CPU smoke run under TRITON_INTERPRET=1: NOT GPU numbers
#
# Steps, in order (each teed to DIR/<step>.txt, its rows in DIR/<step>.json, all merged into DIR/results.json):
#   machine        card, CUDA / torch / Triton / Python versions, date (machine.txt, machine.json)
#   kernel_check   benchmarks/gpu_kernel_check.py: every Triton kernel vs its torch reference, fp32/fp16/bf16
#   copy_bandwidth benchmarks/gpu_copy_bandwidth.py: D2D copy, pinned H2D whole and per extent / run / one copy
#   decode_step    benchmarks/gpu_decode_step.py: decode attention path, 32K-256K x bs 1/8 x budget 2K/4K
# Python: $PYTHON, else .venv/bin/python when it imports torch, else python3. Without CUDA (and without
# --quick) it stops before measuring anything: exit 2 and a message on stderr. Exit 1 names failed steps.
set -euo pipefail

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-gpu_suite_out}"
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="${2:?gpu_suite: --out needs a folder}"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_suite: unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
elif [ -x "$root/.venv/bin/python" ] && "$root/.venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  py="$root/.venv/bin/python"
else
  py=python3
fi

if [ "$quick" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""  # the CPU, even on a GPU machine: a smoke run only
else
  unset TRITON_INTERPRET
  if ! why="$("$py" -c 'import torch, sys
if not torch.cuda.is_available():
    print(f"torch {torch.__version__}: torch.cuda.is_available() is False"); sys.exit(1)' 2>&1)"; then
    echo "gpu_suite: no CUDA device (${why##*$'\n'}; python: $py): nothing measured." >&2
    echo "gpu_suite: run it on a CUDA machine with torch + Triton, or pass --quick for a CPU smoke run" \
         "(its numbers are not GPU numbers)." >&2
    exit 2
  fi
fi

mkdir -p "$out"
cd "$root"
suite_start=$SECONDS
failed=()

run_step() {  # run_step NAME TIMEOUT_S COMMAND...: tee the output to $out/NAME.txt, remember a failure
  local name="$1" limit="$2"
  shift 2
  local started=$SECONDS
  echo "== $name: $*"
  local guard=()
  if command -v timeout >/dev/null 2>&1; then guard=(timeout "$limit"); fi
  set +e
  ${guard[@]+"${guard[@]}"} "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "== $name: exit $rc after $((SECONDS - started)) s"
  if [ "$rc" = 124 ]; then
    failed+=("$name (timed out after ${limit} s)")
  elif [ "$rc" != 0 ]; then
    failed+=("$name (exit $rc)")
  fi
}

quick_flag=()
if [ "$quick" = 1 ]; then quick_flag=(--quick); fi

run_step machine 60 "$py" - "$out" "$quick" <<'PY'
import json, os, platform, sys, time
from pathlib import Path
import torch
out, quick = Path(sys.argv[1]), sys.argv[2] == "1"
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "absent"
gpu = torch.cuda.is_available()
info = dict(
    card=torch.cuda.get_device_name(0) if gpu else "none: CPU smoke run, NOT GPU numbers",
    card_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1) if gpu else None,
    cuda=torch.version.cuda, torch=torch.__version__, triton=triton_version, python=platform.python_version(),
    date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), quick=quick, gpu_numbers=gpu and not quick,
    triton_interpret=os.environ.get("TRITON_INTERPRET", ""))
import importlib.metadata, importlib.util
info["sglang"] = importlib.metadata.version("sglang") if importlib.util.find_spec("sglang") else "absent"
try:  # the decode step adds FlashInfer rows only when this import works
    import flashinfer
    info["flashinfer"] = getattr(flashinfer, "__version__", "importable")
except Exception as e:  # absent, or present but broken
    info["flashinfer"] = f"not importable ({type(e).__name__})"
(out / "machine.json").write_text(json.dumps(info, indent=1) + "\n")
for key, value in info.items():
    print(f"{key}: {value}")
PY

run_step kernel_check 240 "$py" benchmarks/gpu_kernel_check.py ${quick_flag[@]+"${quick_flag[@]}"} --out "$out/kernel_check.json"
run_step copy_bandwidth 90 "$py" benchmarks/gpu_copy_bandwidth.py ${quick_flag[@]+"${quick_flag[@]}"} --out "$out/copy_bandwidth.json"

# the decode step's floor uses the D2D bandwidth just measured; it starts no new (N, bs) past the time left
copy=()
gbps="$("$py" -c 'import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print(next(r["gbps"] for r in rows if r["kind"] == "d2d"))' "$out/copy_bandwidth.json" 2>/dev/null || true)"
if [ -n "$gbps" ]; then copy=(--copy-gbps "$gbps"); fi
left=$((330 - (SECONDS - suite_start)))  # start no new (N, bs) after 5.5 min from the suite's start
if [ "$left" -lt 60 ]; then left=60; fi
hard=$((560 - (SECONDS - suite_start)))  # and stop it outright before the whole run passes ~9.5 min
if [ "$hard" -lt 120 ]; then hard=120; fi
run_step decode_step "$hard" "$py" benchmarks/gpu_decode_step.py ${quick_flag[@]+"${quick_flag[@]}"} ${copy[@]+"${copy[@]}"} \
  --time-limit-s "$left" --out "$out/decode_step.json"

"$py" - "$out" ${failed[@]+"${failed[@]}"} <<'PY'
import json, sys
from pathlib import Path
out, failed = Path(sys.argv[1]), sys.argv[2:]
def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
machine = load("machine")
results = dict(machine=machine, gpu_numbers=bool(machine and machine["gpu_numbers"]), failed_steps=failed,
               kernel_check=load("kernel_check"), copy_bandwidth=load("copy_bandwidth"), decode_step=load("decode_step"))
(out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
PY

echo "gpu_suite: $((SECONDS - suite_start)) s; results in $out/results.json"
if [ "$quick" = 1 ]; then echo "gpu_suite: --quick ran on the CPU: these numbers are NOT GPU numbers"; fi
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'gpu_suite: FAILED step: %s\n' "${failed[@]}" >&2
  exit 1
fi
