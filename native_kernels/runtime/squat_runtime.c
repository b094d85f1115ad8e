/// Integer runtime of an exported LLaMA student (squat_runtime.h). Everything is allocated by squat_rt_set_* and
/// squat_rt_ready; squat_rt_forward only reads and writes those buffers.
#include "squat_runtime.h"
#include "squat_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SLOTS 7

typedef struct rt_linear {
  void *blob;           /* squat_qlinear blob (quantized input), or */
  void *fw;             /* float weights packed for the fp32 GEMMs (float input, float head, FP32 baseline) */
  float *bias;          /* of fw */
  size_t n, k;
  squat_rt_site act;
} rt_linear;

typedef struct rt_layer {
  rt_linear lin[N_SLOTS];
  float *input_norm, *post_norm, *input_norm_b, *post_norm_b;  /* biases: GPT-2 LayerNorm */
  squat_rt_site q, k, v, probs;
  int attn_set;
  float threshold;
  int float_attn;       /* FP32 baseline: float q, k, v and probabilities */
  int16_t *kc, *vc;     /* cache [max_seq, n_kv * head_dim]: centered integers q - zero_point */
  float *kf, *vf;       /* or, float attention, the float keys and values */
  uint8_t *high;        /* [max_seq] this layer's token choices */
} rt_layer;

struct squat_rt {
  squat_rt_config c;
  rt_layer *layers;
  rt_linear head;
  float *embed, *norm, *norm_b, *rope_cos, *rope_sin, *pos_embed;
  int ready;
  size_t pos;
  /* per-call buffers, sized for max_seq rows */
  float *x, *xn, *tmp, *qkv, *qb, *kb, *vb, *attn, *g, *u, *scores, *probs;
  int16_t *qc, *pc;
  double *qscale, *e;
  void *work;
  size_t work_size;
  int fk_prefill, fk_decode;  /* fp32 GEMMs (one packed layout): register tile for M > 1, GEMV for M = 1 */
  void *flhs;                 /* their packed LHS, max_seq rows of the widest float linear */
};

const char *squat_rt_strerror(int code) {
  switch (code) {
    case SQUAT_RT_OK: return "ok";
    case SQUAT_RT_E_ARG: return "invalid argument: NULL pointer, layer or slot out of range, or a config value out of range";
    case SQUAT_RT_E_SHAPE: return "a tensor's size disagrees with the model config: the export is inconsistent; export the model again";
    case SQUAT_RT_E_MISSING: return "not every tensor was set before squat_rt_ready: the export is truncated; export the model again";
    case SQUAT_RT_E_NOT_READY: return "squat_rt_forward before a successful squat_rt_ready";
    case SQUAT_RT_E_SEQ: return "the sequence would exceed max_seq tokens: create the runtime with a larger max_seq, or reset it";
    case SQUAT_RT_E_TOKEN: return "a token id outside [0, vocab): tokenize with the export's own tokenizer";
    case SQUAT_RT_E_SITE: return "unsupported attention site: q, k, v and probs must be static quantizers of 2 to 8 bits (dynamic or float attention sites do not run here)";
    case SQUAT_RT_E_RANGE: return "an attention int32 sum could overflow at these widths: lower max_seq";
    case SQUAT_RT_E_NOMEM: return "out of memory while loading the model";
    case SQUAT_RT_E_CPU: return "no fp32 GEMM runs on this CPU (the float head and FP32 baseline need one): rebuild native_kernels for it";
    case SQUAT_RT_E_BUNDLE: return "not a complete runtime bundle (missing, truncated or another version): write it again with squat.kernels.runtime.IntegerRuntime(export, bundle=path)";
    default: return squat_qlinear_strerror(code);
  }
}

/* ---------------------------------------------------------------------------------------------- load */
squat_rt *squat_rt_create(const squat_rt_config *cfg, int *err) {
  int rc = SQUAT_RT_E_ARG;
  squat_rt *rt = NULL;
  if (!cfg || cfg->n_layers <= 0 || cfg->hidden <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 ||
      cfg->n_heads % cfg->n_kv_heads || cfg->head_dim <= 0 || cfg->head_dim % 2 || cfg->intermediate <= 0 ||
      cfg->vocab <= 0 || cfg->max_seq <= 0 || (cfg->arch != SQUAT_RT_LLAMA && cfg->arch != SQUAT_RT_GPT2) || cfg->token_rule < SQUAT_RT_RULE_NONE ||
      cfg->token_rule > SQUAT_RT_RULE_ALL_HIGH)
    goto fail;
  rc = SQUAT_RT_E_NOMEM;
  if (!(rt = calloc(1, sizeof *rt))) goto fail;
  rt->c = *cfg;
  rt->fk_prefill = rt->fk_decode = -1;
  for (size_t i = 0; i < squat_fgemm_count(); i++) {
    const squat_fgemm_ukernel *u = squat_fgemm_get(i);
    if (strcmp(u->precision, "fp32") || !squat_fgemm_available(i) || u->rhs_layout != SQUAT_FLAYOUT_F32_NR8) continue;
    int *slot = u->get_mr() == 1 ? &rt->fk_decode : &rt->fk_prefill;
    if (*slot < 0) *slot = (int)i;
  }
  if (rt->fk_prefill < 0) rt->fk_prefill = rt->fk_decode;
  if (rt->fk_decode < 0) rt->fk_decode = rt->fk_prefill;
  rc = SQUAT_RT_E_CPU;
  if (rt->fk_prefill < 0) goto fail;
  rc = SQUAT_RT_E_NOMEM;
  if (!(rt->layers = calloc((size_t)cfg->n_layers, sizeof *rt->layers))) goto fail;
  if (err) *err = SQUAT_RT_OK;
  return rt;
fail:
  squat_rt_destroy(rt);
  if (err) *err = rc;
  return NULL;
}

static void free_linear(rt_linear *l) {
  free(l->blob); free(l->fw); free(l->bias);
  memset(l, 0, sizeof *l);
}

void squat_rt_destroy(squat_rt *rt) {
  if (!rt) return;
  for (int i = 0; rt->layers && i < rt->c.n_layers; i++) {
    rt_layer *L = &rt->layers[i];
    for (int s = 0; s < N_SLOTS; s++) free_linear(&L->lin[s]);
    free(L->input_norm); free(L->post_norm); free(L->input_norm_b); free(L->post_norm_b); free(L->kc); free(L->vc); free(L->kf); free(L->vf); free(L->high);
  }
  free(rt->layers);
  free_linear(&rt->head);
  free(rt->embed); free(rt->norm); free(rt->norm_b); free(rt->rope_cos); free(rt->rope_sin); free(rt->pos_embed);
  free(rt->x); free(rt->xn); free(rt->tmp); free(rt->qkv); free(rt->qb); free(rt->kb); free(rt->vb); free(rt->attn);
  free(rt->g); free(rt->u); free(rt->scores); free(rt->probs); free(rt->qc); free(rt->pc); free(rt->qscale);
  free(rt->e); free(rt->work); free(rt->flhs);
  free(rt);
}

static int copy_floats(float **dst, const float *src, size_t n, size_t want) {
  if (n != want) return SQUAT_RT_E_SHAPE;
  float *p = malloc(n * sizeof(float));
  if (!p) return SQUAT_RT_E_NOMEM;
  memcpy(p, src, n * sizeof(float));
  free(*dst);
  *dst = p;
  return SQUAT_RT_OK;
}

int squat_rt_set_float(squat_rt *rt, const char *name, int layer, const float *data, size_t n) {
  if (!rt || !name || !data) return SQUAT_RT_E_ARG;
  const squat_rt_config *c = &rt->c;
  const size_t h = (size_t)c->hidden, v = (size_t)c->vocab, rope = (size_t)c->max_seq * (size_t)c->head_dim,
               pe = (size_t)c->max_seq * h;
  rt->ready = 0;
  if (!strcmp(name, "embed")) return copy_floats(&rt->embed, data, n, v * h);
  if (!strcmp(name, "norm")) return copy_floats(&rt->norm, data, n, h);
  if (!strcmp(name, "rope_cos")) return copy_floats(&rt->rope_cos, data, n, rope);
  if (!strcmp(name, "rope_sin")) return copy_floats(&rt->rope_sin, data, n, rope);
  if (!strcmp(name, "norm_bias")) return copy_floats(&rt->norm_b, data, n, h);
  if (!strcmp(name, "pos_embed")) return copy_floats(&rt->pos_embed, data, n < pe ? n : pe, pe);
  if (layer < 0 || layer >= c->n_layers) return SQUAT_RT_E_ARG;
  if (!strcmp(name, "layer.input_norm")) return copy_floats(&rt->layers[layer].input_norm, data, n, h);
  if (!strcmp(name, "layer.post_norm")) return copy_floats(&rt->layers[layer].post_norm, data, n, h);
  if (!strcmp(name, "layer.input_norm_bias")) return copy_floats(&rt->layers[layer].input_norm_b, data, n, h);
  if (!strcmp(name, "layer.post_norm_bias")) return copy_floats(&rt->layers[layer].post_norm_b, data, n, h);
  return SQUAT_RT_E_ARG;
}

/* The linear of (layer, slot) and the shape the config gives it, or NULL. */
static rt_linear *slot_of(squat_rt *rt, int layer, int slot, size_t *want_n, size_t *want_k) {
  const squat_rt_config *c = &rt->c;
  const size_t h = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim,
               im = (size_t)c->intermediate;
  if (slot == SQUAT_RT_HEAD && layer == -1) {
    *want_n = (size_t)c->vocab; *want_k = h;
    return &rt->head;
  }
  if (layer < 0 || layer >= c->n_layers || slot < 0 || slot >= N_SLOTS) return NULL;
  if (c->arch == SQUAT_RT_GPT2 && (slot == SQUAT_RT_K || slot == SQUAT_RT_V || slot == SQUAT_RT_GATE)) return NULL;
  const size_t ns[N_SLOTS] = {c->arch == SQUAT_RT_GPT2 ? qd + 2 * kvd : qd, kvd, kvd, h, im, im, h},
               ks[N_SLOTS] = {h, h, h, qd, h, h, im};
  *want_n = ns[slot]; *want_k = ks[slot];
  return &rt->layers[layer].lin[slot];
}

int squat_rt_set_linear_float(squat_rt *rt, int layer, int slot, size_t n_out, size_t n_in, const float *w,
                              const float *bias) {
  if (!rt || !w) return SQUAT_RT_E_ARG;
  size_t want_n, want_k;
  rt_linear *l = slot_of(rt, layer, slot, &want_n, &want_k);
  if (!l) return SQUAT_RT_E_ARG;
  if (n_out != want_n || n_in != want_k) return SQUAT_RT_E_SHAPE;
  rt->ready = 0;
  free_linear(l);
  l->n = n_out; l->k = n_in;
  if (!(l->fw = malloc(squat_fgemm_rhs_size((size_t)rt->fk_prefill, n_out, n_in))) ||
      (bias && !(l->bias = malloc(n_out * sizeof(float))))) {
    free_linear(l);
    return SQUAT_RT_E_NOMEM;
  }
  squat_fgemm_pack_rhs((size_t)rt->fk_prefill, n_out, n_in, w, n_in, l->fw);
  if (bias) memcpy(l->bias, bias, n_out * sizeof(float));
  return SQUAT_RT_OK;
}

int squat_rt_set_linear(squat_rt *rt, int layer, int slot, size_t n_out, size_t n_in, int weight_bits,
                        const int8_t *w, const float *w_scale, int w_scale_per_channel, const float *bias,
                        const squat_rt_site *act) {
  if (!rt || !w || !w_scale || !act) return SQUAT_RT_E_ARG;
  size_t want_n, want_k;
  rt_linear *l = slot_of(rt, layer, slot, &want_n, &want_k);
  if (!l) return SQUAT_RT_E_ARG;
  if (n_out != want_n || n_in != want_k) return SQUAT_RT_E_SHAPE;
  if (weight_bits < 2 || weight_bits > 8) return SQUAT_QL_E_BITS;
  rt->ready = 0;
  free_linear(l);
  l->n = n_out; l->k = n_in; l->act = *act;
  if (!act->quantized) return SQUAT_RT_E_ARG; /* float input: squat_rt_set_linear_float */
  const size_t size = squat_qlinear_packed_size(n_out, n_in, weight_bits, 0);
  if (!(l->blob = malloc(size))) return SQUAT_RT_E_NOMEM;
  const int rc = squat_qlinear_pack(n_out, n_in, weight_bits, w, n_in, w_scale, w_scale_per_channel, bias, 0, l->blob);
  if (rc) free_linear(l);
  return rc;
}

static int attn_site_ok(const squat_rt_site *s) {
  const squat_act_site *g[2] = {&s->low, &s->high};
  if (!s->quantized) return 0;
  for (int i = 0; i < (s->adaptive ? 2 : 1); i++) {
    const int lo = -(1 << (g[i]->bits - 1)), hi = (1 << (g[i]->bits - 1)) - 1;
    if (g[i]->mode != SQUAT_ACT_STATIC || g[i]->bits < 2 || g[i]->bits > 8 || g[i]->qmin < lo || g[i]->qmax > hi ||
        g[i]->qmin > g[i]->qmax || g[i]->zero_point < g[i]->qmin - 256 || g[i]->zero_point > g[i]->qmax + 256 ||
        !(g[i]->scale > 0.0f && g[i]->scale <= 3.4e38f))
      return 0;
  }
  return 1;
}

int squat_rt_set_attention(squat_rt *rt, int layer, const squat_rt_site *q, const squat_rt_site *k,
                           const squat_rt_site *v, const squat_rt_site *probs, float token_threshold) {
  if (!rt || !q || !k || !v || !probs || layer < 0 || layer >= rt->c.n_layers) return SQUAT_RT_E_ARG;
  const int all_float = !q->quantized && !k->quantized && !v->quantized && !probs->quantized;
  if (!all_float && (!attn_site_ok(q) || !attn_site_ok(k) || !attn_site_ok(v) || !attn_site_ok(probs) || probs->adaptive))
    return SQUAT_RT_E_SITE;
  rt_layer *L = &rt->layers[layer];
  L->float_attn = all_float;
  L->q = *q; L->k = *k; L->v = *v; L->probs = *probs;
  L->threshold = token_threshold;
  L->attn_set = 1;
  rt->ready = 0;
  return SQUAT_RT_OK;
}

/* Largest |q - zero_point| of a site (both twins of an adaptive one). */
static int64_t span(const squat_rt_site *s) {
  int64_t m = 0;
  const squat_act_site *g[2] = {&s->low, &s->high};
  for (int i = 0; i < (s->adaptive ? 2 : 1); i++) {
    const int64_t a = llabs((int64_t)g[i]->qmin - g[i]->zero_point), b = llabs((int64_t)g[i]->qmax - g[i]->zero_point);
    if (a > m) m = a;
    if (b > m) m = b;
  }
  return m;
}

#define ALLOC(p, count) do { free(p); if (!((p) = calloc((size_t)(count), sizeof *(p)))) return SQUAT_RT_E_NOMEM; } while (0)

int squat_rt_ready(squat_rt *rt) {
  if (!rt) return SQUAT_RT_E_ARG;
  rt->ready = 0;
  const squat_rt_config *c = &rt->c;
  const size_t s = (size_t)c->max_seq, h = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
               kvd = (size_t)c->n_kv_heads * c->head_dim, im = (size_t)c->intermediate;
  const int gpt2 = c->arch == SQUAT_RT_GPT2;
  if (!rt->embed || !rt->norm || (!rt->head.blob && !rt->head.fw) ||
      (gpt2 ? !rt->pos_embed || !rt->norm_b : !rt->rope_cos || !rt->rope_sin))
    return SQUAT_RT_E_MISSING;
  size_t ws = rt->head.blob ? squat_qlinear_workspace_size(rt->head.blob, s) : 0, fk = h;
  for (int i = 0; i < c->n_layers; i++) {
    rt_layer *L = &rt->layers[i];
    if (!L->input_norm || !L->post_norm || !L->attn_set || (gpt2 && (!L->input_norm_b || !L->post_norm_b)))
      return SQUAT_RT_E_MISSING;
    for (int j = 0; j < N_SLOTS; j++) {
      if (gpt2 && (j == SQUAT_RT_K || j == SQUAT_RT_V || j == SQUAT_RT_GATE)) continue;
      if (!L->lin[j].blob && !L->lin[j].fw) return SQUAT_RT_E_MISSING;
      const size_t w = L->lin[j].blob ? squat_qlinear_workspace_size(L->lin[j].blob, s) : 0;
      if (w > ws) ws = w;
      if (L->lin[j].k > fk) fk = L->lin[j].k;
    }
    if (L->float_attn) {
      ALLOC(L->kf, s * kvd);
      ALLOC(L->vf, s * kvd);
    } else if ((int64_t)c->head_dim * span(&L->q) * span(&L->k) >= ((int64_t)1 << 31) ||
        (int64_t)c->max_seq * span(&L->probs) * span(&L->v) >= ((int64_t)1 << 31))
      return SQUAT_RT_E_RANGE;
    ALLOC(L->kc, s * kvd);
    ALLOC(L->vc, s * kvd);
    ALLOC(L->high, s);
  }
  ALLOC(rt->x, s * h); ALLOC(rt->xn, s * h); ALLOC(rt->tmp, s * h);
  ALLOC(rt->qkv, s * (qd + 2 * kvd)); ALLOC(rt->qb, s * qd); ALLOC(rt->kb, s * kvd); ALLOC(rt->vb, s * kvd); ALLOC(rt->attn, s * qd);
  ALLOC(rt->g, s * im); ALLOC(rt->u, s * im);
  ALLOC(rt->scores, (size_t)c->n_heads * s); ALLOC(rt->probs, (size_t)c->n_heads * s);
  ALLOC(rt->qc, s * qd); ALLOC(rt->pc, s); ALLOC(rt->qscale, s); ALLOC(rt->e, s);
  free(rt->work);
  if (!(rt->work = malloc(ws ? ws : 1))) return SQUAT_RT_E_NOMEM;
  free(rt->flhs);
  const size_t lp = squat_fgemm_lhs_size((size_t)rt->fk_prefill, s, fk), ld = squat_fgemm_lhs_size((size_t)rt->fk_decode, 1, fk);
  if (!(rt->flhs = malloc(lp > ld ? lp : ld))) return SQUAT_RT_E_NOMEM;
  rt->work_size = ws;
  rt->pos = 0;
  rt->ready = 1;
  return SQUAT_RT_OK;
}

const squat_rt_config *squat_rt_get_config(const squat_rt *rt) { return rt ? &rt->c : NULL; }

void squat_rt_reset(squat_rt *rt) { if (rt) rt->pos = 0; }
size_t squat_rt_pos(const squat_rt *rt) { return rt ? rt->pos : 0; }

const uint8_t *squat_rt_high_flags(const squat_rt *rt, int layer) {
  if (!rt || !rt->ready || layer < 0 || layer >= rt->c.n_layers) return NULL;
  return rt->layers[layer].high;
}

/* ---------------------------------------------------------------------------------------------- forward */
/* The token choices (whole sequence) that set site `s` of layer `l`: NULL = every token high precision. */
static const uint8_t *choices(const squat_rt *rt, int l, const squat_rt_site *s) {
  if (s->adaptive == SQUAT_RT_ADAPT_OUTPUT) return rt->layers[l].high;
  return l > 0 ? rt->layers[l - 1].high : NULL; /* before layer 0 everything is high precision */
}

/* The quantizer of one token at site `s`. */
static const squat_act_site *site_for(const squat_rt *rt, int l, const squat_rt_site *s, size_t pos) {
  if (!s->adaptive) return &s->low;
  const uint8_t *h = choices(rt, l, s);
  return (!h || h[pos]) ? &s->high : &s->low;
}

static int linear(squat_rt *rt, int l, const rt_linear *lin, size_t m, const float *x, float *y) {
  if (lin->fw) { /* fp32 GEMM (float head, FP32 baseline) */
    const size_t kern = (size_t)(m == 1 ? rt->fk_decode : rt->fk_prefill);
    squat_fgemm_pack_lhs(kern, m, lin->k, x, lin->k, rt->flhs);
    squat_fgemm_run(kern, m, lin->n, lin->k, rt->flhs, lin->fw, y, lin->n);
    if (lin->bias)
      for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < lin->n; j++) y[i * lin->n + j] += lin->bias[j];
    return SQUAT_RT_OK;
  }
  squat_qlinear_act act;
  memset(&act, 0, sizeof act);
  act.low = lin->act.low;
  if (lin->act.adaptive) {
    const uint8_t *h = l >= 0 ? choices(rt, l, &lin->act) : NULL;
    if (h) {
      act.high = lin->act.high;
      act.high_mask = h + rt->pos;
    } else {
      act.low = lin->act.high;
    }
  }
  return squat_qlinear_run(lin->blob, m, x, lin->k, &act, y, lin->n, rt->work, rt->work_size);
}

/* x / sqrtf(mean(x^2) + eps) * w, the mean of squares summed in float64 */
static void rmsnorm(size_t m, size_t h, const float *x, const float *w, float eps, float *y) {
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    double ss = 0.0;
    for (size_t j = 0; j < h; j++) ss += (double)xr[j] * xr[j];
    const float r = 1.0f / sqrtf((float)(ss / (double)h) + eps);
    for (size_t j = 0; j < h; j++) y[i * h + j] = w[j] * (xr[j] * r);
  }
}

/* x * cos + rotate_half(x) * sin for each head of one row, rotate_half(x) = (-x2, x1). */
/* (x - mean) / sqrtf(var + eps) * w + b, mean and biased variance summed in float64 */
static void layernorm(size_t m, size_t h, const float *x, const float *w, const float *b, float eps, float *y) {
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    double sum = 0.0, ss = 0.0;
    for (size_t j = 0; j < h; j++) sum += xr[j];
    const float mean = (float)(sum / (double)h);
    for (size_t j = 0; j < h; j++) ss += ((double)xr[j] - mean) * ((double)xr[j] - mean);
    const float r = 1.0f / sqrtf((float)(ss / (double)h) + eps);
    for (size_t j = 0; j < h; j++) y[i * h + j] = (xr[j] - mean) * r * w[j] + b[j];
  }
}

static void norm(const squat_rt *rt, size_t m, const float *x, const float *w, const float *b, float *y) {
  if (rt->c.arch == SQUAT_RT_GPT2) layernorm(m, (size_t)rt->c.hidden, x, w, b, rt->c.norm_eps, y);
  else rmsnorm(m, (size_t)rt->c.hidden, x, w, rt->c.norm_eps, y);
}

/* GPT-2's gelu_new, op by op as HF computes it: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) */
static inline float gelu_tanh(float x) {
  const float inner = 0.7978845608028654f * (x + 0.044715f * (x * x * x));
  return 0.5f * x * (1.0f + tanhf(inner));
}

static void rope(float *row, int n_heads, int d, const float *cos, const float *sin) {
  const int half = d / 2;
  for (int hd = 0; hd < n_heads; hd++) {
    float *v = row + (size_t)hd * d;
    for (int i = 0; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] + (-b) * sin[i];
      v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

static inline int16_t centered(float x, const squat_act_site *s) {
  float t = rintf(x / s->scale) + (float)s->zero_point;
  t = t < (float)s->qmin ? (float)s->qmin : t > (float)s->qmax ? (float)s->qmax : t;
  return (int16_t)((int)t - s->zero_point);
}

static void quantize_row(const float *x, size_t n, const squat_act_site *s, int16_t *q) {
  for (size_t i = 0; i < n; i++) q[i] = centered(x[i], s);
}

/* Attention of the m new rows of layer l (positions pos .. pos + m - 1) into rt->attn; decides each row's token
   precision on the way (a row's value needs its own choice, which needs its own probabilities). */
static void attention(squat_rt *rt, int l, size_t m) {
  const squat_rt_config *c = &rt->c;
  rt_layer *L = &rt->layers[l];
  const int H = c->n_heads, D = c->head_dim, G = c->n_heads / c->n_kv_heads;
  const size_t qd = (size_t)H * D, kvd = (size_t)c->n_kv_heads * D, S_max = (size_t)c->max_seq;
  const double sp = L->probs.low.scale;
  for (size_t i = 0; i < m; i++) {
    const size_t p = rt->pos + i, S = p + 1;
    const squat_act_site *qs = site_for(rt, l, &L->q, p);
    const double sq = qs->scale;
    quantize_row(rt->qb + i * qd, qd, qs, rt->qc + i * qd);
    for (int hd = 0; hd < H; hd++) {
      const int16_t *qh = rt->qc + i * qd + (size_t)hd * D;
      const int16_t *kbase = L->kc + (size_t)(hd / G) * D;
      float *sc = rt->scores + (size_t)hd * S_max, *pr = rt->probs + (size_t)hd * S_max;
      float mx = -INFINITY;
      for (size_t j = 0; j < S; j++) {
        const int16_t *kr = kbase + j * kvd;
        int32_t acc = 0;
        for (int d = 0; d < D; d++) acc += (int32_t)qh[d] * kr[d];
        const double sk = site_for(rt, l, &L->k, j)->scale;
        sc[j] = (float)((double)acc * sq * sk) * c->attn_scaling;
        if (sc[j] > mx) mx = sc[j];
      }
      double sum = 0.0;
      for (size_t j = 0; j < S; j++) sum += (rt->e[j] = exp((double)sc[j] - (double)mx));
      const double inv = 1.0 / sum;
      for (size_t j = 0; j < S; j++) pr[j] = (float)(rt->e[j] * inv);
    }
    uint8_t hi = 0;
    if (c->token_rule == SQUAT_RT_RULE_ALL_HIGH) {
      hi = 1;
    } else if (c->token_rule == SQUAT_RT_RULE_THRESHOLD) {
      const float *src = c->score_logits ? rt->scores : rt->probs;
      float imp = 0.0f;
      for (int hd = 0; hd < H; hd++) imp += src[(size_t)hd * S_max];
      hi = imp / (float)H >= L->threshold;
    }
    L->high[p] = hi;
    const squat_act_site *vs = site_for(rt, l, &L->v, p);
    quantize_row(rt->vb + i * kvd, kvd, vs, L->vc + p * kvd);
    const double svh = L->v.high.scale, svl = L->v.low.scale;
    for (int hd = 0; hd < H; hd++) {
      const float *pr = rt->probs + (size_t)hd * S_max;
      for (size_t j = 0; j < S; j++) rt->pc[j] = centered(pr[j], &L->probs.low);
      const int16_t *vbase = L->vc + (size_t)(hd / G) * D;
      float *out = rt->attn + i * qd + (size_t)hd * D;
      int32_t acc_h[D], acc_l[D];
      memset(acc_h, 0, sizeof acc_h);
      memset(acc_l, 0, sizeof acc_l);
      const uint8_t *vh = L->v.adaptive ? choices(rt, l, &L->v) : NULL;
      for (size_t j = 0; j < S; j++) {
        const int16_t *vr = vbase + j * kvd;
        const int32_t pj = rt->pc[j];
        int32_t *acc = (vh && !vh[j]) ? acc_l : acc_h;
        for (int d = 0; d < D; d++) acc[d] += pj * vr[d];
      }
      if (!L->v.adaptive) {
        for (int d = 0; d < D; d++) out[d] = (float)((double)acc_h[d] * sp * svl);
      } else if (!vh) {
        for (int d = 0; d < D; d++) out[d] = (float)((double)acc_h[d] * sp * svh);
      } else {
        for (int d = 0; d < D; d++) out[d] = (float)((double)acc_h[d] * sp * svh + (double)acc_l[d] * sp * svl);
      }
    }
  }
}

/* FP32 baseline attention of the m new rows: float scores, softmax and probs @ v over the float cache. */
static void attention_float(squat_rt *rt, int l, size_t m) {
  const squat_rt_config *c = &rt->c;
  rt_layer *L = &rt->layers[l];
  const int H = c->n_heads, D = c->head_dim, G = c->n_heads / c->n_kv_heads;
  const size_t qd = (size_t)H * D, kvd = (size_t)c->n_kv_heads * D;
  float *pr = rt->probs;
  for (size_t i = 0; i < m; i++) {
    const size_t S = rt->pos + i + 1;
    for (int hd = 0; hd < H; hd++) {
      const float *qh = rt->qb + i * qd + (size_t)hd * D, *kbase = L->kf + (size_t)(hd / G) * D;
      float mx = -INFINITY, sum = 0.0f;
      for (size_t j = 0; j < S; j++) {
        const float *kr = kbase + j * kvd;
        float acc = 0.0f;
        for (int d = 0; d < D; d++) acc += qh[d] * kr[d];
        pr[j] = acc * c->attn_scaling;
        if (pr[j] > mx) mx = pr[j];
      }
      for (size_t j = 0; j < S; j++) sum += (pr[j] = expf(pr[j] - mx));
      const float inv = 1.0f / sum;
      float *out = rt->attn + i * qd + (size_t)hd * D;
      const float *vbase = L->vf + (size_t)(hd / G) * D;
      for (int d = 0; d < D; d++) out[d] = 0.0f;
      for (size_t j = 0; j < S; j++) {
        const float pj = pr[j] * inv, *vr = vbase + j * kvd;
        for (int d = 0; d < D; d++) out[d] += pj * vr[d];
      }
    }
  }
}

int squat_rt_forward(squat_rt *rt, const int32_t *ids, size_t n, float *logits, int all_logits) {
  if (!rt || (n && !ids)) return SQUAT_RT_E_ARG;
  if (!rt->ready) return SQUAT_RT_E_NOT_READY;
  const squat_rt_config *c = &rt->c;
  if (n == 0) return SQUAT_RT_OK;
  if (rt->pos + n > (size_t)c->max_seq) return SQUAT_RT_E_SEQ;
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= c->vocab) return SQUAT_RT_E_TOKEN;
  const size_t h = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
               kvd = (size_t)c->n_kv_heads * c->head_dim, im = (size_t)c->intermediate, D = (size_t)c->head_dim;
  const int gpt2 = c->arch == SQUAT_RT_GPT2;
  for (size_t i = 0; i < n; i++) {
    memcpy(rt->x + i * h, rt->embed + (size_t)ids[i] * h, h * sizeof(float));
    if (gpt2)
      for (size_t j = 0; j < h; j++) rt->x[i * h + j] = rt->x[i * h + j] + rt->pos_embed[(rt->pos + i) * h + j];
  }
  int rc;
  for (int l = 0; l < c->n_layers; l++) {
    rt_layer *L = &rt->layers[l];
    norm(rt, n, rt->x, L->input_norm, L->input_norm_b, rt->xn);
    if (gpt2) { /* c_attn: one linear to [q | k | v] */
      const size_t w = qd + 2 * kvd;
      if ((rc = linear(rt, l, &L->lin[SQUAT_RT_Q], n, rt->xn, rt->qkv))) return rc;
      for (size_t i = 0; i < n; i++) {
        memcpy(rt->qb + i * qd, rt->qkv + i * w, qd * sizeof(float));
        memcpy(rt->kb + i * kvd, rt->qkv + i * w + qd, kvd * sizeof(float));
        memcpy(rt->vb + i * kvd, rt->qkv + i * w + qd + kvd, kvd * sizeof(float));
      }
    } else if ((rc = linear(rt, l, &L->lin[SQUAT_RT_Q], n, rt->xn, rt->qb)) ||
               (rc = linear(rt, l, &L->lin[SQUAT_RT_K], n, rt->xn, rt->kb)) ||
               (rc = linear(rt, l, &L->lin[SQUAT_RT_V], n, rt->xn, rt->vb))) {
      return rc;
    }
    for (size_t i = 0; i < n; i++) {
      const size_t p = rt->pos + i;
      if (!gpt2) {
        const float *cs = rt->rope_cos + p * D, *sn = rt->rope_sin + p * D;
        rope(rt->qb + i * qd, c->n_heads, c->head_dim, cs, sn);
        rope(rt->kb + i * kvd, c->n_kv_heads, c->head_dim, cs, sn);
      }
      if (L->float_attn) {
        memcpy(L->kf + p * kvd, rt->kb + i * kvd, kvd * sizeof(float));
        memcpy(L->vf + p * kvd, rt->vb + i * kvd, kvd * sizeof(float));
      } else {
        quantize_row(rt->kb + i * kvd, kvd, site_for(rt, l, &L->k, p), L->kc + p * kvd);
      }
    }
    if (L->float_attn) attention_float(rt, l, n);
    else attention(rt, l, n);
    if ((rc = linear(rt, l, &L->lin[SQUAT_RT_O], n, rt->attn, rt->tmp))) return rc;
    for (size_t t = 0; t < n * h; t++) rt->x[t] = rt->tmp[t] + rt->x[t];
    norm(rt, n, rt->x, L->post_norm, L->post_norm_b, rt->xn);
    if (gpt2) {
      if ((rc = linear(rt, l, &L->lin[SQUAT_RT_UP], n, rt->xn, rt->g))) return rc;
      for (size_t t = 0; t < n * im; t++) rt->g[t] = gelu_tanh(rt->g[t]);
    } else {
      if ((rc = linear(rt, l, &L->lin[SQUAT_RT_GATE], n, rt->xn, rt->g)) ||
          (rc = linear(rt, l, &L->lin[SQUAT_RT_UP], n, rt->xn, rt->u)))
        return rc;
      for (size_t t = 0; t < n * im; t++) {
        const float g = rt->g[t];
        rt->g[t] = (g / (1.0f + expf(-g))) * rt->u[t];
      }
    }
    if ((rc = linear(rt, l, &L->lin[SQUAT_RT_DOWN], n, rt->g, rt->tmp))) return rc;
    for (size_t t = 0; t < n * h; t++) rt->x[t] = rt->tmp[t] + rt->x[t];
  }
  const size_t first = all_logits ? 0 : n - 1, rows = n - first;
  if (logits) {
    norm(rt, rows, rt->x + first * h, rt->norm, rt->norm_b, rt->xn);
    if ((rc = linear(rt, -1, &rt->head, rows, rt->xn, logits))) return rc;
  }
  rt->pos += n;
  return SQUAT_RT_OK;
}

/* ---------------------------------------------------------------------------------------------- bundle */

#define BUNDLE_MAGIC "SQRTBND1"
enum { REC_END = 0, REC_FLOAT = 1, REC_LINEAR = 2, REC_ATTENTION = 3, REC_LINEAR_FLOAT = 4 };

static int rd(FILE *f, void *p, size_t bytes) { return fread(p, 1, bytes, f) == bytes ? SQUAT_RT_OK : SQUAT_RT_E_BUNDLE; }

/* One record: read its tensors into temporary buffers and make the call it records. */
static int replay(squat_rt *rt, FILE *f, int32_t kind) {
  int rc = SQUAT_RT_OK;
  void *a = NULL, *b = NULL, *c = NULL;
  if (kind == REC_FLOAT) {
    int32_t layer;
    char name[32];
    uint64_t n;
    if ((rc = rd(f, &layer, 4)) || (rc = rd(f, name, 32)) || (rc = rd(f, &n, 8))) return rc;
    name[31] = 0;
    if (n > ((uint64_t)1 << 40) || !(a = malloc(n * sizeof(float) + 1))) return SQUAT_RT_E_NOMEM;
    if (!(rc = rd(f, a, n * sizeof(float)))) rc = squat_rt_set_float(rt, name, layer, a, n);
  } else if (kind == REC_LINEAR) {
    int32_t h[5]; /* layer, slot, bits, per_channel, has_bias */
    uint64_t nk[2];
    squat_rt_site site;
    if ((rc = rd(f, h, sizeof h)) || (rc = rd(f, nk, sizeof nk)) || (rc = rd(f, &site, sizeof site))) return rc;
    const uint64_t n = nk[0], k = nk[1], ns = h[3] ? n : 1;
    if (n > ((uint64_t)1 << 32) || k > ((uint64_t)1 << 32)) return SQUAT_RT_E_BUNDLE;
    if (!(a = malloc(n * k + 1)) || !(b = malloc(ns * sizeof(float))) || (h[4] && !(c = malloc(n * sizeof(float))))) {
      rc = SQUAT_RT_E_NOMEM;
    } else if (!(rc = rd(f, a, n * k)) && !(rc = rd(f, b, ns * sizeof(float))) &&
               !(rc = h[4] ? rd(f, c, n * sizeof(float)) : SQUAT_RT_OK)) {
      rc = squat_rt_set_linear(rt, h[0], h[1], n, k, h[2], a, b, h[3], c, &site);
    }
  } else if (kind == REC_LINEAR_FLOAT) {
    int32_t h[3]; /* layer, slot, has_bias */
    uint64_t nk[2];
    if ((rc = rd(f, h, sizeof h)) || (rc = rd(f, nk, sizeof nk))) return rc;
    const uint64_t n = nk[0], k = nk[1];
    if (n > ((uint64_t)1 << 32) || k > ((uint64_t)1 << 32)) return SQUAT_RT_E_BUNDLE;
    if (!(a = malloc(n * k * sizeof(float) + 1)) || (h[2] && !(c = malloc(n * sizeof(float))))) {
      rc = SQUAT_RT_E_NOMEM;
    } else if (!(rc = rd(f, a, n * k * sizeof(float))) && !(rc = h[2] ? rd(f, c, n * sizeof(float)) : SQUAT_RT_OK)) {
      rc = squat_rt_set_linear_float(rt, h[0], h[1], n, k, a, c);
    }
  } else if (kind == REC_ATTENTION) {
    int32_t layer;
    squat_rt_site s[4];
    float thr;
    if ((rc = rd(f, &layer, 4)) || (rc = rd(f, s, sizeof s)) || (rc = rd(f, &thr, 4))) return rc;
    rc = squat_rt_set_attention(rt, layer, &s[0], &s[1], &s[2], &s[3], thr);
  } else {
    rc = SQUAT_RT_E_BUNDLE;
  }
  free(a); free(b); free(c);
  return rc;
}

squat_rt *squat_rt_load_bundle(const char *path, int *err) {
  int rc = SQUAT_RT_E_BUNDLE;
  squat_rt *rt = NULL;
  FILE *f = path ? fopen(path, "rb") : NULL;
  char magic[8];
  squat_rt_config cfg;
  if (!f || rd(f, magic, 8) || memcmp(magic, BUNDLE_MAGIC, 8) || rd(f, &cfg, sizeof cfg)) goto done;
  if (!(rt = squat_rt_create(&cfg, &rc))) goto done;
  for (;;) {
    int32_t kind;
    if ((rc = rd(f, &kind, 4))) break;
    if (kind == REC_END) { rc = squat_rt_ready(rt); break; }
    if ((rc = replay(rt, f, kind))) break;
  }
done:
  if (f) fclose(f);
  if (rc && rt) { squat_rt_destroy(rt); rt = NULL; }
  if (err) *err = rc;
  return rt;
}
