// checkpoint.pb on disk: a Checkpoint inside a CheckpointFile (magic + CRC-32C), and the checks that decide
// whether a resume, evaluate or predict may believe it. What goes into a checkpoint is the fit loop's business
// (dist/fit.cpp); this file only writes, reads, verifies and range-checks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proto/shardfit.pb.h"

namespace shardfit {

class Model;

// "SFCKPT02" read as a little-endian 64-bit number: the first field of every checkpoint file. Version 02 keeps the
// callbacks' state as typed messages (Checkpoint.callbacks_state = 13); 01 kept it as a positional byte blob, which
// this shardfit does not read, so such a file is refused as another format version.
inline constexpr uint64_t kCheckpointMagic = 0x323054504B434653ULL;

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

// What the run that resumes expects of a checkpoint; everything the loop would index or divide with.
struct CheckpointExpectations {
  int64_t epochs = 0;        // the run's fit.epochs
  int64_t train_count = 0;   // training samples per epoch
  int64_t global_batch = 0;  // fit.batch_size, all ranks together: with the two above, the ShardPlan of the run
  int world_size = 0;
  std::string fingerprint;  // model + optimizer + data shape summary (fit.cpp's)
  int64_t param_count = 0;
  std::string optimizer_kind;
  std::vector<std::pair<std::string, int64_t>> slots;  // the optimizer's slots: name, value count
  size_t sums_per_rank = 0;                            // loss, metrics..., count
};

// Range checks on every field that drives the loop, after decode_checkpoint's integrity check (a checksum proves
// the file is what was written, not that what was written, or hand-edited and re-summed, makes sense). Each rank's
// saved sample count must be that rank's share of the steps already trained in the epoch (the epoch's loss and
// metrics are divided by them). Errors read "checkpoint 'PATH': field F = V: expected ...".
void check_checkpoint(const proto::Checkpoint& checkpoint, const CheckpointExpectations& expected,
                      const std::filesystem::path& path);

// For evaluate / predict / initial weights: the model's flat parameter buffer from a checkpoint written by fit
// (`bytes` is the file, `path` names it in errors). The model must be the one the checkpoint was written for.
void load_checkpoint_weights(std::string_view bytes, const std::filesystem::path& path, Model& model);

}  // namespace shardfit
