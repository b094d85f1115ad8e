"""Prepare: turn a Hugging Face causal LM into a fake-quantized student in place, at the paper's sites.

LLaMA-style models (``model.layers[i].self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``) and GPT-2
(``transformer.h[i].attn.c_attn/c_proj``, ``mlp.c_fc/c_proj``) are supported. Linears become
:class:`QuantLinear`; attention gets an :class:`AttentionQuantizers` and the ``"squat"`` attention function.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from squat.quant import exact_ops
from squat.quant.attention import ATTN_IMPLEMENTATION, AttentionQuantizers, AttentionRecord
from squat.quant.config import QuantConfig
from squat.quant.linear import QuantLinear
from squat.quant.quantizers import ProbQuantizer, make_quantizer
from squat.quant.token_policy import TokenAdaptiveQuantizer, TokenPrecisionState
from squat.utils import plain

QUANT_STATE_FILE = "squat_quant.pt"
QUANT_CONFIG_FILE = "squat_quant.json"

# Per family: where the blocks are, and for each linear (path inside the block) the activation site feeding it.
_LAYOUTS = {
    "llama": {
        "blocks": "model.layers",
        "attn": "self_attn",
        "linears": {
            "self_attn.q_proj": "attn_input",
            "self_attn.k_proj": "attn_input",
            "self_attn.v_proj": "attn_input",
            "self_attn.o_proj": "o_proj_input",
            "mlp.gate_proj": "mlp_input",
            "mlp.up_proj": "mlp_input",
            "mlp.down_proj": "mlp_down_input",
        },
    },
    "gpt2": {
        "blocks": "transformer.h",
        "attn": "attn",
        "linears": {
            "attn.c_attn": "attn_input",
            "attn.c_proj": "o_proj_input",
            "mlp.c_fc": "mlp_input",
            "mlp.c_proj": "mlp_down_input",
        },
    },
}
# Sites whose tokens' precision was chosen by the previous layer (paper section 5); the rest by this layer.
_INPUT_SITES = {"attn_input", "q", "k"}


def linear_site(family: str, module_name: str) -> tuple[int | None, str | None]:
    """Block index and input site of a linear by its module path: ``model.layers.3.mlp.down_proj`` ->
    ``(3, "mlp_down_input")``; ``(None, None)`` outside the blocks (e.g. ``lm_head``)."""
    parts = module_name.split(".")
    blocks = _LAYOUTS[family]["blocks"]
    for i, p in enumerate(parts):
        if p.isdigit() and ".".join(parts[:i]) == blocks:
            return int(p), _LAYOUTS[family]["linears"].get(".".join(parts[i + 1:]))
    return None, None


@dataclass
class QuantHandle:
    """What training needs from a prepared student: its config, the loss record and the token state."""

    config: QuantConfig
    method: str
    record: AttentionRecord
    state: TokenPrecisionState | None
    family: str


def _family(model: nn.Module) -> str:
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):
        return "gpt2"
    if hasattr(model, "model") and hasattr(model.model, "layers"):
        layer = model.model.layers[0]
        if all(hasattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and all(
            hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj")
        ):
            return "llama"
    raise TypeError(
        f"{type(model).__name__} is not supported: squat quantizes LLaMA-style (q/k/v/o_proj, gate/up/down_proj) "
        "and GPT-2 models"
    )


def quantize_model(model: nn.Module, cfg: QuantConfig, method: str = "lsq") -> QuantHandle:
    """Swap in quantized modules in place (reusing the Parameters) and switch attention to ``"squat"``."""
    if getattr(model, "squat_quant", None) is not None:
        raise RuntimeError("model is already quantized")
    family = _family(model)
    layout = _LAYOUTS[family]
    tp = cfg.token_policy
    state = TokenPrecisionState(tp.ratio, rule=tp.rule.value, per_sample=tp.select.value == "per_sample",
                                score=tp.score.value, momentum=tp.momentum) if tp.enabled else None
    record = AttentionRecord()

    def act(site: str, layer: int, bits: int | None = None, signed="auto") -> nn.Module:
        bits = cfg.act_bits if bits is None else bits
        if bits is None or not getattr(cfg.sites, site):
            return nn.Identity()
        chosen_before_layer0 = site in _INPUT_SITES and layer == 0
        if state is None or site == "probs" or chosen_before_layer0:
            b = tp.high_bits if (state is not None and chosen_before_layer0) else bits
            return make_quantizer(method, "act", b, signed=signed)
        which = "input" if site in _INPUT_SITES else "output"
        return TokenAdaptiveQuantizer(
            make_quantizer(method, "act", bits, signed=signed),
            make_quantizer(method, "act", tp.high_bits, signed=signed),
            state, layer, which,
        )

    def weight(n_out: int) -> nn.Module:
        if cfg.weight_bits is None:
            return nn.Identity()
        g = cfg.weight_granularity.value
        if method == "llmqat":
            g = "per_channel"
        opts = {"granularity": g}
        if g == "per_channel" and method in ("lsq", "squat"):
            opts["num_channels"] = n_out
        return make_quantizer(method, "weight", cfg.weight_bits, **opts)

    blocks = model.get_submodule(layout["blocks"])
    for i, block in enumerate(blocks):
        shared: dict[str, nn.Module] = {}
        for path, site in layout["linears"].items():
            parent_path, _, attr = path.rpartition(".")
            parent = block.get_submodule(parent_path)
            lin = getattr(parent, attr)
            if site not in shared:
                shared[site] = act(site, i)
            n_out = lin.weight.shape[1] if not isinstance(lin, nn.Linear) else lin.weight.shape[0]
            setattr(parent, attr, QuantLinear.from_module(lin, weight(n_out), shared[site]))
        probs_bits = cfg.probs_bits if cfg.sites.probs else None
        attn = block.get_submodule(layout["attn"])
        attn.attn_quant = AttentionQuantizers(
            q=act("q", i), k=act("k", i), v=act("v", i),
            probs=ProbQuantizer(probs_bits) if probs_bits else nn.Identity(),
            layer=i, state=state, record=record,
        )
    if cfg.sites.lm_head and cfg.weight_bits is not None:
        head = model.get_output_embeddings()
        act_q = make_quantizer(method, "act", cfg.act_bits) if cfg.act_bits else nn.Identity()
        model.set_output_embeddings(QuantLinear.from_module(head, weight(head.weight.shape[0]), act_q))
    acts = [m.act_quant for m in quant_linears(model).values()]
    acts += [getattr(m.attn_quant, k) for m in model.modules() if hasattr(m, "attn_quant") for k in ("q", "k", "v", "probs")]
    if any(not isinstance(a, nn.Identity) for a in acts):  # what the runtime runs in integers (its `exact` models)
        exact_ops.install(model, family)
    model.config._attn_implementation = ATTN_IMPLEMENTATION
    handle = QuantHandle(cfg, method, record, state, family)
    model.squat_quant = handle
    model.register_forward_pre_hook(_refuse_empty_input, with_kwargs=True)
    if state is not None:
        model.register_forward_pre_hook(_pass_padding_mask, with_kwargs=True)
    return handle


def _refuse_empty_input(model: nn.Module, args: tuple, kwargs: dict) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is not None and ids.shape[-1] == 0:
        raise ValueError("empty input: a quantized model needs at least one token per sequence (for generate(), "
                         "start from tokenizer.eos_token_id, the document separator squat trains with)")


def _pass_padding_mask(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Hand each forward's 2-D attention mask to the token policy, so padding is never ranked or counted and a
    sequence gets the same precisions alone and in any padded batch (``generate`` passes it too). Looks the state
    up on the module, so a deep copy of the model updates its own state."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    model.squat_quant.state.begin(mask)


def quant_linears(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


@torch.no_grad()
def calibrate(model: nn.Module, input_ids: torch.Tensor) -> None:
    """One forward on a training batch so every quantizer initialises its range there (LSQ init on the first
    training batch), before the optimiser is created."""
    was_training = model.training
    model.train()
    model(input_ids=input_ids)
    model.train(was_training)


def _is_quant_key(k: str) -> bool:
    return any(s in k for s in ("weight_quant.", "act_quant.", "attn_quant."))


def save_quantized(model: nn.Module, out_dir: str | Path, tokenizer=None) -> None:
    """HF folder with the float weights (loadable by plain transformers) + the quantizer state and config."""
    out = Path(out_dir)
    handle: QuantHandle = model.squat_quant
    sd = model.state_dict()
    impl = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        model.save_pretrained(out, state_dict={k: v for k, v in sd.items() if not _is_quant_key(k)})
    finally:
        model.config._attn_implementation = impl
    torch.save({k: v for k, v in sd.items() if _is_quant_key(k)}, out / QUANT_STATE_FILE)
    (out / QUANT_CONFIG_FILE).write_text(json.dumps({"quant": plain(handle.config), "method": handle.method}, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def load_quantized(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Inverse of :func:`save_quantized`; a folder without quantizer files loads as a float model."""
    from omegaconf import OmegaConf

    from squat.models import load_model

    path = Path(path)
    if not (path / QUANT_CONFIG_FILE).is_file():
        return load_model(str(path), attn_implementation="eager", dtype=dtype)
    meta = json.loads((path / QUANT_CONFIG_FILE).read_text())
    cfg: QuantConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(QuantConfig), meta["quant"]))
    model = load_model(str(path), attn_implementation="eager", dtype=dtype)
    quantize_model(model, cfg, meta["method"])
    qstate = torch.load(path / QUANT_STATE_FILE, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(qstate, strict=False)
    bad = [k for k in missing if _is_quant_key(k)] + list(unexpected)
    if bad:
        raise RuntimeError(f"quantizer state in {path} does not match its config: {bad[:5]}")
    return model.eval()
