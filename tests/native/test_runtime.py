"""The integer runtime (native_kernels/runtime, squat.kernels.runtime) against the fake-quant student it was
exported from: logits of real validation text, the token rule's choices, greedy generation with the KV cache,
and the errors of bad inputs."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from squat.export import ExportError, export_model
from squat.kernels.runtime import IntegerRuntime, RuntimeCallError
from squat.utils import to_typed
from tests.conftest import TINY, compose_cfg

DATA = [o for o in TINY if o.startswith("data.")]
# family:quant, quantized from the trained teacher and calibrated, plus a W4 A4:8 student after QAT (its thresholds
# tracked in training, the paper's method).
STUDENTS = ["llama:w8a8", "llama:w4a8", "llama:w4a4_8", "llama:w4a4", "llama:w4a4_8-qat", "llama:w4a8-float_o",
            "gpt2:w8a8", "gpt2:w4a4_8", "gpt2:w4a4"]
FLOAT_O = ["quant.sites.o_proj_input=false"]  # the public code's placement: o_proj runs on the runtime's fp32 GEMM
GEN_TOKENS, GEN_PROMPTS = 32, 20


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """family -> a trained float model folder, trained on first use."""
    from squat.train import run

    torch.set_num_threads(1)
    done = {}

    def get(family: str):
        if family not in done:
            tmp = tmp_path_factory.mktemp(f"rt_teacher_{family}")
            # long enough (about 10 s) that greedy decoding writes varied text rather than one repeated token
            run(compose_cfg(TINY + [f"model=tiny_{family}", "trainer.max_steps=800", "trainer.val_check_interval=800",
                                    "stage.lr=1e-2"], tmp))
            done[family] = tmp / "model"
        return done[family]

    return get


@pytest.fixture(scope="module")
def text(teachers, tmp_path_factory):
    """(train batch, validation batch) of the embedded text (both families share the data config's tokenizer)."""
    from squat.data import TextDataModule
    from transformers import AutoTokenizer

    rc = to_typed(compose_cfg(DATA, tmp_path_factory.mktemp("rt_data")))
    dm = TextDataModule(rc.data, tokenizer=AutoTokenizer.from_pretrained(teachers("llama"))).prepare()
    return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))


@pytest.fixture(scope="module", params=STUDENTS)
def student(request, teachers, text, lib, tmp_path_factory):
    """A student (LSQ scales and token thresholds calibrated on a training batch, or trained by a short QAT run),
    its export and the runtime over that export."""
    from squat.models import load_model
    from squat.quant.prepare import calibrate, load_quantized, quantize_model
    from squat.train import run

    family, _, rest = request.param.partition(":")
    quant, _, opt = rest.partition("-")
    qat, sites = opt == "qat", FLOAT_O if opt == "float_o" else []
    teacher = teachers(family)
    tmp = tmp_path_factory.mktemp(f"rt_{family}_{rest}")
    if qat:
        run(compose_cfg(TINY + [f"model=tiny_{family}", "stage=qat", f"stage.teacher={teacher}", f"quant={quant}", "method=squat",
                                "trainer.max_steps=12", "trainer.val_check_interval=12"] + sites, tmp))
        model = load_quantized(tmp / "model")
    else:
        rc = to_typed(compose_cfg(DATA + [f"quant={quant}", "stage=qat", f"stage.teacher={teacher}"] + sites, tmp))
        model = load_model(str(teacher), attn_implementation="eager")
        quantize_model(model, rc.quant, "lsq")
        calibrate(model, text[0])
    model.eval()
    export_model(model, tmp / "export")
    return request.param, model, IntegerRuntime(tmp / "export", max_seq=96), tmp / "export"


def test_logits_match_the_fake_quant_student_on_validation_text(student, text):
    name, model, rt, _ = student
    val = text[1][:4]
    worst = 0.0
    for seq in val:
        with torch.no_grad():
            ref = model(seq[None]).logits[0].numpy()
        got = rt.logits(seq)
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
        state = model.squat_quant.state
        if state is not None:  # the token rule chose the same precisions in every layer
            for layer, high in state.high.items():
                assert np.array_equal(rt.high_flags(layer), high[0].numpy()), (name, layer)
    print(f"\n{name}: max |logit diff| / max |logit| over {len(val)} sequences = {worst:.2e}")
    # every code equal, so only the float head's summation order differs (about 1e-7); the contract is 1e-3, which
    # a float o_proj (fp32 sums in another order than torch's) meets on these tiny models but not always at scale
    assert worst < (1e-3 if name.endswith("float_o") else 1e-5), (name, worst)


def test_cached_decoding_equals_the_prefill(student, text):
    """step() after a prefill gives the logits a prefill of the whole sequence gives (the cache holds integers)."""
    _, _, rt, _ = student
    seq = text[1][0, :24]
    full = rt.logits(seq)
    rt.prefill(seq[:10])
    steps = np.stack([rt.step(int(t)) for t in seq[10:]])
    assert np.array_equal(steps, full[10:])  # the same bits: every kernel of M = 1 and M > 1 rounds alike


def test_greedy_generation_is_token_identical_to_generate(student, text):
    name, model, rt, _ = student
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id = None, 0  # never stop early: both sides produce every token
    distinct = set()
    for i, seq in enumerate(text[1][:GEN_PROMPTS]):
        prompt = seq[: 6 + i % 10]
        with torch.no_grad():
            want = model.generate(prompt[None], attention_mask=torch.ones_like(prompt[None]),
                                  max_new_tokens=GEN_TOKENS, do_sample=False)[0, prompt.numel():].tolist()
        assert rt.generate(prompt, GEN_TOKENS) == want, (name, i)
        distinct.update(want)
    assert len(distinct) > 20, distinct  # the student writes text, not one repeated token


@pytest.mark.parametrize("student", ["llama:w4a8"], indirect=True)
def test_bad_inputs_fail_with_one_message_naming_the_fix(student, tmp_path):
    _, _, rt, export = student
    with pytest.raises(RuntimeCallError, match="tokenizer"):
        rt.logits([0, rt.vocab])
    with pytest.raises(ValueError, match="larger max_seq"):
        rt.generate([1] * 90, 10)
    with pytest.raises(ValueError, match="at least one token"):
        rt.logits([])
    small = IntegerRuntime(export, max_seq=4)
    with pytest.raises(RuntimeCallError, match="larger max_seq"):
        small.logits([1, 2, 3, 4, 5])
    # a truncated tensor file, and a manifest from another model
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "manifest.json").write_text((export / "manifest.json").read_text())
    data = (export / "quantized.safetensors").read_bytes()
    (trunc / "quantized.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="export the model again"):
        IntegerRuntime(trunc)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["config"]["intermediate_size"] += 8
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(manifest))
    (other / "quantized.safetensors").write_bytes(data)
    with pytest.raises(RuntimeCallError, match="export the model again"):
        IntegerRuntime(other)
    manifest = json.loads((export / "manifest.json").read_text())
    site = manifest["layers"][0]["mlp_input"]
    manifest["sites"][site]["bits"] = 9
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="unsupported width"):
        IntegerRuntime(other)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["family"], manifest["model_type"] = "bert", "bert"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="LLaMA and GPT-2"):
        IntegerRuntime(other)


@pytest.mark.parametrize("student", ["llama:w4a8"], indirect=True)
def test_missing_toolchain_names_the_install_command(student, monkeypatch):
    import squat.kernels.build as build
    from squat.kernels import ToolchainMissing

    monkeypatch.setattr(build.shutil, "which", lambda tool: None)
    with pytest.raises(ToolchainMissing, match="apt-get install"):
        IntegerRuntime(student[3])


@pytest.mark.parametrize("student", ["llama:w4a4_8-qat"], indirect=True)  # its run folder has model/ beside export/
def test_squat_generate_prints_text_and_tokens_per_second(student, tmp_path):
    import sys

    from squat.config import GenerateConfig
    from squat.generate import run_generate

    _, _, rt, export = student
    res = run_generate(GenerateConfig(export_dir=str(export), prompt="The little girl", max_new_tokens=12))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export.parent / "model")
    assert res["new_tokens"] == rt.generate(tok("The little girl").input_ids, 12, tok.eos_token_id)
    assert res["text"] == tok.decode(res["new_tokens"]) and res["decode_tokens_per_s"] > 0
    out = subprocess.run([sys.executable, "-m", "squat.generate", f"export_dir={export}", "prompt=The little girl",
                          "max_new_tokens=12"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("The little girl" + res["text"]) and "tokens/s" in out.stdout
    assert list(tmp_path.iterdir()) == []  # prints only: no run folder, no log file
    with pytest.raises(FileNotFoundError, match="tokenizer="):
        run_generate(GenerateConfig(export_dir=str(tmp_path), prompt="x"))


def _run_bundle(cmd: list[str], bundle, ids: np.ndarray, vocab: int, decode: int, tmp_path):
    ids.astype(np.int32).tofile(tmp_path / "ids.bin")
    res = subprocess.run([*cmd, str(bundle), "--ids", str(tmp_path / "ids.bin"), "--decode", str(decode), "--out",
                          str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    raw = np.fromfile(tmp_path / "out.bin", np.uint8)
    n = ids.size * vocab * 4
    return raw[:n].view(np.float32).reshape(ids.size, vocab), raw[n:].view(np.int32).tolist()


@pytest.mark.parametrize("student", ["llama:w4a4_8-qat", "gpt2:w4a4_8"], indirect=True)
def test_bundle_runs_without_python_with_the_same_bits(student, text, tmp_path):
    """The bundle replayed by squat_rt_bench (host build, and aarch64 under qemu -cpu cortex-a76 / max when the
    cross toolchain is there) gives the ctypes runtime's logits bit for bit and the same greedy tokens."""
    from squat.kernels.build import build, host_preset, qemu_available

    _, _, _, export = student
    rt = IntegerRuntime(export, max_seq=64, bundle=tmp_path / "model.bundle")
    ids = text[1][1, :20].numpy()
    want, gen = rt.logits(ids), rt.generate(ids, 16)
    runs = [[str(build(host_preset()) / "squat_rt_bench")]]
    if qemu_available():
        exe = str(build("aarch64-cross") / "squat_rt_bench")
        runs += [["qemu-aarch64", "-cpu", "cortex-a76", exe], ["qemu-aarch64", "-cpu", "max", exe]]
    for cmd in runs:
        logits, tokens = _run_bundle(cmd, tmp_path / "model.bundle", ids, rt.vocab, 16, tmp_path)
        assert np.array_equal(logits, want) and tokens == gen, cmd
    data = (tmp_path / "model.bundle").read_bytes()
    (tmp_path / "cut.bundle").write_bytes(data[: len(data) // 3])
    res = subprocess.run([*runs[0], str(tmp_path / "cut.bundle")], capture_output=True, text=True)
    assert res.returncode == 1 and "write it again" in res.stderr


def _dequantized_hf(export) -> torch.nn.Module:
    """The export as a plain HF float model: dequantized weights (w * s), float activations, eager attention."""
    from squat.export import ExportedModel
    from transformers import AutoConfig, AutoModelForCausalLM

    exp = ExportedModel(export)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**exp.config), attn_implementation="eager").eval()
    sd = {name: exp.float_tensor(name) for name in exp.manifest["float"]}
    for name, lin in exp.linears.items():
        w = lin.w.float() * lin.w_scale.reshape(-1, 1)
        sd[f"{name}.weight"] = w.t() if exp.manifest["family"] == "gpt2" else w  # GPT-2 Conv1D stores [in, out]
        if lin.bias is not None:
            sd[f"{name}.bias"] = lin.bias
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k in ("lm_head.weight",) or "attn.bias" in k for k in missing), missing
    model.tie_weights()
    return model


@pytest.mark.parametrize("student", ["llama:w4a4_8", "gpt2:w4a8"], indirect=True)
@pytest.mark.parametrize("baseline,tol", [("fp32", 1e-4), ("fp16", 3e-2)])
def test_float_baselines_are_the_float_model_of_the_same_weights(student, text, baseline, tol):
    """FP32 and FP16 baselines (Table IV's denominator) against the HF float model of the dequantized weights; the
    fp16 GEMMs accumulate in fp16, hence the looser bound."""
    _, _, rt, export = student
    base = IntegerRuntime(export, max_seq=96, baseline=baseline)
    ref = _dequantized_hf(export)
    worst = 0.0
    for seq in text[1][:2]:
        with torch.no_grad():
            want = ref(seq[None]).logits[0].numpy()
        got = base.logits(seq)
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
        if baseline == "fp16":  # the same text: the greedy choice agrees almost everywhere
            assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.9
    print(f"\n{baseline}: max |logit diff| / max |logit| = {worst:.2e}")
    assert worst < tol
    seq = text[1][0, :16]
    full = base.logits(seq)
    base.prefill(seq[:8])
    steps = np.stack([base.step(int(t)) for t in seq[8:]])
    np.testing.assert_allclose(steps, full[8:], rtol=0, atol=1e-5 * np.abs(full).max())  # the cache in float
    with pytest.raises(ValueError, match="'fp16' and 'fp32'"):
        IntegerRuntime(export, baseline="int8")


@pytest.mark.parametrize("student", ["llama:w4a4_8-qat", "gpt2:w4a4_8", "llama:w8a8"], indirect=True)
def test_vector_ops_equal_their_scalar_twins(student, text):
    """reference=True runs the scalar twin of every vectorized op (quantization, sdot scores and probs @ v with
    zero-point corrections, exp/softmax, norms, RoPE, activations): the same bits, prefill and cached steps."""
    _, _, rt, export = student
    ref = IntegerRuntime(export, max_seq=96, reference=True)
    seq = text[1][2, :40]
    assert np.array_equal(ref.logits(seq), rt.logits(seq))
    for layer in range(len(rt.export.layers)):
        assert np.array_equal(ref.high_flags(layer), rt.high_flags(layer))
    assert ref.generate(seq[:9], 12) == rt.generate(seq[:9], 12)


def test_runtime_bench_counts_the_whole_model(lib, tmp_path):
    """Smoke test of the Table IV bench on random weights (no timing asserted): every row has positive counts, the
    FP16 baseline is the denominator, and the per-op breakdown sums to the counts."""
    from squat.kernels.build import qemu_available
    from squat.kernels.runtime_bench import OPS, main

    args = ["--model", "tiny_llama", "--prefill", "8", "--only", "W4A4", "--cpu", "cortex-a76", "--breakdown",
            "--out", str(tmp_path)]
    assert main(args + ([] if qemu_available() else ["--no-insn"])) == 0
    res = json.loads((tmp_path / "runtime_bench.json").read_text())
    assert set(res["wall"]) == {"FP16", "FP32", "W4A4"} and all(v["decode"] > 0 for v in res["wall"].values() if v)
    if qemu_available():
        assert all(v["prefill"] > 0 and v["decode"] > 0 for v in res["insn"]["cortex-a76"].values())
        ops = res["breakdown"]["cortex-a76"]
        assert ops["W4A4"]["prefill"]["linears: quantized"] > 0 and ops["FP16"]["prefill"]["linears: quantized"] == 0
        assert ops["W4A4"]["decode"]["attention: scores"] > 0 and set(ops["FP16"]["decode"]) == set(OPS)
        assert "speedup vs FP16" in (tmp_path / "runtime_bench.md").read_text()
