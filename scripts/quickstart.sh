#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default text (offline, ~10 min on 2 cores):
#   1. pretrain the FP teacher (tiny LLaMA, bf16 autocast);
#   2. QAT of the Squat student at W4 A4:8 (half the tokens at 8-bit) from that teacher, with distillation,
#      entropy and distribution losses;
#   3. after training, the KernelBenchmark callback exports the integer model, builds native_kernels, checks
#      them bit for bit on the model's weights and activations and benchmarks every linear shape.
# Extra arguments go to both squat-train calls (e.g. trainer.max_steps=50 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
root=outputs/quickstart/$(date +%Y-%m-%d_%H-%M-%S)
.venv/bin/squat-train hydra.run.dir="$root/teacher" trainer.precision=bf16-mixed "$@"
.venv/bin/squat-train hydra.run.dir="$root/student" stage=qat stage.teacher="$root/teacher/model" \
  quant=w4a4_8 method=squat trainer.max_steps=200 trainer.val_check_interval=100 "$@"
echo
echo "================ squat quickstart: outputs in $root ================"
cat "$root/teacher/summary.md" "$root/student/summary.md"
[ -f "$root/student/kernel_bench.md" ] && echo "kernel tables: $root/student/kernel_bench.md"
