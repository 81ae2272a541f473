#include "dist/io/csv_writer.h"

namespace shardfit {

std::string csv_field(std::string_view text, char separator) {
  if (text.find_first_of(std::string{separator, '"', '\n', '\r'}) == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string csv_row(std::span<const std::string> fields, char separator, std::string_view line_end) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) out += separator;
    out += csv_field(fields[i], separator);
  }
  out += line_end;
  return out;
}

}  // namespace shardfit
