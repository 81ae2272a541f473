#include "dist/io/format.h"

#include <array>
#include <cmath>
#include <cstdio>

namespace shardfit {

std::string format_value(double value) {
  // Python's spelling: glibc would print "-nan" for a NaN with the sign bit set.
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::array<char, 64> buffer{};
  std::snprintf(buffer.data(), buffer.size(), std::abs(value) > 1e-3 ? "%.4f" : "%.4e", value);
  return buffer.data();
}

}  // namespace shardfit
