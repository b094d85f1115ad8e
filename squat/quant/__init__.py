"""Quantization core: what (config), how (quantizers), where (linear, attention, prepare), token policy."""
from squat.quant.config import QuantConfig, SitesConfig, TokenPolicyConfig
from squat.quant.prepare import calibrate, load_quantized, quantize_model, save_quantized

__all__ = ["QuantConfig", "SitesConfig", "TokenPolicyConfig", "calibrate", "load_quantized", "quantize_model", "save_quantized"]
