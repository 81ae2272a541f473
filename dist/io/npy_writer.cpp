// .npy writer: magic, version 1.0, a header dict padded with spaces to a 64-byte boundary, then the raw data.
#include "dist/io/npy_writer.h"

#include <bit>
#include <cstring>

#include "dist/io/history_writer.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

static_assert(std::endian::native == std::endian::little, "the .npy writer assumes a little-endian host");

template <typename T>
std::string npy_bytes_of(std::span<const T> values, const std::vector<int64_t>& shape, const char* descr) {
  int64_t count = 1;
  std::string dims;
  for (int64_t d : shape) {
    SF_CHECK(d >= 0, cat("npy shape has a negative dimension ", d));
    count *= d;
    dims += std::to_string(d) + ", ";
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (3,) keeps its comma; (2, 3) does not end with one
  SF_CHECK(count == static_cast<int64_t>(values.size()),
           cat("npy shape holds ", count, " values but ", values.size(), " were given"));
  std::string header = cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", dims, "), }");
  const size_t unpadded = 10 + header.size() + 1;  // magic (6) + version (2) + length (2) + header + '\n'
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const auto length = static_cast<uint16_t>(header.size());
  out += static_cast<char>(length & 0xFF);
  out += static_cast<char>(length >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return out;
}

}  // namespace

std::string npy_bytes(std::span<const float> values, const std::vector<int64_t>& shape) {
  return npy_bytes_of(values, shape, "<f4");
}

std::string npy_bytes(std::span<const int64_t> values, const std::vector<int64_t>& shape) {
  return npy_bytes_of(values, shape, "<i8");
}

void write_npy(const std::filesystem::path& path, std::span<const float> values, const std::vector<int64_t>& shape) {
  write_file_atomically(path, npy_bytes(values, shape));
}

void write_npy(const std::filesystem::path& path, std::span<const int64_t> values, const std::vector<int64_t>& shape) {
  write_file_atomically(path, npy_bytes(values, shape));
}

}  // namespace shardfit
