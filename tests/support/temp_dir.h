// Temporary folders for tests: a fresh, uniquely named folder under the system temp dir.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace shardfit::testing {

// A new empty folder "shardfit_<tag>_XXXXXX"; an empty path when it cannot be made.
inline std::filesystem::path make_temp_dir(const std::string& tag) {
  std::string pattern = (std::filesystem::temp_directory_path() / ("shardfit_" + tag + "_XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

// make_temp_dir for one scope: removed with everything in it at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test") : path_(make_temp_dir(tag)) {
    if (path_.empty()) throw std::runtime_error("cannot make a temporary folder for " + tag);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace shardfit::testing
