// gzip and raw DEFLATE through zlib's inflate (see inflate.h). zlib's avail_in / avail_out are 32-bit, so long
// inputs are fed in pieces.
#include "dist/io/inflate.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/error.h"

namespace shardfit {

namespace {

constexpr size_t kOutputChunk = size_t{4} << 20;  // the pieces handed to the sink
constexpr size_t kInputChunk = size_t{4} << 20;   // the pieces read from the compressed file
constexpr size_t kMaxFeed = std::numeric_limits<uInt>::max();

constexpr const char* kRefetchHint =
    "the file was probably cut short or damaged while copying or downloading; "
    "fetch it again (gzip -t FILE tests a gzip file)";

// A z_stream that ends itself however the function leaves.
class Inflater {
 public:
  // window_bits: 15 + 16 for gzip, -15 for raw DEFLATE (zlib.h, inflateInit2).
  Inflater(int window_bits, const std::string& shown) {
    if (inflateInit2(&stream_, window_bits) != Z_OK) {
      SF_FAIL(cat(shown, ": zlib could not start inflating (", stream_.msg != nullptr ? stream_.msg : "no memory",
                  "): expected a working zlib"));
    }
  }
  ~Inflater() { inflateEnd(&stream_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  z_stream& stream() { return stream_; }
  const char* message() const { return stream_.msg != nullptr ? stream_.msg : "no message"; }

 private:
  z_stream stream_{};
};

}  // namespace

bool is_gzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

int64_t inflate_gzip(int64_t gz_bytes, const ReadCompressed& read, const std::string& shown, const InflatedSink& sink) {
  const auto total = static_cast<size_t>(gz_bytes);
  std::array<char, 2> magic{};
  if (total >= 2) read(0, magic.data(), 2);
  if (!is_gzip({magic.data(), total >= 2 ? size_t{2} : size_t{0}})) {
    SF_FAIL(cat(shown, ": not a gzip file (", total < 2 ? "too short" : "wrong magic bytes",
                "): expected the gzip magic 0x1f 0x8b"),
            "a name ending in .gz says the file is gzip-compressed; rename an uncompressed file without .gz");
  }
  Inflater inflater(15 + 16, shown);
  z_stream& z = inflater.stream();
  std::vector<char> in(std::min(kInputChunk, total));
  std::vector<char> out(kOutputChunk);
  size_t consumed = 0;  // input bytes read into `in` so far
  int64_t inflated = 0;
  int members = 1;
  while (true) {
    if (z.avail_in == 0 && consumed < total) {
      const size_t feed = std::min(in.size(), total - consumed);
      read(static_cast<int64_t>(consumed), in.data(), feed);
      z.next_in = reinterpret_cast<Bytef*>(in.data());
      z.avail_in = static_cast<uInt>(feed);
      consumed += feed;
    }
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int status = inflate(&z, Z_NO_FLUSH);
    const size_t produced = out.size() - z.avail_out;
    const size_t at = consumed - z.avail_in;  // compressed bytes zlib has read
    if (status == Z_DATA_ERROR || status == Z_NEED_DICT || status == Z_MEM_ERROR || status == Z_STREAM_ERROR) {
      SF_FAIL(cat(shown, ": corrupt gzip data (zlib: ", inflater.message(), ") in member ", members,
                  " near compressed byte ", at, " of ", total, ", after ", inflated + static_cast<int64_t>(produced),
                  " inflated bytes: expected a valid gzip stream"),
              kRefetchHint);
    }
    if (produced > 0) {
      sink(out.data(), produced);
      inflated += static_cast<int64_t>(produced);
    }
    if (status == Z_STREAM_END) {
      if (at == total) return inflated;
      // gzip allows several members one after another (`cat a.gz b.gz`); anything else after the end is damage.
      std::array<char, 2> next{};
      const size_t peek = std::min<size_t>(2, total - at);
      read(static_cast<int64_t>(at), next.data(), peek);
      if (!is_gzip({next.data(), peek})) {
        SF_FAIL(cat(shown, ": ", total - at, " bytes after the end of the gzip stream at byte ", at,
                    ": expected the file to end there, or another gzip member (0x1f 0x8b)"),
                kRefetchHint);
      }
      if (inflateReset(&z) != Z_OK) SF_FAIL(cat(shown, ": zlib could not restart for the next gzip member"));
      ++members;
      continue;
    }
    // Every input byte used and nothing more to come out: the stream stops before its end marker.
    if (z.avail_in == 0 && consumed == total && produced == 0) {
      SF_FAIL(cat(shown, ": truncated gzip file: the stream stops after ", total, " compressed bytes (", inflated,
                  " inflated) without its end marker and checksum: expected a whole gzip file"),
              kRefetchHint);
    }
  }
}

int64_t inflate_gzip(std::string_view gz, const std::string& shown, const InflatedSink& sink) {
  return inflate_gzip(
      static_cast<int64_t>(gz.size()),
      [&](int64_t offset, char* dst, size_t bytes) { std::memcpy(dst, gz.data() + offset, bytes); }, shown, sink);
}

std::string inflate_raw(std::string_view deflated, int64_t inflated_bytes, const std::string& shown) {
  Inflater inflater(-15, shown);
  z_stream& z = inflater.stream();
  std::string out(static_cast<size_t>(inflated_bytes), '\0');
  size_t consumed = 0, written = 0;
  while (true) {
    if (z.avail_in == 0 && consumed < deflated.size()) {
      const size_t feed = std::min(kMaxFeed, deflated.size() - consumed);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(deflated.data() + consumed));
      z.avail_in = static_cast<uInt>(feed);
      consumed += feed;
    }
    // One byte of room past the expected size, so a member that inflates to more than it claims is caught rather
    // than cut: zlib then fills that byte and the check below fails.
    char spare = 0;
    const bool into_spare = written == out.size();
    const size_t room = into_spare ? 1 : std::min(kMaxFeed, out.size() - written);
    z.next_out = reinterpret_cast<Bytef*>(into_spare ? &spare : out.data() + written);
    z.avail_out = static_cast<uInt>(room);
    const int status = inflate(&z, Z_NO_FLUSH);
    const size_t produced = room - z.avail_out;
    if (status == Z_DATA_ERROR || status == Z_NEED_DICT || status == Z_MEM_ERROR || status == Z_STREAM_ERROR) {
      SF_FAIL(cat(shown, " has corrupt DEFLATE data (zlib: ", inflater.message(), ") near compressed byte ",
                  consumed - z.avail_in, " of ", deflated.size(), ": expected a valid compressed member"),
              "the archive was probably damaged or cut short; write or fetch it again");
    }
    if (into_spare && produced > 0) {
      SF_FAIL(cat(shown, " inflates to more than the ", inflated_bytes,
                  " bytes its ZIP directory entry says: expected the sizes to agree"),
              "the archive was probably damaged; write or fetch it again");
    }
    written += produced;
    if (status == Z_STREAM_END) break;
    if (z.avail_in == 0 && consumed == deflated.size() && produced == 0) {
      SF_FAIL(cat(shown, " is truncated: its DEFLATE data (", deflated.size(), " bytes) ends after ", written, " of ",
                  inflated_bytes, " inflated bytes: expected the whole compressed member"),
              "the archive was probably damaged or cut short; write or fetch it again");
    }
  }
  if (written != out.size()) {
    SF_FAIL(cat(shown, " inflates to ", written, " bytes but its ZIP directory entry says ", inflated_bytes,
                ": expected the sizes to agree"),
            "the archive was probably damaged; write or fetch it again");
  }
  return out;
}

}  // namespace shardfit
