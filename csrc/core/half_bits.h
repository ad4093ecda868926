// Saving H in a 16-bit dtype must not change the firing decision that backward recomputes from it:
// rounding can carry H across v_th (1 - 2^-13 rounds to 1.0 in float16). Such a value is moved one
// unit in the last place back to the side the float32 H was on. Pure bit arithmetic on the 16-bit
// pattern (IEEE half and bfloat16 alike), usable on host and device.
#pragma once
#include <cstdint>

#include "macros.h"

namespace spikeforge {

// The next representable 16-bit float above (up) or below (!up) the one with these bits.
SF_HD uint16_t half_bits_step(uint16_t b, bool up) {
  const bool neg = (b & 0x8000u) != 0;
  const bool zero = (b & 0x7fffu) == 0;
  if (zero) return up ? uint16_t(0x0001u) : uint16_t(0x8001u);
  // magnitude grows when moving away from zero
  return (up != neg) ? uint16_t(b + 1u) : uint16_t(b - 1u);
}

}  // namespace spikeforge
