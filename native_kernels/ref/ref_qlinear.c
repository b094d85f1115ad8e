/// Scalar reference of the fused quantized linear (squat_qlinear.h): plain C, float32 arithmetic where the
/// Python student uses float32, int64 for the integer sum (no wrap-around), so it shares no code with the NEON
/// path it checks.
#include <math.h>
#include "squat_ref.h"

float ref_act_row_scale(const squat_act_site *s, size_t k, const float *x) {
  if (s->mode == SQUAT_ACT_STATIC) return s->scale;
  float amax = 0.0f;
  for (size_t l = 0; l < k; l++) amax = fmaxf(amax, fabsf(x[l]));
  const float v = amax / (float)(s->qmax - s->zero_point);
  return v < 1e-8f ? 1e-8f : v;
}

int ref_act_quantize(float x, float scale, const squat_act_site *s) {
  const float r = nearbyintf(x / scale); /* float32 divide, then round half to even (default rounding mode) */
  const double v = (double)r + (double)s->zero_point;
  return v < s->qmin ? s->qmin : v > s->qmax ? s->qmax : (int)v;
}

void ref_qlinear(size_t m, size_t n, size_t k, const float *x, size_t xs, const squat_qlinear_act *act,
                 const int8_t *w, size_t ws, const float *w_scale, int w_scale_per_channel, const float *bias,
                 float *y, size_t ys, float *row_scale) {
  int q[k ? k : 1];
  for (size_t i = 0; i < m; i++) {
    const squat_act_site *s = (act->high_mask && act->high_mask[i]) ? &act->high : &act->low;
    const float *xr = x + i * xs;
    const float sx = ref_act_row_scale(s, k, xr);
    if (row_scale) row_scale[i] = sx;
    for (size_t l = 0; l < k; l++) q[l] = ref_act_quantize(xr[l], sx, s);
    for (size_t j = 0; j < n; j++) {
      int64_t acc = 0;
      for (size_t l = 0; l < k; l++) acc += (int64_t)(q[l] - s->zero_point) * w[j * ws + l];
      const float t = sx * w_scale[w_scale_per_channel ? j : 0];
      float v = (float)acc * t;
      if (bias) v = v + bias[j];
      y[i * ys + j] = v;
    }
  }
}
