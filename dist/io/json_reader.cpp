// The JSON reader (json_reader.h): recursive descent over the text, one JsonValue per value; errors name the line.
#include "dist/io/json_reader.h"

#include <cstdlib>
#include <limits>
#include <string>

#include "kernels/error.h"
#include "kernels/job_file.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

class JsonReader {
 public:
  JsonReader(std::string_view text, const fs::path& name) : text_(text), name_(name) {}

  JsonValue document() {
    JsonValue value = parse_value(0);
    skip_space();
    if (at_ < text_.size()) fail("text after the end of the document");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1;
    for (size_t i = 0; i < at_ && i < text_.size(); ++i) line += text_[i] == '\n' ? 1 : 0;
    SF_FAIL(cat(name_.string(), ":", line, ": not valid JSON: ", what));
  }

  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t'))
      ++at_;
  }

  bool take(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end");
    JsonValue value;
    const char c = text_[at_];
    if (c == '{') {
      value.kind = JsonValue::Kind::kObject;
      ++at_;
      skip_space();
      if (take("}")) return value;
      while (true) {
        skip_space();
        if (at_ >= text_.size() || text_[at_] != '"') fail("expected a key in quotes");
        std::string key = parse_string();
        skip_space();
        if (!take(":")) fail("expected ':' after a key");
        value.members[key] = parse_value(depth + 1);
        skip_space();
        if (take("}")) return value;
        if (!take(",")) fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      value.kind = JsonValue::Kind::kArray;
      ++at_;
      skip_space();
      if (take("]")) return value;
      while (true) {
        value.items.push_back(parse_value(depth + 1));
        skip_space();
        if (take("]")) return value;
        if (!take(",")) fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      value.kind = JsonValue::Kind::kString;
      value.text = parse_string();
      return value;
    }
    if (take("null")) return value;
    if (take("true")) {
      value.kind = JsonValue::Kind::kBool;
      value.number = 1.0;
      return value;
    }
    if (take("false")) {
      value.kind = JsonValue::Kind::kBool;
      return value;
    }
    value.kind = JsonValue::Kind::kNumber;
    if (take("NaN")) {
      value.number = std::numeric_limits<double>::quiet_NaN();
    } else if (take("Infinity")) {
      value.number = std::numeric_limits<double>::infinity();
    } else if (take("-Infinity")) {
      value.number = -std::numeric_limits<double>::infinity();
    } else {
      const std::string rest(text_.substr(at_, std::min<size_t>(64, text_.size() - at_)));
      char* end = nullptr;
      value.number = std::strtod(rest.c_str(), &end);
      if (end == rest.c_str() || !(c == '-' || (c >= '0' && c <= '9'))) fail("expected a value");
      at_ += static_cast<size_t>(end - rest.c_str());
    }
    return value;
  }

  // The escapes history_writer emits and the rest of JSON's; \u escapes become UTF-8 (a lone surrogate: U+FFFD).
  std::string parse_string() {
    ++at_;  // the opening quote
    std::string out;
    while (true) {
      if (at_ >= text_.size()) fail("unterminated string");
      const char c = text_[at_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) fail("unterminated string");
      const char e = text_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          if (at_ + 4 > text_.size()) fail("short \\u escape");
          const std::string hex(text_.substr(at_, 4));
          char* end = nullptr;
          unsigned code = static_cast<unsigned>(std::strtoul(hex.c_str(), &end, 16));
          if (end != hex.c_str() + 4) fail("bad \\u escape");
          at_ += 4;
          if (code >= 0xD800 && code <= 0xDFFF) code = 0xFFFD;
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default:
          fail(cat("unknown escape \\", e));
      }
    }
  }

  std::string_view text_;
  fs::path name_;
  size_t at_ = 0;
};

}  // namespace

JsonValue parse_json(std::string_view text, const fs::path& name_for_errors) {
  return JsonReader(text, name_for_errors).document();
}

JsonValue read_json(const fs::path& path) { return parse_json(read_text_file(path, "JSON file"), path); }

}  // namespace shardfit
