// The one rule for making a path absolute: a job file's relative paths mean its folder, a command line's mean the
// working directory, and both resolve here. Path arithmetic only: nothing is opened or checked for existence.
#pragma once

#include <filesystem>

namespace shardfit {

// The folder relative paths resolve against: base_dir made absolute and lexically normal (the working directory
// when base_dir is empty).
std::filesystem::path absolute_base(const std::filesystem::path& base_dir);

// `path` against base_dir: an absolute path as given, a relative one under absolute_base(base_dir); lexically
// normal either way ("a/../b" is "b"; symlinks are not followed). Empty stays empty (an unset option).
std::filesystem::path resolve_path(const std::filesystem::path& base_dir, const std::filesystem::path& path);

}  // namespace shardfit
