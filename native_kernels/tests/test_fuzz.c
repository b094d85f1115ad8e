/// Fuzz test: every available SIMD kernel against its scalar reference, bit for bit, on random shapes
/// (mostly odd M/N/K, a few with K up to 4096) and extreme values. Runs in every build (SIMDe and qemu).
/// Usage: squat_test [--iters N] [--seed S]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "squat_api.h"
#include "squat_ref.h"

static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { g_state ^= g_state << 13; g_state ^= g_state >> 7; g_state ^= g_state << 17; return g_state; }
static size_t urange(size_t lo, size_t hi) { return lo + (size_t)(rnd() % (hi - lo + 1)); }
static size_t odd_bias(size_t v, size_t hi) { if ((rnd() % 10) < 7 && !(v & 1)) v = v + 1 <= hi ? v + 1 : v - 1; return v ? v : 1; }

/* mode 0 uniform, 1 all min, 2 all max, 3 {min,max} mix, 4 mostly zero */
static void fill_int(int8_t *p, size_t cnt, int lo, int hi, int mode) {
  for (size_t i = 0; i < cnt; i++) {
    int v;
    switch (mode) {
      case 1: v = lo; break;
      case 2: v = hi; break;
      case 3: v = (rnd() & 1) ? lo : hi; break;
      case 4: v = (rnd() % 8) ? 0 : lo + (int)(rnd() % (unsigned)(hi - lo + 1)); break;
      default: v = lo + (int)(rnd() % (unsigned)(hi - lo + 1));
    }
    p[i] = (int8_t)v;
  }
}

static long g_checks = 0;
static int check_i32(const char *what, size_t m, size_t n, size_t k, const int32_t *got, const int32_t *want) {
  g_checks++;
  for (size_t i = 0; i < m * n; i++)
    if (got[i] != want[i]) {
      fprintf(stderr, "FAIL %s M=%zu N=%zu K=%zu at (m=%zu, n=%zu): got %d want %d\n", what, m, n, k, i / n, i % n, got[i], want[i]);
      return 1;
    }
  return 0;
}

static uint16_t f2h(float f) { _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }

int main(int argc, char **argv) {
  long iters = 1200;
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--iters")) iters = atol(argv[++i]);
    else if (!strcmp(argv[i], "--seed")) g_state = strtoull(argv[++i], NULL, 0) | 1;
  }
  printf("target %s, cpu features 0x%x\n", squat_build_target(), squat_cpu_features());
  const size_t ni = squat_igemm_count(), nf = squat_fgemm_count();
  for (size_t i = 0; i < ni; i++)
    printf("  igemm %-32s %s mr=%zu nr=%zu kr=%zu %s\n", squat_igemm_get(i)->name, squat_igemm_get(i)->precision,
           squat_igemm_mr(i), squat_igemm_nr(i), squat_igemm_kr(i), squat_igemm_available(i) ? "" : "(unavailable: skipped)");
  for (size_t i = 0; i < nf; i++)
    printf("  fgemm %-32s %s %s\n", squat_fgemm_get(i)->name, squat_fgemm_get(i)->precision, squat_fgemm_available(i) ? "" : "(unavailable: skipped)");
  int fails = 0;
  long shapes = 0;
  for (long it = 0; it < iters && !fails; it++) {
    size_t m, n, k, r = rnd() % 100;
    if (r < 4) { m = urange(1, 5); n = urange(1, 17); k = urange(1000, 4096); }
    else if (r < 9) { m = urange(9, 70); n = urange(9, 40); k = urange(64, 300); }
    else { m = urange(1, 19); n = urange(1, 33); k = urange(1, 160); }
    m = odd_bias(m, 200); n = odd_bias(n, 200); k = odd_bias(k, 5000);
    const int mode_x = (int)(rnd() % 5), mode_w = (int)(rnd() % 5);
    shapes++;
    int8_t *x = malloc(m * k), *w = malloc(n * k);
    int32_t *c = malloc(m * n * 4), *cref = malloc(m * n * 4);
    for (size_t ki = 0; ki < ni && !fails; ki++) {
      if (!squat_igemm_available(ki)) continue;
      const squat_igemm_ukernel *u = squat_igemm_get(ki);
      const int xa = u->act_bits == 8 ? 127 : 7, wa = u->weight_bits == 8 ? 127 : 7;
      /* 4-bit-weight kernels that accept 8-bit activations are also exercised with 4-bit activations */
      const int xlo = (u->act_bits == 8 && (rnd() & 3) == 0) ? -8 : -xa - 1, xhi = xlo == -8 ? 7 : xa;
      fill_int(x, m * k, xlo, xhi, mode_x);
      fill_int(w, n * k, -wa - 1, wa, mode_w);
      ref_gemm_qs8_qs8(m, n, k, x, k, w, k, cref, n);
      void *rhs = malloc(squat_igemm_rhs_size(ki, n, k));
      squat_igemm_pack_rhs(ki, n, k, w, k, rhs);
      memset(c, 0x5A, m * n * 4);
      squat_igemm_matmul(ki, m, n, k, x, k, rhs, c, n);
      fails |= check_i32(u->name, m, n, k, c, cref);
      free(rhs);
      if (u->weight_bits == 4 && !fails) { /* the scalar MKMP emulation is exact too */
        ref_gemm_mkmp(m, n, k, x, k, w, k, c, n, xlo != -8);
        fails |= check_i32(xlo != -8 ? "ref_gemm_mkmp(nibble split)" : "ref_gemm_mkmp", m, n, k, c, cref);
      }
    }
    /* float baselines: exact against the one-fma-per-k scalar references */
    if (!fails && r % 2 == 0) {
      float *xf = malloc(m * k * 4), *wf = malloc(n * k * 4), *cf = malloc(m * n * 4), *cfr = malloc(m * n * 4);
      uint16_t *xh = malloc(m * k * 2), *wh = malloc(n * k * 2), *ch = malloc(m * n * 2), *chr = malloc(m * n * 2);
      for (size_t i = 0; i < m * k; i++) { xf[i] = (float)((int)(rnd() % 2001) - 1000) / 997.0f; xh[i] = f2h(xf[i] * 0.25f); }
      for (size_t i = 0; i < n * k; i++) { wf[i] = (float)((int)(rnd() % 2001) - 1000) / 1009.0f; wh[i] = f2h(wf[i] * 0.25f); }
      for (size_t fi = 0; fi < nf && !fails; fi++) {
        if (!squat_fgemm_available(fi)) continue;
        const squat_fgemm_ukernel *u = squat_fgemm_get(fi);
        const int half = u->elem_size == 2;
        void *rhs = malloc(squat_fgemm_rhs_size(fi, n, k)), *lhs = malloc(squat_fgemm_lhs_size(fi, m, k) + 16);
        squat_fgemm_pack_rhs(fi, n, k, half ? (void *)wh : (void *)wf, k, rhs);
        squat_fgemm_pack_lhs(fi, m, k, half ? (void *)xh : (void *)xf, k, lhs);
        squat_fgemm_run(fi, m, n, k, lhs, rhs, half ? (void *)ch : (void *)cf, n);
        g_checks++;
        if (half) {
          ref_gemm_f16(m, n, k, xh, k, wh, k, chr, n);
          for (size_t i = 0; i < m * n && !fails; i++)
            if (ch[i] != chr[i] && !((ch[i] | chr[i]) == 0x8000)) {
              fprintf(stderr, "FAIL %s M=%zu N=%zu K=%zu at %zu: 0x%04x vs 0x%04x\n", u->name, m, n, k, i, ch[i], chr[i]);
              fails = 1;
            }
        } else {
          ref_gemm_f32(m, n, k, xf, k, wf, k, cfr, n);
          for (size_t i = 0; i < m * n && !fails; i++)
            if (cf[i] != cfr[i]) {
              fprintf(stderr, "FAIL %s M=%zu N=%zu K=%zu at %zu: %.9g vs %.9g\n", u->name, m, n, k, i, cf[i], cfr[i]);
              fails = 1;
            }
        }
        free(rhs); free(lhs);
      }
      free(xf); free(wf); free(cf); free(cfr); free(xh); free(wh); free(ch); free(chr);
    }
    /* mixed precision entry point vs the scalar composition (top-k, per-group quantization, ref gemm, dequant) */
    if (!fails && r % 3 == 0) {
      float *xf = malloc(m * k * 4), *imp = malloc(m * 4), *y = malloc(m * n * 4), *yr = malloc(m * n * 4), *sw = malloc(n * 4);
      uint8_t *mask = malloc(m), *mref = malloc(m);
      int8_t *w4 = malloc(n * k), *q = malloc(m * k);
      for (size_t i = 0; i < m * k; i++) xf[i] = (float)((int)(rnd() % 20001) - 10000) / 1000.0f * ((i % 7) ? 1.0f : 3.5f);
      for (size_t i = 0; i < m; i++) imp[i] = (float)(rnd() % 5); /* many ties */
      for (size_t j = 0; j < n; j++) sw[j] = 0.001f * (float)(1 + rnd() % 100);
      fill_int(w4, n * k, -8, 7, mode_w);
      const double ratio = (double)(rnd() % 5) / 4.0;
      const int k8 = squat_igemm_default("w4a8"), k4 = (rnd() & 1) ? squat_igemm_find("gemm_qs4_qs4x2_mkmp_4x8_neon") : squat_igemm_default("w4a4");
      void *r8 = malloc(squat_igemm_rhs_size(k8, n, k)), *r4 = malloc(squat_igemm_rhs_size(k4, n, k));
      squat_igemm_pack_rhs(k8, n, k, w4, k, r8);
      squat_igemm_pack_rhs(k4, n, k, w4, k, r4);
      float scales[2];
      squat_mixed_linear_f32(m, n, k, xf, k, imp, NULL, ratio, k8, r8, k4, r4, sw, 1, y, n, mask, scales);
      ref_topk_mask(m, imp, ratio, mref);
      for (int g = 0; g < 2; g++) {
        size_t rows[m], mg = 0;
        for (size_t i = 0; i < m; i++) if (mref[i] == (g == 0)) rows[mg++] = i;
        if (!mg) continue;
        float *xg = malloc(mg * k * 4);
        int32_t *cg = malloc(mg * n * 4);
        for (size_t i = 0; i < mg; i++) memcpy(xg + i * k, xf + rows[i] * k, k * 4);
        float s = ref_quantize_group(mg, k, xg, k, g == 0 ? 127 : 7, q, k);
        ref_gemm_qs8_qs8(mg, n, k, q, k, w4, k, cg, n);
        for (size_t i = 0; i < mg; i++)
          for (size_t j = 0; j < n; j++) yr[rows[i] * n + j] = (float)cg[i * n + j] * (s * sw[j]);
        if (s != scales[g]) { fprintf(stderr, "FAIL mixed scale g=%d %.9g vs %.9g\n", g, scales[g], s); fails = 1; }
        free(xg); free(cg);
      }
      g_checks++;
      if (memcmp(mask, mref, m)) { fprintf(stderr, "FAIL mixed mask M=%zu\n", m); fails = 1; }
      for (size_t i = 0; i < m * n && !fails; i++)
        if (y[i] != yr[i]) { fprintf(stderr, "FAIL mixed M=%zu N=%zu K=%zu at %zu: %.9g vs %.9g\n", m, n, k, i, y[i], yr[i]); fails = 1; }
      free(xf); free(imp); free(y); free(yr); free(sw); free(mask); free(mref); free(w4); free(q); free(r8); free(r4);
    }
    free(x); free(w); free(c); free(cref);
  }
  if (fails) { printf("FAILED after %ld shapes\n", shapes); return 1; }
  printf("PASS %ld fuzzed shapes, %ld bit-exact checks\n", shapes, g_checks);
  return 0;
}
