/// @file squat_runtime.h
/// Integer runtime of an exported LLaMA or GPT-2 student (squat-int/2, squat/export.py): the whole forward in C,
/// every quantized linear through squat_qlinear_run, with a KV cache for decoding.
///
/// Arithmetic, op for op what the Python student (squat.quant, eval mode) computes, so every activation code is
/// the student's:
///  - elementwise float parts in FP32: embeddings (+ learned positions, GPT-2), RoPE (x * cos + rotate_half(x) *
///    sin with tables handed in by the caller, so every RoPE variant of the HF config is the config's own),
///    residual adds, the product act(gate) * up.
///  - reductions and exp in float64, rounded once to float32 (squat/quant/exact_ops.py on the student's side):
///    RMSNorm / LayerNorm statistics and scaling, SiLU (LLaMA) or tanh GELU (GPT-2), softmax. A float32 sum in
///    another order than torch's, or another float32 exp, moves a result by an ulp, and now and then a code
///    across a rounding boundary, which a KV cache then keeps (docs/kernels.md). The float baselines do these in
///    vectorized float32 (four-lane sums, the runtime's own float32 exp, about 1 ulp): what an edge runtime
///    without the equivalence contract would run.
///  - float-input linears (o_proj with quant.sites.o_proj_input=false, the public code's placement) and the float
///    head: dequantized / float weights on the fp32 GEMMs (on the fp16 GEMMs, which accumulate in fp16, the
///    logits would miss the student's by far more than 1e-3). Their sums run in another order than the student's,
///    so a float o_proj can flip a later code: only an all-integer block reproduces the student's bits.
///  - quantized linears: squat_qlinear_run with the export's sites (static or dynamic per token; a
///    token-adaptive site quantizes each row with its high or low twin from the layer's token choice).
///  - attention: q and k (after RoPE) and v quantized with their static sites to raw codes (int8); scores =
///    sum_d (q - zq)(k - zk) as sdot sums of the codes with zero-point corrections, fp32(acc) * fp32(s_q * s_k)
///    times the scaling in float32; softmax in float64 (above); the probabilities quantized to the probs site
///    (8-bit unsigned, step 1/255); probs @ v as sdot sums per value scale group (high and low tokens of a
///    token-adaptive v) over a value cache in blocks of four keys, fp32(acc) * fp32(s_probs * s_v) per group in
///    float32, the groups added.
///  - config.float16 (the FP16 baseline, with four float attention sites): every linear on the library's FP16
///    GEMM (8x16 tile at M > 1, the 1x16 GEMV at M = 1; fp16 weights, fp16 in and out, fp16 accumulation),
///    scores and probs @ v in fp16 (keys cached transposed in blocks of eight, fmla by element), the float parts
///    above in FP32. config.float16 = 0 with float sites is the FP32 baseline (fp32 GEMMs, scalar float attention).
///  - config.reference = 1 runs the scalar twin of every vectorized op of the integer runtime and the shared float
///    parts (not of the FP16 attention): the same bits, a test oracle for the vector code.
///  - token rule (causal threshold, squat.quant.token_policy): layer l's importance of a token is the mean over
///    heads of its float32 attention probability (or score) on the first key; the token is high precision iff
///    importance >= the layer's exported threshold (ratio 0: never, ratio 1: always). Layer l's choice sets its
///    v, o_proj, gate/up and down inputs and layer l+1's attention input, q and k; layer 0's are high precision
///    (exported as plain sites). Each layer's choices are kept for the whole cached sequence.
///  - KV cache: keys and values are cached as their centered integers (q - zero_point) with the precision their
///    token was given, which equals re-quantizing the float cache every step (static sites).
///
/// Usage: squat_rt_create -> squat_rt_set_float / squat_rt_set_linear / squat_rt_set_attention for every
/// tensor -> squat_rt_ready (checks completeness, allocates every buffer for max_seq tokens) -> squat_rt_forward
/// (prefill M tokens, then one at a time; squat_rt_reset starts a new sequence) -> squat_rt_destroy.
/// squat_rt_forward allocates nothing.
#ifndef SQUAT_RUNTIME_H
#define SQUAT_RUNTIME_H
#include <stddef.h>
#include <stdint.h>
#include "squat_qlinear.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Return codes (0 = success); squat_rt_strerror() gives a one-line message naming the fix.
enum {
  SQUAT_RT_OK = 0,
  SQUAT_RT_E_ARG = -101,       ///< NULL pointer, index out of range, or a config value out of range
  SQUAT_RT_E_SHAPE = -102,     ///< a tensor's size disagrees with the config
  SQUAT_RT_E_MISSING = -103,   ///< squat_rt_ready before every tensor was set
  SQUAT_RT_E_NOT_READY = -104, ///< squat_rt_forward before squat_rt_ready (or after a failed one)
  SQUAT_RT_E_SEQ = -105,       ///< the sequence would exceed max_seq tokens
  SQUAT_RT_E_TOKEN = -106,     ///< a token id outside [0, vocab)
  SQUAT_RT_E_SITE = -107,      ///< an attention site the runtime cannot run (not static, or width out of range)
  SQUAT_RT_E_RANGE = -108,     ///< an attention int32 sum could overflow at these widths and max_seq
  SQUAT_RT_E_NOMEM = -109,     ///< allocation failed at load time
  SQUAT_RT_E_BUNDLE = -110,    ///< a bundle file that is missing, truncated or of another version
  SQUAT_RT_E_CPU = -111,       ///< no fp32 GEMM kernel runs on this CPU
};
const char *squat_rt_strerror(int code);

/// Which layers' token choices feed a site (squat.export ActSite.adaptive).
enum { SQUAT_RT_FIXED = 0, SQUAT_RT_ADAPT_INPUT = 1, SQUAT_RT_ADAPT_OUTPUT = 2 };

/// One activation site: float (no quantizer), or `low` (and, adaptive, `high` for the high-precision tokens).
typedef struct squat_rt_site {
  int quantized;   ///< 0 = float input
  int adaptive;    ///< SQUAT_RT_FIXED, SQUAT_RT_ADAPT_INPUT (previous layer's choice) or _ADAPT_OUTPUT (this layer's)
  squat_act_site low, high;
} squat_rt_site;

/// Token rule of a token-adaptive export.
enum { SQUAT_RT_RULE_NONE = 0, SQUAT_RT_RULE_THRESHOLD = 1, SQUAT_RT_RULE_ALL_LOW = 2, SQUAT_RT_RULE_ALL_HIGH = 3 };

/// Architectures: LLaMA (RMSNorm, RoPE, SiLU-gated MLP, q/k/v projections) and GPT-2 (LayerNorm with bias,
/// learned positions, one c_attn linear to [q | k | v], GELU (tanh) MLP, tied head).
enum { SQUAT_RT_LLAMA = 0, SQUAT_RT_GPT2 = 1 };

typedef struct squat_rt_config {
  int arch;             ///< SQUAT_RT_LLAMA or SQUAT_RT_GPT2
  int n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate, vocab;
  int max_seq;          ///< longest sequence (prompt + generated) the buffers hold
  float norm_eps;       ///< RMSNorm / LayerNorm epsilon
  float attn_scaling;   ///< multiplies the scores (head_dim^-0.5)
  int token_rule;       ///< SQUAT_RT_RULE_*
  int score_logits;     ///< token importance from the pre-softmax scores instead of the probabilities
  int float16;          ///< float linears and float attention in FP16 (the FP16 baseline); needs head_dim % 8 == 0
  int reference;        ///< scalar twins of the vectorized ops (the same bits; for tests)
} squat_rt_config;

/// Linear slots of a block; SQUAT_RT_HEAD with layer -1 is the output head. GPT-2 uses Q for c_attn ([q | k | v],
/// 3 * hidden outputs), O for attn.c_proj, UP for mlp.c_fc and DOWN for mlp.c_proj.
enum { SQUAT_RT_Q, SQUAT_RT_K, SQUAT_RT_V, SQUAT_RT_O, SQUAT_RT_GATE, SQUAT_RT_UP, SQUAT_RT_DOWN, SQUAT_RT_HEAD };

typedef struct squat_rt squat_rt;

/// A runtime for `cfg` (copied), or NULL with *err set.
squat_rt *squat_rt_create(const squat_rt_config *cfg, int *err);
void squat_rt_destroy(squat_rt *rt);

/// Float tensors (copied), by name: "embed" [vocab, hidden], "norm" [hidden], "layer.input_norm" /
/// "layer.post_norm" [hidden] for `layer`; LLaMA: "rope_cos" /
/// "rope_sin" [max_seq, head_dim] (position-major); GPT-2: "pos_embed" [>= max_seq, hidden] (the first max_seq
/// rows are kept) and the LayerNorm biases "norm_bias", "layer.input_norm_bias", "layer.post_norm_bias" [hidden].
/// `n` is the number of floats, checked against the config.
int squat_rt_set_float(squat_rt *rt, const char *name, int layer, const float *data, size_t n);

/// A linear (slot SQUAT_RT_*, layer 0.., or -1 for the head): quantized int8 weights [n_out, n_in] of
/// `weight_bits` with float32 scales (per channel or one) and the quantized site of its input, packed for
/// squat_qlinear_run. A linear whose input is float (o_proj, whose input the paper leaves float) goes through
/// squat_rt_set_linear_float with its dequantized weights.
int squat_rt_set_linear(squat_rt *rt, int layer, int slot, size_t n_out, size_t n_in, int weight_bits,
                        const int8_t *w, const float *w_scale, int w_scale_per_channel, const float *bias,
                        const squat_rt_site *act);

/// A float linear (float32 weights [n_out, n_in], optional bias) on the library's float GEMMs (fp16, weights
/// rounded to fp16, with config.float16, else fp32): a float-input linear (dequantized weights), the float head,
/// and every linear of the FP32 / FP16 baselines (the same model, dequantized, through the same runtime).
int squat_rt_set_linear_float(squat_rt *rt, int layer, int slot, size_t n_out, size_t n_in, const float *w,
                              const float *bias);

/// The attention sites of a block (q, k after RoPE; v; probs) and its token threshold (ignored without rule).
/// Four float sites select the baselines' float attention (FP16 or FP32 by config.float16) over a float cache.
int squat_rt_set_attention(squat_rt *rt, int layer, const squat_rt_site *q, const squat_rt_site *k,
                           const squat_rt_site *v, const squat_rt_site *probs, float token_threshold);

/// Checks that everything is set and allocates the buffers for max_seq tokens. Returns 0 or a code.
int squat_rt_ready(squat_rt *rt);

/// The runtime's config (as created).
const squat_rt_config *squat_rt_get_config(const squat_rt *rt);

/// Start a new sequence (the cache is emptied; nothing is freed).
void squat_rt_reset(squat_rt *rt);
/// Tokens in the cache.
size_t squat_rt_pos(const squat_rt *rt);

/// Append `n` tokens at positions pos .. pos + n - 1 and run them (causal attention over the whole cache).
/// `logits`: float32 [n, vocab] if `all_logits`, else [vocab] for the last token; may be NULL.
int squat_rt_forward(squat_rt *rt, const int32_t *ids, size_t n, float *logits, int all_logits);

/// A ready runtime from a bundle file: the config and every squat_rt_set_* call recorded by Python
/// (squat.kernels.runtime.IntegerRuntime(export, bundle=path)), replayed in order, then squat_rt_ready. This is how
/// a program without Python (an edge device, qemu) runs an export. NULL with *err set on failure.
/// Layout (native endianness and struct layout): "SQRTBND2", squat_rt_config, then records `int32 kind`:
/// 1 float {int32 layer, char name[32], uint64 n, float[n]}; 2 linear {int32 layer, slot, bits, per_channel,
/// has_bias, uint64 n_out, n_in, squat_rt_site, int8[n_out * n_in], float scales[per_channel ? n_out : 1],
/// float bias[n_out] if has_bias}; 3 attention {int32 layer, squat_rt_site q, k, v, probs, float threshold};
/// 4 float linear {int32 layer, slot, has_bias, uint64 n_out, n_in, float[n_out * n_in], float bias[n_out] if
/// has_bias}; 0 end.
squat_rt *squat_rt_load_bundle(const char *path, int *err);

/// Layer `layer`'s token choices (1 = high precision) for positions 0 .. pos - 1, or NULL.
const uint8_t *squat_rt_high_flags(const squat_rt *rt, int layer);

#ifdef __cplusplus
}
#endif
#endif
