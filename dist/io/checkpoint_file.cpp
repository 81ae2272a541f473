// Checkpoint files: encode / decode with the CRC-32C beside the payload. The range checks of a resume, which no
// checksum can replace (a file written wrong, or edited and re-summed), are dist/train/checkpoint_checks.cpp.
#include "dist/io/checkpoint_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dist/io/crc32c.h"
#include "dist/io/history_writer.h"
#include "kernels/error.h"
#include "kernels/model.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

// The layout encode_checkpoint writes, a deterministic CheckpointFile: field 1 (fixed64) the magic, field 2
// (fixed32) the CRC-32C, absent when 0 as proto3 omits zeros, field 3 (length-delimited) the Checkpoint. Read by
// hand rather than by ParseFromArray so that a file cut short, a file of another format version and a damaged one
// are told apart: the remedy differs (another copy, another shardfit, or neither).
constexpr char kFieldOneFixed64Tag = 0x09;         // field 1, wire type 1 (64-bit)
constexpr char kFieldTwoFixed32Tag = 0x15;         // field 2, wire type 5 (32-bit)
constexpr char kFieldThreeBytesTag = 0x1a;         // field 3, wire type 2 (length-delimited)
constexpr std::string_view kMagicName = "SFCKPT";  // the magic's first six bytes; the last two are the version
constexpr size_t kHeaderSize = 9;                  // the tag and the eight bytes of the magic

}  // namespace

std::string encode_checkpoint(const proto::Checkpoint& checkpoint) {
  proto::CheckpointFile file;
  file.set_magic(kCheckpointMagic);
  file.set_checkpoint(serialize_deterministic(checkpoint));
  file.set_crc32c(crc32c(file.checkpoint()));
  return serialize_deterministic(file);
}

namespace {

// The header this shardfit writes: the tag, then the magic (fixed64 is little-endian on the wire, as on x86-64).
std::string current_header() {
  std::string header(kHeaderSize, kFieldOneFixed64Tag);
  std::memcpy(header.data() + 1, &kCheckpointMagic, sizeof kCheckpointMagic);
  return header;
}

// Two version bytes as text when they are printable ('01'), else in hex.
std::string shown_version(std::string_view version) {
  const bool printable =
      std::all_of(version.begin(), version.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)); });
  if (printable) return cat("'", version, "'");
  std::ostringstream hex;
  hex << "0x" << std::hex;
  for (const char ch : version) {
    hex << (static_cast<unsigned>(static_cast<unsigned char>(ch)) >> 4U)
        << (static_cast<unsigned>(static_cast<unsigned char>(ch)) & 15U);
  }
  return hex.str();
}

[[noreturn]] void fail_truncated(const fs::path& path, size_t size, const std::string& missing) {
  SF_FAIL(cat(checkpoint_name(path), " is truncated (", size, " bytes: ", missing,
              "): expected the whole file as fit wrote it"),
          "the write or a copy was cut short: restore it from a copy, or move it away to start afresh");
}

[[noreturn]] void fail_damaged(const fs::path& path, const std::string& detail) {
  SF_FAIL(cat(checkpoint_name(path), " is damaged (", detail, "): expected the file as fit wrote it"),
          "restore it from a copy, or move it away to start afresh");
}

// Neither this format nor another version of it: an earlier shardfit's bare Checkpoint, or another kind of file.
[[noreturn]] void fail_not_a_checkpoint(std::string_view bytes, const fs::path& path) {
  proto::Checkpoint legacy;
  const bool old_format = legacy.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) &&
                          legacy.world_size() > 0 && !legacy.job_fingerprint().empty();
  SF_CHECK(!old_format,
           cat(checkpoint_name(path),
               " was written by an earlier shardfit, without an integrity checksum: expected a "
               "checkpoint with one (it cannot be told from a damaged file)"),
           "move it away or delete it, and start the fit afresh");
  SF_FAIL(cat(checkpoint_name(path), " is not a shardfit checkpoint (", bytes.size(),
              " bytes that do not start with the checkpoint header): expected a checkpoint.pb written by "
              "shardfit fit"));
}

}  // namespace

bool looks_like_checkpoint(std::string_view bytes) {
  return bytes.size() > kMagicName.size() && bytes[0] == kFieldOneFixed64Tag && bytes.substr(1).starts_with(kMagicName);
}

proto::Checkpoint decode_checkpoint(std::string_view bytes, const fs::path& path) {
  const std::string header = current_header();
  const size_t size = bytes.size();
  // 1. Which file: this format, another version of it, the start of one, or something else.
  if (!looks_like_checkpoint(bytes)) {
    if (size >= 2 && std::string_view(header).starts_with(bytes)) {
      fail_truncated(path, size, cat("the checkpoint header alone takes ", kHeaderSize));
    }
    fail_not_a_checkpoint(bytes, path);
  }
  if (size < kHeaderSize) fail_truncated(path, size, cat("the checkpoint header alone takes ", kHeaderSize));
  const std::string_view version = bytes.substr(1 + kMagicName.size(), 2);
  const std::string_view expected_version = std::string_view(header).substr(1 + kMagicName.size(), 2);
  SF_CHECK(version == expected_version,
           cat(checkpoint_name(path), " is a checkpoint of format version ", shown_version(version),
               ": expected version ", shown_version(expected_version), ", the one this shardfit reads and writes"),
           "resume it with the shardfit that wrote it, or move it away to start afresh");

  // 2. The checksum and the payload's length, as the header states them.
  size_t at = kHeaderSize;
  uint32_t stored = 0;
  if (at < size && bytes[at] == kFieldTwoFixed32Tag) {
    if (size - at < 1 + sizeof stored) fail_truncated(path, size, "it ends inside the checksum");
    std::memcpy(&stored, bytes.data() + at + 1, sizeof stored);
    at += 1 + sizeof stored;
  }
  if (at == size) fail_truncated(path, size, "it ends after the header, before the checkpoint itself");
  if (bytes[at] != kFieldThreeBytesTag) {
    std::ostringstream detail;
    detail << "byte " << at << " is 0x" << std::hex << static_cast<unsigned>(static_cast<unsigned char>(bytes[at]))
           << " where the checkpoint's length belongs";
    fail_damaged(path, detail.str());
  }
  ++at;
  uint64_t length = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (at == size) fail_truncated(path, size, "it ends inside the checkpoint's length");
    if (shift > 63) fail_damaged(path, cat("the checkpoint's length at byte ", at, " runs past 10 bytes"));
    const auto byte = static_cast<unsigned char>(bytes[at++]);
    length |= static_cast<uint64_t>(byte & 0x7FU) << shift;
    if ((byte & 0x80U) == 0) break;
  }
  if (length > size - at) {
    fail_truncated(
        path, size,
        cat("its header announces ", length, " bytes of checkpoint from byte ", at, ", ", size - at, " are there"));
  }
  if (length < size - at) {
    fail_damaged(path, cat(size - at - length, " bytes follow the end its header announces, byte ", at + length));
  }

  // 3. The contents against the checksum, then the contents themselves.
  const std::string_view payload = bytes.substr(at);
  const uint32_t actual = crc32c(payload);
  if (actual != stored) {
    std::ostringstream detail;
    detail << std::hex << "stored CRC-32C 0x" << stored << ", contents give 0x" << actual;
    fail_damaged(path, detail.str());
  }
  proto::Checkpoint checkpoint;
  SF_CHECK(checkpoint.ParseFromArray(payload.data(), static_cast<int>(payload.size())),
           cat(checkpoint_name(path),
               ": its checksum matches but the contents are not a Checkpoint: expected one written by "
               "shardfit fit"));
  return checkpoint;
}

std::string read_checkpoint_bytes(const fs::path& path) {
  std::error_code error;
  SF_CHECK(!fs::is_directory(path, error),
           cat(checkpoint_name(path), " is a folder: expected the file written by shardfit fit"),
           "remove or rename the folder; checkpoints are written as <checkpoint_dir>/checkpoint.pb");
  std::ifstream in(path, std::ios::binary);
  SF_CHECK(in.is_open(), cat("cannot read ", checkpoint_name(path), ": ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  SF_CHECK(!in.bad(), cat("cannot read ", checkpoint_name(path), ": ", std::strerror(errno)));
  std::string bytes = buffer.str();
  SF_CHECK(!bytes.empty(), cat(checkpoint_name(path), " is empty: expected a checkpoint written by shardfit fit"),
           "move it away or delete it to start afresh");
  return bytes;
}

void write_checkpoint_file(const fs::path& path, const proto::Checkpoint& checkpoint) {
  const std::string bytes = encode_checkpoint(checkpoint);
  if (path.has_parent_path()) {
    std::error_code error;
    fs::create_directories(path.parent_path(), error);
    SF_CHECK(!error, cat("cannot create the checkpoint folder ", path.parent_path().string(), ": ", error.message()),
             "set outputs.checkpoint_dir to a folder this job may write");
  }
  write_file_atomically(path, bytes);
}

void load_checkpoint_weights(std::string_view bytes, const fs::path& path, Model& model) {
  const proto::Checkpoint checkpoint = decode_checkpoint(bytes, path);
  // The fingerprint opens with the model's architecture (layers, widths, parameter counts): compare that part only,
  // since data, batch and seed need not match for inference.
  SF_CHECK(checkpoint.job_fingerprint().starts_with(model.architecture()),
           cat(checkpoint_name(path), " holds the weights of a different model (", checkpoint.parameters_size(),
               " parameters): expected one written for this job's model (", model.param_count(), " parameters)"),
           "use the job file the checkpoint was trained with");
  SF_CHECK(static_cast<int64_t>(checkpoint.parameters_size()) == model.param_count(),
           cat(checkpoint_name(path), ": field parameters (count) = ", checkpoint.parameters_size(), ": expected ",
               model.param_count(), ", the model's parameter count"));
  check_checkpoint_finite(checkpoint.parameters(), "parameters", path);
  std::copy(checkpoint.parameters().begin(), checkpoint.parameters().end(), model.parameters().begin());
}

}  // namespace shardfit
