// How shardfit writes a number for a person: one formatter for the console, the verdict, the plot and every
// message that quotes a value, so "nan" is spelt one way everywhere.
#pragma once

#include <string>

namespace shardfit {

// Keras's number format: "%.4f" when |v| > 1e-3, else "%.4e" (0.1327, 1.2346e-04, 0.0000e+00); NaN and the
// infinities as Python prints them ("nan", "inf", "-inf"), so a diverged loss reads as in Keras.
std::string format_value(double value);

}  // namespace shardfit
