/// Fuzz test: every available SIMD kernel against its scalar reference, bit for bit, on random shapes
/// (mostly odd M/N/K, a few with K up to 4096) and extreme values. Runs in every build (SIMDe and qemu).
/// Also: the fused quantized linear (squat_qlinear_run) against ref_qlinear for every kernel that can run it,
/// every weight width 2..8, static and dynamic sites of 2..8 bits with zero points of both signs, token-adaptive
/// masks, bias and per-channel scales; and every kernel at K >= 2^17 for M = 1 and M = 8 (extreme values).
/// Usage: squat_test [--iters N] [--seed S] [--no-bigk]
///        squat_test --qlinear-cases IN OUT   run the cases Python wrote (tests/native/test_qlinear.py) through
///                                            squat_qlinear_run so it can compare them with its own reference
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

static uint16_t f2h(float f);

/* ---- fused quantized linear ---- */
static long g_qlinear_checks = 0, g_bigk_checks = 0;
static float frand(void) { return (float)((int)(rnd() % 2000001) - 1000000) / 1000000.0f; }

static void rand_site(squat_act_site *s, int bits) {
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  s->mode = (rnd() % 3) ? SQUAT_ACT_STATIC : SQUAT_ACT_DYNAMIC_PER_TOKEN;
  s->bits = bits;
  switch (rnd() % 3) { /* full range, symmetric (qmin = -qmax), or a narrower clip */
    case 0: s->qmin = lo; s->qmax = hi; break;
    case 1: s->qmin = -hi; s->qmax = hi; break;
    default: s->qmin = lo + (int)(rnd() % 2); s->qmax = hi - (int)(rnd() % 2);
  }
  s->zero_point = (rnd() % 3) ? (int)(rnd() % (unsigned)(hi + 1)) * ((rnd() & 1) ? 1 : -1) : 0;
  if (s->mode == SQUAT_ACT_DYNAMIC_PER_TOKEN && s->zero_point >= s->qmax) s->zero_point = s->qmax - 1;
  s->scale = 0.001f + 0.05f * (float)(rnd() % 1000) / 1000.0f;
}

/* x: mostly uniform, some exact half-step ties (round half to even), some far beyond the clip, a zero row. */
static void fill_acts(float *x, size_t m, size_t k, const squat_qlinear_act *act) {
  for (size_t i = 0; i < m; i++) {
    const squat_act_site *s = (act->high_mask && act->high_mask[i]) ? &act->high : &act->low;
    const int zero_row = (rnd() % 11) == 0;
    for (size_t l = 0; l < k; l++) {
      float v = frand() * 0.5f;
      const unsigned r = (unsigned)(rnd() % 16);
      if (r == 0 && s->mode == SQUAT_ACT_STATIC) v = ((float)((int)(rnd() % 21) - 10) + 0.5f) * s->scale;
      else if (r == 1) v *= 40.0f;
      x[i * k + l] = zero_row ? 0.0f : v;
    }
  }
}

static int check_f32(const char *what, size_t m, size_t n, size_t k, const float *got, const float *want) {
  g_checks++;
  for (size_t i = 0; i < m * n; i++)
    if (memcmp(&got[i], &want[i], 4)) {
      fprintf(stderr, "FAIL %s M=%zu N=%zu K=%zu at (m=%zu, n=%zu): got %.9g want %.9g\n", what, m, n, k, i / n, i % n, got[i], want[i]);
      return 1;
    }
  return 0;
}

/* One random qlinear case through every kernel that can pack this width, plus the automatic choice. */
static int fuzz_qlinear(size_t m, size_t n, size_t k, int wmode) {
  const int wb = 2 + (int)(rnd() % 7);
  const int ab_lo = 2 + (int)(rnd() % 7), ab_hi = 2 + (int)(rnd() % 7);
  squat_qlinear_act act;
  memset(&act, 0, sizeof act);
  rand_site(&act.low, ab_lo);
  rand_site(&act.high, ab_hi);
  uint8_t *mask = malloc(m);
  for (size_t i = 0; i < m; i++) mask[i] = (uint8_t)(rnd() & 1);
  if (rnd() & 1) act.high_mask = mask;
  int8_t *w = malloc(n * k);
  const int wlo = -(1 << (wb - 1)), whi = (1 << (wb - 1)) - 1;
  fill_int(w, n * k, wlo, whi, wmode);
  float *x = malloc(m * k * 4), *y = malloc(m * n * 4), *yr = malloc(m * n * 4), *sw = malloc(n * 4), *b = malloc(n * 4);
  float *rs = malloc(m * 4), *rsr = malloc(m * 4);
  fill_acts(x, m, k, &act);
  const int per_ch = (int)(rnd() & 1), has_bias = (int)(rnd() & 1);
  for (size_t j = 0; j < n; j++) { sw[j] = 0.0005f + 0.01f * (float)(rnd() % 1000) / 1000.0f; b[j] = frand(); }
  ref_qlinear(m, n, k, x, k, &act, w, k, sw, per_ch, has_bias ? b : NULL, yr, n, rsr);
  int fails = 0;
  for (int ki = -1; ki < (int)squat_igemm_count() && !fails; ki++) {
    if (ki >= 0 && !squat_igemm_available((size_t)ki)) continue;
    const size_t psz = ki < 0 ? squat_qlinear_packed_size(n, k, wb, 0) : 0;
    void *blob = NULL;
    int rc;
    if (ki < 0) {
      blob = malloc(psz);
      rc = squat_qlinear_pack(n, k, wb, w, k, sw, per_ch, has_bias ? b : NULL, 0, blob);
    } else {
      const squat_igemm_ukernel *u = squat_igemm_get((size_t)ki);
      if (!u->rhs_layout || u->weight_bits < (wb <= 4 ? 4 : 8)) continue;
      blob = malloc(squat_qlinear_packed_size_for(ki, n, k));
      rc = squat_qlinear_pack_for(ki, n, k, wb, w, k, sw, per_ch, has_bias ? b : NULL, blob);
    }
    if (rc) { fprintf(stderr, "FAIL qlinear pack kernel %d: %s\n", ki, squat_qlinear_strerror(rc)); free(blob); fails = 1; break; }
    const size_t wsz = squat_qlinear_workspace_size(blob, m);
    void *ws = malloc(wsz);
    memset(y, 0x7F, m * n * 4);
    int kern;
    if (ki < 0) {
      const int bits = act.high_mask && ab_hi > ab_lo ? ab_hi : ab_lo;
      kern = squat_qlinear_kernel(blob, m, bits);
      rc = squat_qlinear_run(blob, m, x, k, &act, y, n, ws, wsz);
    } else {
      kern = ki;
      rc = squat_qlinear_run_kernel(ki, blob, m, x, k, &act, y, n, ws, wsz, rs);
    }
    const int need_bits = act.high_mask && ab_hi > ab_lo ? ab_hi : ab_lo;
    const squat_igemm_ukernel *u = kern >= 0 ? squat_igemm_get((size_t)kern) : NULL;
    if (rc == SQUAT_QL_E_KERNEL && ki >= 0 && u->act_bits < need_bits) { free(blob); free(ws); continue; }
    if (rc == SQUAT_QL_E_RANGE) { free(blob); free(ws); continue; } /* checked separately */
    if (rc) {
      fprintf(stderr, "FAIL qlinear run kernel %s M=%zu N=%zu K=%zu: %s\n", u ? u->name : "?", m, n, k, squat_qlinear_strerror(rc));
      fails = 1;
    } else {
      char what[96];
      snprintf(what, sizeof what, "qlinear %s w%d a%d/%d", u->name, wb, ab_lo, ab_hi);
      fails |= check_f32(what, m, n, k, y, yr);
      g_qlinear_checks++;
      if (!fails && ki >= 0 && memcmp(rs, rsr, m * 4)) { fprintf(stderr, "FAIL %s row scales\n", what); fails = 1; }
    }
    free(blob); free(ws);
  }
  free(mask); free(w); free(x); free(y); free(yr); free(sw); free(b); free(rs); free(rsr);
  return fails;
}

/* K >= 2^17 at M = 1 and M = 8 with extreme values: every integer kernel against the int64 reference (narrowed
   to int32, the kernels' contract), including -128 x -8 (the case that overflowed 16 * C in the x16 trick). */
static int fuzz_bigk(void) {
  static const size_t ks[] = {131072, 131073 + 30, 262144 + 17};
  int fails = 0;
  for (size_t ti = 0; ti < sizeof ks / sizeof ks[0] && !fails; ti++)
    for (size_t mi = 0; mi < 2 && !fails; mi++) {
      const size_t m = mi ? 8 : 1, k = ks[ti], n = ti == 1 ? 9 : 8;
      int8_t *x = malloc(m * k), *w = malloc(n * k);
      int32_t *c = malloc(m * n * 4), *cref = malloc(m * n * 4);
      for (size_t ki = 0; ki < squat_igemm_count() && !fails; ki++) {
        if (!squat_igemm_available(ki)) continue;
        const squat_igemm_ukernel *u = squat_igemm_get(ki);
        if (u->max_k && k > u->max_k) continue;
        const int xa = u->act_bits == 8 ? 127 : 7, wa = u->weight_bits == 8 ? 127 : 7;
        const int mode = ti == 0 ? 1 : (ti == 1 ? 3 : 0); /* all min, {min,max}, uniform */
        fill_int(x, m * k, -xa - 1, xa, mode);
        fill_int(w, n * k, -wa - 1, wa, mode);
        ref_gemm_qs8_qs8(m, n, k, x, k, w, k, cref, n);
        void *rhs = malloc(squat_igemm_rhs_size(ki, n, k));
        void *ws = malloc(squat_igemm_workspace_size(ki, m, n, k));
        squat_igemm_pack_rhs(ki, n, k, w, k, rhs);
        memset(c, 0x5A, m * n * 4);
        squat_igemm_matmul(ki, m, n, k, x, k, rhs, c, n, ws);
        char what[96];
        snprintf(what, sizeof what, "bigK %s", u->name);
        fails |= check_i32(what, m, n, k, c, cref);
        g_bigk_checks++;
        free(rhs); free(ws);
      }
      /* the float kernels too: small values keep every partial sum finite, so both sides round identically */
      float *xf = malloc(m * k * 4), *wf = malloc(n * k * 4), *cf = malloc(m * n * 4), *cfr = malloc(m * n * 4);
      uint16_t *xh = malloc(m * k * 2), *wh = malloc(n * k * 2), *ch = malloc(m * n * 2), *chr = malloc(m * n * 2);
      for (size_t i = 0; i < m * k; i++) { xf[i] = (float)((int)(rnd() % 17) - 8) / 64.0f; xh[i] = f2h(xf[i]); }
      for (size_t i = 0; i < n * k; i++) { wf[i] = (float)((int)(rnd() % 17) - 8) / 128.0f; wh[i] = f2h(wf[i]); }
      ref_gemm_f32(m, n, k, xf, k, wf, k, cfr, n);
      ref_gemm_f16(m, n, k, xh, k, wh, k, chr, n);
      for (size_t fi = 0; fi < squat_fgemm_count() && !fails; fi++) {
        if (!squat_fgemm_available(fi)) continue;
        const squat_fgemm_ukernel *u = squat_fgemm_get(fi);
        const int half = u->elem_size == 2;
        void *rhs = malloc(squat_fgemm_rhs_size(fi, n, k)), *lhs = malloc(squat_fgemm_lhs_size(fi, m, k));
        squat_fgemm_pack_rhs(fi, n, k, half ? (void *)wh : (void *)wf, k, rhs);
        squat_fgemm_pack_lhs(fi, m, k, half ? (void *)xh : (void *)xf, k, lhs);
        squat_fgemm_run(fi, m, n, k, lhs, rhs, half ? (void *)ch : (void *)cf, n);
        g_checks++;
        g_bigk_checks++;
        if (half ? memcmp(ch, chr, m * n * 2) : memcmp(cf, cfr, m * n * 4)) {
          fprintf(stderr, "FAIL bigK %s M=%zu N=%zu K=%zu\n", u->name, m, n, k);
          fails = 1;
        }
        free(rhs); free(lhs);
      }
      free(xf); free(wf); free(cf); free(cfr); free(xh); free(wh); free(ch); free(chr);
      free(x); free(w); free(c); free(cref);
    }
  return fails;
}

/* Case file (little endian), written by tests/native/test_qlinear.py:
     int32 count; per case: int32 m, n, k, weight_bits, per_channel, has_bias, has_mask, features;
     char kernel[48] (empty: automatic choice); 2 x {int32 mode, bits, qmin, qmax, zero_point; float scale};
     float x[m*k]; int8 w[n*k]; float w_scale[per_channel ? n : 1]; float bias[n] if has_bias; uint8 mask[m] if has_mask
   Output: per case int32 rc; char kernel[48]; float y[m*n]. */
static int read_all(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }
static int run_case_file(const char *in, const char *out) {
  FILE *fi = fopen(in, "rb"), *fo = fopen(out, "wb");
  if (!fi || !fo) { fprintf(stderr, "cannot open %s or %s\n", in, out); return 2; }
  int32_t count;
  if (!read_all(fi, &count, 4)) return 2;
  for (int32_t c = 0; c < count; c++) {
    int32_t h[8];
    char kname[48];
    int32_t sv[2][5];
    float sc[2];
    if (!read_all(fi, h, sizeof h) || !read_all(fi, kname, 48)) return 2;
    for (int i = 0; i < 2; i++) if (!read_all(fi, sv[i], 20) || !read_all(fi, &sc[i], 4)) return 2;
    const size_t m = (size_t)h[0], n = (size_t)h[1], k = (size_t)h[2];
    float *x = malloc(m * k * 4 + 4), *sw = malloc(n * 4), *b = malloc(n * 4), *y = calloc(m * n + 1, 4);
    int8_t *w = malloc(n * k);
    uint8_t *mask = malloc(m + 1);
    if (!read_all(fi, x, m * k * 4) || !read_all(fi, w, n * k) || !read_all(fi, sw, (h[4] ? n : 1) * 4)) return 2;
    if (h[5] && !read_all(fi, b, n * 4)) return 2;
    if (h[6] && !read_all(fi, mask, m)) return 2;
    squat_qlinear_act act;
    memset(&act, 0, sizeof act);
    squat_act_site *st[2] = {&act.low, &act.high};
    for (int i = 0; i < 2; i++) {
      st[i]->mode = sv[i][0]; st[i]->bits = sv[i][1]; st[i]->qmin = sv[i][2]; st[i]->qmax = sv[i][3];
      st[i]->zero_point = sv[i][4]; st[i]->scale = sc[i];
    }
    act.high_mask = h[6] ? mask : NULL;
    kname[47] = 0;
    int kernel = kname[0] ? squat_igemm_find(kname) : -1;
    int rc;
    void *blob = NULL, *ws = NULL;
    if (kname[0] && kernel < 0) rc = SQUAT_QL_E_KERNEL;
    else {
      blob = malloc(kernel >= 0 ? squat_qlinear_packed_size_for(kernel, n, k) : squat_qlinear_packed_size(n, k, h[3], (unsigned)h[7]) + 1);
      rc = kernel >= 0 ? squat_qlinear_pack_for(kernel, n, k, h[3], w, k, sw, h[4], h[5] ? b : NULL, blob)
                       : squat_qlinear_pack(n, k, h[3], w, k, sw, h[4], h[5] ? b : NULL, (unsigned)h[7], blob);
      if (!rc) {
        const int bits = act.high_mask && act.high.bits > act.low.bits ? act.high.bits : act.low.bits;
        if (kernel < 0) kernel = squat_qlinear_kernel(blob, m, bits < 2 ? 2 : bits > 8 ? 8 : bits);
        const size_t wsz = squat_qlinear_workspace_size(blob, m);
        ws = malloc(wsz + 1);
        rc = kernel < 0 ? kernel : squat_qlinear_run_kernel(kernel, blob, m, x, k, &act, y, n, ws, wsz, NULL);
      }
    }
    char used[48] = {0};
    if (kernel >= 0) snprintf(used, sizeof used, "%s", squat_igemm_get((size_t)kernel)->name);
    int32_t rc32 = rc;
    fwrite(&rc32, 4, 1, fo);
    fwrite(used, 1, 48, fo);
    fwrite(y, 4, m * n, fo);
    free(x); free(sw); free(b); free(y); free(w); free(mask); free(blob); free(ws);
  }
  fclose(fi);
  fclose(fo);
  return 0;
}

static uint16_t f2h(float f) { _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }

int main(int argc, char **argv) {
  long iters = 1200;
  int bigk = 1;
  if (argc == 4 && !strcmp(argv[1], "--qlinear-cases")) return run_case_file(argv[2], argv[3]);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--no-bigk")) bigk = 0;
    else if (i + 1 >= argc) break;
    else if (!strcmp(argv[i], "--iters")) iters = atol(argv[++i]);
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
      void *ws = malloc(squat_igemm_workspace_size(ki, m, n, k));
      squat_igemm_pack_rhs(ki, n, k, w, k, rhs);
      memset(c, 0x5A, m * n * 4);
      squat_igemm_matmul(ki, m, n, k, x, k, rhs, c, n, ws);
      fails |= check_i32(u->name, m, n, k, c, cref);
      free(rhs); free(ws);
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
    if (!fails && r % 3 != 0) fails |= fuzz_qlinear(m, n, k, mode_w);
    free(x); free(w); free(c); free(cref);
  }
  if (!fails && bigk) fails |= fuzz_bigk();
  if (fails) { printf("FAILED after %ld shapes\n", shapes); return 1; }
  printf("qlinear: %ld bit-exact checks against ref_qlinear; K >= 2^17: %ld kernel checks\n", g_qlinear_checks, g_bigk_checks);
  printf("PASS %ld fuzzed shapes, %ld bit-exact checks\n", shapes, g_checks);
  return 0;
}
