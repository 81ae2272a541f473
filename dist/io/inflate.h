// DEFLATE decompression through zlib: whole gzip files (data files such as train-images-idx3-ubyte.gz) and the raw
// DEFLATE members of an .npz written by np.savez_compressed. Not a compressor and not a general archive reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace shardfit {

// True when bytes start with the gzip magic 0x1f 0x8b.
bool is_gzip(std::string_view bytes);

// Reads `bytes` bytes of the compressed input starting at `offset` into dst (all of them: the caller knows the size).
using ReadCompressed = std::function<void(int64_t offset, char* dst, size_t bytes)>;
// Receives the inflated output in order, in pieces of at most a few MiB.
using InflatedSink = std::function<void(const char* data, size_t bytes)>;

// Inflates a gzip file of `gz_bytes` bytes (one member, or several concatenated as `cat a.gz b.gz` makes), read
// through `read` a few MiB at a time, handing the output to `sink`. zlib checks every member's CRC-32 and length.
// A corrupt, truncated or trailing-garbage stream fails naming `shown`, the compressed byte where it went wrong and
// what was expected; what read or sink throw propagates. Returns the inflated byte count.
int64_t inflate_gzip(int64_t gz_bytes, const ReadCompressed& read, const std::string& shown, const InflatedSink& sink);
// The same for a gzip file held in memory.
int64_t inflate_gzip(std::string_view gz, const std::string& shown, const InflatedSink& sink);

// Inflates one raw DEFLATE stream (a ZIP member with method 8) that must give exactly `inflated_bytes` bytes;
// `shown` names the member in errors ("w.npz: member 'dense_0/kernel.npy'").
std::string inflate_raw(std::string_view deflated, int64_t inflated_bytes, const std::string& shown);

}  // namespace shardfit
