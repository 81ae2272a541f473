// Writing NumPy .npy files (format version 1.0, little-endian, C order), atomically: what `np.load` reads.
// Reading lives in dist/io/dataset.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace shardfit {

// The bytes of a .npy file holding `values` with the given shape.
std::string npy_bytes(std::span<const float> values, const std::vector<int64_t>& shape);
std::string npy_bytes(std::span<const int64_t> values, const std::vector<int64_t>& shape);

// Writes through a temporary file and a rename, so readers never see half a file.
void write_npy(const std::filesystem::path& path, std::span<const float> values, const std::vector<int64_t>& shape);
void write_npy(const std::filesystem::path& path, std::span<const int64_t> values, const std::vector<int64_t>& shape);

}  // namespace shardfit
