// ZIP writing and reading for .npz files, after the ZIP File Format Specification (PKWARE APPNOTE.TXT): local file
// headers, the central directory and the end record; STORED members written, STORED and DEFLATE members read. Then
// .npy members turned into floats.
#include "dist/io/npz.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "dist/io/dataset.h"
#include "dist/io/format.h"
#include "dist/io/inflate.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;    // "PK\3\4"
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;  // "PK\1\2"
constexpr uint32_t kEndRecordSignature = 0x06054b50;      // "PK\5\6"
constexpr int64_t kLocalHeaderBytes = 30;
constexpr int64_t kCentralHeaderBytes = 46;
constexpr int64_t kEndRecordBytes = 22;
constexpr int64_t kMaxCommentBytes = 0xFFFF;
// 32-bit fields hold at most this; the value itself is the ZIP64 marker ("see the extra field"), so stop below it.
constexpr int64_t kMaxZipBytes = 0xFFFFFFFE;
constexpr int64_t kMaxMembers = 0xFFFE;  // 0xFFFF is the ZIP64 marker in the end record

constexpr uint16_t kVersion20 = 20;  // 2.0: the version that introduced STORED + DEFLATE; all we need
constexpr uint16_t kMadeByUnix = (3 << 8) | kVersion20;
constexpr uint16_t kFlagEncrypted = 1 << 0;
constexpr uint16_t kFlagUtf8Name = 1 << 11;
constexpr uint16_t kMethodStored = 0;
constexpr uint16_t kMethodDeflated = 8;
// 1980-01-01 00:00:00, the earliest DOS time: a fixed stamp keeps saved weights byte-for-byte reproducible.
constexpr uint16_t kDosTime = 0;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr uint32_t kRegularFileMode = 0100644U << 16;  // Unix mode in the high half: unzip extracts it as rw-r--r--

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

void put_u16(std::string& out, uint32_t v) {
  out += static_cast<char>(v & 0xFF);
  out += static_cast<char>((v >> 8) & 0xFF);
}

void put_u32(std::string& out, uint32_t v) {
  put_u16(out, v & 0xFFFF);
  put_u16(out, v >> 16);
}

// Little-endian fields at `at`; callers have checked that they lie inside `bytes`.
uint16_t get_u16(std::string_view bytes, int64_t at) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data()) + at;
  return static_cast<uint16_t>(b[0] | (b[1] << 8));
}

uint32_t get_u32(std::string_view bytes, int64_t at) {
  return static_cast<uint32_t>(get_u16(bytes, at)) | (static_cast<uint32_t>(get_u16(bytes, at + 2)) << 16);
}

bool is_ascii(std::string_view s) {
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0x80) != 0) return false;
  }
  return true;
}

constexpr const char* kZip64Hint = "split the weights into several archives, or save with np.savez in Python";

// ------------------------------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------------------------------

// The end-of-central-directory record: searched backwards, since an archive comment (up to 64 KiB) may follow it.
// A candidate must account for the bytes after it exactly, so a comment that happens to hold "PK\5\6" is skipped.
int64_t find_end_record(std::string_view archive, const std::string& shown) {
  const auto bytes = static_cast<int64_t>(archive.size());
  const int64_t lowest = std::max<int64_t>(0, bytes - kEndRecordBytes - kMaxCommentBytes);
  for (int64_t at = bytes - kEndRecordBytes; at >= lowest; --at) {
    if (get_u32(archive, at) == kEndRecordSignature && at + kEndRecordBytes + get_u16(archive, at + 20) == bytes) {
      return at;
    }
  }
  if (archive.substr(0, 6) == "\x93NUMPY") {
    SF_FAIL(cat(shown, ": a .npy file, not an .npz archive: expected a ZIP archive of .npy files"),
            "np.savez(path, **arrays) writes an .npz; np.save writes a single .npy");
  }
  if (bytes >= 4 && get_u32(archive, 0) == kLocalHeaderSignature) {
    SF_FAIL(cat(shown, ": truncated ZIP archive (", bytes, " bytes, no end-of-central-directory record)",
                ": expected a whole .npz file"),
            "the file was probably cut short while being written or copied; write or fetch it again");
  }
  SF_FAIL(cat(shown, ": not a ZIP archive (",
              bytes < kEndRecordBytes ? "too short" : "no end-of-central-directory record",
              "): expected an .npz file written by np.savez or shardfit"));
}

[[noreturn]] void corrupt(const std::string& shown, const std::string& what) {
  SF_FAIL(cat(shown, ": corrupt ZIP archive (", what, "): expected an .npz file written by np.savez or shardfit"),
          "the file was probably damaged or cut short; write or fetch it again");
}

}  // namespace

uint32_t crc32(std::string_view bytes) {
  uint32_t c = 0xFFFFFFFFU;
  for (const char b : bytes) c = kCrcTable[(c ^ static_cast<unsigned char>(b)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

void ZipWriter::add(std::string_view name, std::string_view bytes) {
  SF_CHECK(!name.empty() && name.size() <= 0xFFFF,
           cat(shown_, ": ZIP member name of ", name.size(), " bytes: expected 1 to 65535"));
  SF_CHECK(!names_.contains(name), cat(shown_, ": ZIP member '", name, "' added twice: expected unique names"));
  SF_CHECK(static_cast<int64_t>(members_.size()) < kMaxMembers,
           cat(shown_, ": more than ", kMaxMembers, " members: ZIP64 archives are not supported"), kZip64Hint);
  const auto offset = static_cast<int64_t>(archive_.size());
  const int64_t end =
      offset + kLocalHeaderBytes + static_cast<int64_t>(name.size()) + static_cast<int64_t>(bytes.size());
  // Checked before anything is copied, so an oversized member costs nothing.
  SF_CHECK(static_cast<int64_t>(bytes.size()) <= kMaxZipBytes && end <= kMaxZipBytes,
           cat(shown_, ": member '", name, "' (", bytes.size(), " bytes) would take the archive past 4 GiB (", end,
               " bytes): ZIP64 archives are not supported"),
           kZip64Hint);

  const uint32_t crc = crc32(bytes);
  const uint16_t flags = is_ascii(name) ? 0 : kFlagUtf8Name;
  archive_.reserve(static_cast<size_t>(end));
  put_u32(archive_, kLocalHeaderSignature);
  put_u16(archive_, kVersion20);
  put_u16(archive_, flags);
  put_u16(archive_, kMethodStored);
  put_u16(archive_, kDosTime);
  put_u16(archive_, kDosDate);
  put_u32(archive_, crc);
  put_u32(archive_, static_cast<uint32_t>(bytes.size()));  // compressed size: STORED, the same
  put_u32(archive_, static_cast<uint32_t>(bytes.size()));
  put_u16(archive_, static_cast<uint32_t>(name.size()));
  put_u16(archive_, 0);  // no extra field
  archive_ += name;
  archive_ += bytes;
  members_.push_back({std::string(name), crc, static_cast<uint32_t>(bytes.size()), static_cast<uint32_t>(offset)});
  names_.emplace(name);
}

std::string ZipWriter::finish() {
  const auto directory_offset = static_cast<int64_t>(archive_.size());
  int64_t directory_bytes = 0;
  for (const Member& m : members_) directory_bytes += kCentralHeaderBytes + static_cast<int64_t>(m.name.size());
  SF_CHECK(directory_offset + directory_bytes + kEndRecordBytes <= kMaxZipBytes,
           cat(shown_, ": the archive would be ", directory_offset + directory_bytes + kEndRecordBytes,
               " bytes, past 4 GiB: ZIP64 archives are not supported"),
           kZip64Hint);
  for (const Member& m : members_) {
    put_u32(archive_, kCentralHeaderSignature);
    put_u16(archive_, kMadeByUnix);
    put_u16(archive_, kVersion20);
    put_u16(archive_, is_ascii(m.name) ? 0 : kFlagUtf8Name);
    put_u16(archive_, kMethodStored);
    put_u16(archive_, kDosTime);
    put_u16(archive_, kDosDate);
    put_u32(archive_, m.crc);
    put_u32(archive_, m.bytes);
    put_u32(archive_, m.bytes);
    put_u16(archive_, static_cast<uint32_t>(m.name.size()));
    put_u16(archive_, 0);  // extra field
    put_u16(archive_, 0);  // comment
    put_u16(archive_, 0);  // disk number
    put_u16(archive_, 0);  // internal attributes
    put_u32(archive_, kRegularFileMode);
    put_u32(archive_, m.offset);
    archive_ += m.name;
  }
  put_u32(archive_, kEndRecordSignature);
  put_u16(archive_, 0);  // this disk
  put_u16(archive_, 0);  // the disk where the central directory starts
  put_u16(archive_, static_cast<uint32_t>(members_.size()));
  put_u16(archive_, static_cast<uint32_t>(members_.size()));
  put_u32(archive_, static_cast<uint32_t>(directory_bytes));
  put_u32(archive_, static_cast<uint32_t>(directory_offset));
  put_u16(archive_, 0);  // comment
  members_.clear();
  names_.clear();
  return std::exchange(archive_, std::string());
}

std::vector<ZipMember> read_zip(std::string_view archive, const std::string& shown) {
  const int64_t end_record = find_end_record(archive, shown);
  const uint16_t this_disk = get_u16(archive, end_record + 4);
  const uint16_t directory_disk = get_u16(archive, end_record + 6);
  const uint16_t count_here = get_u16(archive, end_record + 8);
  const uint16_t count = get_u16(archive, end_record + 10);
  const uint32_t directory_bytes = get_u32(archive, end_record + 12);
  const uint32_t directory_offset = get_u32(archive, end_record + 16);
  if (count == 0xFFFF || directory_bytes == 0xFFFFFFFFU || directory_offset == 0xFFFFFFFFU) {
    SF_FAIL(cat(shown, ": a ZIP64 archive (over 4 GiB or 65535 members): not supported"), kZip64Hint);
  }
  if (this_disk != 0 || directory_disk != 0 || count_here != count) {
    SF_FAIL(cat(shown, ": a split (multi-disk) ZIP archive: expected a single .npz file"));
  }
  if (static_cast<int64_t>(directory_offset) + directory_bytes > end_record) {
    corrupt(shown, cat("the central directory (", directory_bytes, " bytes at offset ", directory_offset,
                       ") runs past the end record at offset ", end_record));
  }

  std::vector<ZipMember> members;
  members.reserve(count);
  int64_t at = directory_offset;
  const int64_t directory_end = static_cast<int64_t>(directory_offset) + directory_bytes;
  for (int i = 0; i < count; ++i) {
    if (at + kCentralHeaderBytes > directory_end || get_u32(archive, at) != kCentralHeaderSignature) {
      corrupt(shown, cat("central directory entry ", i, " of ", count, " at offset ", at, " is missing or damaged"));
    }
    const uint16_t flags = get_u16(archive, at + 8);
    const uint16_t method = get_u16(archive, at + 10);
    const uint32_t crc = get_u32(archive, at + 16);
    const uint32_t stored_bytes = get_u32(archive, at + 20);
    const uint32_t original_bytes = get_u32(archive, at + 24);
    const uint16_t name_bytes = get_u16(archive, at + 28);
    const int64_t entry_bytes =
        kCentralHeaderBytes + name_bytes + get_u16(archive, at + 30) + get_u16(archive, at + 32);
    const uint32_t local_offset = get_u32(archive, at + 42);
    if (at + entry_bytes > directory_end) {
      corrupt(shown, cat("central directory entry ", i, " runs past the directory"));
    }
    std::string name(archive.substr(static_cast<size_t>(at + kCentralHeaderBytes), name_bytes));
    at += entry_bytes;

    if ((flags & kFlagEncrypted) != 0) {
      SF_FAIL(cat(shown, ": member '", name, "' is encrypted: expected an unencrypted .npz"));
    }
    if (method != kMethodStored && method != kMethodDeflated) {
      SF_FAIL(cat(shown, ": member '", name, "' uses ZIP compression method ", method,
                  ": expected STORED (0) or DEFLATE (8), as np.savez and np.savez_compressed write"),
              "save the arrays with np.savez or np.savez_compressed");
    }
    if (stored_bytes == 0xFFFFFFFFU || original_bytes == 0xFFFFFFFFU || local_offset == 0xFFFFFFFFU) {
      SF_FAIL(cat(shown, ": member '", name, "' is a ZIP64 entry (over 4 GiB): not supported"), kZip64Hint);
    }
    if (method == kMethodStored && stored_bytes != original_bytes) {
      corrupt(shown, cat("member '", name, "' is STORED but its sizes differ: ", stored_bytes, " vs ", original_bytes));
    }

    // The local header repeats the name and may carry its own extra field (np.savez writes a ZIP64 one, with the
    // 32-bit sizes set to 0xFFFFFFFF) or, with flag bit 3 (a data descriptor after the data: zipfile on an
    // unseekable stream), zero CRC and sizes. Only its lengths are used; CRC and sizes come from the directory.
    const int64_t local = local_offset;
    if (local + kLocalHeaderBytes > directory_offset || get_u32(archive, local) != kLocalHeaderSignature) {
      corrupt(shown, cat("the local header of member '", name, "' at offset ", local, " is missing or damaged"));
    }
    const uint16_t local_name_bytes = get_u16(archive, local + 26);
    const int64_t data = local + kLocalHeaderBytes + local_name_bytes + get_u16(archive, local + 28);
    if (data + stored_bytes > directory_offset) {
      corrupt(shown, cat("member '", name, "' (", stored_bytes, " bytes at offset ", data,
                         ") runs into the central directory at offset ", directory_offset));
    }
    if (get_u16(archive, local + 8) != method ||
        archive.substr(static_cast<size_t>(local + kLocalHeaderBytes), local_name_bytes) != name) {
      corrupt(shown, cat("the local header of member '", name, "' does not match its central directory entry"));
    }
    std::string_view bytes = archive.substr(static_cast<size_t>(data), stored_bytes);
    std::shared_ptr<const std::string> inflated;
    if (method == kMethodDeflated) {
      inflated =
          std::make_shared<const std::string>(inflate_raw(bytes, original_bytes, cat(shown, ": member '", name, "'")));
      bytes = *inflated;
    }
    const uint32_t actual_crc = crc32(bytes);
    if (actual_crc != crc) {
      corrupt(shown, cat("member '", name, "' fails its CRC-32 check: the directory says ", crc, ", the data gives ",
                         actual_crc));
    }
    members.push_back({std::move(name), bytes, std::move(inflated)});
  }
  return members;
}

// ------------------------------------------------------------------------------------------------------------------
// .npy members
// ------------------------------------------------------------------------------------------------------------------

namespace {

template <typename T>
T load_element(const char* p, bool swap) {
  std::array<char, sizeof(T)> raw;
  std::memcpy(raw.data(), p, sizeof(T));
  if (swap) std::reverse(raw.begin(), raw.end());
  T v;
  std::memcpy(&v, raw.data(), sizeof(T));
  return v;
}

// Copies an array's values into `out` in C order. The file keeps the last dimension contiguous (C order) or, for
// np.savez of a transposed array, the first (Fortran order). The offset in the file is kept up to date as the C
// index ticks over, rather than divided out per element.
void copy_in_c_order(const char* data, const std::vector<int64_t>& shape, bool fortran_order, bool is_float32,
                     bool swap, float* out) {
  const size_t ndims = shape.size();
  const int64_t element_bytes = is_float32 ? 4 : 8;
  std::vector<int64_t> file_strides(ndims, 1);
  std::vector<int64_t> index(ndims, 0);
  int64_t count = 1;
  for (const int64_t d : shape) count *= d;  // checked for overflow by the caller
  if (fortran_order) {
    for (size_t d = 1; d < ndims; ++d) file_strides[d] = file_strides[d - 1] * shape[d - 1];
  } else {
    for (size_t d = ndims; d-- > 1;) file_strides[d - 1] = file_strides[d] * shape[d];
  }
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    const char* p = data + offset * element_bytes;
    out[i] = is_float32 ? load_element<float>(p, swap) : static_cast<float>(load_element<double>(p, swap));
    for (size_t d = ndims; d-- > 0;) {
      offset += file_strides[d];
      if (++index[d] < shape[d]) break;
      offset -= file_strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

NpzArray read_member(const ZipMember& member, const std::string& shown) {
  constexpr std::string_view kSuffix = ".npy";
  const std::string where = cat(shown, ": member '", member.name, "'");
  if (member.name.size() <= kSuffix.size() || !member.name.ends_with(kSuffix)) {
    SF_FAIL(cat(where, " is not a .npy file: expected only '<key>.npy' members, as np.savez writes"));
  }
  NpzArray array;
  array.key = member.name.substr(0, member.name.size() - kSuffix.size());
  const NpyHeader header = parse_npy_header(member.bytes, where);
  if (header.dtype != "float32" && header.dtype != "float64") {
    SF_FAIL(cat(where, " holds ", header.dtype, " values: expected float32 or float64"),
            "convert it first, e.g. a.astype(np.float32)");
  }
  array.dtype = header.dtype;
  array.shape = header.shape;

  int64_t count = 1;
  for (const int64_t d : array.shape) {
    if (__builtin_mul_overflow(count, d, &count)) {
      SF_FAIL(cat(where, ": shape ", shape_text(array.shape), " is too large: expected fewer than 2^63 values"));
    }
  }
  const int64_t element_bytes = header.dtype == "float32" ? 4 : 8;
  const auto available = static_cast<int64_t>(member.bytes.size()) - header.data_offset;
  if (count > available / element_bytes) {
    SF_FAIL(cat(where, " is truncated: its header says ", header.dtype, " ", shape_text(array.shape), ", ", count,
                " values, but only ", available, " bytes follow the header: expected ", element_bytes,
                " bytes per value"));
  }

  array.values.resize(static_cast<size_t>(count));
  const char* data = member.bytes.data() + header.data_offset;
  if (count == 0) return array;  // an empty array: nothing to copy (and memcpy must not see its null data())
  if (header.dtype == "float32" && !header.swap_bytes && !header.fortran_order) {
    std::memcpy(array.values.data(), data, static_cast<size_t>(count) * sizeof(float));
    return array;
  }
  copy_in_c_order(data, array.shape, header.fortran_order, header.dtype == "float32", header.swap_bytes,
                  array.values.data());
  return array;
}

}  // namespace

std::vector<NpzArray> parse_npz(std::string_view archive, const std::string& shown) {
  std::vector<NpzArray> arrays;
  std::set<std::string> keys;
  for (const ZipMember& member : read_zip(archive, shown)) {
    NpzArray array = read_member(member, shown);
    if (!keys.insert(array.key).second) {
      SF_FAIL(cat(shown, ": key '", array.key, "' appears twice: expected unique keys"));
    }
    arrays.push_back(std::move(array));
  }
  return arrays;
}

std::vector<NpzArray> read_npz(const std::filesystem::path& path) {
  const std::string shown = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) SF_FAIL(cat(shown, " is a directory: expected an .npz file"));
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int err = errno;
    SF_FAIL(cat("cannot open .npz file ", shown, ": ", std::strerror(err)));
  }
  std::string bytes;
  std::array<char, 1 << 16> buffer;
  for (size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), file)) > 0;) bytes.append(buffer.data(), n);
  const bool failed = std::ferror(file) != 0;
  const int err = errno;
  std::fclose(file);
  if (failed) SF_FAIL(cat("cannot read .npz file ", shown, ": ", std::strerror(err)));
  return parse_npz(bytes, shown);
}

}  // namespace shardfit
