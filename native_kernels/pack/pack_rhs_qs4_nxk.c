/// RHS packers for 4-bit weights: take unpacked int8 W[N,K] in [-8,7], produce kernel layouts.
#include "squat_pack.h"

static inline int wat(const int8_t *w, size_t ws, size_t n, size_t k, size_t j, size_t l) {
  return (j < n && l < k) ? w[j * ws + l] : 0;
}

/* One layout for every 4-bit-weight sdot/smmla kernel (prefill unpacks it, decode reads it in place). Per panel
   of 8 columns: int32 sum over the low-nibble positions of each column (a correction of the W4A4 decode kernel),
   then per 32-k block 8 vectors (g = 0..3, h = 0..1), byte 4j + i of vector (g, h) holding column 4h + j:
       (w[k + 16] << 4) | (w[k] + 8),   k = 32b + 4g + i.
   The high nibble is two's complement (p >> 4 = w[k + 16] exactly), the low nibble offset binary (p & 15 =
   w[k] + 8), so the signed byte is 16 * w[k + 16] + w[k] + 8 in [-128, 127]. The sdot c4 order of each vector
   (4 columns x 4 consecutive k) holds for both nibbles. kp must be a multiple of 32. */
void pack_rhs_qs4_nxk_c4(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, uint8_t *out) {
  for (size_t p = 0; p < n; p += nr) {
    int32_t *head = (int32_t *)out;
    for (size_t j = 0; j < nr; j++) {
      int32_t s = 0;
      for (size_t l = 0; l < k; l++)
        if (l % 32 < 16) s += wat(w, ws, n, k, p + j, l);
      head[j] = s;
    }
    out += 4 * nr;
    for (size_t b = 0; b < kp; b += 32)
      for (size_t g = 0; g < 4; g++)
        for (size_t h = 0; h < nr / 4; h++)
          for (size_t j = 0; j < 4; j++)
            for (size_t i = 0; i < 4; i++) {
              const size_t col = p + 4 * h + j, kk = b + 4 * g + i;
              const int lo = wat(w, ws, n, k, col, kk), hi = wat(w, ws, n, k, col, kk + 16);
              *out++ = (uint8_t)(((hi & 0xF) << 4) | (lo + 8));
            }
  }
}

/* MKMP lanes: output columns (2j, 2j+1) share one int16 lane per k:
   lane = (-W[2j][k]) + 2^11 * (-W[2j+1][k])  in [-14343, 16392]  (fits int16; see docs/kernels.md). */
void pack_rhs_qs4x2_mkmp_nxk(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int16_t *out) {
  for (size_t p = 0; p < n; p += nr)
    for (size_t l = 0; l < kp; l++)
      for (size_t j = 0; j < nr; j += 2) {
        int a = (p + j < n && l < k) ? w[(p + j) * ws + l] : 0;
        int b = (p + j + 1 < n && l < k) ? w[(p + j + 1) * ws + l] : 0;
        *out++ = (int16_t)(-a + 2048 * -b);
      }
}

/* W4A8 MKMP panel: [8 * rowsum(W[n,:]) as int32 x nr][lanes as above, kp x nr/2 int16]. */
void pack_rhs_qs4x2_mkmp_rsum_nxk(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  uint8_t *o = out;
  for (size_t p = 0; p < n; p += nr) {
    int32_t *rs = (int32_t *)o;
    for (size_t j = 0; j < nr; j++) {
      int32_t s = 0;
      if (p + j < n) for (size_t l = 0; l < k; l++) s += w[(p + j) * ws + l];
      rs[j] = 8 * s;
    }
    pack_rhs_qs4x2_mkmp_nxk(nr, kp, n - p < nr ? n - p : nr, k, w + p * ws, ws, (int16_t *)(o + nr * 4));
    o += nr * 4 + kp * nr * 2;
  }
}
