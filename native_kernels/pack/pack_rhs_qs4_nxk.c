/// RHS packers for 4-bit weights: take unpacked int8 W[N,K] in [-8,7], produce kernel layouts.
#include <stdlib.h>
#include "squat_pack.h"

/* Nibble layouts: the int8 layout's block of B bytes (B = 32 for c4/nr=8, 64 for c8x2/nr=8) is stored in
   B/2 bytes: element e < B/2 in the low nibble of byte e, element e + B/2 in the high nibble. The kernel
   gets the first half with (p << 4) >> 4 and the second with p >> 4 (arithmetic shifts). */
static void nibble_fold(size_t total, size_t block, const int8_t *src, uint8_t *dst) {
  for (size_t b = 0; b < total; b += block)
    for (size_t e = 0; e < block / 2; e++)
      dst[b / 2 + e] = (uint8_t)((src[b + e] & 0xF) | ((src[b + e + block / 2] & 0xF) << 4));
}

void pack_rhs_qs4_nxk_c4(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, uint8_t *out) {
  size_t np = (n + nr - 1) / nr * nr, total = np * kp;
  int8_t *tmp = malloc(total ? total : 1);
  pack_rhs_qs8_nxk_c4(nr, kp, n, k, w, ws, tmp);
  nibble_fold(total, nr * 4, tmp, out);
  free(tmp);
}

void pack_rhs_qs4_nxk_c8x2(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, uint8_t *out) {
  size_t np = (n + nr - 1) / nr * nr, total = np * kp;
  int8_t *tmp = malloc(total ? total : 1);
  pack_rhs_qs8_nxk_c8x2(nr, kp, n, k, w, ws, tmp);
  nibble_fold(total, nr * 8, tmp, out);
  free(tmp);
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
