"""Build cache and the missing-toolchain error."""
import pytest

from squat.kernels import build as B


def test_cache_key_stable_and_reused(lib):
    h = B.source_hash(B.host_preset())
    assert h == B.source_hash(B.host_preset()) and len(h) == 16
    out = B.build()
    assert (out / "libsquat_kernels.so").exists() and (out.parent / f".complete-{B.host_preset()}").exists()


def test_missing_toolchain_message(monkeypatch):
    monkeypatch.setattr(B.shutil, "which", lambda tool: None)
    with pytest.raises(B.ToolchainMissing) as e:
        B.build("aarch64-cross")
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install -y gcc-aarch64-linux-gnu" in msg
    with pytest.raises(B.ToolchainMissing, match="apt-get install -y gcc make libsimde-dev"):
        B.build("x86-simde")


def test_bench_cli_reports_missing_toolchain(monkeypatch, capsys):
    from squat.kernels import bench

    def boom(*a, **k):
        raise B.ToolchainMissing("gcc not found; install with: apt-get install -y gcc make libsimde-dev")

    monkeypatch.setattr(bench, "benchmark", boom)
    assert bench.main(["--shape", "8x8", "-M", "1"]) == 2
    assert "apt-get install" in capsys.readouterr().out
