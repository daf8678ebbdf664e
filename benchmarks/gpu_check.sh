#!/usr/bin/env bash
# The GPU path in one run of under 8 minutes:  bash benchmarks/gpu_check.sh
#
#   1. the test suite's GPU tests (pytest -m gpu: CUDA forward/backward = CPU, a mixed-precision step);
#   2. training steps/s and peak memory: RVT-T/S/B at Gen1 size (240x304), RVT-S at 1Mpx/2 (360x640);
#   3. inference latency at batch 1: RVT-B at Gen1 size (RVT reports 10.2 ms on a T4);
#   4. a short train stage on CPU and on the GPU with the same params (fp32): losses compared
#      step by step against a stated tolerance;
#   5. pseudolabel frames/s (1 and 2 processes, TTA passes in turn and batched) with the model of 4.
#
# Without CUDA it says so, skips 2 and 3 and the GPU half of 4, and runs the rest on the CPU,
# small (so CI can check that the script works). Results go to $OUT/gpu_check.txt when OUT is
# set, else to a temporary folder (printed at the end). Needs the repository and its .venv only:
# the data is a small synthetic dataset made here. Exit status: the number of failed parts.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export PYTHONPATH=$ROOT/src LEOD_TRACKING=0 PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/gpu_check.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
: >"$RESULTS"
FAILED=0

log() { echo "$*" | tee -a "$RESULTS"; }
part() {  # part NAME TIMEOUT_S CMD...: run one part, its output teed into the results
    local name=$1 limit=$(($2 * SLACK)) start status
    shift 2
    start=$(date +%s)
    log ""
    log "== $name"
    timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    status=${PIPESTATUS[0]}
    log "-- $name: exit status $status, $(($(date +%s) - start)) s"
    [ "$status" -eq 0 ] || FAILED=$((FAILED + 1))
}

if ! CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))"); then
    echo "error: $PY cannot import torch; create .venv (see README) or set PYTHON" >&2
    exit 2
fi
CPUS=$(getconf _NPROCESSORS_ONLN)
log "gpu_check $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo n/a), $CPUS CPUs"
"$PY" -c "
import torch
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device visible')
" 2>&1 | tee -a "$RESULTS"
# the dataset: training sequences x seconds of the synthetic preset; the parts' time limits
# add up to 8 minutes on a GPU machine (SLACK: a CPU, maybe a shared one, gets 5 times longer)
if [ "$CUDA" = 1 ]; then
    DEVICE=cuda SEQS=8 SECONDS_EACH=3 STEPS=10 SLACK=1
else
    DEVICE=cpu SEQS=1 SECONDS_EACH=1 STEPS=4 SLACK=5
    log "NO CUDA: parts 2 and 3 and the GPU half of part 4 are skipped; the rest runs small on the CPU"
fi

"$PY" - "$WORK" "$STEPS" "$SEQS" "$SECONDS_EACH" <<'PYEOF' || { log "error: could not write the check's params"; exit 1; }
import sys, yaml
work, steps, seqs, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
p = yaml.safe_load(open("params.yaml"))
p["synthetic"].update(sequences={"train": seqs, "val": 1, "test": 1}, duration_s=seconds)
p["train"].update(steps=steps, eval_every=steps, checkpoint_every=steps, log_every=1, pct_start=0.5, amp=False)
p["selftrain"]["round_steps"] = None  # rounds may not outlast train.steps
for device in ("cpu", "cuda"):
    p["train"]["device"] = device
    yaml.safe_dump(p, open(f"{work}/params_{device}.yaml", "w"), sort_keys=False)
PYEOF
P=$WORK/params_cpu.yaml
part "0. the data (synthesize, preprocess, subsample)" 60 bash -c "
    '$PY' stages/synthesize.py --params $P --out $WORK/raw --no-progress >/dev/null &&
    '$PY' stages/preprocess.py --params $P --raw $WORK/raw --out $WORK/pre --metrics $WORK/pre.json --no-progress &&
    '$PY' stages/subsample.py --params $P --data $WORK/pre --out $WORK/split.json --metrics $WORK/sub.json"

part "1. GPU tests (pytest -m gpu)" 60 "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py

if [ "$CUDA" = 1 ]; then
    part "2. training steps/s and peak memory (batch 2 x 5 steps, bf16/fp16 autocast)" 120 bash -c "
        '$PY' benchmarks/bench_model.py --device cuda --modes train --presets tiny,small,base \
            --resolutions gen1 --repeats 10 &&
        '$PY' benchmarks/bench_model.py --device cuda --modes train --presets small --resolutions 1mpx --repeats 10"
    part "3. inference latency, batch 1 (RVT: RVT-B on Gen1 10.2 ms on a T4)" 40 \
        "$PY" benchmarks/bench_model.py --device cuda --modes infer --presets base --resolutions gen1 --repeats 20
else
    log ""
    log "== 2. and 3. skipped: no CUDA device"
fi

train() {  # train DEVICE: the train stage with the check's params on DEVICE
    "$PY" stages/train.py --params "$WORK/params_$1.yaml" --name r0 --data "$WORK/pre" --split "$WORK/split.json" \
        --model "$WORK/model_$1" --ckpt "$WORK/ckpt_$1" --metrics "$WORK/train_$1.json" --curves "$WORK/curves_$1" \
        --no-progress
}
compare_losses() {  # the per-step losses of the CPU and GPU runs within the stated tolerance
    "$PY" - "$WORK" <<'PYEOF'
import csv, sys
work = sys.argv[1]
read = lambda d: [float(r["loss"]) for r in csv.DictReader(open(f"{work}/curves_{d}/train.csv"))]
cpu, gpu = read("cpu"), read("cuda")
# fp32 on both (amp off); cuDNN's TF32 convolutions and other summation orders differ by ~1e-3
# relative per step, and AdamW carries the difference on: 2 % over the short run
TOL = 0.02
rel = [abs(g - c) / abs(c) for c, g in zip(cpu, gpu)]
for step, (c, g, r) in enumerate(zip(cpu, gpu, rel), 1):
    print(f"step {step:3d}: CPU loss {c:.6f}  GPU loss {g:.6f}  relative difference {r:.2e}")
ok = len(cpu) == len(gpu) > 0 and max(rel) <= TOL
print(f"max relative difference {max(rel):.2e}: {'within' if ok else 'OUTSIDE'} the tolerance {TOL}")
sys.exit(0 if ok else 1)
PYEOF
}
export PY WORK
export -f train compare_losses
if [ "$CUDA" = 1 ]; then
    part "4. the same short training on CPU and GPU (fp32, $STEPS steps)" 100 \
        bash -c 'train cpu && train cuda && compare_losses'
    MODEL=$WORK/model_cuda
else
    part "4. short training on the CPU only ($STEPS steps; no GPU to compare with)" 100 \
        bash -c 'train cpu && cat "$WORK/curves_cpu/train.csv"'
    MODEL=$WORK/model_cpu
fi

part "5. pseudolabel frames/s ($DEVICE)" 100 "$PY" benchmarks/bench_pseudolabel.py --params "$P" \
    --data "$WORK/pre" --split "$WORK/split.json" --model "$MODEL" --sequences "$SEQS" --device "$DEVICE" \
    --threads "$CPUS"

log ""
log "gpu_check: $FAILED part(s) failed; results in $RESULTS"
exit "$FAILED"
