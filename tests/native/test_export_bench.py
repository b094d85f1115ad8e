"""run_kernel_benchmark / squat-bench --export on a tiny synthetic export (squat-int/1 layout)."""
import json

import numpy as np
import torch
from safetensors.torch import save_file

from squat.export import pack_int4


def _export(tmp_path):
    rng = np.random.default_rng(0)
    lin, t = {}, {}
    for name, n, k, wb in (("l0.q_proj", 24, 40, 4), ("l0.down_proj", 16, 24, 8)):
        w = rng.integers(-8, 8, (n, k)) if wb == 4 else rng.integers(-128, 128, (n, k))
        w = torch.from_numpy(w.astype(np.int8))
        t[f"{name}.weight_q"] = pack_int4(w) if wb == 4 else w
        t[f"{name}.weight_scale"] = torch.rand(n) * 0.01
        t[f"{name}.act_scale"] = torch.tensor([0.05])
        t[f"{name}.act_zero_point"] = torch.tensor([3], dtype=torch.int32)
        lin[name] = {"in_features": k, "out_features": n, "weight_bits": wb, "act_bits": 8}
    save_file(t, str(tmp_path / "quantized.safetensors"))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "squat-int/1", "linears": lin}))
    return tmp_path


def test_run_kernel_benchmark(lib, tmp_path):
    from squat.kernels.bench import run_kernel_benchmark

    d = _export(tmp_path / "exp" if (tmp_path / "exp").mkdir() is None else tmp_path)
    acts = {"l0.q_proj": np.random.default_rng(1).standard_normal((5, 40)).astype(np.float32)}
    res = run_kernel_benchmark(d, seq_len=8, ratio=0.5, out_dir=tmp_path / "out", check_activations=acts, reps=1,
                               insn=False)
    assert res["exactness"]["ok"] and res["exactness"]["checked"] > 0
    assert set(res["ms_per_token"]) == {"8", "1"} and "torch int8 dynamic" in res["ms_per_token"]["8"]
    assert (tmp_path / "out" / "kernel_bench.md").read_text().count("Wall clock") == 2
    json.loads((tmp_path / "out" / "kernel_bench.json").read_text())


def test_kernel_linear_matches_dequant_reference(lib, tmp_path):
    from squat.kernels.model import load_int_weights, load_model

    d = _export(tmp_path)
    model, tens = load_model(lib, d), load_int_weights(d)
    x = np.random.default_rng(2).standard_normal((7, 40)).astype(np.float32)
    lin = model["l0.q_proj"]
    q = lin.quantize(x).astype(np.int64)
    w = tens["l0.q_proj"]["w"].astype(np.int64)
    ref = ((q @ w.T) - 3 * w.sum(1)).astype(np.float32) * (np.float32(0.05) * tens["l0.q_proj"]["w_scale"])
    assert np.array_equal(lin(x), ref)
