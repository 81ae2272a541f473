// Small text helpers the tests share. Header-only.
#pragma once

#include <string>

namespace shardfit::testing {

// `part` occurs in `text`.
inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace shardfit::testing
