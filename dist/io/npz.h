// NumPy .npz archives: a ZIP writer of uncompressed (STORED) members, as np.savez writes them, a reader of STORED and
// DEFLATE members (np.savez_compressed; inflated by zlib), and float arrays read out of one. Not a general ZIP
// library: it writes no compressed members and reads no encryption or ZIP64.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shardfit {

// CRC-32 as ZIP computes it (reflected polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF).
uint32_t crc32(std::string_view bytes);

// Builds a ZIP archive in memory, one STORED member per add(), in the order added. Names are stored as given
// (flagged UTF-8 when not ASCII); timestamps are a fixed 1980-01-01 so that the same members give the same bytes.
class ZipWriter {
 public:
  // `shown` names the archive in errors.
  explicit ZipWriter(std::string shown) : shown_(std::move(shown)) {}

  // Throws Error on a repeated or over-long name, and when the archive would need ZIP64 (more than 65535 members
  // or more than 4 GiB in all) rather than writing an archive other readers would misread.
  void add(std::string_view name, std::string_view bytes);
  // Appends the central directory and the end record and returns the archive; the writer is empty afterwards.
  std::string finish();

 private:
  struct Member {
    std::string name;
    uint32_t crc;
    uint32_t bytes;
    uint32_t offset;  // of its local header
  };

  std::string shown_;
  std::string archive_;
  std::vector<Member> members_;
  std::set<std::string, std::less<>> names_;
};

// One member of an archive: `bytes` points into the archive given to read_zip (STORED) or into `inflated`, which
// holds a DEFLATE member's inflated bytes (shared, so the view stays valid when the member is copied or moved).
struct ZipMember {
  std::string name;
  std::string_view bytes;
  std::shared_ptr<const std::string> inflated;
};

// The members of the ZIP archive in `archive`, in central-directory order, each checked against its CRC-32. Sizes
// come from the central directory, so members written with data descriptors (zipfile on an unseekable stream) and
// with ZIP64 local extras (np.savez forces them) read as well. DEFLATE members (np.savez_compressed) are inflated and
// checked like STORED ones. Other compression methods, encryption, split and ZIP64 archives are refused saying so;
// truncated or corrupt archives fail naming `shown` and the problem.
std::vector<ZipMember> read_zip(std::string_view archive, const std::string& shown);

// One array of an .npz, as float.
struct NpzArray {
  std::string key;             // the member name without ".npy"
  std::string dtype;           // as stored: "float32" or "float64" (narrowed to float here)
  std::vector<int64_t> shape;  // () for a 0-d array
  std::vector<float> values;   // C order, whichever order the file stored
};

// Every array of the .npz in `archive`, in archive order. Each member must be a "<key>.npy" holding a float32 or
// float64 array (either byte order, C or Fortran order); keys must be unique. `shown` names the archive in errors.
std::vector<NpzArray> parse_npz(std::string_view archive, const std::string& shown);
// The same for the file at `path` (read whole; errors name the path).
std::vector<NpzArray> read_npz(const std::filesystem::path& path);

}  // namespace shardfit
