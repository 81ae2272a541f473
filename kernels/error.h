// One error type for the whole project: carries the file and line that raised it, and an optional hint.
// dist/ adds the rank when it turns an Error into an agreed shutdown; kernels/ never knows about ranks.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace shardfit {

class Error : public std::runtime_error {
 public:
  Error(std::string where, const std::string& what, std::string hint = {})
      : std::runtime_error(what), where_(std::move(where)), hint_(std::move(hint)) {}

  // "kernels/dense.cpp:88" (paths are relative to the source tree)
  const std::string& where() const { return where_; }
  const std::string& hint() const { return hint_; }

 private:
  std::string where_;
  std::string hint_;
};

// An error about one sample of a batch (a label that is no class id). kernels/ knows only the sample's position in
// the batch; dist/ knows which file row it came from and reports that instead (dist/data_checks.h).
class SampleError : public Error {
 public:
  // what names the position ("label of sample 15 is 12; ..."); about_value says the same without it.
  SampleError(std::string where, const std::string& what, std::string hint, int64_t sample, std::string about_value)
      : Error(std::move(where), what, std::move(hint)), sample_(sample), about_value_(std::move(about_value)) {}

  int64_t sample() const { return sample_; }
  const std::string& about_value() const { return about_value_; }

 private:
  int64_t sample_;
  std::string about_value_;
};

// Concatenates anything streamable: cat("expected ", n, " rows").
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] inline void fail_at(const char* file, int line, const std::string& what, std::string hint = {}) {
  throw Error(cat(file, ":", line), what, std::move(hint));
}

}  // namespace shardfit

// SF_FAIL(message [, hint]) and SF_CHECK(condition, message [, hint]); messages are std::string expressions.
#define SF_FAIL(...) ::shardfit::fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define SF_CHECK(cond, ...)                                 \
  do {                                                      \
    if (!(cond)) {                                          \
      ::shardfit::fail_at(__FILE__, __LINE__, __VA_ARGS__); \
    }                                                       \
  } while (false)
