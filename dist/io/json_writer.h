// The one JSON writer of shardfit's files: history.json, run.json and evaluate's --output. Objects with sorted
// keys, arrays of numbers, strings escaped; numbers through json_number (dist/io/format.h), so NaN and the
// infinities are spelt as Python's json module writes and reads them. Not a general JSON library: no parser (that is
// json_reader.h), no arbitrary nesting of arrays.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace shardfit {

// A JSON string literal with its quotes. Quotes, backslashes and control characters are escaped ("\n", "\u0001");
// bytes that are not UTF-8 (a job path in Latin-1, say) become U+FFFD, so strict readers still load the file.
std::string json_string(std::string_view text);

// Whether `text` is valid UTF-8 (overlong forms, surrogates and code points past U+10FFFF are not), and `text` with
// each byte that is not replaced by U+FFFD: proto3 strings must be UTF-8 too.
bool is_utf8(std::string_view text);
std::string to_utf8(std::string_view text);

// [1.0, NaN, 0.5] and [0, 1, 2].
std::string json_array(std::span<const double> values);
std::string json_array(std::span<const int64_t> values);

// One JSON object, keys kept sorted (std::map), whatever order they were added in; a key added twice keeps the last
// value.
class JsonObject {
 public:
  JsonObject& number(std::string_view key, double value);
  JsonObject& integer(std::string_view key, int64_t value);
  JsonObject& string(std::string_view key, std::string_view value);
  JsonObject& boolean(std::string_view key, bool value);              // true / false
  JsonObject& object(std::string_view key, const JsonObject& value);  // written inline
  JsonObject& numbers(std::string_view key, std::span<const double> values);
  JsonObject& integers(std::string_view key, std::span<const int64_t> values);

  // On one line: {"a": 1, "b": [2.0, 3.0]}.
  std::string inline_text() const;
  // A file: one key per line, each value on its key's line, and a final newline; `diff` between two runs then
  // shows which key moved.
  std::string document() const;

 private:
  std::map<std::string, std::string> fields_;  // key -> the value's JSON text
};

}  // namespace shardfit
