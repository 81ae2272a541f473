// A small JSON reader for the files shardfit writes and reads back (history.json, run.json, bench records): Python's
// json dialect, so NaN, Infinity and -Infinity read as numbers. A document is read whole into a tree of JsonValue;
// not a streaming or general-purpose library (no big integers beyond double, duplicate keys keep the last).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace shardfit {

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  double number = 0.0;                       // kNumber: the value; kBool: 1 for true, 0 for false
  std::string text;                          // kString
  std::vector<JsonValue> items;              // kArray
  std::map<std::string, JsonValue> members;  // kObject

  const JsonValue* find(const std::string& key) const {
    const auto found = members.find(key);
    return found == members.end() ? nullptr : &found->second;
  }
};

// The file's one JSON document. Throws Error "PATH:LINE: not valid JSON: ..." when it does not parse, or when the
// file cannot be read.
JsonValue read_json(const std::filesystem::path& path);

// One JSON document in `text`; errors name `name_for_errors` and the line within `text`, as read_json's do.
JsonValue parse_json(std::string_view text, const std::filesystem::path& name_for_errors);

}  // namespace shardfit
