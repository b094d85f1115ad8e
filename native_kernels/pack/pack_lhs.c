/// LHS (activation) packers. Rows are zero-padded to the kernel's K block.
#include <string.h>
#include "squat_pack.h"
#include "squat_neon.h"

void pack_lhs_qs8_rows(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out) {
  for (size_t i = 0; i < m; i++) {
    memcpy(out + i * kp, x + i * xs, k);
    memset(out + i * kp + k, 0, kp - k);
  }
}

void pack_lhs_qs8_rowpairs_c8(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out) {
  const size_t kfull = k / 8 * 8;
  for (size_t i = 0; i < m; i += 2) {
    const int8_t *r0 = x + i * xs, *r1 = i + 1 < m ? x + (i + 1) * xs : NULL;
    size_t c = 0;
    for (; c < kfull; c += 8, out += 16) { /* 8-byte moves: one ldr/str pair each */
      memcpy(out, r0 + c, 8);
      if (r1) memcpy(out + 8, r1 + c, 8); else memset(out + 8, 0, 8);
    }
    for (; c < kp; c += 8)
      for (size_t r = 0; r < 2; r++)
        for (size_t l = 0; l < 8; l++, out++) *out = (i + r < m && c + l < k) ? x[(i + r) * xs + c + l] : 0;
  }
}

void pack_lhs_qs16_rows(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int16_t *out) {
  for (size_t i = 0; i < m; i++) {
    const int8_t *r = x + i * xs;
    int16_t *o = out + i * kp;
    size_t l = 0;
    for (; l + 16 <= k; l += 16) {
      const int8x16_t v = vld1q_s8(r + l);
      vst1q_s16(o + l, vmovl_s8(vget_low_s8(v)));
      vst1q_s16(o + l + 8, vmovl_high_s8(v));
    }
    for (; l < kp; l++) o[l] = l < k ? r[l] : 0;
  }
}

/* x = 16*hi + lo + 8 with hi = x >> 4 and lo = (x & 15) - 8, both in [-8,7] (valid 4-bit MKMP operands);
   the kernel adds back 8 * rowsum(W), stored by pack_rhs_qs4x2_mkmp_rsum_nxk. */
void pack_lhs_qs16_nibsplit(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int16_t *out) {
  for (size_t i = 0; i < m; i++) {
    const int8_t *r = x + i * xs;
    int16_t *hi = out + i * 2 * kp, *lo = hi + kp;
    size_t l0 = 0;
    for (; l0 + 16 <= k; l0 += 16) {
      const int8x16_t v = vld1q_s8(r + l0);
      const int8x16_t h = vshrq_n_s8(v, 4);
      const int8x16_t q = vsubq_s8(vandq_s8(v, vdupq_n_s8(15)), vdupq_n_s8(8));
      vst1q_s16(hi + l0, vmovl_s8(vget_low_s8(h))); vst1q_s16(hi + l0 + 8, vmovl_high_s8(h));
      vst1q_s16(lo + l0, vmovl_s8(vget_low_s8(q))); vst1q_s16(lo + l0 + 8, vmovl_high_s8(q));
    }
    for (size_t l = l0; l < kp; l++) {
      int v = x[i * xs + (l < k ? l : 0)];
      out[i * 2 * kp + l] = l < k ? (int16_t)(v >> 4) : 0;
      out[i * 2 * kp + kp + l] = l < k ? (int16_t)((v & 15) - 8) : 0;
    }
  }
}

void pack_rhs_f32_nxk(size_t nr, size_t kp, size_t n, size_t k, const float *w, size_t ws, float *out) {
  for (size_t p = 0; p < n; p += nr)
    for (size_t l = 0; l < kp; l++)
      for (size_t j = 0; j < nr; j++) *out++ = (p + j < n && l < k) ? w[(p + j) * ws + l] : 0.0f;
}

void pack_rhs_f16_nxk(size_t nr, size_t kp, size_t n, size_t k, const uint16_t *w, size_t ws, uint16_t *out) {
  for (size_t p = 0; p < n; p += nr)
    for (size_t l = 0; l < kp; l++)
      for (size_t j = 0; j < nr; j++) *out++ = (p + j < n && l < k) ? w[(p + j) * ws + l] : 0;
}

void pack_lhs_f32_rows(size_t kp, size_t m, size_t k, const float *x, size_t xs, float *out) {
  for (size_t i = 0; i < m; i++) {
    memcpy(out + i * kp, x + i * xs, k * sizeof(float));
    memset(out + i * kp + k, 0, (kp - k) * sizeof(float));
  }
}

void pack_lhs_f16_rows(size_t kp, size_t m, size_t k, const uint16_t *x, size_t xs, uint16_t *out) {
  for (size_t i = 0; i < m; i++) {
    memcpy(out + i * kp, x + i * xs, k * 2);
    memset(out + i * kp + k, 0, (kp - k) * 2);
  }
}

/* Row blocks of mr rows (the last block holds the m % mr remaining rows), each stored k-chunk by k-chunk:
   block [kp/kc][R][kc] elements, so a tile of R rows reads its R x kc activations with one contiguous load
   sequence (ld1 of up to four registers) instead of one load per row. Zero padding to kp. Chunks are 16 bytes
   (kc * esz == 16: fp16 kc 8, fp32 kc 4), copied with one vector load and store each. */
void pack_lhs_blocked(size_t esz, size_t mr, size_t kc, size_t kp, size_t m, size_t k, const void *x, size_t xs,
                      void *out) {
  const uint8_t *src = x;
  uint8_t *o = out;
  const size_t kfull = k / kc * kc;
  for (size_t i0 = 0; i0 < m; i0 += mr) {
    const size_t R = m - i0 < mr ? m - i0 : mr, step = R * 16;
    for (size_t r = 0; r < R; r++) {
      const uint8_t *s = src + (i0 + r) * xs * esz;
      uint8_t *d = o + r * 16;
      size_t c = 0;
      for (; c < kfull; c += kc, d += step) vst1q_u8(d, vld1q_u8(s + c * esz));
      for (; c < kp; c += kc, d += step) {
        uint8_t t[16] = {0};
        for (size_t b = 0; c + b / esz < k && b < 16; b++) t[b] = s[c * esz + b];
        vst1q_u8(d, vld1q_u8(t));
      }
    }
    o += kp * R * esz;
  }
}
