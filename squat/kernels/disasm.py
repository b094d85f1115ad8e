"""Inner-loop statistics of the aarch64 kernels, read from their disassembly (``aarch64-linux-gnu-objdump -d``).

For every kernel object of the ``aarch64-cross`` build: the innermost loop with the most multiply-accumulates per
iteration (the full register tile of a prefill kernel, the main loop of a GEMV), its instruction count, the MACs
it performs, instructions per 1024 MACs, and the spills (vector loads/stores addressed off ``sp``) inside it and
in the whole kernel. MACs are useful GEMM multiply-accumulates: ``fmla .8h`` 8, ``fmla .4s`` 4, ``sdot`` 16,
``smmla`` 32, ``smull/smlal`` 8 (``.8h``) or 4 (``.4s``), times a per-kernel factor for MKMP, whose 16-bit
lanes carry two 4-bit weights (x2) and whose W4A8 form needs two passes (x1).

    python -m squat.kernels.disasm              # the inner-loop table in docs/kernels.md
    python -m squat.kernels.disasm --breakdown  # + where each row's instructions go, per LLaMA-58M token
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from squat.kernels.build import no_aslr

_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
_FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_BRANCH = re.compile(r"^(b\.\w+|b|cbz|cbnz|tbz|tbnz)$")
_SPILL = re.compile(r"^(str|ldr|stp|ldp|stur|ldur)$")
# MKMP: a 16-bit lane holds the 4-bit weights of two columns; the W4A8 variant runs two nibble passes.
MAC_FACTOR = {"gemm_qs4_qs4x2_mkmp_4x8_neon": 2.0, "gemm_qs8_qs4x2_mkmp_4x8_neon": 1.0}


def insn_macs(mnemonic: str, ops: str) -> int:
    if mnemonic == "fmla":
        return 8 if ".8h" in ops.split(",")[0] else 4 if ".4s" in ops.split(",")[0] else 0
    if mnemonic == "sdot":
        return 16
    if mnemonic == "smmla":
        return 32
    if mnemonic in ("smull", "smlal", "smull2", "smlal2"):
        d = ops.split(",")[0]
        return 8 if ".8h" in d else 4 if ".4s" in d else 0
    return 0


def is_spill(mnemonic: str, ops: str) -> bool:
    """A vector (q/d/s register) load or store addressed off sp."""
    if not _SPILL.match(mnemonic) or "[sp" not in ops:
        return False
    regs = ops.split("[")[0]
    return bool(re.search(r"\b[qds]\d+\b", regs))


def is_callee_save(mnemonic: str, ops: str) -> bool:
    """The AAPCS64 save/restore of d8-d15 in a prologue/epilogue (not a spill)."""
    return mnemonic in ("stp", "ldp", "str", "ldr") and bool(re.match(r"d(8|9|1[0-5])\b", ops)) and "[sp" in ops


@dataclass
class LoopStat:
    kernel: str
    function: str
    insns: int
    macs: float
    spills: int  # vector sp loads/stores inside the loop
    body: dict  # mnemonic -> count inside the loop

    @property
    def insn_per_1024_macs(self) -> float:
        return 1024.0 * self.insns / self.macs if self.macs else float("nan")


@dataclass
class KernelStat:
    kernel: str
    loop: LoopStat | None
    function_spills: int  # vector sp loads/stores anywhere in the kernel's functions, callee-saves excluded
    callee_saves: int


def disassemble(obj: Path) -> dict[str, list[tuple[int, str, str]]]:
    tool = shutil.which("aarch64-linux-gnu-objdump") or "objdump"
    out = subprocess.run([tool, "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True, check=True).stdout
    funcs: dict[str, list] = {}
    cur = None
    for line in out.splitlines():
        m = _FUNC.match(line.strip())
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = _INSN.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2), m.group(3).split("//")[0].strip()))
    return funcs


def innermost_loops(insns: list[tuple[int, str, str]]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of loops closed by a backward branch that contain no other loop."""
    idx = {a: i for i, (a, _, _) in enumerate(insns)}
    loops = []
    for i, (addr, mn, ops) in enumerate(insns):
        if _BRANCH.match(mn):
            tgt = re.search(r"\b([0-9a-f]+) <", ops)
            if tgt and int(tgt.group(1), 16) <= addr and int(tgt.group(1), 16) in idx:
                loops.append((idx[int(tgt.group(1), 16)], i))
    return [l for l in loops if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]


def kernel_stat(obj: Path) -> KernelStat:
    name = obj.stem
    factor = MAC_FACTOR.get(name, 1.0)
    best, fspills, saves = None, 0, 0
    for fname, insns in disassemble(obj).items():
        for _, mn, ops in insns:
            if is_callee_save(mn, ops):
                saves += 1
            elif is_spill(mn, ops):
                fspills += 1
        for a, b in innermost_loops(insns):
            body = insns[a: b + 1]
            macs = factor * sum(insn_macs(mn, ops) for _, mn, ops in body)
            if macs and (best is None or macs > best.macs or (macs == best.macs and len(body) < best.insns)):
                counts: dict[str, int] = {}
                for _, mn, _ in body:
                    counts[mn] = counts.get(mn, 0) + 1
                best = LoopStat(name, fname, len(body), macs, sum(is_spill(mn, ops) for _, mn, ops in body), counts)
    return KernelStat(name, best, fspills, saves)


def kernel_stats(build_dir: Path | None = None) -> list[KernelStat]:
    """Statistics of every gemm object of the aarch64-cross build (built into the cache if needed)."""
    if build_dir is None:
        from squat.kernels.build import build

        build_dir = build("aarch64-cross")
    return [kernel_stat(p) for p in sorted((Path(build_dir) / "obj" / "gemm").glob("gemm_*.o"))]


def markdown(stats: list[KernelStat]) -> str:
    lines = ["| kernel | inner loop: instructions | MACs | instructions per 1024 MACs | MACs/instruction | "
             "spills in the loop | vector sp loads/stores in the kernel | loop body |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in stats:
        l = s.loop
        if l is None:
            continue
        body = ", ".join(f"{v} {k}" for k, v in sorted(l.body.items(), key=lambda kv: -kv[1]))
        lines.append(f"| `{s.kernel}` | {l.insns} | {l.macs:g} | {l.insn_per_1024_macs:.1f} | "
                     f"{l.macs / l.insns:.2f} | {l.spills} | {s.function_spills} | {body} |")
    return "\n".join(lines) + "\n"


def token_breakdown(labels=("FP16", "W8A8", "W4A8", "W4A4"), ms=(128, 1), cpu: str = "cortex-a76",
                    build_dir: Path | None = None) -> dict:
    """{M: {label: {part: instructions per token}}} over the LLaMA-58M linears (squat.kernels.bench shapes)."""
    from squat.kernels.bench import LLAMA58M_LAYER, LLAMA58M_LAYERS, _bench_args, variants

    out: dict = {}
    for m in ms:
        for lab in labels:
            tot: dict[str, float] = {}
            shapes: dict[tuple[int, int], int] = {}
            for _, n, k in LLAMA58M_LAYER:
                shapes[(n, k)] = shapes.get((n, k), 0) + 1
            for (n, k), times in shapes.items():
                args = _bench_args(variants()[lab]) + ["-m", str(m), "-n", str(n), "-k", str(k)]
                for part, c in call_breakdown(args, cpu, build_dir).items():
                    tot[part] = tot.get(part, 0) + c * times * LLAMA58M_LAYERS / m
            out.setdefault(str(m), {})[lab] = tot
    return out


_MERGE = {"activations: pack": "activations in: fp16 copy / fp32 quantize + pack",
          "activations: quantize + pack (fp32 in)": "activations in: fp16 copy / fp32 quantize + pack"}
_ORDER = ["inner MAC loop", "kernel: tile set-up, unpacking, stores / dequantization",
          "activations in: fp16 copy / fp32 quantize + pack", "call: checks, workspace, kernel choice", "other"]


def breakdown_markdown(bd: dict, cpu: str) -> str:
    lines = []
    for m, rows in bd.items():
        rows = {lab: _merged(r) for lab, r in rows.items()}
        parts = [p for p in _ORDER if any(r.get(p) for r in rows.values())]
        lines += [f"\n#### Where the instructions go, qemu-aarch64 -cpu {cpu}, M = {m} (Minsn per token, LLaMA-58M)\n",
                  "| path | " + " | ".join(parts) + " | total |", "|---|" + "---:|" * (len(parts) + 1)]
        for lab, r in rows.items():
            tot = sum(r.values())
            cells = [f"{r.get(p, 0) / 1e6:.3f} ({100 * r.get(p, 0) / tot:.0f}%)" for p in parts]
            lines.append(f"| {lab} | " + " | ".join(cells) + f" | {tot / 1e6:.3f} |")
    return "\n".join(lines) + "\n"


def _merged(r: dict) -> dict:
    out: dict = {}
    for p, v in r.items():
        key = _MERGE.get(p, "other" if p.startswith("other") else p)
        out[key] = out.get(key, 0) + v
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m squat.kernels.disasm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", help="an aarch64-cross output dir (default: build it into the cache)")
    ap.add_argument("--breakdown", action="store_true", help="also profile LLaMA-58M per token by part under qemu")
    ap.add_argument("--cpu", default="cortex-a76")
    a = ap.parse_args(argv)
    bdir = Path(a.build_dir) if a.build_dir else None
    print(markdown(kernel_stats(bdir)), end="")
    if a.breakdown:
        print(breakdown_markdown(token_breakdown(cpu=a.cpu, build_dir=bdir), a.cpu), end="")
    return 0



# ---------------------------------------------------------------- where a call's instructions go (qemu profile)
def _symbols(exe: Path) -> list[tuple[int, str]]:
    tool = shutil.which("aarch64-linux-gnu-nm") or "nm"
    out = subprocess.run([tool, "-n", "--defined-only", str(exe)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    return syms


def _tb_profile(exe: Path, plugin: Path, cpu: str, args: list[str], reps: int, tmp: Path) -> dict[tuple[int, int], int]:
    out = tmp / f"prof{reps}.txt"
    cmd = ["qemu-aarch64", "-cpu", cpu, "-plugin", f"{plugin},out={out}", str(exe), *args, "--insn", "--reps", str(reps)]
    subprocess.run(no_aslr(cmd), capture_output=True, text=True, check=True)
    prof: dict[tuple[int, int], int] = {}  # (block start, block length) -> executed instructions
    for line in out.read_text().splitlines()[1:]:
        a, n, c = line.split()
        key = (int(a, 16), int(n))
        prof[key] = prof.get(key, 0) + int(c)
    return prof


def call_breakdown(args: list[str], cpu: str = "cortex-a76", build_dir: Path | None = None) -> dict[str, int]:
    """Executed instructions of one squat_bench call (``args``, e.g. ``["--qlinear", "--wbits", "4", ...]``), by
    part: the kernels' MAC loops, the rest of the kernel (tile set-up, accumulator stores or dequantization, panel
    unpacking), packing/quantizing the activations, the squat_qlinear call itself, libc. Per call = profile(reps=2) -
    profile(reps=1), as for the counts."""
    import tempfile

    from squat.kernels.build import build, build_plugin

    out_dir = Path(build_dir) if build_dir else build("aarch64-cross")
    exe = out_dir / "squat_bench"
    plugin = build_plugin().with_name("libinsnprof.so")
    with tempfile.TemporaryDirectory() as d:
        p2 = _tb_profile(exe, plugin, cpu, args, 2, Path(d))
        p1 = _tb_profile(exe, plugin, cpu, args, 1, Path(d))
    syms = _symbols(exe)
    starts = [a for a, _ in syms]
    import bisect

    funcs = disassemble(exe)
    loop_ranges = []  # address ranges of MAC loops
    for insns in funcs.values():
        for a, b in innermost_loops(insns):
            if any(insn_macs(mn, ops) for _, mn, ops in insns[a: b + 1]):
                loop_ranges.append((insns[a][0], insns[b][0]))
    mac_funcs = {name for name, insns in funcs.items() if any(insn_macs(mn, ops) for _, mn, ops in insns)}
    parts: dict[str, int] = {}
    for addr, length in set(p1) | set(p2):
        n = p2.get((addr, length), 0) - p1.get((addr, length), 0)
        if not n:
            continue
        i = bisect.bisect_right(starts, addr) - 1
        name = syms[i][1] if i >= 0 else "?"
        # a block can run into a loop from the code before it: its instructions inside the loop count as loop
        inside = max((min(addr + 4 * length, hi + 4) - max(addr, lo)) // 4 for lo, hi in loop_ranges + [(0, -4)])
        if inside > 0:
            parts["inner MAC loop"] = parts.get("inner MAC loop", 0) + n // length * inside
            n -= n // length * inside
            if not n:
                continue
        if name in mac_funcs:
            part = "kernel: tile set-up, unpacking, stores / dequantization"
        elif name.startswith("pack_lhs") or name.startswith("sq_quant") or name == "pack_lhs_quant":
            part = "activations: quantize + pack (fp32 in)" if "--qlinear" in args else "activations: pack"
        elif name.startswith("squat_") or name in ("fits", "usable", "header", "carve", "site_ok", "site_span"):
            part = "call: checks, workspace, kernel choice"
        else:
            part = f"other ({name})"
        parts[part] = parts.get(part, 0) + n
    return parts


if __name__ == "__main__":
    raise SystemExit(main())
