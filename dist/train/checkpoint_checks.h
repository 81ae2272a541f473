// Whether a resume may believe a checkpoint: every field that drives the loop, checked against the run that
// resumes, after dist/io/checkpoint_file.h has verified the file's integrity.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "proto/shardfit.pb.h"

namespace shardfit {

// What the run that resumes expects of a checkpoint; everything the loop would index or divide with.
struct CheckpointExpectations {
  int64_t epochs = 0;        // the run's fit.epochs
  int64_t train_count = 0;   // training samples per epoch
  int64_t global_batch = 0;  // fit.batch_size, all ranks together: with train_count, the ShardPlan of any rank count
  std::string fingerprint;   // model + optimizer + data shape summary (fit.cpp's)
  int64_t param_count = 0;
  int64_t state_count = 0;  // of param_count, the non-trainable state (moving statistics)
  std::string optimizer_kind;
  std::vector<std::pair<std::string, int64_t>> slots;  // the optimizer's slots: name, value count
  size_t sums_per_rank = 0;                            // loss, metrics..., count
};

// Range checks on every field that drives the loop, after decode_checkpoint's integrity check (a checksum proves
// the file is what was written, not that what was written, or hand-edited and re-summed, makes sense). The rank
// count of the run that resumes may differ from the checkpoint's world_size: each saved rank's sample count must be
// that rank's share, among the ranks that wrote it, of the steps already trained in the epoch (the epoch's loss and
// metrics are divided by them). Errors read "checkpoint 'PATH': field F = V: expected ...".
void check_checkpoint(const proto::Checkpoint& checkpoint, const CheckpointExpectations& expected,
                      const std::filesystem::path& path);

}  // namespace shardfit
