#!/usr/bin/env bash
# The GPU check of issue 15, one prepared script (under 5 minutes on one GPU):
#   1. the training-step table of `hfgd-lab bench --train` on CUDA (HFGD OS8/4/2,
#      SemanticFPN, smp FPN/UPerNet, batch 2x256^2 and 8x192^2), in float32;
#   2. the same with AMP (autocast, bfloat16);
#   3. the same with AMP and channels-last memory (models and input);
#   4. a 2-process DDP step (benchmarks/ddp_step.py under torchrun): timed, its gradient
#      checked against one process, the ranks' weights checked equal;
#   5. a summary of the ratios (gpu_check_summary.md).
# Everything it writes goes to --out (default docs/results/): speed_train_<tag>_*.json,
# ddp_step_<tag>.json, gpu_check_<tag>.log, gpu_check_summary_<tag>.md, <tag> = gpu or cpu.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --out "$OUT"    # elsewhere, e.g. where only $OUT comes back
#   bash benchmarks/gpu_check.sh --cpu --out /tmp/x   # dry run on CPU: every step, tiny sizes
#                                                # (tests/test_benchmarks_smoke.py runs it)
# Python: $PYTHON, else .venv/bin/python, else python3. Where hfgd-lab's dependencies are
# missing (a bare CUDA image: pydantic, segmentation-models-pytorch, ...), put their wheels
# in .whl/ (pip download --no-deps ...) and the script installs them into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=gpu
out=docs/results
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; shift ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (expected --cpu, --out DIR)" >&2; exit 2 ;;
  esac
done

py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! "$py" -c "import pydantic, timm, segmentation_models_pytorch, safetensors, yaml" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "gpu_check.sh: $py lacks hfgd-lab's dependencies (pydantic, timm," \
         "segmentation-models-pytorch, safetensors, pyyaml) and there is no .whl/ folder" >&2
    exit 2
  fi
fi

if [ "$mode" = gpu ]; then
  tag=gpu; device=cuda
  sizes=(2x256 8x192); repeats=20; warmup=5; classes=150
  models=(hfgd_os8 hfgd_os4 hfgd_os2 semantic_fpn smp_fpn smp_upernet)
  ddp=(--device cuda --amp --batch 8 --size 192 --num-classes 150 --steps 20 --warmup 5)
  if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device visible to $py (use --cpu for the dry run)" >&2
    exit 2
  fi
else
  tag=cpu; device=cpu
  sizes=(2x64); repeats=1; warmup=0; classes=5
  models=(hfgd_os4 smp_fpn)
  ddp=(--device cpu --amp --batch 2 --size 64 --num-classes 5 --steps 1 --warmup 0)
fi

mkdir -p "$out"
logf="$out/gpu_check_$tag.log"
: > "$logf"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$logf"; }
start=$(date +%s)

log "mode $mode, python $py, output $out"
"$py" - <<'EOF' 2>&1 | tee -a "$logf"
import platform, torch
print(f"torch {torch.__version__}, python {platform.python_version()}, "
      f"CUDA {torch.version.cuda}, devices: "
      + (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
         or "none"))
EOF

common=(--train --device "$device" --sizes "${sizes[@]}" --repeats "$repeats"
        --warmup "$warmup" --num-classes "$classes" --models "${models[@]}" --markdown --quiet)
for variant in fp32 amp amp_cl; do
  extra=()
  case "$variant" in
    amp) extra=(--amp) ;;
    amp_cl) extra=(--amp --channels-last) ;;
  esac
  log "training step, $variant"
  "$py" -m hfgd_lab.bench "${common[@]}" "${extra[@]}" \
    --json "$out/speed_train_${tag}_${variant}.json" 2>&1 | tee -a "$logf"
done

log "DDP step, 2 processes"
"$py" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_step.py \
  "${ddp[@]}" --json "$out/ddp_step_$tag.json" 2>&1 \
  | { grep -v "UserWarning\|strides()\|bucket_view\|return Variable\|^\*\*\*\|OMP_NUM_THREADS" || true; } \
  | tee -a "$logf"

log "summary"
"$py" - "$out" "$tag" <<'EOF' 2>&1 | tee "$out/gpu_check_summary_$tag.md" | tee -a "$logf"
import json, sys
from pathlib import Path
out, tag = Path(sys.argv[1]), sys.argv[2]
print(f"# GPU check ({tag}): training step, ratio to smp FPN (median step time)\n")
for variant in ("fp32", "amp", "amp_cl"):
    r = json.loads((out / f"speed_train_{tag}_{variant}.json").read_text())
    for size, s in r["sizes"].items():
        rows = s["models"]
        cells = ", ".join(f"{m['label']} {m['wall']['step_ms']:.1f} ms"
                          + (f" ({m['wall']['ratio']:.2f}x)" if "ratio" in m["wall"] else "")
                          for m in rows.values())
        print(f"- {variant}, batch {size}: {cells}")
d = json.loads((out / f"ddp_step_{tag}.json").read_text())
print(f"- DDP {d['world_size']} ranks ({d['backend']}, {d['device']}): step "
      f"{max(d['step_ms_per_rank']):.1f} ms, {d['images_per_s']:.1f} img/s, gradient vs one "
      f"process rel. error {d['grad_rel_error_vs_one_process']:.1e}, weights equal: "
      f"{d['max_weight_diff_between_ranks'] == 0.0}")
EOF
log "done in $(( $(date +%s) - start )) s"
