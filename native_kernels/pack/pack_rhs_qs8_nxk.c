/// RHS packers for 8-bit weights W[N,K] (nn.Linear layout).
#include <string.h>
#include "squat_pack.h"

static inline int8_t wat(const int8_t *w, size_t ws, size_t n, size_t k, size_t j, size_t l) {
  return (j < n && l < k) ? w[j * ws + l] : 0;
}

void pack_rhs_qs8_nxk_c4(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out) {
  /* per chunk of 4 k: groups of 4 columns, each column's 4 bytes contiguous (one sdot operand per group) */
  for (size_t p = 0; p < n; p += nr)
    for (size_t c = 0; c < kp; c += 4)
      for (size_t j = 0; j < nr; j++)
        for (size_t l = 0; l < 4; l++) *out++ = wat(w, ws, n, k, p + j, c + l);
}

void pack_rhs_qs8_nxk_c8(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out) {
  for (size_t p = 0; p < n; p += nr)
    for (size_t c = 0; c < kp; c += 8)
      for (size_t j = 0; j < nr; j++)
        for (size_t l = 0; l < 8; l++) *out++ = wat(w, ws, n, k, p + j, c + l);
}

void pack_rhs_qs8_nxk_c16(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out) {
  /* per chunk of 16 k, each column's 16 bytes contiguous: one smull (low 8) + one smull2 (high 8) operand */
  for (size_t p = 0; p < n; p += nr)
    for (size_t c = 0; c < kp; c += 16)
      for (size_t j = 0; j < nr; j++)
        for (size_t l = 0; l < 16; l++) *out++ = wat(w, ws, n, k, p + j, c + l);
}

void pack_rhs_qs8_nxk_c8x2(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out) {
  /* identical byte order to c8: column pairs (2j, 2j+1) are adjacent 8-byte rows = one smmla operand */
  pack_rhs_qs8_nxk_c8(nr, kp, n, k, w, ws, out);
}
