"""Build ``native_kernels`` with make into a cache directory keyed by a hash of the sources, compiler and flags.

``build("x86-simde")`` returns the output directory holding ``libsquat_kernels.so``, ``squat_test`` and
``squat_bench``; a second call with unchanged sources does not invoke make. Cache root: ``$SQUAT_KERNEL_CACHE`` or
``~/.cache/squat/kernels``. A missing toolchain raises :class:`ToolchainMissing` with a one-line install command.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

PRESETS = ("x86-simde", "aarch64-cross", "aarch64-native")
_APT = {
    "x86-simde": "apt-get install -y gcc make libsimde-dev",
    "aarch64-native": "apt-get install -y gcc make",
    "aarch64-cross": "apt-get install -y gcc-aarch64-linux-gnu make qemu-user",
    "plugin": "apt-get install -y gcc make qemu-user",
}


class ToolchainMissing(RuntimeError):
    """A compiler, header or emulator needed for a preset is absent. The message is one line with the fix."""


def native_dir() -> Path:
    env = os.environ.get("SQUAT_NATIVE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "native_kernels"


def cache_root() -> Path:
    env = os.environ.get("SQUAT_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "squat" / "kernels"


def host_preset() -> str:
    return "aarch64-native" if platform.machine() in ("aarch64", "arm64") else "x86-simde"


def _compiler(preset: str) -> str:
    return "aarch64-linux-gnu-gcc" if preset == "aarch64-cross" else "gcc"


def check_toolchain(preset: str) -> None:
    """Raise :class:`ToolchainMissing` if anything the preset needs is absent."""
    need = ["make", "gcc", _compiler(preset)]
    if preset == "aarch64-cross":
        need.append("qemu-aarch64")
    for tool in need:
        if shutil.which(tool) is None:
            raise ToolchainMissing(f"{tool} not found for kernel preset {preset}; install with: {_APT[preset]}")
    if preset == "x86-simde" and not Path("/usr/include/simde/arm/neon.h").exists():
        raise ToolchainMissing(f"SIMDe headers not found for kernel preset x86-simde; install with: {_APT[preset]}")


def no_aslr(cmd: list[str]) -> list[str]:
    """``cmd`` under ``setarch -R`` where it exists: without address randomisation libc's alignment-dependent paths
    (memcpy) run identically, so instruction counts repeat exactly."""
    return ["setarch", platform.machine(), "-R", *cmd] if shutil.which("setarch") else cmd


def qemu_available() -> bool:
    try:
        check_toolchain("aarch64-cross")
        return True
    except ToolchainMissing:
        return False


def _tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def source_hash(preset: str) -> str:
    """Hash of every file under native_kernels/ (Makefile included), the compiler version, and the host CPU
    flags for presets compiled with -march=native."""
    h = hashlib.sha256()
    root = native_dir()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "build" not in p.relative_to(root).parts and p.suffix in (".c", ".h", ".md", "") :
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    h.update(preset.encode())
    h.update(_tool_version(_compiler(preset)).encode())
    if preset == "x86-simde":
        try:
            flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
            h.update(flags.encode())
        except (OSError, StopIteration):
            h.update(platform.processor().encode())
    return h.hexdigest()[:16]


def _make(build_dir: Path, args: list[str], what: str) -> None:
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = build_dir / ".lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = build_dir / f".complete-{what}"
        if done.exists():
            return
        cmd = ["make", "-s", "-j2", "-f", str(native_dir() / "Makefile"), f"BUILD_DIR={build_dir}", *args]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"native kernel build failed ({' '.join(cmd)}):\n{res.stdout}\n{res.stderr}")
        done.touch()


def build(preset: str | None = None) -> Path:
    """Build (or reuse) a preset; returns ``<cache>/<preset>-<hash>/<preset>``."""
    preset = preset or host_preset()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
    check_toolchain(preset)
    build_dir = cache_root() / f"{preset}-{source_hash(preset)}"
    _make(build_dir, [f"PRESET={preset}", "all"], preset)
    return build_dir / preset


def build_plugin() -> Path:
    """Build the qemu instruction-count plugin; returns the path of ``libinsncount.so``."""
    if shutil.which("gcc") is None or shutil.which("qemu-aarch64") is None:
        raise ToolchainMissing(f"gcc or qemu-aarch64 not found for the insn-count plugin; install with: {_APT['plugin']}")
    build_dir = cache_root() / f"plugin-{source_hash('plugin')}"
    _make(build_dir, ["plugin"], "plugin")
    return build_dir / "tools" / "libinsncount.so"
