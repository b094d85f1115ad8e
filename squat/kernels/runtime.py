"""Python handle of the integer runtime (``native_kernels/include/squat_runtime.h``): an export in, logits and
greedy generations out, the whole forward in C.

:class:`squat.export.ExportedModel` reads and checks the files (the one reader); this module only checks that the
runtime can run what it read (LLaMA or GPT-2, integer weights at every block linear, static attention sites, the
causal threshold rule) and hands every tensor to the C side, which packs the weights once.
"""
from __future__ import annotations

import ctypes as C
import struct
from pathlib import Path

import numpy as np
import torch

from squat.export import ActSite, ExportedModel, ExportError
from squat.kernels.binding import _ActSite, act_site_struct, load

# Per family: block prefix, linear -> C slot (squat_runtime.h SQUAT_RT_Q ...), the two norms, the final norm.
_LAYOUT = {
    "llama": ("model.layers", {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2,
                               "self_attn.o_proj": 3, "mlp.gate_proj": 4, "mlp.up_proj": 5, "mlp.down_proj": 6},
              ("input_layernorm", "post_attention_layernorm"), "model.norm"),
    "gpt2": ("transformer.h", {"attn.c_attn": 0, "attn.c_proj": 3, "mlp.c_fc": 5, "mlp.c_proj": 6},
             ("ln_1", "ln_2"), "transformer.ln_f"),
}
_ARCH = {"llama": 0, "gpt2": 1}
_HEAD = 7
_ADAPTIVE = {None: 0, "input": 1, "output": 2}
_RULE_NONE, _RULE_THRESHOLD, _RULE_ALL_LOW, _RULE_ALL_HIGH = 0, 1, 2, 3


class _Site(C.Structure):  # squat_rt_site
    _fields_ = [("quantized", C.c_int), ("adaptive", C.c_int), ("low", _ActSite), ("high", _ActSite)]


class _Config(C.Structure):  # squat_rt_config
    _fields_ = [(n, C.c_int) for n in ("arch", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate",
                                       "vocab", "max_seq")] + [
        ("norm_eps", C.c_float), ("attn_scaling", C.c_float), ("token_rule", C.c_int), ("score_logits", C.c_int),
        ("float16", C.c_int), ("reference", C.c_int)]


class RuntimeCallError(RuntimeError):
    """The C runtime refused a call; the message is its one-line fix."""


def _bind(lib) -> C.CDLL:
    L = lib.lib
    vp, sz = C.c_void_p, C.c_size_t
    sig = {
        "squat_rt_strerror": (C.c_char_p, [C.c_int]),
        "squat_rt_create": (vp, [C.POINTER(_Config), C.POINTER(C.c_int)]),
        "squat_rt_destroy": (None, [vp]),
        "squat_rt_set_float": (C.c_int, [vp, C.c_char_p, C.c_int, vp, sz]),
        "squat_rt_set_linear": (C.c_int, [vp, C.c_int, C.c_int, sz, sz, C.c_int, vp, vp, C.c_int, vp,
                                          C.POINTER(_Site)]),
        "squat_rt_set_linear_float": (C.c_int, [vp, C.c_int, C.c_int, sz, sz, vp, vp]),
        "squat_rt_set_attention": (C.c_int, [vp, C.c_int] + [C.POINTER(_Site)] * 4 + [C.c_float]),
        "squat_rt_ready": (C.c_int, [vp]),
        "squat_rt_reset": (None, [vp]),
        "squat_rt_pos": (sz, [vp]),
        "squat_rt_forward": (C.c_int, [vp, vp, sz, vp, C.c_int]),
        "squat_rt_high_flags": (C.POINTER(C.c_uint8), [vp, C.c_int]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype, f.argtypes = res, args
    return L


def _site(s: ActSite, where: str, attention: bool = True) -> _Site:
    if s.is_float:
        raise ExportError(f"{where}: float in the export; the integer runtime quantizes q, k, v and probs: export a "
                          "student with quant.act_bits and quant.probs_bits set (sites q, k, v, probs on)")
    if s.dynamic and attention:
        raise ExportError(f"{where}: dynamic per-token scales at an attention site are not supported by the integer "
                          "runtime: train the student with a static-scale method (lsq, squat, pact)")
    for g in (s, s.high) if s.high is not None else (s,):
        if not 2 <= (g.bits or 0) <= 8:
            raise ExportError(f"{where}: unsupported width: {g.bits}-bit activations; the runtime runs 2 to 8 bits "
                              "(export a student with quant.act_bits and token_policy.high_bits in 2..8)")
    out = _Site(1, _ADAPTIVE[s.adaptive], act_site_struct(s.low), _ActSite())
    if s.high is not None:
        out.high = act_site_struct(s.high)
    return out


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


class IntegerRuntime:
    """The exported student, run by the C runtime: :meth:`logits` scores a sequence (prefill), :meth:`step` and
    :meth:`generate` decode greedily with the KV cache.

    ``max_seq``: the longest sequence (prompt + generated tokens) the buffers hold; default the model's
    ``max_position_embeddings``. ``preset``: the kernel build (default the host's). ``bundle``: also record every
    tensor handed to C in this file, which ``squat_rt_load_bundle`` (and the ``squat_rt_bench`` program) replays
    without Python, e.g. under qemu-aarch64 or on the device. ``baseline="fp16"`` / ``"fp32"``: the FP16 (the
    paper's Table IV denominator) or FP32 baseline of the same model through the same runtime (dequantized weights
    on the library's fp16 / fp32 GEMMs, float attention in that precision, no token rule; norms, softmax, RoPE and
    activations are the runtime's shared FP32 code), so benchmark ratios compare like with like.
    ``reference=True``: the C side runs the scalar twin of every vectorized op (the same bits; a test oracle).
    """

    def __init__(self, export_dir: str | Path, max_seq: int | None = None, preset: str | None = None,
                 bundle: str | Path | None = None, baseline: str | None = None, reference: bool = False):
        if baseline not in (None, "fp16", "fp32"):
            raise ValueError(f"baseline={baseline!r}: the runtime's float baselines are 'fp16' and 'fp32' (or None)")
        self.baseline = baseline
        exp = self.export = ExportedModel(export_dir)
        m = exp.manifest
        self.family = m.get("family")
        if self.family not in _LAYOUT:
            raise ExportError(f"{exp.dir}: architecture {m.get('model_type')!r} is not supported by the integer "
                              "runtime (LLaMA and GPT-2): run it with squat.export.integer_reference instead")
        shape = self._shape(exp)
        self.max_seq = int(max_seq or shape["positions"])
        if self.max_seq > shape["positions"]:
            raise ValueError(f"max_seq={self.max_seq} exceeds the model's {shape['positions']} positions: "
                             f"use max_seq<={shape['positions']}")
        self.vocab = shape["vocab"]
        self.lib = load(preset)
        self._L = _bind(self.lib)
        rule, score_logits = self._token_rule(exp) if baseline is None else (_RULE_NONE, 0)
        c = _Config(_ARCH[self.family], m["num_layers"], shape["hidden"], shape["heads"], shape["kv_heads"],
                    shape["head_dim"], shape["intermediate"], self.vocab, self.max_seq, shape["eps"],
                    shape["scaling"], rule, score_logits, int(baseline == "fp16"), int(reference))
        err = C.c_int(0)
        self._rt = self._L.squat_rt_create(C.byref(c), C.byref(err))
        if not self._rt:
            self._check(err.value, "create")
        self._bundle = open(bundle, "wb") if bundle is not None else None
        try:
            if self._bundle:
                self._bundle.write(b"SQRTBND2" + bytes(c))
            self._load(exp, rule)
            if self._bundle:
                self._bundle.write(struct.pack("<i", 0))
        finally:
            if self._bundle:
                self._bundle.close()
            self._bundle = None
        self._check(self._L.squat_rt_ready(self._rt), "ready")
        self._last = np.empty(self.vocab, np.float32)

    # ---- loading -------------------------------------------------------------------------------------
    def _shape(self, exp: ExportedModel) -> dict:
        """The runtime's view of the HF config; refuses the options it does not implement."""
        cfg = exp.config
        if self.family == "llama":
            if cfg.get("hidden_act", "silu") != "silu":
                raise ExportError(f"{exp.dir}: hidden_act {cfg['hidden_act']!r}; the runtime's LLaMA MLP is SiLU-gated")
            heads = cfg["num_attention_heads"]
            hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
            return dict(hidden=cfg["hidden_size"], heads=heads, kv_heads=cfg.get("num_key_value_heads") or heads,
                        head_dim=hd, intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"],
                        positions=cfg["max_position_embeddings"], eps=cfg["rms_norm_eps"], scaling=hd ** -0.5)
        act = cfg.get("activation_function", "gelu_new")
        if act != "gelu_new" or cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
            raise ExportError(f"{exp.dir}: GPT-2 with activation_function={act!r}, scale_attn_by_inverse_layer_idx or "
                              "reorder_and_upcast_attn; the runtime runs gelu_new and the default attention scaling")
        h, heads = cfg["n_embd"], cfg["n_head"]
        return dict(hidden=h, heads=heads, kv_heads=heads, head_dim=h // heads, intermediate=cfg.get("n_inner") or 4 * h,
                    vocab=cfg["vocab_size"], positions=cfg["n_positions"], eps=cfg["layer_norm_epsilon"],
                    scaling=(h // heads) ** -0.5 if cfg.get("scale_attn_weights", True) else 1.0)

    @staticmethod
    def _token_rule(exp: ExportedModel) -> tuple[int, int]:
        tp = exp.token_policy
        if not tp:
            return _RULE_NONE, 0
        if tp.get("rule", "threshold") != "threshold":
            raise ExportError(f"{exp.dir}: token rule {tp.get('rule')!r} ranks tokens over the whole sequence and "
                              "cannot decode causally; the runtime runs quant.token_policy.rule=threshold students")
        ratio = float(tp["ratio"])
        rule = _RULE_ALL_LOW if ratio == 0.0 else _RULE_ALL_HIGH if ratio == 1.0 else _RULE_THRESHOLD
        if rule == _RULE_THRESHOLD:
            missing = [i for i, layer in enumerate(exp.layers) if layer.get("token_threshold") is None]
            if missing:
                raise ExportError(f"{exp.dir}: layers {missing} have no token_threshold (the student was never run "
                                  "before export): calibrate it (squat.quant.prepare.calibrate) and export again")
        return rule, int(tp.get("score", "probs") == "logits")

    def _check(self, rc: int, what: str) -> None:
        if rc:
            raise RuntimeCallError(f"squat_rt {what}: {self._L.squat_rt_strerror(rc).decode()}")

    def _set_float(self, name: str, layer: int, a: np.ndarray) -> None:
        if self._bundle:
            self._bundle.write(struct.pack("<ii32sQ", 1, layer, name.encode(), a.size) + a.tobytes())
        self._check(self._L.squat_rt_set_float(self._rt, name.encode(), layer, a.ctypes.data, a.size), name)

    def _load(self, exp: ExportedModel, rule: int) -> None:
        blocks, slots, (norm1, norm2), final = _LAYOUT[self.family]
        gpt2 = self.family == "gpt2"
        embed = "transformer.wte.weight" if gpt2 else "model.embed_tokens.weight"
        self._set_float("embed", -1, _f32(exp.float_tensor(embed)))
        self._set_float("norm", -1, _f32(exp.float_tensor(f"{final}.weight")))
        if gpt2:
            self._set_float("norm_bias", -1, _f32(exp.float_tensor(f"{final}.bias")))
            self._set_float("pos_embed", -1, _f32(exp.float_tensor("transformer.wpe.weight")))
        else:
            from transformers import LlamaConfig
            from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

            # RoPE tables from the config's own rotary module, so every HF RoPE variant is the model's.
            rope = LlamaRotaryEmbedding(LlamaConfig.from_dict(exp.config))
            cos, sin = rope(torch.zeros(1, dtype=torch.float32), torch.arange(self.max_seq)[None])
            self._set_float("rope_cos", -1, _f32(cos[0]))
            self._set_float("rope_sin", -1, _f32(sin[0]))
        for i in range(exp.manifest["num_layers"]):
            pre = f"{blocks}.{i}"
            for which, norm in (("input_norm", norm1), ("post_norm", norm2)):
                self._set_float(f"layer.{which}", i, _f32(exp.float_tensor(f"{pre}.{norm}.weight")))
                if gpt2:
                    self._set_float(f"layer.{which}_bias", i, _f32(exp.float_tensor(f"{pre}.{norm}.bias")))
            for path, slot in slots.items():
                name = f"{pre}.{path}"
                if name not in exp.linears:
                    raise ExportError(f"{exp.dir}: {name} is not quantized in the export; the integer runtime needs "
                                      "integer weights at every block linear: export a student with quant.weight_bits set")
                self._set_linear(i, slot, exp.linears[name])
            if self.baseline:
                sites = [_Site() for _ in range(4)]  # float attention
            else:
                sites = [_site(exp.site(i, k), f"layers.{i}.{k}") for k in ("q", "k", "v", "probs")]
            thr = float(exp.layers[i].get("token_threshold")) if rule == _RULE_THRESHOLD else 0.0
            if self._bundle:
                self._bundle.write(struct.pack("<ii", 3, i) + b"".join(bytes(s) for s in sites) + struct.pack("<f", thr))
            self._check(self._L.squat_rt_set_attention(self._rt, i, *[C.byref(s) for s in sites], thr),
                        f"layers.{i} attention")
        if "lm_head" in exp.linears:
            self._set_linear(-1, _HEAD, exp.linears["lm_head"])
        else:
            name = "lm_head.weight" if "lm_head.weight" in exp.manifest["float"] else embed  # tied
            self._set_linear_float(-1, _HEAD, name, _f32(exp.float_tensor(name)), None)

    def _set_linear(self, layer: int, slot: int, lin) -> None:
        w = np.ascontiguousarray(lin.w.numpy(), np.int8)
        sw = np.ascontiguousarray(lin.w_scale.numpy().reshape(-1), np.float32)
        bias = None if lin.bias is None else _f32(lin.bias)
        if self.baseline or lin.act.is_float:  # a float input (o_proj by default): dequantized on the float GEMMs
            self._set_linear_float(layer, slot, lin.name, (w.astype(np.float32) * sw[:, None]).astype(np.float32), bias)
            return
        site = _site(lin.act, lin.name, attention=False)
        if self._bundle:
            head = struct.pack("<6iQQ", 2, layer, slot, lin.weight_bits, int(sw.size > 1), bias is not None,
                               lin.out_features, lin.in_features)
            self._bundle.write(head + bytes(site) + w.tobytes() + sw.tobytes() + (b"" if bias is None else bias.tobytes()))
        rc = self._L.squat_rt_set_linear(self._rt, layer, slot, lin.out_features, lin.in_features, lin.weight_bits,
                                         w.ctypes.data, sw.ctypes.data, int(sw.size > 1), None if bias is None else
                                         bias.ctypes.data, C.byref(site))
        self._check(rc, lin.name)

    def _set_linear_float(self, layer: int, slot: int, name: str, w: np.ndarray, bias: np.ndarray | None) -> None:
        w = np.ascontiguousarray(w, np.float32)
        n, k = w.shape
        if self._bundle:
            self._bundle.write(struct.pack("<4iQQ", 4, layer, slot, bias is not None, n, k) + w.tobytes() +
                               (b"" if bias is None else bias.tobytes()))
        rc = self._L.squat_rt_set_linear_float(self._rt, layer, slot, n, k, w.ctypes.data,
                                               None if bias is None else bias.ctypes.data)
        self._check(rc, name)

    # ---- running -------------------------------------------------------------------------------------
    def _ids(self, ids) -> np.ndarray:
        a = np.ascontiguousarray(torch.as_tensor(ids).reshape(-1).numpy(), np.int32)
        if a.size == 0:
            raise ValueError("empty input: the runtime needs at least one token (start from the tokenizer's eos)")
        return a

    def _forward(self, ids: np.ndarray, out: np.ndarray | None, all_logits: bool) -> None:
        rc = self._L.squat_rt_forward(self._rt, ids.ctypes.data, ids.size, None if out is None else out.ctypes.data,
                                      int(all_logits))
        self._check(rc, "forward")

    def reset(self) -> None:
        self._L.squat_rt_reset(self._rt)

    @property
    def pos(self) -> int:
        """Tokens in the KV cache."""
        return int(self._L.squat_rt_pos(self._rt))

    def logits(self, ids) -> np.ndarray:
        """Float32 ``[T, vocab]`` logits of a new sequence ``ids`` (one prefill; the cache then holds it)."""
        a = self._ids(ids)
        self.reset()
        out = np.empty((a.size, self.vocab), np.float32)
        self._forward(a, out, True)
        return out

    def prefill(self, ids) -> np.ndarray:
        """Start a new sequence; returns the last token's logits ``[vocab]``."""
        a = self._ids(ids)
        self.reset()
        self._forward(a, self._last, False)
        return self._last.copy()

    def step(self, token: int) -> np.ndarray:
        """Append one token to the cached sequence; returns its logits ``[vocab]``."""
        self._forward(np.array([int(token)], np.int32), self._last, False)
        return self._last.copy()

    def generate(self, ids, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
        """Greedy decoding with the KV cache: the new tokens (stopping after ``eos_token_id`` if given)."""
        a = self._ids(ids)
        if a.size + max_new_tokens - 1 > self.max_seq:
            raise ValueError(f"{a.size} prompt tokens + {max_new_tokens} new exceed max_seq={self.max_seq}: "
                             "create the IntegerRuntime with a larger max_seq or shorten the prompt")
        return self.decode(self.prefill(a), max_new_tokens, eos_token_id)

    def decode(self, logits: np.ndarray, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
        """Greedy tokens after a :meth:`prefill` that returned ``logits`` (the first new token comes from them, so
        ``max_new_tokens`` tokens cost ``max_new_tokens - 1`` cached steps)."""
        out: list[int] = []
        for i in range(max_new_tokens):
            out.append(int(np.argmax(logits)))
            if out[-1] == eos_token_id or i == max_new_tokens - 1:
                break
            logits = self.step(out[-1])
        return out

    def high_flags(self, layer: int) -> np.ndarray:
        """Layer ``layer``'s token choices over the cached sequence (bool ``[pos]``)."""
        return np.ctypeslib.as_array(self._L.squat_rt_high_flags(self._rt, layer), (self.pos,)).astype(bool)

    def __del__(self):
        rt, L = getattr(self, "_rt", None), getattr(self, "_L", None)
        if rt and L is not None:
            L.squat_rt_destroy(rt)
            self._rt = None
