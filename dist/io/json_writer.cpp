#include "dist/io/json_writer.h"

#include <array>
#include <cstdio>

#include "dist/io/format.h"

namespace shardfit {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not valid UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80) return 1;
  size_t length = 0;
  uint32_t code_point = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    const auto next = static_cast<unsigned char>(s[i + k]);
    if ((next & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  constexpr std::array<uint32_t, 5> kSmallest = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallest[length] || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

template <typename T, typename Render>
std::string array_text(std::span<const T> values, Render render) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += render(values[i]);
  }
  return out + "]";
}

}  // namespace

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          std::array<char, 8> escaped{};
          std::snprintf(escaped.data(), escaped.size(), "\\u%04x", static_cast<unsigned>(c));
          out += escaped.data();
        } else {
          const size_t length = utf8_sequence_length(s, i);
          if (length == 0) {
            out += "\\ufffd";
            ++i;
            continue;
          }
          out.append(s.substr(i, length));
          i += length;
          continue;
        }
    }
    ++i;
  }
  return out + "\"";
}

bool is_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t length = utf8_sequence_length(s, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string to_utf8(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t length = utf8_sequence_length(s, i);
    out += length == 0 ? std::string_view("\xef\xbf\xbd") : s.substr(i, length);  // U+FFFD
    i += length == 0 ? 1 : length;
  }
  return out;
}

std::string json_array(std::span<const double> values) { return array_text(values, json_number); }

std::string json_array(std::span<const int64_t> values) {
  return array_text(values, [](int64_t v) { return std::to_string(v); });
}

JsonObject& JsonObject::number(std::string_view key, double value) {
  fields_[std::string(key)] = json_number(value);
  return *this;
}

JsonObject& JsonObject::integer(std::string_view key, int64_t value) {
  fields_[std::string(key)] = std::to_string(value);
  return *this;
}

JsonObject& JsonObject::string(std::string_view key, std::string_view value) {
  fields_[std::string(key)] = json_string(value);
  return *this;
}

JsonObject& JsonObject::boolean(std::string_view key, bool value) {
  fields_[std::string(key)] = value ? "true" : "false";
  return *this;
}

JsonObject& JsonObject::object(std::string_view key, const JsonObject& value) {
  fields_[std::string(key)] = value.inline_text();
  return *this;
}

JsonObject& JsonObject::numbers(std::string_view key, std::span<const double> values) {
  fields_[std::string(key)] = json_array(values);
  return *this;
}

JsonObject& JsonObject::integers(std::string_view key, std::span<const int64_t> values) {
  fields_[std::string(key)] = json_array(values);
  return *this;
}

std::string JsonObject::inline_text() const {
  std::string out = "{";
  for (const auto& [key, value] : fields_) {
    if (out.size() > 1) out += ", ";
    out += json_string(key) + ": " + value;
  }
  return out + "}";
}

std::string JsonObject::document() const {
  std::string out = "{\n";
  bool first = true;
  for (const auto& [key, value] : fields_) {
    if (!first) out += ",\n";
    first = false;
    out += "  " + json_string(key) + ": " + value;
  }
  return out + "\n}\n";
}

}  // namespace shardfit
