// How shardfit writes a number or a shape for a person or a file: one formatter per purpose, so "nan" is spelt one
// way everywhere. The console, the verdict and messages use format_value; files that Python reads use python_float
// (CSV, str()) or json_number (JSON). Not a general formatting library: ModelCheckpoint's Python-style file names
// go through libfmt (dist/train/callbacks/model_checkpoint.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace shardfit {

// Keras's number format: "%.4f" when |v| > 1e-3, else "%.4e" (0.1327, 1.2346e-04, 0.0000e+00); NaN and the
// infinities as Python prints them ("nan", "inf", "-inf"), so a diverged loss reads as in Keras.
std::string format_value(double value);

// The shortest decimal text that reads back to exactly `value`, spelled as Python's repr() spells it ("0.1",
// "2.0", "0.0001", "1e-05", "1e+16"), so a float never reads back as an int. NaN -> "NaN", +-inf -> "Infinity" /
// "-Infinity" (JSON as Python's json module writes it).
std::string json_number(double value);

// Python's str(float): json_number's digits, and "nan" / "inf" / "-inf" (never "-nan"). What Keras's CSVLogger
// and its messages print ("reducing learning rate to 0.0001.").
std::string python_float(double value);

// A shape as NumPy prints it: "(3, 5)", "(5,)", "()". kPlain drops the one-element tuple's comma ("(5)"), as the
// data set's messages have always written it.
enum class ShapeStyle { kNumPy, kPlain };
std::string shape_text(std::span<const int64_t> shape, ShapeStyle style = ShapeStyle::kNumPy);

}  // namespace shardfit
