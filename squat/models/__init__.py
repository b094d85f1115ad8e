"""Hugging Face causal LMs from a preset (trained from scratch) or from a path/hub id. Never forked."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from squat.config import ModelConfig, ModelFamily


def build_model(cfg: ModelConfig, vocab_size: int, eos_token_id: int | None = None, attn_implementation: str = "sdpa"):
    if cfg.pretrained is not None:
        return load_model(cfg.pretrained, attn_implementation)
    family = ModelFamily(cfg.family)
    if family == ModelFamily.llama:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=cfg.tie_word_embeddings,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
        )
        config._attn_implementation = attn_implementation
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        n_positions=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config)


def load_model(path: str, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32):
    """Any causal LM saved with ``save_pretrained`` (local folder) or on the hub."""
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation, dtype=dtype)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
