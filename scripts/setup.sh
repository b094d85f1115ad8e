#!/usr/bin/env bash
# Idempotent setup: a .venv with the CPU build of torch and squat (editable), plus the Debian toolchains the
# kernel needs (aarch64 cross compiler, qemu-user, SIMDe) when this user can install them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch is pinned first and exactly: a looser request pulls a multi-GB CUDA build on CPU-only machines.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
# sweep: the Optuna sweeper and the submitit (SLURM) launcher, exercised by the slow tests
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,lmeval,sweep]"

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -f /usr/include/simde/arm/neon.h ] || need+=(libsimde-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
  else
    echo "note: kernel toolchains missing (${need[*]}); install with: sudo apt-get install -y ${need[*]}" >&2
  fi
fi
