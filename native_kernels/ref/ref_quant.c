/// Scalar reference for the in-kernel activation quantization and top-k token control.
#include <math.h>
#include <stdlib.h>
#include "squat_ref.h"

float ref_quantize_group(size_t rows, size_t k, const float *x, size_t xs, int qmax, int8_t *q, size_t qs) {
  float amax = 0.0f;
  for (size_t i = 0; i < rows; i++)
    for (size_t l = 0; l < k; l++) {
      float a = fabsf(x[i * xs + l]);
      if (a > amax) amax = a;
    }
  float scale = amax > 0.0f ? amax / (float)qmax : 1.0f;
  for (size_t i = 0; i < rows; i++)
    for (size_t l = 0; l < k; l++) {
      float v = roundf(x[i * xs + l] / scale); /* roundf: half away from zero */
      if (v > qmax) v = (float)qmax;
      if (v < -qmax) v = (float)-qmax;
      q[i * qs + l] = (int8_t)v;
    }
  return scale;
}

size_t ref_n8(size_t m, double ratio8) {
  if (ratio8 <= 0.0) return 0;
  if (ratio8 >= 1.0) return m;
  size_t n8 = (size_t)floor(ratio8 * (double)m + 0.5);
  return n8 > m ? m : n8;
}

static const float *g_imp;
static int cmp_idx(const void *pa, const void *pb) {
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  if (g_imp[a] > g_imp[b]) return -1;
  if (g_imp[a] < g_imp[b]) return 1;
  return a < b ? -1 : (a > b);
}

void ref_topk_mask(size_t m, const float *importance, double ratio8, uint8_t *mask) {
  size_t *idx = malloc((m ? m : 1) * sizeof *idx);
  for (size_t i = 0; i < m; i++) { idx[i] = i; mask[i] = 0; }
  g_imp = importance;
  qsort(idx, m, sizeof *idx, cmp_idx);
  size_t n8 = ref_n8(m, ratio8);
  for (size_t i = 0; i < n8; i++) mask[idx[i]] = 1;
  free(idx);
}
