"""The C fuzz driver (>= 1000 fuzzed shapes, odd M/N/K, K up to 4096, extreme values) in every build."""
import subprocess

import pytest

from squat.kernels.build import build
import shutil

needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "make")),
    reason="needs gcc-aarch64-linux-gnu and qemu-user (apt-get install -y gcc-aarch64-linux-gnu qemu-user)")

ITERS = 1200


def _run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"PASS {ITERS} fuzzed shapes"), last
    return res.stdout


def test_fuzz_simde(lib):
    _run([str(build("x86-simde" if lib.target == "x86-simde" else "aarch64-native") / "squat_test"), "--iters", str(ITERS)])


@needs_qemu
@pytest.mark.parametrize("cpu", ["cortex-a76", "max"])
def test_fuzz_qemu(cpu):
    out = _run(["qemu-aarch64", "-cpu", cpu, str(build("aarch64-cross") / "squat_test"), "--iters", str(ITERS)])
    # i8mm kernels are skipped on the A76 model and exercised on -cpu max
    assert ("neoni8mm" in out) and (("unavailable" in out) == (cpu == "cortex-a76"))
