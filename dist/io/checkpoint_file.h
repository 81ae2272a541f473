// checkpoint.pb on disk: a Checkpoint inside a CheckpointFile (magic + CRC-32C), written, read and verified. What
// goes into a checkpoint is the fit loop's business (dist/train/fit.cpp), and whether a resume may believe its
// fields is dist/train/checkpoint_checks.h's; this file only writes, reads and verifies.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/error.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

class Model;

// "SFCKPT02" read as a little-endian 64-bit number: the first field of every checkpoint file. Version 02 keeps the
// callbacks' state as typed messages (Checkpoint.callbacks_state = 13); 01 kept it as a positional byte blob, which
// this shardfit does not read, so such a file is refused as another format version.
inline constexpr uint64_t kCheckpointMagic = 0x323054504B434653ULL;

// The checkpoint file a fit keeps in its checkpoint folder (outputs.checkpoint_dir).
inline std::filesystem::path checkpoint_path(const std::filesystem::path& checkpoint_dir) {
  return checkpoint_dir / "checkpoint.pb";
}

// The bytes of checkpoint.pb for `checkpoint` (deterministic, so equal checkpoints give equal files).
std::string encode_checkpoint(const proto::Checkpoint& checkpoint);
// True when `bytes` start as a checkpoint file of any format version does (field 1's tag, then "SFCKPT"), so that
// decode_checkpoint can say which version a file of another one is.
bool looks_like_checkpoint(std::string_view bytes);
// Verifies the header, the length and the checksum, then parses. Refuses, naming `path` and telling apart: another
// kind of file; a bare checkpoint of an earlier shardfit (no checksum); a checkpoint of another format version
// (naming the version found and the one expected); a truncated one (the header or fewer bytes than the header
// announces); a damaged one (checksum mismatch, or bytes past the announced end). Nothing is range-checked here.
proto::Checkpoint decode_checkpoint(std::string_view bytes, const std::filesystem::path& path);

// The whole file. Errors name the path: a folder, a file that cannot be read, an empty file.
std::string read_checkpoint_bytes(const std::filesystem::path& path);
// Creates the folder and writes `path` atomically (write_file_atomically: a crash leaves the old file or the new).
void write_checkpoint_file(const std::filesystem::path& path, const proto::Checkpoint& checkpoint);

// "checkpoint 'PATH'": how every checkpoint error names the file.
inline std::string checkpoint_name(const std::filesystem::path& path) {
  return cat("checkpoint '", path.string(), "'");
}

// "checkpoint 'P': field F = V: expected E", the form of every error about one field of a checkpoint.
template <typename Value>
[[noreturn]] void fail_checkpoint_field(const std::filesystem::path& path, const std::string& field, const Value& value,
                                        const std::string& expected, const std::string& hint = {}) {
  SF_FAIL(cat(checkpoint_name(path), ": field ", field, " = ", value, ": expected ", expected), hint);
}

// Refuses the first non-finite value of `values` (a repeated field of a checkpoint), naming field[index].
template <typename Values>
void check_checkpoint_finite(const Values& values, const std::string& field, const std::filesystem::path& path) {
  int index = 0;
  for (const auto v : values) {
    if (!std::isfinite(v)) {
      fail_checkpoint_field(
          path, cat(field, "[", index, "]"), v, "finite values",
          "the run had diverged when this checkpoint was written: resume from an earlier one, or start afresh");
    }
    ++index;
  }
}

// For evaluate / predict / initial weights: the model's flat parameter buffer from a checkpoint written by fit
// (`bytes` is the file, `path` names it in errors). The model must be the one the checkpoint was written for.
void load_checkpoint_weights(std::string_view bytes, const std::filesystem::path& path, Model& model);

}  // namespace shardfit
