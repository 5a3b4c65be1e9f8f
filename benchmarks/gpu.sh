#!/usr/bin/env bash
# Everything asc-bench should check on a GPU, in one run of under 5 minutes:
#   1. CUDA Kaldi fbank vs the CPU one (tolerance)
#   2. autocast bf16 / fp16 embeddings vs float32, BEATs and AudioMAE (declared tolerances)
#   3. BEATs and AudioMAE clips/s at batch 32 (10 s clips, fp32 and bf16)
#   4. with more than one GPU: `asc-bench run` under torchrun, 2 ranks on nccl, vs one process
# Tolerances and their reasons are in benchmarks/gpu_checks.py. Every check prints PASS/FAIL with its
# figures; the script exits 1 if any tolerance failed, 0 otherwise (skipped sections do not fail).
#
#   bash benchmarks/gpu.sh             # on a GPU machine (CUDA sections skip, clearly, without one)
#   bash benchmarks/gpu.sh --dry-run   # no GPU: run every section on the CPU with 2-layer models, to
#                                      # check the script itself (its figures are not GPU figures)
# Needs only the repository and its venv (.venv/bin/python, or $PYTHON); inputs are generated and the
# encoders have random weights, so nothing is downloaded.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
CHECKS="benchmarks/gpu_checks.py"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
SECTION_TIMEOUT="${SECTION_TIMEOUT:-150}"     # seconds; the four sections stay well under 5 minutes
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1

failed=()
skipped=()
section() { printf '\n==== %s ====\n' "$1"; }
# run NAME CMD...: one check under a timeout; a non-zero exit (failed tolerance, crash, timeout) is a FAIL
run() {
    local name="$1"; shift
    local start=$SECONDS rc=0
    timeout "$SECTION_TIMEOUT" "$@" || rc=$?
    if (( rc != 0 )); then
        (( rc == 124 )) && echo "FAIL  $name: timed out after ${SECTION_TIMEOUT} s"
        echo "FAIL  $name (exit $rc)"
        failed+=("$name")
    fi
    echo "($name: $((SECONDS - start)) s)"
}

section "environment"
"$PY" "$CHECKS" env | tee "$WORK/env.txt"
GPUS="$(sed -n 's/^cuda_devices=\([0-9]*\).*/\1/p' "$WORK/env.txt")"
if (( GPUS == 0 && DRY == 0 )); then
    echo "SKIP  no CUDA device: sections 1-4 need one (bash benchmarks/gpu.sh --dry-run checks the script on the CPU)"
    exit 0
fi
DEVICE=cuda
TINY=()
if (( GPUS == 0 )); then
    DEVICE=cpu
    TINY=(--tiny)
    echo "DRY RUN on the CPU with 2-layer models: the checks run, the figures are not GPU figures"
fi

section "1. Kaldi fbank, $DEVICE vs cpu"
run fbank "$PY" "$CHECKS" fbank --device "$DEVICE"

section "2. autocast bf16/fp16 vs float32 embeddings ($DEVICE)"
run autocast "$PY" "$CHECKS" autocast --device "$DEVICE" "${TINY[@]}"

section "3. throughput at batch 32 ($DEVICE)"
if (( DRY )); then
    run throughput "$PY" "$CHECKS" throughput --device "$DEVICE" "${TINY[@]}" --seconds 2 --repeat 2
else
    run throughput "$PY" "$CHECKS" throughput --device "$DEVICE" --batch 32 --seconds 10 --repeat 5
fi

section "4. torchrun extraction, 2 ranks vs 1 process"
if (( GPUS < 2 && DRY == 0 )); then
    echo "SKIP  torchrun nccl: $GPUS GPU(s) here, the 2-rank nccl check needs 2"
    skipped+=(torchrun)
else
    # With 2 GPUs: nccl on cuda:0/cuda:1. Dry run: the same commands on gloo/CPU.
    OPTS=(--encoder beats --random-init --encoder-option layers=2 --task demo-5way1shot
          --data-root "$WORK/data" --device "$DEVICE" --param episodes=10 --shard-size 32 --json)
    key_of() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["embedding"]["cache_key"])' "$1"; }
    one_rc=0; two_rc=0
    timeout "$SECTION_TIMEOUT" "$PY" -m asc_bench run "${OPTS[@]}" --cache-dir "$WORK/one" \
        --results-dir "$WORK/r1" > "$WORK/one.json" || one_rc=$?
    timeout "$SECTION_TIMEOUT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
        -m asc_bench run "${OPTS[@]}" --cache-dir "$WORK/two" --results-dir "$WORK/r2" > "$WORK/two.json" || two_rc=$?
    if (( one_rc != 0 || two_rc != 0 )); then
        echo "FAIL  torchrun: 1 process exit $one_rc, 2 ranks exit $two_rc"
        failed+=(torchrun)
    else
        KEY="$(key_of "$WORK/one.json")"
        if [[ "$(key_of "$WORK/two.json")" != "$KEY" ]]; then
            echo "FAIL  torchrun: 2 ranks wrote another cache key than 1 process"
            failed+=(torchrun)
        else
            run torchrun "$PY" "$CHECKS" same-cache "$WORK/one" "$WORK/two" "$KEY" \
                --backend "$([[ $DEVICE == cuda ]] && echo nccl || echo gloo)"
        fi
    fi
fi

section "summary"
(( SECONDS > 300 )) && echo "WARN  took $SECONDS s, more than the 5 minutes this script is sized for"
echo "device=$DEVICE gpus=$GPUS dry_run=$DRY failed=${#failed[@]} skipped=${#skipped[@]} seconds=$SECONDS"
if (( ${#failed[@]} )); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed${skipped[*]:+ (skipped: ${skipped[*]})}"
