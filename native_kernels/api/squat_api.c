/// Kernel registries, run-time CPU feature checks, and the mixed-precision entry point.
#define _GNU_SOURCE
#include "squat_api.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "squat_neon.h"
#include "squat_ref.h"
#if !defined(SQUAT_SIMDE) && defined(__linux__)
#include <sys/auxv.h>
#endif

extern const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_8x8c8_neoni8mm, squat_ukernel_gemm_qs8_qs8_8x8c4_neondot,
    squat_ukernel_gemm_qs8_qs8_4x4c8_neon, squat_ukernel_gemm_qs8_qs4_8x8c8_neoni8mm,
    squat_ukernel_gemm_qs8_qs4_8x8c4_neondot, squat_ukernel_gemm_qs8_qs4x2_mkmp_4x8_neon,
    squat_ukernel_gemm_qs4_qs4x2_mkmp_4x8_neon;
extern const squat_fgemm_ukernel squat_ukernel_gemm_f32_f32_8x8_neon, squat_ukernel_gemm_f16_f16_8x16_neonfp16arith;

/* Ordered fastest first within each precision (squat_igemm_default picks the first available). */
static const squat_igemm_ukernel *const g_igemm[] = {
  &squat_ukernel_gemm_qs8_qs8_8x8c8_neoni8mm,  &squat_ukernel_gemm_qs8_qs8_8x8c4_neondot,
  &squat_ukernel_gemm_qs8_qs8_4x4c8_neon,      &squat_ukernel_gemm_qs8_qs4_8x8c8_neoni8mm,
  &squat_ukernel_gemm_qs8_qs4_8x8c4_neondot,   &squat_ukernel_gemm_qs8_qs4x2_mkmp_4x8_neon,
  &squat_ukernel_gemm_qs4_qs4x2_mkmp_4x8_neon,
};
static const squat_fgemm_ukernel *const g_fgemm[] = {
  &squat_ukernel_gemm_f32_f32_8x8_neon, &squat_ukernel_gemm_f16_f16_8x16_neonfp16arith,
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *squat_build_target(void) {
#if defined(SQUAT_SIMDE)
  return "x86-simde";
#else
  return "aarch64";
#endif
}

unsigned squat_cpu_features(void) {
#if defined(SQUAT_SIMDE)
  return SQUAT_FEAT_NEON | SQUAT_FEAT_DOTPROD | SQUAT_FEAT_FP16 | SQUAT_FEAT_I8MM;
#elif defined(__linux__)
  unsigned f = SQUAT_FEAT_NEON;
  unsigned long h1 = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
  if (h1 & (1UL << 20)) f |= SQUAT_FEAT_DOTPROD; /* HWCAP_ASIMDDP */
  if (h1 & (1UL << 10)) f |= SQUAT_FEAT_FP16;    /* HWCAP_ASIMDHP */
  if (h2 & (1UL << 13)) f |= SQUAT_FEAT_I8MM;    /* HWCAP2_I8MM */
  return f;
#else
  return SQUAT_FEAT_NEON;
#endif
}

size_t squat_igemm_count(void) { return COUNT(g_igemm); }
const squat_igemm_ukernel *squat_igemm_get(size_t i) { return i < COUNT(g_igemm) ? g_igemm[i] : NULL; }
int squat_igemm_find(const char *name) {
  for (size_t i = 0; i < COUNT(g_igemm); i++) if (!strcmp(g_igemm[i]->name, name)) return (int)i;
  return -1;
}
int squat_igemm_available(size_t i) {
  return i < COUNT(g_igemm) && (g_igemm[i]->features & ~squat_cpu_features()) == 0;
}
int squat_igemm_default(const char *precision) {
  /* w4a4 runs on the w4 x int8 kernels (activations in [-8,7] are valid int8): sdot/smmla beat MKMP. */
  const char *want = !strcmp(precision, "w4a4") ? "w4a8" : precision;
  for (size_t i = 0; i < COUNT(g_igemm); i++)
    if (!strcmp(g_igemm[i]->precision, want) && squat_igemm_available(i)) return (int)i;
  return -1;
}
size_t squat_igemm_mr(size_t i) { return g_igemm[i]->get_mr(); }
size_t squat_igemm_nr(size_t i) { return g_igemm[i]->get_nr(); }
size_t squat_igemm_kr(size_t i) { return g_igemm[i]->get_kr(); }
size_t squat_igemm_rhs_size(size_t i, size_t n, size_t k) { return g_igemm[i]->get_rhs_packed_size(n, k); }
size_t squat_igemm_lhs_size(size_t i, size_t m, size_t k) { return g_igemm[i]->get_lhs_packed_size(m, k); }
size_t squat_igemm_scratch_size(size_t i, size_t m, size_t n, size_t k) { return g_igemm[i]->get_scratch_size(m, n, k); }
void squat_igemm_pack_rhs(size_t i, size_t n, size_t k, const int8_t *w, size_t ws, void *rhs) { g_igemm[i]->pack_rhs(n, k, w, ws, rhs); }
void squat_igemm_pack_lhs(size_t i, size_t m, size_t k, const int8_t *x, size_t xs, void *lhs) { g_igemm[i]->pack_lhs(m, k, x, xs, lhs); }
void squat_igemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c, size_t cs, void *scratch) {
  g_igemm[i]->run_matmul(m, n, k, lhs, rhs, c, cs, scratch);
}
size_t squat_igemm_workspace_size(size_t i, size_t m, size_t n, size_t k) {
  const squat_igemm_ukernel *u = g_igemm[i];
  return SQ_ROUND_UP(u->get_lhs_packed_size(m, k), 64) + u->get_scratch_size(m, n, k) + 64;
}
void squat_igemm_matmul(size_t i, size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const void *rhs, int32_t *c,
                        size_t cs, void *workspace) {
  const squat_igemm_ukernel *u = g_igemm[i];
  uint8_t *lhs = workspace, *scr = lhs + SQ_ROUND_UP(u->get_lhs_packed_size(m, k), 64);
  u->pack_lhs(m, k, x, xs, lhs);
  u->run_matmul(m, n, k, lhs, rhs, c, cs, scr);
}

size_t squat_fgemm_count(void) { return COUNT(g_fgemm); }
const squat_fgemm_ukernel *squat_fgemm_get(size_t i) { return i < COUNT(g_fgemm) ? g_fgemm[i] : NULL; }
int squat_fgemm_find(const char *name) {
  for (size_t i = 0; i < COUNT(g_fgemm); i++) if (!strcmp(g_fgemm[i]->name, name)) return (int)i;
  return -1;
}
int squat_fgemm_available(size_t i) {
  return i < COUNT(g_fgemm) && (g_fgemm[i]->features & ~squat_cpu_features()) == 0;
}
size_t squat_fgemm_mr(size_t i) { return g_fgemm[i]->get_mr(); }
size_t squat_fgemm_nr(size_t i) { return g_fgemm[i]->get_nr(); }
size_t squat_fgemm_kr(size_t i) { return g_fgemm[i]->get_kr(); }
size_t squat_fgemm_rhs_size(size_t i, size_t n, size_t k) { return g_fgemm[i]->get_rhs_packed_size(n, k); }
size_t squat_fgemm_lhs_size(size_t i, size_t m, size_t k) { return g_fgemm[i]->get_lhs_packed_size(m, k); }
void squat_fgemm_pack_rhs(size_t i, size_t n, size_t k, const void *w, size_t ws, void *rhs) { g_fgemm[i]->pack_rhs(n, k, w, ws, rhs); }
void squat_fgemm_pack_lhs(size_t i, size_t m, size_t k, const void *x, size_t xs, void *lhs) { g_fgemm[i]->pack_lhs(m, k, x, xs, lhs); }
void squat_fgemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *c, size_t cs) {
  g_fgemm[i]->run_matmul(m, n, k, lhs, rhs, c, cs);
}

/* ---- activation quantization (NEON) ---- */
static float absmax_rows(size_t rows, size_t k, const float *x, size_t xs) {
  float32x4_t mv = vdupq_n_f32(0.0f);
  float m = 0.0f;
  for (size_t i = 0; i < rows; i++) {
    const float *r = x + i * xs;
    size_t l = 0;
    for (; l + 4 <= k; l += 4) mv = vmaxq_f32(mv, vabsq_f32(vld1q_f32(r + l)));
    for (; l < k; l++) { float a = fabsf(r[l]); if (a > m) m = a; }
  }
  float t[4];
  vst1q_f32(t, mv);
  for (int i = 0; i < 4; i++) if (t[i] > m) m = t[i];
  return m;
}

static void quantize_row(size_t k, const float *x, float scale, int qmax, int8_t *q) {
  const float32x4_t s = vdupq_n_f32(scale);
  const int32x4_t hi = vdupq_n_s32(qmax), lo = vdupq_n_s32(-qmax);
  size_t l = 0;
  for (; l + 8 <= k; l += 8) {
    int32x4_t a = vcvtaq_s32_f32(vdivq_f32(vld1q_f32(x + l), s));     /* fcvtas: ties away from zero */
    int32x4_t b = vcvtaq_s32_f32(vdivq_f32(vld1q_f32(x + l + 4), s));
    a = vmaxq_s32(vminq_s32(a, hi), lo);
    b = vmaxq_s32(vminq_s32(b, hi), lo);
    vst1_s8(q + l, vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b))));
  }
  for (; l < k; l++) {
    float v = roundf(x[l] / scale);
    q[l] = (int8_t)(v > qmax ? qmax : v < -qmax ? -qmax : v);
  }
}

float squat_quantize_group_f32(size_t rows, size_t k, const float *x, size_t xs, int qmax, int8_t *q, size_t qs) {
  const float amax = absmax_rows(rows, k, x, xs);
  const float scale = amax > 0.0f ? amax / (float)qmax : 1.0f;
  for (size_t i = 0; i < rows; i++) quantize_row(k, x + i * xs, scale, qmax, q + i * qs);
  return scale;
}

static int cmp_imp(const void *pa, const void *pb, void *ctx) {
  const float *imp = ctx;
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  if (imp[a] > imp[b]) return -1;
  if (imp[a] < imp[b]) return 1;
  return a < b ? -1 : (a > b);
}

int squat_mixed_linear_f32(size_t m, size_t n, size_t k, const float *x, size_t xs,
                           const float *importance, const uint8_t *mask_in, double ratio8,
                           int kernel8, const void *rhs8, int kernel4, const void *rhs4,
                           const float *w_scale, int w_scale_per_channel, float *y, size_t ys,
                           uint8_t *mask_out, float *scales_out) {
  if (!mask_in && !importance) return -2;
  if (kernel8 < 0 || kernel4 < 0 || (size_t)kernel8 >= COUNT(g_igemm) || (size_t)kernel4 >= COUNT(g_igemm)) return -3;
  if (g_igemm[kernel4]->act_bits < 4 || g_igemm[kernel8]->act_bits < 8) return -4;
  int rc = 0;
  size_t *rows = malloc((m ? m : 1) * sizeof *rows);
  uint8_t *mask = malloc(m ? m : 1);
  int8_t *q = malloc((m ? m : 1) * k + 1);
  int32_t *c = malloc((m ? m : 1) * n * sizeof *c + 4);
  float *sc = malloc(n * sizeof *sc + 4);
  if (!rows || !mask || !q || !c || !sc) { rc = -1; goto out; }
  if (mask_in) {
    for (size_t i = 0; i < m; i++) mask[i] = mask_in[i] ? 1 : 0;
  } else {
    for (size_t i = 0; i < m; i++) { rows[i] = i; mask[i] = 0; }
    qsort_r(rows, m, sizeof *rows, cmp_imp, (void *)importance);
    size_t n8 = ref_n8(m, ratio8);
    for (size_t i = 0; i < n8; i++) mask[rows[i]] = 1;
  }
  if (mask_out) memcpy(mask_out, mask, m);
  for (int g = 0; g < 2; g++) {
    const int want = g == 0 ? 1 : 0, qmax = g == 0 ? 127 : 7, ki = g == 0 ? kernel8 : kernel4;
    const void *rhs = g == 0 ? rhs8 : rhs4;
    size_t mg = 0;
    for (size_t i = 0; i < m; i++) if (mask[i] == want) rows[mg++] = i;
    if (scales_out) scales_out[g] = 0.0f;
    if (!mg) continue;
    /* group scale over the group's rows, then quantize each row straight into the gathered int8 block */
    float amax = 0.0f;
    for (size_t r = 0; r < mg; r++) { float a = absmax_rows(1, k, x + rows[r] * xs, xs); if (a > amax) amax = a; }
    const float s = amax > 0.0f ? amax / (float)qmax : 1.0f;
    for (size_t r = 0; r < mg; r++) quantize_row(k, x + rows[r] * xs, s, qmax, q + r * k);
    if (scales_out) scales_out[g] = s;
    void *ws = malloc(squat_igemm_workspace_size((size_t)ki, mg, n, k));
    if (!ws) { rc = -1; goto out; }
    squat_igemm_matmul((size_t)ki, mg, n, k, q, k, rhs, c, n, ws);
    free(ws);
    for (size_t j = 0; j < n; j++) sc[j] = s * w_scale[w_scale_per_channel ? j : 0];
    for (size_t r = 0; r < mg; r++) { /* dequantize + scatter */
      float *yr = y + rows[r] * ys;
      const int32_t *cr = c + r * n;
      size_t j = 0;
      for (; j + 4 <= n; j += 4) vst1q_f32(yr + j, vmulq_f32(vcvtq_f32_s32(vld1q_s32(cr + j)), vld1q_f32(sc + j)));
      for (; j < n; j++) yr[j] = (float)cr[j] * sc[j];
    }
  }
out:
  free(rows); free(mask); free(q); free(c); free(sc);
  return rc;
}
