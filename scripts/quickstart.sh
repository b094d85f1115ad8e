#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default text:
#   1. pretrain the FP teacher (tiny LLaMA)
# and print where everything went. Extra arguments go to every squat-train call (e.g. trainer.max_steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
stamp=$(date +%Y-%m-%d_%H-%M-%S)
root=outputs/quickstart/$stamp
.venv/bin/squat-train hydra.run.dir="$root/teacher" "$@"
echo
echo "== squat quickstart done: outputs in $root =="
cat "$root/teacher/summary.md"
