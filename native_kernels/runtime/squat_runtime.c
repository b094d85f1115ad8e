/// Integer runtime of an exported LLaMA or GPT-2 student (squat_runtime.h). Everything is allocated by squat_rt_set_* and
/// squat_rt_ready; squat_rt_forward only reads and writes those buffers.
#include "squat_runtime.h"
#include "squat_api.h"
#include "squat_neon.h"
#include "squat_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SLOTS 7

typedef struct rt_linear {
  void *blob;           /* squat_qlinear blob (quantized input), or */
  void *fw;             /* float weights packed for the float GEMMs (fp16 with config float16, else fp32) */
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
  int float_attn;       /* float baselines: float q, k, v and probabilities */
  int8_t *kq;           /* key cache [s_pad, n_kv * head_dim]: raw codes */
  int32_t *ksum, *kzp;  /* per key: sum of its codes per kv head [s_pad, n_kv]; its zero point [s_pad] */
  float *kscale;        /* [s_pad] its scale */
  int8_t *vt;           /* value cache: per kv head [s_pad / 4][head_dim][4] raw codes (four keys per block) */
  int32_t *vsum;        /* [s_pad, n_kv * head_dim] prefix sums over keys of the value codes */
  float *kf, *vf;       /* FP32 baseline: float keys and values [max_seq, n_kv * head_dim] */
  sq_f16_t *kh, *vh;    /* FP16 baseline: keys per kv head [s_pad / 8][head_dim][8], values [s_pad, n_kv * head_dim] */
  uint8_t *high;        /* [max_seq] this layer's token choices */
} rt_layer;

struct squat_rt {
  squat_rt_config c;
  rt_layer *layers;
  rt_linear head;
  float *embed, *norm, *norm_b, *rope_cos, *rope_sin, *pos_embed;
  int ready;
  int exact;  /* a quantized student (not a float baseline): norms, SiLU / GELU and softmax in float64 (below) */
  size_t pos;
  /* per-call buffers, sized for max_seq rows */
  float *x, *xn, *tmp, *qkv, *qb, *kb, *vb, *attn, *g, *u, *scores, *probs;
  double *e64;                  /* one row's float64 exponentials (rt_softmax64) */
  int8_t *qq, *pq, *pg, *vrow;  /* query codes [max_seq, qd]; one row's probability codes and a group's copy; a value row */
  int32_t *acc_h, *acc_l, *qsum; /* probs @ v sums of one head per value group; a query row's code sums per head */
  size_t s_pad, vt_head, kh_head; /* max_seq rounded up to 16; elements of one kv head's vt / kh */
  sq_f16_t *xh, *yh, *ph;       /* FP16 baseline: a linear's fp16 input and output, a row of fp16 probabilities */
  void *work;
  size_t work_size;
  int fk_prefill, fk_decode;  /* float GEMMs of the config's precision (one packed layout): tile for M > 1, GEMV for M = 1 */
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
    case SQUAT_RT_E_CPU: return "this CPU lacks what the runtime needs (dot product instructions; an fp32 GEMM, or fp16 for the FP16 baseline): rebuild native_kernels for it";
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
      cfg->token_rule > SQUAT_RT_RULE_ALL_HIGH || (cfg->float16 && cfg->head_dim % 8))
    goto fail;
  rc = SQUAT_RT_E_NOMEM;
  if (!(rt = calloc(1, sizeof *rt))) goto fail;
  rt->c = *cfg;
  rt->fk_prefill = rt->fk_decode = -1;
  const char *prec = cfg->float16 ? "fp16" : "fp32";
  const int layout = cfg->float16 ? SQUAT_FLAYOUT_F16_NR16 : SQUAT_FLAYOUT_F32_NR8;
  for (size_t i = 0; i < squat_fgemm_count(); i++) {
    const squat_fgemm_ukernel *u = squat_fgemm_get(i);
    if (strcmp(u->precision, prec) || !squat_fgemm_available(i) || u->rhs_layout != layout) continue;
    int *slot = u->get_mr() == 1 ? &rt->fk_decode : &rt->fk_prefill;
    if (*slot < 0) *slot = (int)i;
  }
  if (rt->fk_prefill < 0) rt->fk_prefill = rt->fk_decode;
  if (rt->fk_decode < 0) rt->fk_decode = rt->fk_prefill;
  rc = SQUAT_RT_E_CPU;
  if (rt->fk_prefill < 0 || !(squat_cpu_features() & SQUAT_FEAT_DOTPROD)) goto fail;
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
    free(L->input_norm); free(L->post_norm); free(L->input_norm_b); free(L->post_norm_b); free(L->kq); free(L->ksum); free(L->kzp); free(L->kscale); free(L->vt); free(L->vsum);
    free(L->kf); free(L->vf); free(L->kh); free(L->vh); free(L->high);
  }
  free(rt->layers);
  free_linear(&rt->head);
  free(rt->embed); free(rt->norm); free(rt->norm_b); free(rt->rope_cos); free(rt->rope_sin); free(rt->pos_embed);
  free(rt->x); free(rt->xn); free(rt->tmp); free(rt->qkv); free(rt->qb); free(rt->kb); free(rt->vb); free(rt->attn);
  free(rt->g); free(rt->u); free(rt->scores); free(rt->probs); free(rt->e64); free(rt->qq); free(rt->pq); free(rt->pg); free(rt->vrow);
  free(rt->acc_h); free(rt->acc_l); free(rt->qsum); free(rt->xh); free(rt->yh); free(rt->ph); free(rt->work); free(rt->flhs);
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
  sq_f16_t *wh = NULL;
  if (!(l->fw = malloc(squat_fgemm_rhs_size((size_t)rt->fk_prefill, n_out, n_in))) ||
      (bias && !(l->bias = malloc(n_out * sizeof(float)))) ||
      (rt->c.float16 && !(wh = malloc(n_out * n_in * sizeof *wh)))) {
    free_linear(l);
    return SQUAT_RT_E_NOMEM;
  }
  if (wh) { /* FP16 baseline: the weights rounded to fp16 */
    for (size_t t = 0; t + 4 <= n_out * n_in; t += 4) vst1_f16(wh + t, vcvt_f16_f32(vld1q_f32(w + t)));
    for (size_t t = (n_out * n_in) & ~(size_t)3; t < n_out * n_in; t++) {
      float b[4] = {w[t], 0, 0, 0};
      sq_f16_t o[4];
      vst1_f16(o, vcvt_f16_f32(vld1q_f32(b)));
      wh[t] = o[0];
    }
    squat_fgemm_pack_rhs((size_t)rt->fk_prefill, n_out, n_in, wh, n_in, l->fw);
    free(wh);
  } else {
    squat_fgemm_pack_rhs((size_t)rt->fk_prefill, n_out, n_in, w, n_in, l->fw);
  }
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
  const size_t sp = rt->s_pad = (s + 15) & ~(size_t)15, D = (size_t)c->head_dim, nkv = (size_t)c->n_kv_heads;
  rt->exact = 0; /* set below: a float baseline has float linears and float attention only */
  rt->vt_head = rt->kh_head = sp * D;
  size_t ws = rt->head.blob ? squat_qlinear_workspace_size(rt->head.blob, s) : 0, fk = h, fn = (size_t)c->vocab;
  for (int i = 0; i < c->n_layers; i++) {
    rt_layer *L = &rt->layers[i];
    if (!L->input_norm || !L->post_norm || !L->attn_set || (gpt2 && (!L->input_norm_b || !L->post_norm_b)))
      return SQUAT_RT_E_MISSING;
    rt->exact |= !L->float_attn;
    for (int j = 0; j < N_SLOTS; j++) {
      if (gpt2 && (j == SQUAT_RT_K || j == SQUAT_RT_V || j == SQUAT_RT_GATE)) continue;
      if (!L->lin[j].blob && !L->lin[j].fw) return SQUAT_RT_E_MISSING;
      rt->exact |= L->lin[j].blob != NULL;
      const size_t w = L->lin[j].blob ? squat_qlinear_workspace_size(L->lin[j].blob, s) : 0;
      if (w > ws) ws = w;
      if (L->lin[j].k > fk) fk = L->lin[j].k;
      if (L->lin[j].n > fn) fn = L->lin[j].n;
    }
    if (L->float_attn && c->float16) {
      ALLOC(L->kh, nkv * rt->kh_head);
      ALLOC(L->vh, sp * kvd);
    } else if (L->float_attn) {
      ALLOC(L->kf, s * kvd);
      ALLOC(L->vf, s * kvd);
    } else {
      /* the final sums, and the raw-code sums with their zero-point corrections (|code| <= 128, |zp| <= 384) */
      if ((int64_t)c->head_dim * span(&L->q) * span(&L->k) >= ((int64_t)1 << 31) ||
          (int64_t)c->max_seq * span(&L->probs) * span(&L->v) >= ((int64_t)1 << 31) ||
          (int64_t)(sp > D ? sp : D) * 4 * 384 * 384 >= ((int64_t)1 << 31))
        return SQUAT_RT_E_RANGE;
      ALLOC(L->kq, sp * kvd); ALLOC(L->ksum, sp * nkv); ALLOC(L->kzp, sp); ALLOC(L->kscale, sp);
      ALLOC(L->vt, nkv * rt->vt_head); ALLOC(L->vsum, sp * kvd);
    }
    ALLOC(L->high, sp + 16);
  }
  ALLOC(rt->x, s * h); ALLOC(rt->xn, s * h); ALLOC(rt->tmp, s * h);
  ALLOC(rt->qkv, s * (qd + 2 * kvd)); ALLOC(rt->qb, s * qd); ALLOC(rt->kb, s * kvd); ALLOC(rt->vb, s * kvd); ALLOC(rt->attn, s * qd);
  ALLOC(rt->g, s * im); ALLOC(rt->u, s * im);
  ALLOC(rt->scores, (size_t)c->n_heads * sp); ALLOC(rt->probs, (size_t)c->n_heads * sp); ALLOC(rt->e64, sp);
  ALLOC(rt->qq, s * qd); ALLOC(rt->pq, sp + 16); ALLOC(rt->pg, sp + 16); ALLOC(rt->vrow, kvd);
  ALLOC(rt->acc_h, D); ALLOC(rt->acc_l, D); ALLOC(rt->qsum, c->n_heads);
  if (c->float16) {
    const size_t xw = fk > qd ? fk : qd;
    ALLOC(rt->xh, s * (xw > kvd ? xw : kvd)); ALLOC(rt->yh, s * fn); ALLOC(rt->ph, sp);
  }
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
/* Every op of the forward is its own noinline function named rt_<op>, so a per-block instruction profile
   attributes executed instructions to ops by symbol (squat.kernels.runtime_bench --breakdown). Each vectorized
   op has a scalar twin that gives the same bits (rt->c.reference = 1 runs those): the same integer sums, and the
   float ops in the same order (sums in four lanes combined as (l0 + l2) + (l1 + l3), then the tail). */
#define RT_OP static __attribute__((noinline))

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

static inline float hsum4(float32x4_t v) {
  const float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
  return vget_lane_f32(s, 0) + vget_lane_f32(s, 1);
}
static inline float hsum4_ref(const float a[4]) { return (a[0] + a[2]) + (a[1] + a[3]); }

/* exp(x) in float32 (about 1 ulp): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor series to r^7 (truncation
   below 6e-9), times 2^n through the exponent bits. x < -86 gives 0, x > 88 gives +inf (|n| <= 127 keeps the
   scaling exact). Multiplies and adds separately (no fma), so the SIMDe build and its scalar twin round alike. */
#define EXP_LO -86.0f
#define EXP_HI 88.0f
static const float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723e-6f;
static const float kExpC[8] = {1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};

static inline float32x4_t vexp(float32x4_t x) {
  const float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(EXP_HI));
  const float32x4_t n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(kLog2e)));
  const float32x4_t r = vsubq_f32(vsubq_f32(xc, vmulq_f32(n, vdupq_n_f32(kLn2Hi))), vmulq_f32(n, vdupq_n_f32(kLn2Lo)));
  float32x4_t p = vdupq_n_f32(kExpC[7]);
  for (int i = 6; i >= 0; i--) p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(kExpC[i]));
  const int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(n), 23);
  float32x4_t y = vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
  y = vbslq_f32(vcltq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(0.0f), y);
  return vbslq_f32(vcgtq_f32(x, vdupq_n_f32(EXP_HI)), vdupq_n_f32(INFINITY), y);
}

static inline float sexp(float x) {
  const float xc = x < EXP_LO ? EXP_LO : x > EXP_HI ? EXP_HI : x;
  const float n = rintf(xc * kLog2e);
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = kExpC[7];
  for (int i = 6; i >= 0; i--) p = p * r + kExpC[i];
  int32_t b;
  memcpy(&b, &p, 4);
  b += (int32_t)n << 23;
  memcpy(&p, &b, 4);
  return x < EXP_LO ? 0.0f : x > EXP_HI ? INFINITY : p;
}

/* exp(x) in float64 for the float64 twins below (a few ulp): the same reduction, the Taylor series to r^13
   (truncation below 5e-18), x < -708 gives 0 and x > 709 +inf. Only its float32 rounding is used, which equals
   torch's unless the value lies within a few float64 ulps of a float32 rounding boundary (about 1e-8). */
#define EXP64_LO -708.0
#define EXP64_HI 709.0
static const double kLog2e64 = 1.4426950408889634, kLn2Hi64 = 6.93147180369123816490e-01,
                    kLn2Lo64 = 1.90821492927058770002e-10;
static const double kExpC64[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                   1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
                                   1.0 / 6227020800.0};

static inline float64x2_t vexp64(float64x2_t x) {
  const float64x2_t xc = vminq_f64(vmaxq_f64(x, vdupq_n_f64(EXP64_LO)), vdupq_n_f64(EXP64_HI));
  const float64x2_t n = vrndnq_f64(vmulq_f64(xc, vdupq_n_f64(kLog2e64)));
  const float64x2_t r = vsubq_f64(vsubq_f64(xc, vmulq_f64(n, vdupq_n_f64(kLn2Hi64))), vmulq_f64(n, vdupq_n_f64(kLn2Lo64)));
  float64x2_t p = vdupq_n_f64(kExpC64[13]);
  for (int i = 12; i >= 0; i--) p = vaddq_f64(vmulq_f64(p, r), vdupq_n_f64(kExpC64[i]));
  const int64x2_t e = vshlq_n_s64(vcvtq_s64_f64(n), 52);
  float64x2_t y = vreinterpretq_f64_s64(vaddq_s64(vreinterpretq_s64_f64(p), e));
  y = vbslq_f64(vcltq_f64(x, vdupq_n_f64(EXP64_LO)), vdupq_n_f64(0.0), y);
  return vbslq_f64(vcgtq_f64(x, vdupq_n_f64(EXP64_HI)), vdupq_n_f64(INFINITY), y);
}

static inline double sexp64(double x) {
  const double xc = x < EXP64_LO ? EXP64_LO : x > EXP64_HI ? EXP64_HI : x;
  const double n = rint(xc * kLog2e64);
  const double r = (xc - n * kLn2Hi64) - n * kLn2Lo64;
  double p = kExpC64[13];
  for (int i = 12; i >= 0; i--) p = p * r + kExpC64[i];
  int64_t b;
  memcpy(&b, &p, 8);
  b += (int64_t)n * ((int64_t)1 << 52);
  memcpy(&p, &b, 8);
  return x < EXP64_LO ? 0.0 : x > EXP64_HI ? INFINITY : p;
}

static inline float64x2_t vld2_f32_f64(const float *p) { return vcvt_f64_f32(vld1_f32(p)); }

/* ---- float parts shared by every variant ---- */
RT_OP void rt_embed(const squat_rt *rt, const int32_t *ids, size_t n, float *x) {
  const size_t h = (size_t)rt->c.hidden;
  for (size_t i = 0; i < n; i++) {
    memcpy(x + i * h, rt->embed + (size_t)ids[i] * h, h * sizeof(float));
    if (rt->pos_embed)
      for (size_t j = 0; j < h; j++) x[i * h + j] = x[i * h + j] + rt->pos_embed[(rt->pos + i) * h + j];
  }
}

/* x / sqrtf(mean(x^2) + eps) * w */
RT_OP void rt_rmsnorm(int ref, size_t m, size_t h, const float *x, const float *w, float eps, float *y) {
  const size_t h4 = h & ~(size_t)3;
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    float *yr = y + i * h, ss;
    if (ref) {
      float a[4] = {0, 0, 0, 0};
      for (size_t j = 0; j < h4; j++) a[j % 4] += xr[j] * xr[j];
      ss = hsum4_ref(a);
    } else {
      float32x4_t a = vdupq_n_f32(0.0f);
      for (size_t j = 0; j < h4; j += 4) { const float32x4_t v = vld1q_f32(xr + j); a = vaddq_f32(a, vmulq_f32(v, v)); }
      ss = hsum4(a);
    }
    for (size_t j = h4; j < h; j++) ss += xr[j] * xr[j];
    const float r = 1.0f / sqrtf(ss / (float)h + eps);
    size_t j = 0;
    if (!ref)
      for (; j < h4; j += 4) vst1q_f32(yr + j, vmulq_f32(vld1q_f32(w + j), vmulq_f32(vld1q_f32(xr + j), vdupq_n_f32(r))));
    for (; j < h; j++) yr[j] = w[j] * (xr[j] * r);
  }
}

/* (x - mean) / sqrtf(var + eps) * w + b, biased variance */
RT_OP void rt_layernorm(int ref, size_t m, size_t h, const float *x, const float *w, const float *b, float eps, float *y) {
  const size_t h4 = h & ~(size_t)3;
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    float *yr = y + i * h, sum, ss;
    if (ref) {
      float a[4] = {0, 0, 0, 0};
      for (size_t j = 0; j < h4; j++) a[j % 4] += xr[j];
      sum = hsum4_ref(a);
    } else {
      float32x4_t a = vdupq_n_f32(0.0f);
      for (size_t j = 0; j < h4; j += 4) a = vaddq_f32(a, vld1q_f32(xr + j));
      sum = hsum4(a);
    }
    for (size_t j = h4; j < h; j++) sum += xr[j];
    const float mean = sum / (float)h;
    if (ref) {
      float a[4] = {0, 0, 0, 0};
      for (size_t j = 0; j < h4; j++) a[j % 4] += (xr[j] - mean) * (xr[j] - mean);
      ss = hsum4_ref(a);
    } else {
      float32x4_t a = vdupq_n_f32(0.0f);
      for (size_t j = 0; j < h4; j += 4) {
        const float32x4_t d = vsubq_f32(vld1q_f32(xr + j), vdupq_n_f32(mean));
        a = vaddq_f32(a, vmulq_f32(d, d));
      }
      ss = hsum4(a);
    }
    for (size_t j = h4; j < h; j++) ss += (xr[j] - mean) * (xr[j] - mean);
    const float r = 1.0f / sqrtf(ss / (float)h + eps);
    size_t j = 0;
    if (!ref)
      for (; j < h4; j += 4) {
        const float32x4_t d = vmulq_f32(vsubq_f32(vld1q_f32(xr + j), vdupq_n_f32(mean)), vdupq_n_f32(r));
        vst1q_f32(yr + j, vaddq_f32(vmulq_f32(d, vld1q_f32(w + j)), vld1q_f32(b + j)));
      }
    for (; j < h; j++) yr[j] = (xr[j] - mean) * r * w[j] + b[j];
  }
}

/* ---- float64 twins of the quantized student (squat/quant/exact_ops.py) ----
   A quantized student rounds its activation codes from these ops' results, so they must be the same bits in C
   and in torch: reductions and exp run in float64 and round once to float32, which no summation order or exp
   implementation changes (short of a tie); the elementwise float32 products stay as HF writes them. The norms
   are scalar (each its own reference); the exp users run two float64 lanes with a scalar twin. */

/* w * fp32(x / sqrt(mean(x^2) + eps)) */
RT_OP void rt_rmsnorm64(size_t m, size_t h, const float *x, const float *w, float eps, float *y) {
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    double ss = 0.0;
    for (size_t j = 0; j < h; j++) ss += (double)xr[j] * (double)xr[j];
    const double r = 1.0 / sqrt(ss / (double)h + (double)eps);
    for (size_t j = 0; j < h; j++) y[i * h + j] = w[j] * (float)((double)xr[j] * r);
  }
}

/* fp32((x - mean) / sqrt(var + eps)) * w + b, biased variance */
RT_OP void rt_layernorm64(size_t m, size_t h, const float *x, const float *w, const float *b, float eps, float *y) {
  for (size_t i = 0; i < m; i++) {
    const float *xr = x + i * h;
    double sum = 0.0, ss = 0.0;
    for (size_t j = 0; j < h; j++) sum += (double)xr[j];
    const double mean = sum / (double)h;
    for (size_t j = 0; j < h; j++) ss += ((double)xr[j] - mean) * ((double)xr[j] - mean);
    const double r = 1.0 / sqrt(ss / (double)h + (double)eps);
    for (size_t j = 0; j < h; j++) y[i * h + j] = (float)(((double)xr[j] - mean) * r) * w[j] + b[j];
  }
}

/* g = fp32(g / (1 + exp(-g))) * u */
RT_OP void rt_silu_mul64(int ref, size_t n, float *g, const float *u) {
  size_t t = 0;
  if (!ref)
    for (; t + 2 <= n; t += 2) {
      const float64x2_t x = vld2_f32_f64(g + t);
      const float32x2_t s = vcvt_f32_f64(vdivq_f64(x, vaddq_f64(vdupq_n_f64(1.0), vexp64(vnegq_f64(x)))));
      vst1_f32(g + t, vmul_f32(s, vld1_f32(u + t)));
    }
  for (; t < n; t++) {
    const double x = (double)g[t];
    g[t] = (float)(x / (1.0 + sexp64(-x))) * u[t];
  }
}

/* gelu_new: fp32(0.5 x (2 - 2 / (exp(2y) + 1))), y = sqrt(2 / pi) (x + 0.044715 x^3) */
RT_OP void rt_gelu64(int ref, size_t n, float *g) {
  size_t t = 0;
  if (!ref)
    for (; t + 2 <= n; t += 2) {
      const float64x2_t x = vld2_f32_f64(g + t);
      const float64x2_t y = vmulq_f64(vdupq_n_f64(0.7978845608028654),
                                      vaddq_f64(x, vmulq_f64(vdupq_n_f64(0.044715), vmulq_f64(vmulq_f64(x, x), x))));
      const float64x2_t e = vexp64(vmulq_f64(vdupq_n_f64(2.0), y));
      const float64x2_t v = vmulq_f64(vmulq_f64(vdupq_n_f64(0.5), x),
                                      vsubq_f64(vdupq_n_f64(2.0), vdivq_f64(vdupq_n_f64(2.0), vaddq_f64(e, vdupq_n_f64(1.0)))));
      vst1_f32(g + t, vcvt_f32_f64(v));
    }
  for (; t < n; t++) {
    const double x = (double)g[t], y = 0.7978845608028654 * (x + 0.044715 * (x * x * x));
    g[t] = (float)(0.5 * x * (2.0 - 2.0 / (sexp64(2.0 * y) + 1.0)));
  }
}

/* fp32(exp(s - max) / sum), the sum in two lanes (even and odd keys) */
RT_OP void rt_softmax64(int ref, size_t S, const float *sc, float *pr, double *e) {
  float mx = -INFINITY;
  for (size_t j = 0; j < S; j++) mx = sc[j] > mx ? sc[j] : mx;
  const size_t S2 = S & ~(size_t)1;
  double sum;
  size_t j = 0;
  if (ref) {
    double a[2] = {0.0, 0.0};
    for (; j < S2; j++) a[j % 2] += (e[j] = sexp64((double)sc[j] - (double)mx));
    sum = a[0] + a[1];
  } else {
    float64x2_t a = vdupq_n_f64(0.0);
    const float64x2_t m = vdupq_n_f64((double)mx);
    for (; j < S2; j += 2) {
      const float64x2_t v = vexp64(vsubq_f64(vld2_f32_f64(sc + j), m));
      vst1q_f64(e + j, v);
      a = vaddq_f64(a, v);
    }
    sum = vgetq_lane_f64(a, 0) + vgetq_lane_f64(a, 1);
  }
  for (; j < S; j++) sum += (e[j] = sexp64((double)sc[j] - (double)mx));
  j = 0;
  if (!ref)
    for (; j < S2; j += 2) vst1_f32(pr + j, vcvt_f32_f64(vdivq_f64(vld1q_f64(e + j), vdupq_n_f64(sum))));
  for (; j < S; j++) pr[j] = (float)(e[j] / sum);
}

static void norm(const squat_rt *rt, size_t m, const float *x, const float *w, const float *b, float *y) {
  const size_t h = (size_t)rt->c.hidden;
  if (rt->c.arch == SQUAT_RT_GPT2) {
    if (rt->exact) rt_layernorm64(m, h, x, w, b, rt->c.norm_eps, y);
    else rt_layernorm(rt->c.reference, m, h, x, w, b, rt->c.norm_eps, y);
  } else {
    if (rt->exact) rt_rmsnorm64(m, h, x, w, rt->c.norm_eps, y);
    else rt_rmsnorm(rt->c.reference, m, h, x, w, rt->c.norm_eps, y);
  }
}

/* x * cos + rotate_half(x) * sin for each head of one row, rotate_half(x) = (-x2, x1). */
RT_OP void rt_rope(int ref, float *row, int n_heads, int d, const float *cos, const float *sin) {
  const int half = d / 2, h4 = ref ? 0 : half & ~3;
  for (int hd = 0; hd < n_heads; hd++) {
    float *v = row + (size_t)hd * d;
    for (int i = 0; i < h4; i += 4) {
      const float32x4_t a = vld1q_f32(v + i), b = vld1q_f32(v + i + half);
      vst1q_f32(v + i, vaddq_f32(vmulq_f32(a, vld1q_f32(cos + i)), vmulq_f32(vnegq_f32(b), vld1q_f32(sin + i))));
      vst1q_f32(v + i + half, vaddq_f32(vmulq_f32(b, vld1q_f32(cos + i + half)), vmulq_f32(a, vld1q_f32(sin + i + half))));
    }
    for (int i = h4; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] + (-b) * sin[i];
      v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

/* LLaMA MLP: g = silu(g) * u = (g / (1 + exp(-g))) * u */
RT_OP void rt_silu_mul(int ref, size_t n, float *g, const float *u) {
  size_t t = 0;
  if (!ref)
    for (; t + 4 <= n; t += 4) {
      const float32x4_t x = vld1q_f32(g + t);
      const float32x4_t s = vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), vexp(vnegq_f32(x))));
      vst1q_f32(g + t, vmulq_f32(s, vld1q_f32(u + t)));
    }
  for (; t < n; t++) g[t] = (g[t] / (1.0f + sexp(-g[t]))) * u[t];
}

/* GPT-2's gelu_new, op by op as HF computes it: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))),
   tanh(y) = 1 - 2 / (exp(2y) + 1) */
RT_OP void rt_gelu(int ref, size_t n, float *g) {
  const float c0 = 0.7978845608028654f, c1 = 0.044715f;
  size_t t = 0;
  if (!ref)
    for (; t + 4 <= n; t += 4) {
      const float32x4_t x = vld1q_f32(g + t);
      const float32x4_t in = vmulq_f32(vdupq_n_f32(c0), vaddq_f32(x, vmulq_f32(vdupq_n_f32(c1), vmulq_f32(vmulq_f32(x, x), x))));
      const float32x4_t e = vexp(vaddq_f32(in, in));
      const float32x4_t th = vsubq_f32(vdupq_n_f32(1.0f), vdivq_f32(vdupq_n_f32(2.0f), vaddq_f32(e, vdupq_n_f32(1.0f))));
      vst1q_f32(g + t, vmulq_f32(vmulq_f32(vdupq_n_f32(0.5f), x), vaddq_f32(vdupq_n_f32(1.0f), th)));
    }
  for (; t < n; t++) {
    const float x = g[t], in = c0 * (x + c1 * ((x * x) * x));
    const float th = 1.0f - 2.0f / (sexp(in + in) + 1.0f);
    g[t] = (0.5f * x) * (1.0f + th);
  }
}

RT_OP void rt_residual(size_t n, float *x, const float *d) {
  for (size_t t = 0; t < n; t++) x[t] = d[t] + x[t];
}

/* Softmax of one row of S scores into probabilities (float32, exp above, the sum in four lanes). */
RT_OP void rt_softmax(int ref, size_t S, const float *sc, float *pr) {
  const size_t S4 = ref ? 0 : S & ~(size_t)3;
  float mx = -INFINITY, sum;
  size_t j = 0;
  if (S4) {
    float32x4_t m = vld1q_f32(sc);
    for (j = 4; j < S4; j += 4) m = vmaxq_f32(m, vld1q_f32(sc + j));
    mx = vmaxvq_f32(m);
  }
  for (; j < S; j++) mx = sc[j] > mx ? sc[j] : mx;
  if (ref) {
    float a[4] = {0, 0, 0, 0};
    const size_t s4 = S & ~(size_t)3;
    for (j = 0; j < S; j++) pr[j] = sexp(sc[j] - mx);
    for (j = 0; j < s4; j++) a[j % 4] += pr[j];
    sum = hsum4_ref(a);
    for (; j < S; j++) sum += pr[j];
    for (j = 0; j < S; j++) pr[j] = pr[j] / sum;
    return;
  }
  float32x4_t a = vdupq_n_f32(0.0f);
  for (j = 0; j < S4; j += 4) {
    const float32x4_t e = vexp(vsubq_f32(vld1q_f32(sc + j), vdupq_n_f32(mx)));
    vst1q_f32(pr + j, e);
    a = vaddq_f32(a, e);
  }
  sum = hsum4(a);
  for (; j < S; j++) sum += (pr[j] = sexp(sc[j] - mx));
  const float32x4_t vs = vdupq_n_f32(sum);
  for (j = 0; j < S4; j += 4) vst1q_f32(pr + j, vdivq_f32(vld1q_f32(pr + j), vs));
  for (; j < S; j++) pr[j] = pr[j] / sum;
}

/* ---- float linears: fp32 or fp16 GEMMs ---- */
static inline void to_f16(size_t n, const float *x, sq_f16_t *y) {
  size_t t = 0;
  for (; t + 4 <= n; t += 4) vst1_f16(y + t, vcvt_f16_f32(vld1q_f32(x + t)));
  for (; t < n; t++) {
    float b[4] = {x[t], 0, 0, 0};
    sq_f16_t o[4];
    vst1_f16(o, vcvt_f16_f32(vld1q_f32(b)));
    y[t] = o[0];
  }
}

/* A float linear's input rows in fp16 (FP16 baseline). */
RT_OP void rt_lin_f16_in(size_t n, const float *x, sq_f16_t *y) { to_f16(n, x, y); }

/* fp16 rows [m, n] (stride n) -> float32 y (+ bias) */
RT_OP void rt_from_f16(size_t m, size_t n, const sq_f16_t *x, const float *bias, float *y) {
  for (size_t i = 0; i < m; i++) {
    const sq_f16_t *xr = x + i * n;
    float *yr = y + i * n;
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
      float32x4_t v = vcvt_f32_f16(vld1_f16(xr + j));
      if (bias) v = vaddq_f32(v, vld1q_f32(bias + j));
      vst1q_f32(yr + j, v);
    }
    for (; j < n; j++) {
      sq_f16_t b[4] = {xr[j], xr[j], xr[j], xr[j]};
      yr[j] = vgetq_lane_f32(vcvt_f32_f16(vld1_f16(b)), 0) + (bias ? bias[j] : 0.0f);
    }
  }
}

RT_OP void rt_bias(size_t m, size_t n, const float *bias, float *y) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) y[i * n + j] += bias[j];
}

static int linear(squat_rt *rt, int l, const rt_linear *lin, size_t m, const float *x, float *y) {
  if (lin->fw && rt->c.float16) { /* FP16 baseline: fp16 in, fp16 GEMM, fp16 out */
    const size_t kern = (size_t)(m == 1 ? rt->fk_decode : rt->fk_prefill);
    rt_lin_f16_in(m * lin->k, x, rt->xh);
    squat_fgemm_pack_lhs(kern, m, lin->k, rt->xh, lin->k, rt->flhs);
    squat_fgemm_run(kern, m, lin->n, lin->k, rt->flhs, lin->fw, rt->yh, lin->n);
    rt_from_f16(m, lin->n, rt->yh, lin->bias, y);
    return SQUAT_RT_OK;
  }
  if (lin->fw) { /* fp32 GEMM (float-input linears, float head, FP32 baseline) */
    const size_t kern = (size_t)(m == 1 ? rt->fk_decode : rt->fk_prefill);
    squat_fgemm_pack_lhs(kern, m, lin->k, x, lin->k, rt->flhs);
    squat_fgemm_run(kern, m, lin->n, lin->k, rt->flhs, lin->fw, y, lin->n);
    if (lin->bias) rt_bias(m, lin->n, lin->bias, y);
    return SQUAT_RT_OK;
  }
  squat_qlinear_act act;
  memset(&act, 0, sizeof act);
  act.low = lin->act.low;
  if (lin->act.adaptive) {
    /* rows of one precision get that site alone, so squat_qlinear picks its kernel (a decoded 4-bit token runs the
       W4A4 GEMV, not the 8-bit-capable one a two-site call needs); the kernels give the same bits either way */
    const uint8_t *h = l >= 0 ? choices(rt, l, &lin->act) : NULL;
    size_t nh = m;
    if (h) {
      nh = 0;
      for (size_t i = 0; i < m; i++) nh += h[rt->pos + i] != 0;
    }
    if (nh == m) {
      act.low = lin->act.high;
    } else if (nh) {
      act.high = lin->act.high;
      act.high_mask = h + rt->pos;
    }
  }
  return squat_qlinear_run(lin->blob, m, x, lin->k, &act, y, lin->n, rt->work, rt->work_size);
}

/* ---- integer attention ---- */
/* n floats -> the site's raw codes clamp(round(x / s) + zp, qmin, qmax) (squat_quant.h, fdiv and round half to
   even like the student); returns their sum. */
static inline int32_t quant(int ref, size_t n, const float *x, const squat_act_site *s, int8_t *q) {
  int32_t sum = 0;
  size_t i = 0;
  if (!ref) {
    const sq_qparams p = sq_qparams_make(s->scale, s->zero_point, s->qmin, s->qmax);
    int16x8_t acc = vdupq_n_s16(0);
    for (; i + 16 <= n; i += 16) {
      const int8x16_t v = sq_quant16(x + i, &p);
      vst1q_s8(q + i, v);
      acc = vpadalq_s8(acc, v);
    }
    sum = vaddlvq_s16(acc);
  }
  for (; i < n; i++) {
    float t = rintf(x[i] / s->scale) + (float)s->zero_point;
    t = t < (float)s->qmin ? (float)s->qmin : t > (float)s->qmax ? (float)s->qmax : t;
    q[i] = (int8_t)(int)t;
    sum += q[i];
  }
  return sum;
}

/* One query row's codes (per head, with their sums). */
RT_OP void rt_quant_q(int ref, int H, size_t D, const float *x, const squat_act_site *s, int8_t *q, int32_t *qsum) {
  for (int hd = 0; hd < H; hd++) qsum[hd] = quant(ref, D, x + (size_t)hd * D, s, q + (size_t)hd * D);
}

/* Key p of layer l into the cache: raw codes (row-major), per kv head their sum, the key's scale and zero point. */
RT_OP void rt_quant_k(squat_rt *rt, int l, size_t p, const float *k) {
  rt_layer *L = &rt->layers[l];
  const int D = rt->c.head_dim, nkv = rt->c.n_kv_heads;
  const squat_act_site *s = site_for(rt, l, &L->k, p);
  for (int g = 0; g < nkv; g++)
    L->ksum[p * nkv + g] = quant(rt->c.reference, (size_t)D, k + (size_t)g * D, s, L->kq + p * (size_t)nkv * D + (size_t)g * D);
  L->kscale[p] = s->scale;
  L->kzp[p] = s->zero_point;
}

/* Value p into the cache: per kv head blocks of four keys [D][4] (the sdot layout of probs @ v; a block is zeroed
   when its first key arrives, so the keys after the sequence's last are 0), and the prefix sums of the codes. */
RT_OP void rt_append_value(squat_rt *rt, int l, size_t p, const float *v, const squat_act_site *s) {
  rt_layer *L = &rt->layers[l];
  const size_t D = (size_t)rt->c.head_dim, kvd = (size_t)rt->c.n_kv_heads * D, blk = D * 4;
  int8_t *row = rt->vrow;
  quant(rt->c.reference, kvd, v, s, row);
  for (size_t g = 0; g < (size_t)rt->c.n_kv_heads; g++) {
    int8_t *b = L->vt + g * rt->vt_head + (p / 4) * blk;
    if (p % 4 == 0) memset(b, 0, blk);
    for (size_t d = 0; d < D; d++) b[d * 4 + p % 4] = row[g * D + d];
  }
  int32_t *cs = L->vsum + p * kvd;
  const int32_t *prev = p ? cs - kvd : NULL;
  for (size_t d = 0; d < kvd; d++) cs[d] = (prev ? prev[d] : 0) + row[d];
}

/* Scores of one query head over keys 0 .. S-1 (written in groups of four, lanes past S unused):
   sum_d (q - zq)(k - zk) = sum q k - zk sum q - zq sum k + D zq zk, times s_q s_k, times the attention scaling. */
RT_OP void rt_scores(int ref, int D, const int8_t *q, int32_t qsum, int32_t zq, float sq, float scaling,
                     const int8_t *k, size_t kstride, const int32_t *ksum, size_t ksstride, const int32_t *kzp,
                     const float *kscale, size_t S, float *sc) {
  if (ref || D % 16) {
    for (size_t j = 0; j < S; j++) {
      const int8_t *kr = k + j * kstride;
      int32_t acc = 0;
      for (int d = 0; d < D; d++) acc += ((int32_t)q[d] - zq) * ((int32_t)kr[d] - kzp[j]);
      sc[j] = ((float)acc * (sq * kscale[j])) * scaling;
    }
    return;
  }
  const int32x4_t vqs = vdupq_n_s32(qsum), vzq = vdupq_n_s32(zq), vdzq = vdupq_n_s32(D * zq);
  const float32x4_t vsq = vdupq_n_f32(sq), vscal = vdupq_n_f32(scaling);
  for (size_t j = 0; j < S; j += 4) {
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    const int8_t *k0 = k + j * kstride, *k1 = k0 + kstride, *k2 = k1 + kstride, *k3 = k2 + kstride;
    for (int d = 0; d < D; d += 16) {
      const int8x16_t qv = vld1q_s8(q + d);
      a0 = vdotq_s32(a0, vld1q_s8(k0 + d), qv);
      a1 = vdotq_s32(a1, vld1q_s8(k1 + d), qv);
      a2 = vdotq_s32(a2, vld1q_s8(k2 + d), qv);
      a3 = vdotq_s32(a3, vld1q_s8(k3 + d), qv);
    }
    int32x4_t acc = vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
    const int32_t ks[4] = {ksum[j * ksstride], ksum[(j + 1) * ksstride], ksum[(j + 2) * ksstride], ksum[(j + 3) * ksstride]};
    const int32x4_t zk = vld1q_s32(kzp + j);
    acc = vsubq_s32(acc, vaddq_s32(vmulq_s32(zk, vqs), vmulq_s32(vzq, vld1q_s32(ks))));
    acc = vaddq_s32(acc, vmulq_s32(vdzq, zk));
    vst1q_f32(sc + j, vmulq_f32(vmulq_f32(vcvtq_f32_s32(acc), vmulq_f32(vsq, vld1q_f32(kscale + j))), vscal));
  }
}

/* One group's probs @ v over the value blocks of a kv head: acc[d] = sum_j (p_j - zp)(v_jd - zv), from the raw
   sum over J = 4 ceil(S / 4) keys (codes of keys outside the group set to zp, padding keys' values 0):
   sum p v - zv sum p - zp sum v + J zp zv. */
SQ_ALWAYS_INLINE void pv_slab(const int NC, size_t nq, const int8_t *p, const int8_t *vt, size_t D, int32x4_t *out) {
  int32x4_t acc[16];
  for (int c = 0; c < NC; c++) acc[c] = vdupq_n_s32(0);
#define RT_PV_QUAD(T)                                                                          \
  {                                                                                            \
    const int8_t *blk = vt + (b + (T)) * D * 4;                                                \
    for (int c = 0; c < NC; c++) acc[c] = vdotq_laneq_s32(acc[c], vld1q_s8(blk + 16 * c), pv, (T)); \
  }
  size_t b = 0;
  for (; b + 4 <= nq; b += 4) {
    const int8x16_t pv = vld1q_s8(p + 4 * b);
    RT_PV_QUAD(0) RT_PV_QUAD(1) RT_PV_QUAD(2) RT_PV_QUAD(3)
  }
  if (b < nq) {
    const int8x16_t pv = vld1q_s8(p + 4 * b);
    RT_PV_QUAD(0)
    if (b + 1 < nq) RT_PV_QUAD(1)
    if (b + 2 < nq) RT_PV_QUAD(2)
  }
#undef RT_PV_QUAD
  for (int c = 0; c < NC; c++) out[c] = acc[c];
}

RT_OP void rt_pv(int ref, size_t D, size_t S, const int8_t *p, int32_t zp, const int8_t *vt, const int32_t *vsum,
                 int32_t zv, int32_t *acc) {
  const size_t nq = (S + 3) / 4, J = 4 * nq, J16 = (S + 15) & ~(size_t)15;
  if (ref || D % 16) {
    for (size_t d = 0; d < D; d++) {
      int32_t a = 0;
      for (size_t j = 0; j < S; j++) a += ((int32_t)p[j] - zp) * ((int32_t)vt[(j / 4) * D * 4 + d * 4 + j % 4] - zv);
      acc[d] = a;
    }
    return;
  }
  int16x8_t ps = vdupq_n_s16(0);
  for (size_t j = 0; j < J16; j += 16) ps = vpadalq_s8(ps, vld1q_s8(p + j));
  const int32_t psum = vaddlvq_s16(ps) - (int32_t)(J16 - J) * zp; /* over the J keys (the codes past J are zp) */
  const int32x4_t c0 = vdupq_n_s32((int32_t)J * zp * zv - zv * psum), vzp = vdupq_n_s32(zp);
  int32x4_t raw[16];
  for (size_t d0 = 0; d0 < D; d0 += 16) {
    const int NC = D - d0 >= 64 ? 16 : 4;
    if (NC == 16) pv_slab(16, nq, p, vt + d0 * 4, D, raw);
    else pv_slab(4, nq, p, vt + d0 * 4, D, raw);
    for (int c = 0; c < NC; c++)
      vst1q_s32(acc + d0 + 4 * c, vaddq_s32(vsubq_s32(raw[c], vmulq_s32(vzp, vld1q_s32(vsum + d0 + 4 * c))), c0));
    d0 += 4 * (size_t)NC - 16;
  }
}

/* The probabilities of one row quantized to the probs site's raw codes, padded to a multiple of 16 with zp. */
RT_OP void rt_quant_probs(int ref, size_t S, const float *pr, const squat_act_site *s, int8_t *pq) {
  quant(ref, S, pr, s, pq);
  for (size_t j = S; j < ((S + 15) & ~(size_t)15); j++) pq[j] = (int8_t)s->zero_point;
}

/* A group's copy of the codes: keys outside the group (flags != want) set to zp, so they add nothing. */
RT_OP void rt_group(int ref, size_t S, const int8_t *pq, const uint8_t *flags, int want, int8_t zp, int8_t *out) {
  const size_t S16 = (S + 15) & ~(size_t)15;
  size_t j = 0;
  if (!ref) {
    const int8x16_t z = vdupq_n_s8(zp);
    for (; j + 16 <= S; j += 16) {
      const uint8x16_t f = vld1q_u8(flags + j), in = vtstq_u8(f, f);
      vst1q_s8(out + j, want ? vbslq_s8(in, vld1q_s8(pq + j), z) : vbslq_s8(in, z, vld1q_s8(pq + j)));
    }
  }
  for (; j < S; j++) out[j] = (flags[j] != 0) == want ? pq[j] : zp;
  for (; j < S16; j++) out[j] = zp;
}

/* out = acc_h * s_h (+ acc_l * s_l), the group scales s = s_probs * s_v */
RT_OP void rt_pv_out(int ref, size_t D, const int32_t *acc_h, float sh, const int32_t *acc_l, float sl, float *out) {
  size_t d = 0;
  if (!ref)
    for (; d + 4 <= D; d += 4) {
      float32x4_t o = vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc_h + d)), vdupq_n_f32(sh));
      if (acc_l) o = vaddq_f32(o, vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc_l + d)), vdupq_n_f32(sl)));
      vst1q_f32(out + d, o);
    }
  for (; d < D; d++) out[d] = acc_l ? (float)acc_h[d] * sh + (float)acc_l[d] * sl : (float)acc_h[d] * sh;
}

/* Attention of the m new rows of layer l (positions pos .. pos + m - 1) into rt->attn; decides each row's token
   precision on the way (a row's value needs its own choice, which needs its own probabilities). */
static void attention(squat_rt *rt, int l, size_t m) {
  const squat_rt_config *c = &rt->c;
  rt_layer *L = &rt->layers[l];
  const int H = c->n_heads, D = c->head_dim, G = c->n_heads / c->n_kv_heads, ref = c->reference;
  const size_t qd = (size_t)H * D, kvd = (size_t)c->n_kv_heads * D, S_max = rt->s_pad;
  const double sp = L->probs.low.scale;
  const int32_t zp = L->probs.low.zero_point;
  for (size_t i = 0; i < m; i++) {
    const size_t p = rt->pos + i, S = p + 1;
    const squat_act_site *qs = site_for(rt, l, &L->q, p);
    int8_t *qq = rt->qq + i * qd;
    rt_quant_q(ref, H, (size_t)D, rt->qb + i * qd, qs, qq, rt->qsum);
    for (int hd = 0; hd < H; hd++) {
      const int32_t qsum = rt->qsum[hd];
      const size_t g = (size_t)(hd / G);
      float *sc = rt->scores + (size_t)hd * S_max;
      rt_scores(ref, D, qq + (size_t)hd * D, qsum, qs->zero_point, qs->scale, c->attn_scaling, L->kq + g * D, kvd,
                L->ksum + g, (size_t)c->n_kv_heads, L->kzp, L->kscale, S, sc);
      rt_softmax64(ref, S, sc, rt->probs + (size_t)hd * S_max, rt->e64);
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
    rt_append_value(rt, l, p, rt->vb + i * kvd, vs);
    const uint8_t *vh = L->v.adaptive ? choices(rt, l, &L->v) : NULL;
    size_t nh = 0;
    if (vh)
      for (size_t j = 0; j < S; j++) nh += vh[j] != 0;
    const float sh = (float)(sp * (L->v.adaptive ? L->v.high.scale : L->v.low.scale)), sl = (float)(sp * L->v.low.scale);
    const int32_t zh = L->v.adaptive ? L->v.high.zero_point : L->v.low.zero_point, zl = L->v.low.zero_point;
    for (int hd = 0; hd < H; hd++) {
      const size_t g = (size_t)(hd / G);
      const int8_t *vt = L->vt + g * rt->vt_head;
      const int32_t *vsum = L->vsum + p * kvd + g * D;
      float *out = rt->attn + i * qd + (size_t)hd * D;
      rt_quant_probs(ref, S, rt->probs + (size_t)hd * S_max, &L->probs.low, rt->pq);
      if (!vh || nh == S) { /* one group: every key high (or a plain site) */
        rt_pv(ref, (size_t)D, S, rt->pq, zp, vt, vsum, zh, rt->acc_h);
        rt_pv_out(ref, (size_t)D, rt->acc_h, sh, NULL, 0.0f, out);
      } else if (nh == 0) {
        rt_pv(ref, (size_t)D, S, rt->pq, zp, vt, vsum, zl, rt->acc_l);
        rt_pv_out(ref, (size_t)D, rt->acc_l, sl, NULL, 0.0f, out);
      } else {
        rt_group(ref, S, rt->pq, vh, 1, (int8_t)zp, rt->pg);
        rt_pv(ref, (size_t)D, S, rt->pg, zp, vt, vsum, zh, rt->acc_h);
        rt_group(ref, S, rt->pq, vh, 0, (int8_t)zp, rt->pg);
        rt_pv(ref, (size_t)D, S, rt->pg, zp, vt, vsum, zl, rt->acc_l);
        rt_pv_out(ref, (size_t)D, rt->acc_h, sh, rt->acc_l, sl, out);
      }
    }
  }
}

/* ---- float attention of the baselines ---- */
/* FP16: keys cached transposed in blocks of eight [D][8] (one fmla by element gives eight keys' partial scores),
   values row-major; scores and probs @ v accumulate in fp16, the softmax is the shared float32 one. */
RT_OP void rt_append_kv_f16(squat_rt *rt, int l, size_t p, const float *k, const float *v) {
  rt_layer *L = &rt->layers[l];
  const size_t D = (size_t)rt->c.head_dim, kvd = (size_t)rt->c.n_kv_heads * D;
  sq_f16_t *kh = rt->xh;
  to_f16(kvd, k, kh);
  to_f16(kvd, v, L->vh + p * kvd);
  for (size_t g = 0; g < (size_t)rt->c.n_kv_heads; g++) {
    sq_f16_t *b = L->kh + g * rt->kh_head + (p / 8) * D * 8 + p % 8;
    for (size_t d = 0; d < D; d++) b[d * 8] = kh[g * D + d];
  }
}

RT_OP void rt_scores_f16(size_t D, const sq_f16_t *q, const sq_f16_t *kt, size_t S, float scaling, float *sc) {
  const float32x4_t vs = vdupq_n_f32(scaling);
  for (size_t j = 0; j < S; j += 8) {
    const sq_f16_t *b = kt + j * D;
    float16x8_t acc = vreinterpretq_f16_u16(vdupq_n_u16(0));
    for (size_t d = 0; d < D; d += 8, b += 64) {
      const float16x8_t qv = vld1q_f16(q + d);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b), qv, 0);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 8), qv, 1);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 16), qv, 2);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 24), qv, 3);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 32), qv, 4);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 40), qv, 5);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 48), qv, 6);
      acc = vfmaq_laneq_f16(acc, vld1q_f16(b + 56), qv, 7);
    }
    sq_f16_t t[8];
    vst1q_f16(t, acc);
    vst1q_f32(sc + j, vmulq_f32(vcvt_f32_f16(vld1_f16(t)), vs));
    vst1q_f32(sc + j + 4, vmulq_f32(vcvt_f32_f16(vld1_f16(t + 4)), vs));
  }
}

SQ_ALWAYS_INLINE void pv_f16_slab(const int NC, size_t S, const sq_f16_t *p, const sq_f16_t *v, size_t vstride, float *out) {
  float16x8_t acc[8];
  for (int c = 0; c < NC; c++) acc[c] = vreinterpretq_f16_u16(vdupq_n_u16(0));
#define RT_PV16_KEY(T)                                                                                  \
  {                                                                                                     \
    const sq_f16_t *vr = v + (j + (T)) * vstride;                                                       \
    for (int c = 0; c < NC; c++) acc[c] = vfmaq_laneq_f16(acc[c], vld1q_f16(vr + 8 * c), pv, (T));      \
  }
  size_t j = 0;
  for (; j + 8 <= S; j += 8) {
    const float16x8_t pv = vld1q_f16(p + j);
    RT_PV16_KEY(0) RT_PV16_KEY(1) RT_PV16_KEY(2) RT_PV16_KEY(3) RT_PV16_KEY(4) RT_PV16_KEY(5) RT_PV16_KEY(6) RT_PV16_KEY(7)
  }
  for (; j < S; j++) {
    const float16x8_t pv = vdupq_n_f16(p[j]);
    RT_PV16_KEY(0)
  }
#undef RT_PV16_KEY
  for (int c = 0; c < NC; c++) {
    sq_f16_t t[8];
    vst1q_f16(t, acc[c]);
    vst1q_f32(out + 8 * c, vcvt_f32_f16(vld1_f16(t)));
    vst1q_f32(out + 8 * c + 4, vcvt_f32_f16(vld1_f16(t + 4)));
  }
}

RT_OP void rt_pv_f16(size_t D, size_t S, const float *pr, sq_f16_t *ph, const sq_f16_t *v, size_t vstride, float *out) {
  to_f16(S, pr, ph);
  for (size_t d0 = 0; d0 < D; d0 += 64) {
    if (D - d0 >= 64) pv_f16_slab(8, S, ph, v + d0, vstride, out + d0);
    else
      for (size_t d = d0; d < D; d += 8) pv_f16_slab(1, S, ph, v + d, vstride, out + d);
  }
}

/* FP32: float scores, the shared softmax and probs @ v over the float cache. */
RT_OP void rt_scores_f32(int D, const float *q, const float *k, size_t kstride, size_t S, float scaling, float *sc) {
  for (size_t j = 0; j < S; j++) {
    const float *kr = k + j * kstride;
    float acc = 0.0f;
    for (int d = 0; d < D; d++) acc += q[d] * kr[d];
    sc[j] = acc * scaling;
  }
}

RT_OP void rt_pv_f32(int D, size_t S, const float *pr, const float *v, size_t vstride, float *out) {
  for (int d = 0; d < D; d++) out[d] = 0.0f;
  for (size_t j = 0; j < S; j++)
    for (int d = 0; d < D; d++) out[d] += pr[j] * v[j * vstride + d];
}

static void attention_float(squat_rt *rt, int l, size_t m) {
  const squat_rt_config *c = &rt->c;
  rt_layer *L = &rt->layers[l];
  const int H = c->n_heads, D = c->head_dim, G = c->n_heads / c->n_kv_heads;
  const size_t qd = (size_t)H * D, kvd = (size_t)c->n_kv_heads * D;
  for (size_t i = 0; i < m; i++) {
    const size_t S = rt->pos + i + 1;
    if (c->float16) to_f16(qd, rt->qb + i * qd, rt->xh);
    for (int hd = 0; hd < H; hd++) {
      const size_t g = (size_t)(hd / G);
      float *out = rt->attn + i * qd + (size_t)hd * D;
      if (c->float16) {
        rt_scores_f16((size_t)D, rt->xh + (size_t)hd * D, L->kh + g * rt->kh_head, S, c->attn_scaling, rt->scores);
        if (rt->exact) rt_softmax64(c->reference, S, rt->scores, rt->probs, rt->e64);
        else rt_softmax(c->reference, S, rt->scores, rt->probs);
        rt_pv_f16((size_t)D, S, rt->probs, rt->ph, L->vh + g * D, kvd, out);
      } else {
        rt_scores_f32(D, rt->qb + i * qd + (size_t)hd * D, L->kf + g * D, kvd, S, c->attn_scaling, rt->scores);
        if (rt->exact) rt_softmax64(c->reference, S, rt->scores, rt->probs, rt->e64);
        else rt_softmax(c->reference, S, rt->scores, rt->probs);
        rt_pv_f32(D, S, rt->probs, L->vf + g * D, kvd, out);
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
  const int gpt2 = c->arch == SQUAT_RT_GPT2, ref = c->reference;
  rt_embed(rt, ids, n, rt->x);
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
        rt_rope(ref, rt->qb + i * qd, c->n_heads, c->head_dim, cs, sn);
        rt_rope(ref, rt->kb + i * kvd, c->n_kv_heads, c->head_dim, cs, sn);
      }
      if (!L->float_attn) {
        rt_quant_k(rt, l, p, rt->kb + i * kvd);
      } else if (c->float16) {
        rt_append_kv_f16(rt, l, p, rt->kb + i * kvd, rt->vb + i * kvd);
      } else {
        memcpy(L->kf + p * kvd, rt->kb + i * kvd, kvd * sizeof(float));
        memcpy(L->vf + p * kvd, rt->vb + i * kvd, kvd * sizeof(float));
      }
    }
    if (L->float_attn) attention_float(rt, l, n);
    else attention(rt, l, n);
    if ((rc = linear(rt, l, &L->lin[SQUAT_RT_O], n, rt->attn, rt->tmp))) return rc;
    rt_residual(n * h, rt->x, rt->tmp);
    norm(rt, n, rt->x, L->post_norm, L->post_norm_b, rt->xn);
    if (gpt2) {
      if ((rc = linear(rt, l, &L->lin[SQUAT_RT_UP], n, rt->xn, rt->g))) return rc;
      if (rt->exact) rt_gelu64(ref, n * im, rt->g);
      else rt_gelu(ref, n * im, rt->g);
    } else {
      if ((rc = linear(rt, l, &L->lin[SQUAT_RT_GATE], n, rt->xn, rt->g)) ||
          (rc = linear(rt, l, &L->lin[SQUAT_RT_UP], n, rt->xn, rt->u)))
        return rc;
      if (rt->exact) rt_silu_mul64(ref, n * im, rt->g, rt->u);
      else rt_silu_mul(ref, n * im, rt->g, rt->u);
    }
    if ((rc = linear(rt, l, &L->lin[SQUAT_RT_DOWN], n, rt->g, rt->tmp))) return rc;
    rt_residual(n * h, rt->x, rt->tmp);
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

#define BUNDLE_MAGIC "SQRTBND2"
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
