/// Fused quantized linear (squat_qlinear.h): the packed-weight blob, the kernel choice and the two run paths.
///  - fused: kernels with pack_lhs_quant + run_dequant quantize straight into their packed LHS and dequantize
///    their accumulators before storing;
///  - generic: any other igemm kernel runs on int8 rows quantized by the same NEON code, and the same
///    epilogue arithmetic is applied to its int32 output (both paths give identical bits).
#include <string.h>
#include "squat_api.h"
#include "squat_quant.h"

#define SQ_QL_MAGIC "SQQLIN1"
#define SQ_ALIGN 64
/// Largest M that runs on a decode (M_R = 1) kernel when the layout has one: each row then streams the
/// weights once, which beats a register tile only while there is no row to share the weight loads with.
#define SQ_QL_DECODE_MAX_M 1

typedef struct sq_ql_header {
  char magic[8];
  uint64_t n, k, total;
  uint64_t off_rowsum, off_wscale, off_bias, off_rhs;
  int32_t weight_bits, layout, per_channel, has_bias, max_abs_w, pack_kernel;
  uint32_t features;
  int32_t pad_;
} sq_ql_header;

static size_t align_up(size_t v) { return (v + SQ_ALIGN - 1) / SQ_ALIGN * SQ_ALIGN; }

const char *squat_qlinear_strerror(int code) {
  switch (code) {
    case SQUAT_QL_OK: return "ok";
    case SQUAT_QL_E_ARG: return "invalid argument: NULL buffer, zero N or K, or a stride smaller than the row";
    case SQUAT_QL_E_BITS: return "unsupported width: weights and activations must have 2 to 8 bits, weights within their signed range";
    case SQUAT_QL_E_SITE: return "inconsistent activation site: need -2^(bits-1) <= qmin <= qmax <= 2^(bits-1)-1, |zero_point| <= 16384, a finite scale > 0 (static) or qmax > zero_point (dynamic)";
    case SQUAT_QL_E_WORKSPACE: return "workspace too small: allocate squat_qlinear_workspace_size(blob, m) bytes";
    case SQUAT_QL_E_RANGE: return "K * max|W| * max|q - zero_point| >= 2^31: the int32 accumulator could overflow; split the linear along K";
    case SQUAT_QL_E_CPU: return "the blob was packed for CPU features this CPU lacks: pack the weights again on this machine";
    case SQUAT_QL_E_BLOB: return "not a squat_qlinear blob (or from another version): pack with squat_qlinear_pack";
    case SQUAT_QL_E_KERNEL: return "this kernel cannot run the blob (other weight layout, too few activation bits, or K above its limit)";
    default: return "unknown squat_qlinear error";
  }
}

/* ---------------------------------------------------------------------------------------------- kernels */
static int fits(const squat_igemm_ukernel *u, unsigned features) { return (u->features & ~features) == 0; }

/// The kernel whose layout a new blob gets: the first registered prefill kernel (registry order is fastest
/// first) for the weight width that the features allow and that accepts 8-bit activations (the sites are not
/// known at pack time).
static int pack_kernel_for(int weight_bits, unsigned features) {
  const int wb = weight_bits <= 4 ? 4 : 8;
  for (size_t i = 0; i < squat_igemm_count(); i++) {
    const squat_igemm_ukernel *u = squat_igemm_get(i);
    if (u->weight_bits == wb && u->act_bits == 8 && u->get_mr() > 1 && u->rhs_layout && fits(u, features)) return (int)i;
  }
  return -1;
}

static int usable(const squat_igemm_ukernel *u, const sq_ql_header *h, int act_bits) {
  return u->rhs_layout == h->layout && u->act_bits >= act_bits && (u->max_k == 0 || h->k <= u->max_k) &&
         fits(u, squat_cpu_features());
}

static const sq_ql_header *header(const void *packed) {
  const sq_ql_header *h = packed;
  return (h && !memcmp(h->magic, SQ_QL_MAGIC, 8)) ? h : NULL;
}

int squat_qlinear_kernel(const void *packed, size_t m, int act_bits) {
  const sq_ql_header *h = header(packed);
  if (!h) return SQUAT_QL_E_BLOB;
  if (act_bits < 2 || act_bits > 8) return SQUAT_QL_E_BITS;
  if (!fits(squat_igemm_get((size_t)h->pack_kernel), squat_cpu_features())) return SQUAT_QL_E_CPU;
  const int want_decode = m <= SQ_QL_DECODE_MAX_M;
  int fallback = -1;
  for (size_t i = 0; i < squat_igemm_count(); i++) {
    const squat_igemm_ukernel *u = squat_igemm_get(i);
    if (!usable(u, h, act_bits)) continue;
    if ((u->get_mr() == 1) == want_decode) return (int)i;
    if (fallback < 0) fallback = (int)i;
  }
  return fallback >= 0 ? fallback : SQUAT_QL_E_KERNEL;
}

/* ---------------------------------------------------------------------------------------------- blob */
static void layout_blob(size_t n, size_t k, int per_channel, const squat_igemm_ukernel *u, sq_ql_header *h) {
  size_t off = align_up(sizeof(sq_ql_header));
  h->off_rowsum = off; off = align_up(off + n * sizeof(int32_t));
  h->off_wscale = off; off = align_up(off + (per_channel ? n : 1) * sizeof(float));
  h->off_bias = off; off = align_up(off + n * sizeof(float));
  h->off_rhs = off; off = align_up(off + u->get_rhs_packed_size(n, k));
  h->total = off;
}

size_t squat_qlinear_packed_size_for(int kernel, size_t n, size_t k) {
  if (kernel < 0 || (size_t)kernel >= squat_igemm_count() || n == 0 || k == 0) return 0;
  sq_ql_header h;
  layout_blob(n, k, 1, squat_igemm_get((size_t)kernel), &h);
  return h.total;
}

size_t squat_qlinear_packed_size(size_t n, size_t k, int weight_bits, unsigned features) {
  if (weight_bits < 2 || weight_bits > 8) return 0;
  return squat_qlinear_packed_size_for(pack_kernel_for(weight_bits, features ? features : squat_cpu_features()), n, k);
}

int squat_qlinear_pack_for(int kernel, size_t n, size_t k, int weight_bits, const int8_t *w, size_t w_stride,
                           const float *w_scale, int w_scale_per_channel, const float *bias, void *packed) {
  if (!w || !w_scale || !packed || n == 0 || k == 0 || w_stride < k) return SQUAT_QL_E_ARG;
  if (weight_bits < 2 || weight_bits > 8) return SQUAT_QL_E_BITS;
  if (kernel < 0 || (size_t)kernel >= squat_igemm_count()) return SQUAT_QL_E_KERNEL;
  const squat_igemm_ukernel *u = squat_igemm_get((size_t)kernel);
  if (!u->rhs_layout || u->weight_bits < (weight_bits <= 4 ? 4 : 8)) return SQUAT_QL_E_KERNEL;
  const int lo = -(1 << (weight_bits - 1)), hi = (1 << (weight_bits - 1)) - 1;
  int wmax = 0;
  for (size_t j = 0; j < n; j++)
    for (size_t l = 0; l < k; l++) {
      const int v = w[j * w_stride + l];
      if (v < lo || v > hi) return SQUAT_QL_E_BITS;
      if ((v < 0 ? -v : v) > wmax) wmax = v < 0 ? -v : v;
    }
  sq_ql_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, SQ_QL_MAGIC, 8);
  h.n = n; h.k = k;
  h.weight_bits = weight_bits; h.layout = u->rhs_layout; h.per_channel = w_scale_per_channel ? 1 : 0;
  h.has_bias = bias != NULL; h.max_abs_w = wmax; h.pack_kernel = kernel; h.features = u->features;
  layout_blob(n, k, h.per_channel, u, &h);
  uint8_t *b = packed;
  memset(b, 0, h.total);
  memcpy(b, &h, sizeof h);
  int32_t *rs = (int32_t *)(b + h.off_rowsum);
  for (size_t j = 0; j < n; j++) {
    int32_t s = 0;
    for (size_t l = 0; l < k; l++) s += w[j * w_stride + l];
    rs[j] = s;
  }
  memcpy(b + h.off_wscale, w_scale, (h.per_channel ? n : 1) * sizeof(float));
  if (bias) memcpy(b + h.off_bias, bias, n * sizeof(float));
  u->pack_rhs(n, k, w, w_stride, b + h.off_rhs);
  return SQUAT_QL_OK;
}

int squat_qlinear_pack(size_t n, size_t k, int weight_bits, const int8_t *w, size_t w_stride, const float *w_scale,
                       int w_scale_per_channel, const float *bias, unsigned features, void *packed) {
  if (weight_bits < 2 || weight_bits > 8) return SQUAT_QL_E_BITS;
  const int kernel = pack_kernel_for(weight_bits, features ? features : squat_cpu_features());
  if (kernel < 0) return SQUAT_QL_E_CPU;
  return squat_qlinear_pack_for(kernel, n, k, weight_bits, w, w_stride, w_scale, w_scale_per_channel, bias, packed);
}

int squat_qlinear_get_info(const void *packed, squat_qlinear_info *info) {
  const sq_ql_header *h = header(packed);
  if (!h || !info) return SQUAT_QL_E_BLOB;
  info->n = h->n; info->k = h->k; info->weight_bits = h->weight_bits; info->max_abs_w = h->max_abs_w;
  info->layout = h->layout; info->features = h->features; info->per_channel = h->per_channel;
  info->has_bias = h->has_bias;
  return SQUAT_QL_OK;
}

/* ---------------------------------------------------------------------------------------------- workspace */
typedef struct sq_ws {
  float *col_scale;
  float *row_scale;
  int32_t *row_zp;
  void *lhs, *scratch;
  int8_t *q;   /* generic path */
  int32_t *c;  /* generic path */
  size_t need;
} sq_ws;

static int fused(const squat_igemm_ukernel *u) { return u->pack_lhs_quant && u->run_dequant; }

/* Offsets from an aligned base; need = bytes including the slack to align any pointer. */
static sq_ws carve(const squat_igemm_ukernel *u, size_t m, size_t n, size_t k, uintptr_t base) {
  sq_ws w;
  size_t off = 0;
  w.col_scale = (float *)(base + off); off = align_up(off + n * sizeof(float));
  w.row_scale = (float *)(base + off); off = align_up(off + m * sizeof(float));
  w.row_zp = (int32_t *)(base + off); off = align_up(off + m * sizeof(int32_t));
  w.lhs = (void *)(base + off); off = align_up(off + u->get_lhs_packed_size(m, k));
  w.scratch = (void *)(base + off); off = align_up(off + u->get_scratch_size(m, n, k));
  w.q = NULL; w.c = NULL;
  if (!fused(u)) {
    w.q = (int8_t *)(base + off); off = align_up(off + m * k);
    w.c = (int32_t *)(base + off); off = align_up(off + m * n * sizeof(int32_t));
  }
  w.need = off + SQ_ALIGN;
  return w;
}

size_t squat_qlinear_workspace_size(const void *packed, size_t m) {
  const sq_ql_header *h = header(packed);
  if (!h) return 0;
  size_t need = 0;
  for (size_t i = 0; i < squat_igemm_count(); i++) {
    const squat_igemm_ukernel *u = squat_igemm_get(i);
    if (!usable(u, h, 2)) continue;
    const sq_ws w = carve(u, m ? m : 1, h->n, h->k, 0);
    if (w.need > need) need = w.need;
  }
  return need;
}

/* ---------------------------------------------------------------------------------------------- run */
static int site_ok(const squat_act_site *s) {
  if (s->mode != SQUAT_ACT_STATIC && s->mode != SQUAT_ACT_DYNAMIC_PER_TOKEN) return SQUAT_QL_E_SITE;
  if (s->bits < 2 || s->bits > 8) return SQUAT_QL_E_BITS;
  const int lo = -(1 << (s->bits - 1)), hi = (1 << (s->bits - 1)) - 1;
  if (s->qmin < lo || s->qmax > hi || s->qmin > s->qmax) return SQUAT_QL_E_SITE;
  if (s->zero_point < -SQ_MAX_ABS_ZP || s->zero_point > SQ_MAX_ABS_ZP) return SQUAT_QL_E_SITE;
  if (s->mode == SQUAT_ACT_STATIC && !(s->scale > 0.0f && s->scale <= 3.4e38f)) return SQUAT_QL_E_SITE;
  if (s->mode == SQUAT_ACT_DYNAMIC_PER_TOKEN && s->qmax <= s->zero_point) return SQUAT_QL_E_SITE;
  return SQUAT_QL_OK;
}

static uint64_t site_span(const squat_act_site *s) {
  const int64_t a = (int64_t)s->qmin - s->zero_point, b = (int64_t)s->qmax - s->zero_point;
  return (uint64_t)((a < 0 ? -a : a) > (b < 0 ? -b : b) ? (a < 0 ? -a : a) : (b < 0 ? -b : b));
}

void sq_quantize_row_i8(size_t k, const float *x, const sq_qparams *p, int8_t *q) {
  size_t l = 0;
  for (; l + 16 <= k; l += 16) vst1q_s8(q + l, sq_quant16(x + l, p));
  if (l < k) {
    int8_t t[16];
    vst1q_s8(t, sq_quant_tail(x + l, k - l, p));
    memcpy(q + l, t, k - l);
  }
}

void sq_dequant_rows(size_t m, size_t n, const int32_t *c, size_t cs, const squat_dequant *dq, float *y, size_t ys) {
  for (size_t i = 0; i < m; i++) {
    const int32_t *cr = c + i * cs;
    float *yr = y + i * ys;
    const float sx = dq->row_scale[i];
    const int32x4_t zp = vdupq_n_s32(dq->row_zp[i]);
    size_t j = 0;
    if (dq->w_scale_per_channel) {
      for (; j + 4 <= n; j += 4) {
        const int32x4_t a = vmlsq_s32(vld1q_s32(cr + j), vld1q_s32(dq->rowsum + j), zp);
        float32x4_t v = vmulq_f32(vcvtq_f32_s32(a), vmulq_n_f32(vld1q_f32(dq->w_scale + j), sx));
        if (dq->bias) v = vaddq_f32(v, vld1q_f32(dq->bias + j));
        vst1q_f32(yr + j, v);
      }
    } else {
      const float32x4_t t = vdupq_n_f32(sx * dq->w_scale[0]);
      for (; j + 4 <= n; j += 4) {
        const int32x4_t a = vmlsq_s32(vld1q_s32(cr + j), vld1q_s32(dq->rowsum + j), zp);
        float32x4_t v = vmulq_f32(vcvtq_f32_s32(a), t);
        if (dq->bias) v = vaddq_f32(v, vld1q_f32(dq->bias + j));
        vst1q_f32(yr + j, v);
      }
    }
    for (; j < n; j++) {
      const int32_t a = (int32_t)((uint32_t)cr[j] - (uint32_t)dq->row_zp[i] * (uint32_t)dq->rowsum[j]);
      const float t = sx * dq->w_scale[dq->w_scale_per_channel ? j : 0];
      float v = (float)a * t;
      if (dq->bias) v = v + dq->bias[j];
      yr[j] = v;
    }
  }
}

int squat_qlinear_run_kernel(int kernel, const void *packed, size_t m, const float *x, size_t x_stride,
                             const squat_qlinear_act *act, float *y, size_t y_stride, void *workspace,
                             size_t workspace_size, float *row_scale_out) {
  const sq_ql_header *h = header(packed);
  if (!h) return SQUAT_QL_E_BLOB;
  if (!act || (m && (!x || !y || !workspace)) || x_stride < h->k || y_stride < h->n) return SQUAT_QL_E_ARG;
  int rc = site_ok(&act->low);
  if (rc) return rc;
  int act_bits = act->low.bits;
  uint64_t span = site_span(&act->low);
  if (act->high_mask) {
    if ((rc = site_ok(&act->high))) return rc;
    if (act->high.bits > act_bits) act_bits = act->high.bits;
    if (site_span(&act->high) > span) span = site_span(&act->high);
  }
  if ((uint64_t)h->k * (uint64_t)h->max_abs_w * span >= ((uint64_t)1 << 31)) return SQUAT_QL_E_RANGE;
  if (!fits(squat_igemm_get((size_t)h->pack_kernel), squat_cpu_features())) return SQUAT_QL_E_CPU;
  if (kernel < 0 || (size_t)kernel >= squat_igemm_count()) return SQUAT_QL_E_KERNEL;
  const squat_igemm_ukernel *u = squat_igemm_get((size_t)kernel);
  if (!usable(u, h, act_bits)) return SQUAT_QL_E_KERNEL;
  if (m == 0) return SQUAT_QL_OK;
  const size_t n = h->n, k = h->k;
  const uint8_t *b = packed;
  const sq_ws w = carve(u, m, n, k, ((uintptr_t)workspace + SQ_ALIGN - 1) & ~(uintptr_t)(SQ_ALIGN - 1));
  if (workspace_size < w.need) return SQUAT_QL_E_WORKSPACE;
  const squat_quant_rows rows = {&act->low, &act->high, act->high_mask, w.row_scale, w.row_zp};
  squat_dequant dq = {(const int32_t *)(b + h->off_rowsum), (const float *)(b + h->off_wscale), h->per_channel,
                      h->has_bias ? (const float *)(b + h->off_bias) : NULL, w.row_scale, w.row_zp, 1, NULL};
  const void *rhs = b + h->off_rhs;
  if (fused(u)) {
    u->pack_lhs_quant(m, k, x, x_stride, &rows, w.lhs);
    /* Per-call facts the epilogue would otherwise test per row: no zero point at all, and one scale for every
       row (a static site without a mask), whose products with the weight scales are then computed once. */
    int any_zp = 0, uniform = 1;
    for (size_t i = 0; i < m; i++) {
      any_zp |= w.row_zp[i] != 0;
      uniform &= w.row_scale[i] == w.row_scale[0];
    }
    dq.any_zp = any_zp;
    if (uniform && m >= 8) {
      for (size_t j = 0; j < n; j++) w.col_scale[j] = w.row_scale[0] * dq.w_scale[h->per_channel ? j : 0];
      dq.col_scale = w.col_scale;
    }
    u->run_dequant(m, n, k, w.lhs, rhs, &dq, y, y_stride, w.scratch);
  } else {
    for (size_t i = 0; i < m; i++) {
      const sq_qparams p = sq_row_params(&rows, i, k, x + i * x_stride);
      sq_quantize_row_i8(k, x + i * x_stride, &p, w.q + i * k);
    }
    u->pack_lhs(m, k, w.q, k, w.lhs);
    u->run_matmul(m, n, k, w.lhs, rhs, w.c, n, w.scratch);
    sq_dequant_rows(m, n, w.c, n, &dq, y, y_stride);
  }
  if (row_scale_out) memcpy(row_scale_out, w.row_scale, m * sizeof(float));
  return SQUAT_QL_OK;
}

int squat_qlinear_run(const void *packed, size_t m, const float *x, size_t x_stride, const squat_qlinear_act *act,
                      float *y, size_t y_stride, void *workspace, size_t workspace_size) {
  if (!act) return SQUAT_QL_E_ARG;
  int bits = act->low.bits;
  if (act->high_mask && act->high.bits > bits) bits = act->high.bits;
  const int kernel = squat_qlinear_kernel(packed, m, bits < 2 ? 2 : bits > 8 ? 8 : bits);
  if (kernel < 0) return kernel;
  return squat_qlinear_run_kernel(kernel, packed, m, x, x_stride, act, y, y_stride, workspace, workspace_size, NULL);
}
