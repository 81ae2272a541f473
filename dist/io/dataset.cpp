// Readers for .npy, MNIST IDX and CSV over read-only memory maps, and the Dataset that pairs features with labels.
// Not a general NumPy/CSV library: only what a training job needs (C-order numeric arrays, numeric CSV cells).
#include "dist/io/dataset.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "dist/io/byte_hash.h"
#include "dist/io/format.h"
#include "dist/io/gzip_cache.h"
#include "dist/io/inflate.h"
#include "dist/io/mapped_file.h"
#include "dist/io/paths.h"
#include "kernels/error.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

namespace fs = std::filesystem;

// The format-specific reader behind an ArrayFile. Subclasses fill the description fields at construction.
class ArrayFile::Impl {
 public:
  virtual ~Impl() = default;
  virtual void read_rows(std::span<const int64_t> rows, float* out, float scale) const = 0;
  virtual double value(int64_t row, int64_t col) const = 0;
  virtual std::string describe() const = 0;
  // Fails on the first value of rows [first, end) that is no finite number (or, for CSV, no number at all).
  virtual void check_values(int64_t first, int64_t end) const = 0;
  // The mapped file behind the array; nullptr for an array held in memory (ArrayFile::in_memory).
  virtual const MappedFile* file() const = 0;

  void check_row(int64_t row) const {
    if (row < 0 || row >= rows) {
      SF_FAIL(cat(path, ": row ", row, " requested: expected a row in [0, ", rows, ")"));
    }
  }
  void check_col(int64_t col) const {
    if (col < 0 || col >= cols) {
      SF_FAIL(cat(path, ": column ", col, " requested: expected a column in [0, ", cols, ")"));
    }
  }

  std::string path;  // as the user wrote it
  std::string format;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t rows = 0;
  int64_t cols = 0;
  bool integer = false;
};

namespace {

// ------------------------------------------------------------------------------------------------------------------
// Opening and mapping
// ------------------------------------------------------------------------------------------------------------------

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// "npy" | "idx" | "csv" from the explicit format or, when that is empty, from the file name. A trailing ".gz" says
// the file is gzip-compressed and is looked through: "x.npy.gz" is an .npy file (open_located inflates it).
std::string decide_format(const std::string& shown, std::string_view format) {
  if (!format.empty()) {
    std::string f = lower(std::string(format));
    if (f == "npy" || f == "idx" || f == "csv") return f;
    SF_FAIL(cat(shown, ": format '", format, "': expected npy, csv or idx"));
  }
  std::string name = lower(fs::path(shown).filename().string());
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  if (ends_with(name, ".npz")) {
    SF_FAIL(cat(shown, ": .npz archives are not read: expected one .npy file per array"),
            "save each array with np.save, or unzip the .npz (it is a zip of .npy files)");
  }
  if (ends_with(name, ".npy")) return "npy";
  if (ends_with(name, ".csv")) return "csv";
  const std::string ext = fs::path(name).extension().string();
  if (ends_with(name, "ubyte") || ext.rfind(".idx", 0) == 0) return "idx";
  SF_FAIL(cat(shown,
              ": cannot tell the format from the file name: expected .npy, .csv, .idx or *-ubyte, each "
              "optionally gzip-compressed (.gz)"),
          "or set the format explicitly: format: \"npy\" | \"csv\" | \"idx\"");
}

// Common misreadings of a binary file, named rather than reported as a bad magic number.
void check_not_compressed(const MappedFile& map, const std::string& shown) {
  if (map.bytes() >= 2 && map.data()[0] == std::byte{0x1f} && map.data()[1] == std::byte{0x8b}) {
    SF_FAIL(cat(shown, ": the file is gzip-compressed: expected the uncompressed data"),
            cat("decompress it first, e.g. gunzip -k ", shown));
  }
  if (map.bytes() >= 4 && std::memcmp(map.data(), "PK\x03\x04", 4) == 0) {
    SF_FAIL(cat(shown, ": the file is a zip archive (an .npz?): expected one .npy array"),
            "save each array with np.save, or unzip the .npz (it is a zip of .npy files)");
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Element types and conversion to float
// ------------------------------------------------------------------------------------------------------------------

enum class DType { kFloat32, kFloat64, kUInt8, kInt8, kInt16, kInt32, kInt64 };

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kUInt8:
      return "uint8";
    case DType::kInt8:
      return "int8";
    case DType::kInt16:
      return "int16";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
  }
  return "?";
}

int64_t dtype_bytes(DType t) {
  switch (t) {
    case DType::kUInt8:
    case DType::kInt8:
      return 1;
    case DType::kInt16:
      return 2;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
  }
  return 1;
}

bool dtype_is_integer(DType t) { return t != DType::kFloat32 && t != DType::kFloat64; }

template <typename T>
using Bits = std::conditional_t<
    sizeof(T) == 1, uint8_t,
    std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;

inline uint8_t byteswap(uint8_t v) { return v; }
inline uint16_t byteswap(uint16_t v) { return __builtin_bswap16(v); }
inline uint32_t byteswap(uint32_t v) { return __builtin_bswap32(v); }
inline uint64_t byteswap(uint64_t v) { return __builtin_bswap64(v); }

// memcpy, not a cast: IDX data starts at 4 + 4 * ndims bytes, so 8-byte elements may be misaligned.
template <typename T, bool kSwap>
inline T load(const std::byte* p) {
  Bits<T> bits;
  std::memcpy(&bits, p, sizeof(bits));
  if constexpr (kSwap) bits = byteswap(bits);
  T v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

template <typename T, bool kSwap>
void convert_row(const std::byte* src, int64_t count, float* out, float scale) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = load<T, kSwap>(src + i * static_cast<int64_t>(sizeof(T)));
    if constexpr (sizeof(T) == 8) {
      // Scale in double first so that large int64 / float64 values are rounded once.
      out[i] = static_cast<float>(static_cast<double>(v) * static_cast<double>(scale));
    } else {
      out[i] = static_cast<float>(v) * scale;
    }
  }
}

template <typename T, bool kSwap>
double load_double(const std::byte* p) {
  return static_cast<double>(load<T, kSwap>(p));
}

// Index of the first NaN or infinity among count values, or -1. The scan has no early exit (so the compiler can
// vectorise it); only a row that holds a bad value is scanned again to find it.
template <typename T, bool kSwap>
int64_t first_non_finite(const std::byte* src, int64_t count) {
  if constexpr (std::is_integral_v<T>) {
    return -1;
  } else {
    using U = Bits<T>;
    // A NaN or infinity has every exponent bit set, in either byte order once swapped.
    constexpr U kExponent = static_cast<U>(sizeof(T) == 4 ? 0x7F800000ULL : 0x7FF0000000000000ULL);
    bool any = false;
    for (int64_t i = 0; i < count; ++i) {
      U bits;
      std::memcpy(&bits, src + i * static_cast<int64_t>(sizeof(U)), sizeof(U));
      if constexpr (kSwap) bits = byteswap(bits);
      any |= (bits & kExponent) == kExponent;
    }
    if (!any) return -1;
    for (int64_t i = 0; i < count; ++i) {
      if (!std::isfinite(load<T, kSwap>(src + i * static_cast<int64_t>(sizeof(T))))) return i;
    }
    return -1;
  }
}

using ConvertRowFn = void (*)(const std::byte*, int64_t, float*, float);
using LoadDoubleFn = double (*)(const std::byte*);
using FirstNonFiniteFn = int64_t (*)(const std::byte*, int64_t);

struct Codec {
  ConvertRowFn convert;
  LoadDoubleFn load;
  FirstNonFiniteFn first_non_finite;
};

template <typename T>
Codec codec_of(bool swap) {
  return swap ? Codec{&convert_row<T, true>, &load_double<T, true>, &first_non_finite<T, true>}
              : Codec{&convert_row<T, false>, &load_double<T, false>, &first_non_finite<T, false>};
}

constexpr const char* kNonFiniteHint =
    "NaN and infinity make every weight NaN: clean the data first, e.g. keep the rows where "
    "np.isfinite(x).all(axis=1), or replace the values with np.nan_to_num";

// Chosen once per file, so the per-row loop has no switch on the type.
Codec codec_for(DType t, bool swap) {
  switch (t) {
    case DType::kFloat32:
      return codec_of<float>(swap);
    case DType::kFloat64:
      return codec_of<double>(swap);
    case DType::kUInt8:
      return codec_of<uint8_t>(false);
    case DType::kInt8:
      return codec_of<int8_t>(false);
    case DType::kInt16:
      return codec_of<int16_t>(swap);
    case DType::kInt32:
      return codec_of<int32_t>(swap);
    case DType::kInt64:
      return codec_of<int64_t>(swap);
  }
  return codec_of<uint8_t>(false);
}

// Product of the non-leading dimensions, failing instead of overflowing.
int64_t row_width(const std::vector<int64_t>& shape, const std::string& shown) {
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) {
    if (__builtin_mul_overflow(cols, shape[i], &cols)) {
      SF_FAIL(cat(shown, ": shape ", shape_text(shape, ShapeStyle::kPlain),
                  " is too large: expected fewer than 2^63 elements per row"));
    }
  }
  return cols;
}

// ------------------------------------------------------------------------------------------------------------------
// Binary arrays: .npy and IDX share everything after the header
// ------------------------------------------------------------------------------------------------------------------

class BinaryArray final : public ArrayFile::Impl {
 public:
  BinaryArray(std::shared_ptr<const MappedFile> map, std::string shown, std::string fmt, DType type, bool swap,
              std::vector<int64_t> dims, int64_t data_offset)
      : map_(std::move(map)), codec_(codec_for(type, swap)) {
    path = std::move(shown);
    format = std::move(fmt);
    dtype = dtype_name(type);
    shape = std::move(dims);
    rows = shape.at(0);
    cols = row_width(shape, path);
    integer = dtype_is_integer(type);
    elem_bytes_ = dtype_bytes(type);
    raw_float_ = type == DType::kFloat32 && !swap;

    int64_t data_bytes = 0;
    if (__builtin_mul_overflow(cols, elem_bytes_, &row_bytes_) ||
        __builtin_mul_overflow(rows, row_bytes_, &data_bytes)) {
      SF_FAIL(cat(path, ": shape ", shape_text(shape, ShapeStyle::kPlain),
                  " is too large: expected fewer than 2^63 bytes of data"));
    }
    const int64_t available = map_->bytes() - data_offset;
    if (data_bytes > available) {
      SF_FAIL(
          cat(path, ": truncated: the header says ", dtype, " ", shape_text(shape, ShapeStyle::kPlain), ", ",
              data_bytes, " bytes of data, but only ", available, " bytes follow the header: expected the whole array"),
          "the file was probably cut short while copying or downloading; write or fetch it again");
    }
    data_ = map_->data() + data_offset;
  }

  void read_rows(std::span<const int64_t> row_ids, float* out, float scale) const override {
    for (size_t i = 0; i < row_ids.size(); ++i) {
      const int64_t r = row_ids[i];
      check_row(r);
      const std::byte* src = data_ + r * row_bytes_;
      float* dst = out + static_cast<int64_t>(i) * cols;
      if (raw_float_ && scale == 1.0F) {
        std::memcpy(dst, src, static_cast<size_t>(row_bytes_));
      } else {
        codec_.convert(src, cols, dst, scale);
      }
    }
  }

  double value(int64_t row, int64_t col) const override {
    check_row(row);
    check_col(col);
    return codec_.load(data_ + row * row_bytes_ + col * elem_bytes_);
  }

  std::string describe() const override {
    return cat(path, " (", format, ", ", dtype, ", shape ", shape_text(shape, ShapeStyle::kPlain), ")");
  }

  void check_values(int64_t first, int64_t end) const override {
    if (integer) return;  // every integer is a finite number
    for (int64_t r = first; r < end; ++r) {
      const std::byte* src = data_ + r * row_bytes_;
      const int64_t c = codec_.first_non_finite(src, cols);
      if (c < 0) continue;
      SF_FAIL(cat(path, ": row ", r, ", column ", c, " is ", format_value(codec_.load(src + c * elem_bytes_)),
                  ": expected finite numbers (rows count from 0)"),
              kNonFiniteHint);
    }
  }

  const MappedFile* file() const override { return map_.get(); }

 private:
  std::shared_ptr<const MappedFile> map_;
  const std::byte* data_ = nullptr;
  Codec codec_;
  int64_t elem_bytes_ = 1;
  int64_t row_bytes_ = 0;
  bool raw_float_ = false;
};

// --- .npy -------------------------------------------------------------------------------------------------------

// The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (1797, 64), }.
// A small recursive-descent reader for exactly that, not a Python parser.
class NpyHeaderReader {
 public:
  NpyHeaderReader(std::string_view text, const std::string& shown) : text_(text), shown_(shown) {}

  void read(std::string& descr, bool& fortran_order, std::vector<int64_t>& shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = read_string();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() == '[') {
          SF_FAIL(cat(shown_, ": structured dtype (a record array): expected a plain numeric array"),
                  "save each field as its own array with np.save");
        }
        descr = read_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = read_bool();
        have_order = true;
      } else if (key == "shape") {
        shape = read_shape();
        have_shape = true;
      } else {
        malformed(cat("an unknown key '", key, "'"), "'descr', 'fortran_order' or 'shape'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') break;
      malformed("no ',' or '}' after a value", "',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape) {
      malformed("a missing key", "all of 'descr', 'fortran_order' and 'shape'");
    }
  }

 private:
  [[noreturn]] void malformed(const std::string& found, const std::string& expected) const {
    SF_FAIL(cat(shown_, ": malformed .npy header (", found, " at character ", pos_, "): expected ", expected,
                "; the header is: ", text_));
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) malformed(cat("'", peek(), "'"), cat("'", c, "'"));
    ++pos_;
  }
  std::string read_string() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') malformed("no quoted string", "a quoted string");
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) malformed("an unterminated string", "a closing quote");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return s;
  }
  bool read_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    malformed("no boolean", "True or False");
  }
  std::vector<int64_t> read_shape() {
    std::vector<int64_t> dims;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') break;
      int64_t d = 0;
      const char* first = text_.data() + pos_;
      const auto [next, ec] = std::from_chars(first, text_.data() + text_.size(), d);
      if (ec != std::errc() || d < 0) malformed("a dimension that is not a non-negative integer", "a dimension");
      pos_ += static_cast<size_t>(next - first);
      if (peek() == 'L') ++pos_;  // Python 2 long suffix, written by very old NumPy
      dims.push_back(d);
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        malformed("no ',' or ')' in the shape", "',' or ')'");
      }
    }
    ++pos_;
    return dims;
  }

  std::string_view text_;
  const std::string& shown_;
  size_t pos_ = 0;
};

// '<f4' -> float32 little-endian. Byte order '|' (not applicable) and '=' (native) are accepted too.
DType npy_dtype(const std::string& descr, const std::string& shown, bool& swap) {
  const auto unsupported = [&]() -> DType {
    SF_FAIL(cat(shown, ": unsupported dtype '", descr, "': expected float32, float64, uint8, int32 or int64"),
            "convert it first, e.g. np.save(path, a.astype(np.float32))");
  };
  if (descr.size() < 2) unsupported();
  std::string_view code = descr;
  bool big = std::endian::native == std::endian::big;
  if (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=') {
    if (code[0] == '<') big = false;
    if (code[0] == '>') big = true;
    code.remove_prefix(1);
  }
  DType t;
  if (code == "f4") {
    t = DType::kFloat32;
  } else if (code == "f8") {
    t = DType::kFloat64;
  } else if (code == "u1") {
    t = DType::kUInt8;
  } else if (code == "i4") {
    t = DType::kInt32;
  } else if (code == "i8") {
    t = DType::kInt64;
  } else {
    return unsupported();
  }
  swap = big != (std::endian::native == std::endian::big);
  return t;
}

// What the preamble and header dict of a .npy say; shared by open_npy and parse_npy_header (bytes not in a file).
struct NpyLayout {
  DType type;
  bool swap;
  bool fortran_order;
  std::vector<int64_t> shape;
  int64_t data_offset;
};

NpyLayout read_npy_layout(std::string_view text, const std::string& shown) {
  const auto* b = reinterpret_cast<const unsigned char*>(text.data());
  const auto bytes = static_cast<int64_t>(text.size());
  if (bytes < 10 || std::memcmp(b, "\x93NUMPY", 6) != 0) {
    SF_FAIL(cat(shown, ": not a .npy file (", bytes < 10 ? "too short" : "wrong magic bytes",
                "): expected a file written by np.save, starting with \\x93NUMPY"));
  }
  const int major = b[6], minor = b[7];
  int64_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = b[8] | (b[9] << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes < 12) SF_FAIL(cat(shown, ": truncated .npy header: expected at least 12 bytes"));
    header_len = static_cast<int64_t>(b[8]) | (static_cast<int64_t>(b[9]) << 8) | (static_cast<int64_t>(b[10]) << 16) |
                 (static_cast<int64_t>(b[11]) << 24);
    header_start = 12;
  } else {
    SF_FAIL(cat(shown, ": .npy format version ", major, ".", minor, ": expected version 1.0, 2.0 or 3.0"));
  }
  if (header_start + header_len > bytes) {
    SF_FAIL(cat(shown, ": truncated: the .npy header says it is ", header_len, " bytes but the file has only ",
                bytes - header_start, " after the preamble: expected the whole header"));
  }
  // Version 3.0 only allows UTF-8 in the header; the keys and values read here are ASCII either way.
  const std::string_view header(reinterpret_cast<const char*>(b + header_start), static_cast<size_t>(header_len));
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  NpyHeaderReader(header, shown).read(descr, fortran_order, shape);

  bool swap = false;
  const DType type = npy_dtype(descr, shown, swap);
  return {type, swap, fortran_order, std::move(shape), header_start + header_len};
}

// gzip: the map is the inflated copy of a .gz (said in describe()).
std::shared_ptr<const ArrayFile::Impl> open_npy(std::shared_ptr<const MappedFile> map, const std::string& shown,
                                                bool gzip) {
  check_not_compressed(*map, shown);
  NpyLayout npy = read_npy_layout(map->text(), shown);
  if (npy.shape.empty()) {
    SF_FAIL(cat(shown, ": a 0-d array (shape ()): expected at least one dimension, one row per sample"));
  }
  // np.save writes fortran_order True only for arrays that are not also C-contiguous: they would read transposed.
  if (npy.fortran_order) {
    SF_FAIL(cat(shown, ": fortran_order is True: expected a C-order (row-major) array"),
            "save it with np.save(path, np.ascontiguousarray(a))");
  }
  return std::make_shared<BinaryArray>(std::move(map), shown, gzip ? "gzip npy" : "npy", npy.type, npy.swap,
                                       std::move(npy.shape), npy.data_offset);
}

// --- IDX ----------------------------------------------------------------------------------------------------------

std::string hex_byte(unsigned char v) {
  constexpr char kDigits[] = "0123456789abcdef";
  return {'0', 'x', kDigits[v >> 4], kDigits[v & 15]};
}

// Magic 0x00 0x00 <type> <ndims>, then ndims big-endian uint32 sizes, then big-endian data (yann.lecun.com/exdb/mnist).
std::shared_ptr<const ArrayFile::Impl> open_idx(std::shared_ptr<const MappedFile> map, const std::string& shown,
                                                bool gzip) {
  check_not_compressed(*map, shown);
  const auto* b = reinterpret_cast<const unsigned char*>(map->data());
  const int64_t bytes = map->bytes();
  if (bytes < 4 || b[0] != 0 || b[1] != 0) {
    SF_FAIL(cat(shown, ": not an IDX file (", bytes < 4 ? "too short" : "wrong magic bytes",
                "): expected the magic number 0x00 0x00 <type> <dimensions> of MNIST-style files"));
  }
  DType type;
  switch (b[2]) {
    case 0x08:
      type = DType::kUInt8;
      break;
    case 0x09:
      type = DType::kInt8;
      break;
    case 0x0B:
      type = DType::kInt16;
      break;
    case 0x0C:
      type = DType::kInt32;
      break;
    case 0x0D:
      type = DType::kFloat32;
      break;
    case 0x0E:
      type = DType::kFloat64;
      break;
    default:
      SF_FAIL(cat(shown, ": IDX type byte ", hex_byte(b[2]),
                  ": expected 0x08 (ubyte), 0x09 (byte), 0x0b (short), 0x0c (int), 0x0d (float) or 0x0e (double)"));
  }
  const int ndims = b[3];
  if (ndims < 1) SF_FAIL(cat(shown, ": IDX file with 0 dimensions: expected at least one, one row per sample"));
  const int64_t header_bytes = 4 + 4 * static_cast<int64_t>(ndims);
  if (bytes < header_bytes) {
    SF_FAIL(cat(shown, ": truncated: the IDX header lists ", ndims, " dimensions (", header_bytes,
                " bytes) but the file has ", bytes, " bytes: expected the whole header"));
  }
  std::vector<int64_t> shape(static_cast<size_t>(ndims));
  for (int d = 0; d < ndims; ++d) {
    const unsigned char* p = b + 4 + 4 * static_cast<ptrdiff_t>(d);
    shape[static_cast<size_t>(d)] = (static_cast<int64_t>(p[0]) << 24) | (static_cast<int64_t>(p[1]) << 16) |
                                    (static_cast<int64_t>(p[2]) << 8) | static_cast<int64_t>(p[3]);
  }
  const bool swap = std::endian::native == std::endian::little;
  return std::make_shared<BinaryArray>(std::move(map), shown, gzip ? "gzip idx" : "idx", type, swap, std::move(shape),
                                       header_bytes);
}

// ------------------------------------------------------------------------------------------------------------------
// CSV: an index of line offsets built once; cells are parsed only when their row is read
// ------------------------------------------------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string_view unquote(std::string_view s) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

bool parse_number(std::string_view cell, double& out) {
  cell = unquote(cell);
  if (!cell.empty() && cell.front() == '+') cell.remove_prefix(1);
  if (cell.empty()) return false;
  const auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), out);
  return ec == std::errc() && end == cell.data() + cell.size();
}

// Calls fn(index, cell) for each delimiter-separated cell of line; stops early when fn returns false.
// No quoting rules beyond stripping quotes around a whole cell: the cells are numbers and column names.
template <typename Fn>
void for_each_cell(std::string_view line, char delimiter, Fn&& fn) {
  int64_t index = 0;
  while (true) {
    const size_t cut = line.find(delimiter);
    if (!fn(index, line.substr(0, cut))) return;
    if (cut == std::string_view::npos) return;
    line.remove_prefix(cut + 1);
    ++index;
  }
}

bool is_blank(std::string_view line) { return trim(line).empty(); }

class CsvTable {
 public:
  CsvTable(std::shared_ptr<const MappedFile> map, std::string shown, const proto::CsvOptions* options)
      : map_(std::move(map)), path_(std::move(shown)) {
    if (options != nullptr && options->has_delimiter()) {
      const std::string& d = options->delimiter();
      if (d.size() != 1) {
        SF_FAIL(cat(path_, ": csv.delimiter = '", d, "': expected exactly one character such as ',' ';' or '\\t'"));
      }
      delimiter_ = d[0];
    }
    std::string_view text = map_->text();
    int64_t offset = 0;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") offset = 3;  // UTF-8 byte-order mark written by spreadsheet programs

    int64_t line_number = 0;
    bool first = true;
    while (offset < static_cast<int64_t>(text.size())) {
      ++line_number;
      const size_t newline = text.find('\n', static_cast<size_t>(offset));
      const size_t end = newline == std::string_view::npos ? text.size() : newline;
      const std::string_view line = text.substr(static_cast<size_t>(offset), end - static_cast<size_t>(offset));
      if (!is_blank(line)) {
        const int64_t cells = 1 + std::count(line.begin(), line.end(), delimiter_);
        if (first) {
          first = false;
          cols_ = cells;
          if (first_line_is_header(line, options)) {
            has_header_ = true;
            for_each_cell(line, delimiter_, [&](int64_t, std::string_view cell) {
              names_.emplace_back(unquote(cell));
              return true;
            });
            offset = static_cast<int64_t>(end) + 1;
            continue;
          }
        } else if (cells != cols_) {
          SF_FAIL(cat(path_, ": line ", line_number, " has ", cells, " cells: expected ", cols_,
                      " like the first line (delimiter '", delimiter_, "')"));
        }
        starts_.push_back(offset);
      }
      offset = static_cast<int64_t>(end) + 1;
    }
  }

  const std::string& path() const { return path_; }
  char delimiter() const { return delimiter_; }
  int64_t rows() const { return static_cast<int64_t>(starts_.size()); }
  int64_t cols() const { return cols_; }
  bool has_header() const { return has_header_; }
  const std::vector<std::string>& names() const { return names_; }

  // Data row `row`, without its line ending.
  std::string_view line(int64_t row) const {
    const std::string_view text = map_->text();
    const auto start = static_cast<size_t>(starts_[static_cast<size_t>(row)]);
    const size_t newline = text.find('\n', start);
    return text.substr(start, (newline == std::string_view::npos ? text.size() : newline) - start);
  }

  // 1-based line number of data row `row` in the file: for error messages only, so it is counted, not stored.
  int64_t line_number(int64_t row) const {
    const std::string_view text = map_->text();
    const auto start = static_cast<size_t>(starts_[static_cast<size_t>(row)]);
    return 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(start), '\n');
  }

  std::string column_name(int64_t col) const {
    if (has_header_ && col < static_cast<int64_t>(names_.size())) return cat(col, " ('", names_[col], "')");
    return cat(col);
  }

  [[noreturn]] void bad_cell(int64_t row, int64_t col, std::string_view cell) const {
    SF_FAIL(cat(path_, ": line ", line_number(row), ", column ", column_name(col), ": cannot read '", trim(cell),
                "' as a number: expected a numeric value"),
            has_header_ ? "" : "if the first line holds column names, set csv.header: true");
  }

  // The number in a data cell; a cell that is no number, or is nan / inf (which parse), fails naming line and column.
  double number(int64_t row, int64_t col, std::string_view cell) const {
    double v = 0.0;
    if (!parse_number(cell, v)) bad_cell(row, col, cell);
    if (!std::isfinite(v)) {
      SF_FAIL(cat(path_, ": line ", line_number(row), ", column ", column_name(col), ": '", trim(cell),
                  "' is not a finite number: expected finite numbers"),
              kNonFiniteHint);
    }
    return v;
  }

  const MappedFile& file() const { return *map_; }

 private:
  bool first_line_is_header(std::string_view line, const proto::CsvOptions* options) const {
    if (options != nullptr && options->has_header()) return options->header();
    bool any_text = false;
    for_each_cell(line, delimiter_, [&](int64_t, std::string_view cell) {
      double v;
      any_text = !parse_number(cell, v);
      return !any_text;
    });
    return any_text;
  }

  std::shared_ptr<const MappedFile> map_;
  std::string path_;
  char delimiter_ = ',';
  bool has_header_ = false;
  std::vector<std::string> names_;
  int64_t cols_ = 0;
  std::vector<int64_t> starts_;  // byte offset of each data row's line
};

// A column selection of a CSV table: all columns, all but the label column (features), or only it (labels).
class CsvColumns final : public ArrayFile::Impl {
 public:
  enum class Pick { kAll, kAllBut, kOnly };

  CsvColumns(std::shared_ptr<const CsvTable> table, Pick pick, int64_t column)
      : table_(std::move(table)), pick_(pick), column_(column) {
    path = table_->path();
    format = "csv";
    dtype = "text";
    rows = table_->rows();
    cols = pick == Pick::kAll ? table_->cols() : pick == Pick::kAllBut ? table_->cols() - 1 : 1;
    shape = {rows, cols};
    integer = true;
  }

  void read_rows(std::span<const int64_t> row_ids, float* out, float scale) const override {
    for (size_t i = 0; i < row_ids.size(); ++i) {
      const int64_t r = row_ids[i];
      check_row(r);
      float* dst = out + static_cast<int64_t>(i) * cols;
      int64_t written = 0;
      for_each_cell(table_->line(r), table_->delimiter(), [&](int64_t c, std::string_view cell) {
        if (!selected(c)) return true;
        if (written == cols) return false;
        dst[written++] = static_cast<float>(table_->number(r, c, cell)) * scale;
        return true;
      });
      if (written != cols) short_line(r);
    }
  }

  double value(int64_t row, int64_t col) const override {
    check_row(row);
    check_col(col);
    const int64_t file_col = pick_ == Pick::kOnly ? column_ : pick_ == Pick::kAllBut && col >= column_ ? col + 1 : col;
    double v = 0.0;
    bool found = false;
    for_each_cell(table_->line(row), table_->delimiter(), [&](int64_t c, std::string_view cell) {
      if (c < file_col) return true;
      v = table_->number(row, c, cell);
      found = true;
      return false;
    });
    if (!found) short_line(row);
    return v;
  }

  // Parses every selected cell: the whole CSV is validated at setup, each rank its share of the rows, rather than
  // when a step first gathers a row (possibly hours in, on one rank only).
  void check_values(int64_t first, int64_t end) const override {
    for (int64_t r = first; r < end; ++r) {
      int64_t seen = 0;
      for_each_cell(table_->line(r), table_->delimiter(), [&](int64_t c, std::string_view cell) {
        if (!selected(c)) return true;
        table_->number(r, c, cell);
        return ++seen < cols;
      });
      if (seen != cols) short_line(r);
    }
  }

  const MappedFile* file() const override { return &table_->file(); }

  std::string describe() const override {
    switch (pick_) {
      case Pick::kAll:
        return cat(path, " (csv, ", rows, " rows x ", cols, " columns)");
      case Pick::kAllBut:
        return cat(path, " (csv, ", rows, " rows x ", cols, " columns, all but column ", table_->column_name(column_),
                   ")");
      case Pick::kOnly:
        return cat(path, " (csv, ", rows, " rows, column ", table_->column_name(column_), ")");
    }
    return path;
  }

 private:
  bool selected(int64_t c) const {
    return pick_ == Pick::kAll || (pick_ == Pick::kAllBut ? c != column_ : c == column_);
  }
  // The index pass checked every line's cell count; this only triggers if the file changed underneath the map.
  [[noreturn]] void short_line(int64_t row) const {
    SF_FAIL(cat(path, ": line ", table_->line_number(row), " has fewer than ", table_->cols(),
                " cells: expected every line to have as many as the first (was the file changed while training?)"));
  }

  std::shared_ptr<const CsvTable> table_;
  Pick pick_;
  int64_t column_;
};

// -1 when options name no label column.
int64_t label_column_of(const CsvTable& table, const proto::CsvOptions& options) {
  switch (options.label_column_case()) {
    case proto::CsvOptions::kLabelName: {
      const std::string& name = options.label_name();
      if (!table.has_header()) {
        SF_FAIL(cat(table.path(), ": csv.label_name = '", name,
                    "' but the file has no header row: expected a first line of column names"),
                "use csv.label_index instead, or set csv.header: true if the first line holds the names");
      }
      const auto& names = table.names();
      const auto it = std::find(names.begin(), names.end(), name);
      if (it == names.end()) {
        std::string known;
        for (const auto& n : names) known += cat(known.empty() ? "" : ", ", "'", n, "'");
        SF_FAIL(cat(table.path(), ": csv.label_name = '", name, "' is not a column: expected one of ", known));
      }
      return it - names.begin();
    }
    case proto::CsvOptions::kLabelIndex: {
      const int64_t cols = table.cols();
      int64_t index = options.label_index();
      if (index < -cols || index >= cols) {
        SF_FAIL(cat(table.path(), ": csv.label_index = ", index, " but the file has ", cols,
                    " columns: expected an index in [", -cols, ", ", cols, ")"));
      }
      return index < 0 ? index + cols : index;
    }
    case proto::CsvOptions::LABEL_COLUMN_NOT_SET:
      return -1;
  }
  return -1;
}

// ------------------------------------------------------------------------------------------------------------------
// Paths
// ------------------------------------------------------------------------------------------------------------------

struct Located {
  fs::path resolved;
  std::string shown;
  std::string hint;  // for a file that cannot be opened
};

Located locate(const std::string& path, const fs::path& base_dir, const std::string& field) {
  Located where;
  where.shown = path;
  where.resolved = resolve_path(base_dir, path);
  if (fs::path(path).is_absolute()) {
    where.hint = field.empty() ? std::string() : cat("check ", field);
  } else {
    const std::string base = absolute_base(base_dir).string();
    where.hint = field.empty()
                     ? cat("relative paths resolve against the working directory (", base, ")")
                     : cat("relative paths in ", field, " resolve against the job file's folder (", base, ")");
  }
  return where;
}

// A located file, opened and mapped once, with its format (the job's format field, else told by the name) decided
// as soon as the open succeeds: see MappedFile's on_open for the order of the errors. A gzip-compressed file (told
// by its magic bytes, whatever its name) is replaced by its inflated copy in the cache (gzip_cache.h), mapped under
// the name the user gave, so everything after this reads it as an uncompressed file.
struct OpenedFile {
  std::shared_ptr<const MappedFile> map;
  std::string format;
  bool gzip = false;
};

OpenedFile open_located(const Located& where, std::string_view format) {
  OpenedFile file;
  file.map = std::make_shared<const MappedFile>(where.resolved, where.shown, where.hint,
                                                [&] { file.format = decide_format(where.shown, format); });
  bool magic = false;
  guard_data_faults([&] { magic = is_gzip(file.map->text().substr(0, 2)); });
  if (!magic) {
    if (ends_with(lower(where.shown), ".gz")) {
      SF_FAIL(cat(where.shown, ": the name ends in .gz but the file is not gzip-compressed (",
                  file.map->bytes() < 2 ? "too short" : "no magic bytes 0x1f 0x8b", "): expected a gzip file"),
              "rename an uncompressed file without .gz; a .gz cut to nothing was probably not fetched whole");
    }
    return file;
  }
  file.map = std::make_shared<const MappedFile>(inflated_copy(*file.map, where.shown), where.shown, where.hint);
  file.gzip = true;
  return file;
}

std::shared_ptr<const ArrayFile::Impl> open_array(OpenedFile file, const std::string& shown,
                                                  const proto::CsvOptions* csv) {
  if (file.format == "npy") return open_npy(std::move(file.map), shown, file.gzip);
  if (file.format == "idx") return open_idx(std::move(file.map), shown, file.gzip);
  auto table = std::make_shared<const CsvTable>(std::move(file.map), shown, csv);
  return std::make_shared<CsvColumns>(std::move(table), CsvColumns::Pick::kAll, -1);
}

// --- Arrays in memory ------------------------------------------------------------------------------------------

// float32 rows held in a buffer rather than a file: synthetic data (`shardfit bench`) gathered by the same
// Dataset::gather as a mapped .npy, so the step reads it exactly as it reads a file's rows.
class MemoryArray final : public ArrayFile::Impl {
 public:
  MemoryArray(std::string name, std::vector<float> values, int64_t row_count, int64_t col_count)
      : values_(std::move(values)) {
    if (row_count < 0 || col_count < 1 || static_cast<int64_t>(values_.size()) != row_count * col_count) {
      SF_FAIL(cat(name, ": ", values_.size(), " values for ", row_count, " rows of ", col_count,
                  ": expected rows x cols values, cols >= 1"));
    }
    path = std::move(name);
    format = "memory";
    dtype = "float32";
    shape = {row_count, col_count};
    rows = row_count;
    cols = col_count;
  }

  void read_rows(std::span<const int64_t> row_ids, float* out, float scale) const override {
    for (size_t i = 0; i < row_ids.size(); ++i) {
      const int64_t r = row_ids[i];
      check_row(r);
      const float* src = values_.data() + r * cols;
      float* dst = out + static_cast<int64_t>(i) * cols;
      if (scale == 1.0F) {
        std::memcpy(dst, src, static_cast<size_t>(cols) * sizeof(float));
      } else {
        for (int64_t c = 0; c < cols; ++c) dst[c] = src[c] * scale;
      }
    }
  }

  double value(int64_t row, int64_t col) const override {
    check_row(row);
    check_col(col);
    return values_[static_cast<size_t>(row * cols + col)];
  }

  std::string describe() const override {
    return cat(path, " (memory, float32, shape ", shape_text(shape, ShapeStyle::kPlain), ")");
  }

  void check_values(int64_t first, int64_t end) const override {
    for (int64_t i = first * cols; i < end * cols; ++i) {
      const float v = values_[static_cast<size_t>(i)];
      if (!std::isfinite(v)) {
        SF_FAIL(cat(path, ": row ", i / cols, ", column ", i % cols, " is ", format_value(v),
                    ": expected finite numbers (rows count from 0)"),
                kNonFiniteHint);
      }
    }
  }

  const MappedFile* file() const override { return nullptr; }

  // All of the values: they are in memory already, so no sampling is needed.
  uint64_t fingerprint() const {
    return mix_bytes(kByteHashStart, reinterpret_cast<const std::byte*>(values_.data()),
                     static_cast<int64_t>(values_.size() * sizeof(float)));
  }

 private:
  std::vector<float> values_;
};

}  // namespace

NpyHeader parse_npy_header(std::string_view bytes, const std::string& name) {
  NpyLayout npy = read_npy_layout(bytes, name);
  return {dtype_name(npy.type), npy.swap, npy.fortran_order, std::move(npy.shape), npy.data_offset};
}

// ------------------------------------------------------------------------------------------------------------------
// ArrayFile
// ------------------------------------------------------------------------------------------------------------------

ArrayFile ArrayFile::open(const fs::path& path, std::string_view format, const proto::CsvOptions* csv) {
  const Located where = locate(path.string(), fs::path("."), "");
  return ArrayFile(open_array(open_located(where, format), where.shown, csv));
}

ArrayFile ArrayFile::in_memory(std::string name, std::vector<float> values, int64_t rows, int64_t cols) {
  return ArrayFile(std::make_shared<const MemoryArray>(std::move(name), std::move(values), rows, cols));
}

int64_t ArrayFile::rows() const { return impl_->rows; }
int64_t ArrayFile::cols() const { return impl_->cols; }
const std::vector<int64_t>& ArrayFile::shape() const { return impl_->shape; }
const std::string& ArrayFile::dtype() const { return impl_->dtype; }
bool ArrayFile::integer_dtype() const { return impl_->integer; }
const std::string& ArrayFile::path() const { return impl_->path; }
std::string ArrayFile::describe() const { return impl_->describe(); }

// Every read of the mapped bytes runs guarded: a file cut short under the job raises an Error naming it.
void ArrayFile::read_rows(std::span<const int64_t> rows, float* out, float scale) const {
  guard_data_faults([&] { impl_->read_rows(rows, out, scale); });
}

double ArrayFile::value(int64_t row, int64_t col) const {
  double v = 0.0;
  guard_data_faults([&] { v = impl_->value(row, col); });
  return v;
}

void ArrayFile::check_values(int64_t first_row, int64_t row_count) const {
  const int64_t first = std::clamp<int64_t>(first_row, 0, impl_->rows);
  const int64_t end = row_count < 0 ? impl_->rows : std::min(impl_->rows, first + row_count);
  guard_data_faults([&] { impl_->check_values(first, end); });
}

int64_t ArrayFile::file_bytes() const {
  const MappedFile* file = impl_->file();
  return file != nullptr ? file->bytes() : impl_->rows * impl_->cols * static_cast<int64_t>(sizeof(float));
}
uint64_t ArrayFile::sampled_fingerprint() const {
  const MappedFile* file = impl_->file();
  if (file == nullptr) return static_cast<const MemoryArray&>(*impl_).fingerprint();  // the one Impl with no file
  uint64_t fingerprint = 0;
  guard_data_faults([&] { fingerprint = file->sampled_fingerprint(); });
  return fingerprint;
}
std::string ArrayFile::changed_on_disk() const {
  const MappedFile* file = impl_->file();
  return file != nullptr ? file->changed_on_disk() : std::string();
}

// ------------------------------------------------------------------------------------------------------------------
// Dataset
// ------------------------------------------------------------------------------------------------------------------

Dataset Dataset::open(const proto::Dataset& cfg, const fs::path& base_dir, std::string_view role_view) {
  const std::string role(role_view);
  const std::string field = cat("data.", role);
  if (!cfg.has_x() || cfg.x().path().empty()) {
    SF_FAIL(cat(role, " data has no x file: expected ", field, ".x.path"),
            cat("e.g. ", role, " { x { path: \"x.npy\" } y { path: \"y.npy\" } }"));
  }
  const bool y_given = cfg.has_y() && !cfg.y().path().empty();

  const Located x_where = locate(cfg.x().path(), base_dir, field + ".x.path");
  OpenedFile x_file = open_located(x_where, cfg.x().format());
  std::shared_ptr<const ArrayFile::Impl> x, y;
  if (x_file.format == "csv") {
    auto table = std::make_shared<const CsvTable>(std::move(x_file.map), x_where.shown, &cfg.x().csv());
    const int64_t label = label_column_of(*table, cfg.x().csv());
    if (label >= 0) {
      if (y_given) {
        SF_FAIL(cat(role, " x '", x_where.shown, "' is a CSV file with a label column and ", field,
                    ".y is set too: expected the labels in one place"),
                cat("drop ", field, ".y, or the csv label column"));
      }
      x = std::make_shared<CsvColumns>(table, CsvColumns::Pick::kAllBut, label);
      y = std::make_shared<CsvColumns>(table, CsvColumns::Pick::kOnly, label);
    } else {
      x = std::make_shared<CsvColumns>(table, CsvColumns::Pick::kAll, -1);
    }
  } else {
    x = open_array(std::move(x_file), x_where.shown, &cfg.x().csv());
  }

  if (y == nullptr) {
    if (!y_given) {
      SF_FAIL(cat(role, " data has no labels: expected ", field, ".y.path, or a CSV x file with csv.label_name or ",
                  "csv.label_index"));
    }
    const Located y_where = locate(cfg.y().path(), base_dir, field + ".y.path");
    OpenedFile y_file = open_located(y_where, cfg.y().format());
    if (y_file.format == "csv") {
      auto table = std::make_shared<const CsvTable>(std::move(y_file.map), y_where.shown, &cfg.y().csv());
      const int64_t label = label_column_of(*table, cfg.y().csv());
      y = label >= 0 ? std::make_shared<CsvColumns>(table, CsvColumns::Pick::kOnly, label)
                     : std::make_shared<CsvColumns>(table, CsvColumns::Pick::kAll, -1);
    } else {
      y = open_array(std::move(y_file), y_where.shown, &cfg.y().csv());
    }
  }

  if (x->rows != y->rows) {
    SF_FAIL(cat(role, " x has ", x->rows, " rows but y has ", y->rows, ": expected the same number of samples"),
            cat("x is ", x->describe(), ", y is ", y->describe()));
  }
  if (x->rows == 0) SF_FAIL(cat(role, " x ", x->describe(), " has no rows: expected at least one sample"));
  if (x->cols == 0) SF_FAIL(cat(role, " x ", x->describe(), " has no features: expected at least one column"));
  if (y->cols == 0) SF_FAIL(cat(role, " y ", y->describe(), " has no label values: expected at least one column"));

  const float x_scale = cfg.has_x_scale() ? cfg.x_scale() : 1.0F;
  if (!std::isfinite(x_scale)) {
    SF_FAIL(cat(field, ".x_scale = ", x_scale, ": expected a finite number, e.g. 0.00392156862 (1/255) for bytes"));
  }

  bool ids = false;
  switch (cfg.labels()) {
    case proto::CLASS_IDS:
      if (y->cols != 1) {
        SF_FAIL(cat(field, ".labels = CLASS_IDS but y ", y->describe(), " has ", y->cols,
                    " values per row: expected one class id per row"),
                "use labels: ONE_HOT (or AUTO) for one-hot rows");
      }
      ids = true;
      break;
    case proto::ONE_HOT:
      ids = false;
      break;
    default:
      ids = y->cols == 1;
      break;
  }
  return Dataset(role, ArrayFile(std::move(x)), ArrayFile(std::move(y)), x_scale, ids);
}

Dataset Dataset::in_memory(std::string_view role, ArrayFile x, ArrayFile y, bool labels_are_ids) {
  if (x.rows() != y.rows()) {
    SF_FAIL(cat(role, " x has ", x.rows(), " rows but y has ", y.rows(), ": expected the same number of samples"));
  }
  if (labels_are_ids && y.cols() != 1) {
    SF_FAIL(cat(role, " y ", y.describe(), " holds class ids: expected one value per row"));
  }
  return Dataset(std::string(role), std::move(x), std::move(y), 1.0F, labels_are_ids);
}

std::string Dataset::describe() const { return cat(role_, ": x ", x_.describe(), ", y ", y_.describe()); }

int64_t Dataset::class_id(int64_t row, int64_t num_classes) const {
  const double v = y_.value(row, 0);
  // Negated so that NaN fails too.
  if (!(v >= 0.0 && v < static_cast<double>(num_classes) && v == std::floor(v))) {
    SF_FAIL(cat(y_.path(), ": row ", row, " has class id ", v, ": expected an integer in [0, ", num_classes, ")"),
            cat("the model has ", num_classes, " classes; labels must be 0..", num_classes - 1));
  }
  return static_cast<int64_t>(v);
}

void Dataset::gather(std::span<const int64_t> rows, float* x, float* y, LabelLayout layout, int64_t label_dim) const {
  x_.read_rows(rows, x, x_scale_);
  const auto n = static_cast<int64_t>(rows.size());
  switch (layout) {
    case LabelLayout::kAsIs:
      if (label_dim != label_cols()) {
        SF_FAIL(cat(role_, " y ", y_.path(), " has ", label_cols(), " values per row but the model expects ", label_dim,
                    ": expected matching label widths"));
      }
      y_.read_rows(rows, y, 1.0F);
      return;
    case LabelLayout::kIdsToOneHot:
      if (label_cols() != 1 || label_dim < 1) {
        SF_FAIL(cat(role_, " y ", y_.path(), " has ", label_cols(), " values per row, one-hot width ", label_dim,
                    ": expected one class id per row and a width >= 1"));
      }
      std::fill(y, y + n * label_dim, 0.0F);
      for (int64_t i = 0; i < n; ++i) y[i * label_dim + class_id(rows[static_cast<size_t>(i)], label_dim)] = 1.0F;
      return;
    case LabelLayout::kOneHotToIds:
      if (label_dim != 1) {
        SF_FAIL(cat(role_, ": class ids are written one per row, label width ", label_dim, ": expected 1"));
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[static_cast<size_t>(i)];
        // First maximum wins, as np.argmax.
        int64_t best = 0;
        double best_value = y_.value(r, 0);
        for (int64_t c = 1; c < label_cols(); ++c) {
          const double v = y_.value(r, c);
          if (v > best_value) {
            best = c;
            best_value = v;
          }
        }
        y[i] = static_cast<float>(best);
      }
      return;
  }
}

void Dataset::check_class_ids(int64_t num_classes, int64_t first_row, int64_t row_count) const {
  if (label_cols() != 1) {
    SF_FAIL(cat(role_, " y ", y_.describe(), " has ", label_cols(), " values per row: expected one class id per row"));
  }
  const int64_t end = row_count < 0 ? rows() : std::min(rows(), first_row + row_count);
  for (int64_t r = first_row; r < end; ++r) class_id(r, num_classes);
}

void Dataset::check_values(int64_t first_row, int64_t row_count) const {
  x_.check_values(first_row, row_count);
  y_.check_values(first_row, row_count);
}

}  // namespace shardfit
