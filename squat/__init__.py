"""squat: quantization-aware training of small language models for edge CPUs, with a mixed-precision kernel."""
