#include "dist/io/format.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kernels/error.h"

namespace shardfit {

std::string format_value(double value) {
  // Python's spelling: glibc would print "-nan" for a NaN with the sign bit set.
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::array<char, 64> buffer{};
  std::snprintf(buffer.data(), buffer.size(), std::abs(value) > 1e-3 ? "%.4f" : "%.4e", value);
  return buffer.data();
}

std::string json_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Without a precision, to_chars gives the shortest digits that read back to exactly this double.
  std::array<char, 40> buffer{};  // zeroed: atoi below reads up to the terminator
  const auto [end, error] =
      std::to_chars(buffer.data(), buffer.data() + buffer.size() - 1, value, std::chars_format::scientific);
  SF_CHECK(error == std::errc(), "cannot format a double");  // 39 chars hold any double's shortest form
  const std::string_view scientific(buffer.data(), static_cast<size_t>(end - buffer.data()));
  const size_t e_at = scientific.find('e');
  const int exponent = std::atoi(buffer.data() + e_at + 1);
  // Python's repr() switches to the exponent form outside [1e-4, 1e16); its exponent form is to_chars's.
  if (exponent < -4 || exponent >= 16) return std::string(scientific);
  const bool negative = scientific.front() == '-';
  std::string digits;
  for (char c : scientific.substr(negative ? 1 : 0, e_at - (negative ? 1 : 0))) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent >= 0) {
    const auto integer_digits = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= integer_digits) {
      out += digits + std::string(integer_digits - digits.size(), '0') + ".0";  // "2.0": a float, not an int
    } else {
      out += digits.substr(0, integer_digits) + "." + digits.substr(integer_digits);
    }
  } else {
    out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  }
  return out;
}

std::string python_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return json_number(value);
}

std::string shape_text(std::span<const int64_t> shape, ShapeStyle style) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += cat(i == 0 ? "" : ", ", shape[i]);
  return s + (shape.size() == 1 && style == ShapeStyle::kNumPy ? ",)" : ")");
}

}  // namespace shardfit
