// See paths.h.
#include "dist/io/paths.h"

#include <system_error>

namespace shardfit {

namespace fs = std::filesystem;

fs::path absolute_base(const fs::path& base_dir) {
  std::error_code error;
  return fs::absolute(base_dir.empty() ? fs::path(".") : base_dir, error).lexically_normal();
}

fs::path resolve_path(const fs::path& base_dir, const fs::path& path) {
  if (path.empty() || path.is_absolute()) return path.lexically_normal();
  return (absolute_base(base_dir) / path).lexically_normal();
}

}  // namespace shardfit
