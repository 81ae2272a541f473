// The range checks of a resume: every field of a checkpoint that drives the loop, against the run that resumes.
//
// Why, beside the file's checksum (dist/io/checkpoint_file.h): the checksum catches what the disk or a copy did;
// these catch what no checksum can, a file that was written wrong or edited and re-summed. Either way the loop
// would otherwise index past its buffers or train on NaN without a word.
#include "dist/train/checkpoint_checks.h"

#include <algorithm>
#include <cmath>

#include "dist/io/checkpoint_file.h"
#include "dist/sharding.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

// The epoch's loss and metrics are the saved sums divided by the saved counts: counts that do not match the steps
// already trained (zeroed by hand, say) would give a NaN or a wrong epoch average with exit 0. Each rank's share is
// the one of the rank count that wrote the checkpoint (a resume on another rank count redistributes the sums only
// after these checks). step_in_epoch and world_size are already known to be in range here, and every count a whole
// number >= 0.
void check_sample_counts(const proto::Checkpoint& c, const CheckpointExpectations& e, const fs::path& path) {
  if (e.sums_per_rank == 0) return;
  const int saved_world = c.world_size();
  const int64_t steps_done = c.step_in_epoch();
  const std::string steps_text = steps_done == 0
                                     ? cat("no step of epoch ", c.epoch() + 1, " trained yet")
                                     : cat("steps 1 to ", steps_done, " of epoch ", c.epoch() + 1, " trained (",
                                           e.train_count, " samples per epoch, batch_size ", e.global_batch, ")");
  const char* hint = "the file was edited or written wrong: restore it from a copy, or move it away to start afresh";
  const auto count_at = [&](int rank) {
    return c.rank_epoch_sums(static_cast<int>((static_cast<size_t>(rank) + 1) * e.sums_per_rank - 1));
  };
  double total = 0.0;
  for (int r = 0; r < saved_world; ++r) total += count_at(r);
  // steps_done <= steps, so steps_done * global_batch < train_count + global_batch: no overflow.
  const int64_t expected_total = std::min(steps_done * e.global_batch, e.train_count);
  if (total != static_cast<double>(expected_total)) {
    fail_checkpoint_field(path, cat("rank_epoch_sums (sample counts of ranks 0 to ", saved_world - 1, ", summed)"),
                          total, cat(expected_total, ", the samples of ", steps_text), hint);
  }
  for (int r = 0; r < saved_world; ++r) {
    const int64_t expected =
        ShardPlan(e.train_count, e.global_batch, saved_world, r).samples_in_first_steps(steps_done);
    if (count_at(r) != static_cast<double>(expected)) {
      fail_checkpoint_field(path, cat("rank_epoch_sums[", (static_cast<size_t>(r) + 1) * e.sums_per_rank - 1, "]"),
                            count_at(r), cat(expected, ", rank ", r, "'s share of the samples of ", steps_text), hint);
    }
  }
}

}  // namespace

void check_checkpoint(const proto::Checkpoint& c, const CheckpointExpectations& e, const fs::path& path) {
  SF_CHECK(c.job_fingerprint() == e.fingerprint,
           cat(checkpoint_name(path),
               " belongs to a different job (model, loss, optimizer, data, batch size or seed changed)"),
           "delete the checkpoint directory to start afresh, or resume with the original job");

  // Where the loop continues.
  if (c.epoch() < 0 || c.epoch() > e.epochs) {
    fail_checkpoint_field(path, "epoch", c.epoch(), cat("epochs completed, 0 to ", e.epochs, " (the run's epochs)"),
                          c.epoch() > e.epochs ? "raise --epochs to continue past the epochs already trained" : "");
  }
  const int64_t steps_per_epoch = ShardPlan(e.train_count, e.global_batch, 1, 0).steps();  // any rank count's
  const int64_t last_step = c.epoch() == e.epochs ? 0 : steps_per_epoch;
  if (c.step_in_epoch() < 0 || c.step_in_epoch() > last_step) {
    fail_checkpoint_field(path, "step_in_epoch", c.step_in_epoch(),
                          cat("steps of epoch ", c.epoch() + 1, " completed, 0 to ", last_step, " (", steps_per_epoch,
                              " steps per epoch)"));
  }
  // epoch <= epochs and step <= steps: the product fits, as the run itself counts its steps in int64.
  const int64_t global_step = c.epoch() * steps_per_epoch + c.step_in_epoch();
  if (c.global_step() != global_step) {
    fail_checkpoint_field(path, "global_step", c.global_step(),
                          cat(global_step, " (epoch ", c.epoch(), " x ", steps_per_epoch, " steps + step_in_epoch ",
                              c.step_in_epoch(), ")"));
  }
  if (c.history().epochs_size() > c.epoch()) {
    fail_checkpoint_field(path, "history.epochs (records)", c.history().epochs_size(),
                          cat("at most one per completed epoch (", c.epoch(), ")"));
  }

  // The model's state.
  if (static_cast<int64_t>(c.parameters_size()) != e.param_count) {
    fail_checkpoint_field(path, "parameters (count)", c.parameters_size(),
                          e.state_count == 0
                              ? cat(e.param_count, ", the model's parameter count")
                              : cat(e.param_count, ", the model's parameter count (", e.param_count - e.state_count,
                                    " trainable + ", e.state_count, " non-trainable)"));
  }
  check_checkpoint_finite(c.parameters(), "parameters", path);
  const proto::OptimizerState& o = c.optimizer();
  if (o.kind() != e.optimizer_kind)
    fail_checkpoint_field(path, "optimizer.kind", o.kind(), cat("'", e.optimizer_kind, "'"));
  if (o.iterations() < 0 || o.iterations() > c.global_step()) {
    fail_checkpoint_field(path, "optimizer.iterations", o.iterations(),
                          cat("0 to ", c.global_step(), " (the steps trained, global_step)"));
  }
  if (!std::isfinite(o.learning_rate()) || o.learning_rate() < 0.0F) {
    fail_checkpoint_field(path, "optimizer.learning_rate", o.learning_rate(), "a finite number >= 0");
  }
  if (o.slots_size() != static_cast<int>(e.slots.size())) {
    fail_checkpoint_field(path, "optimizer.slots (count)", o.slots_size(),
                          cat(e.slots.size(), " for ", e.optimizer_kind));
  }
  for (int i = 0; i < o.slots_size(); ++i) {
    const proto::Slot& slot = o.slots(i);
    const auto& [name, count] = e.slots[static_cast<size_t>(i)];
    if (slot.name() != name)
      fail_checkpoint_field(path, cat("optimizer.slots[", i, "].name"), slot.name(), cat("'", name, "'"));
    if (slot.values_size() != count) {
      fail_checkpoint_field(path, cat("optimizer.slots[", i, "].values (count)"), slot.values_size(), cat(count));
    }
    check_checkpoint_finite(slot.values(), cat("optimizer.slots[", i, "].values"), path);
  }

  // Each rank's partial sums of the epoch in progress, of the ranks that wrote it: loss, metrics..., count. Any
  // rank count may resume them; the layout and the counts are checked against the writers' own.
  if (c.world_size() < 1) {
    fail_checkpoint_field(path, "world_size", c.world_size(), "the rank count that wrote it, 1 or more");
  }
  const auto saved_world = static_cast<size_t>(c.world_size());
  const size_t sums = e.sums_per_rank * saved_world;  // a few sums x at most 2^31 ranks: fits in 64 bits
  if (static_cast<size_t>(c.rank_epoch_sums_size()) != sums) {
    fail_checkpoint_field(path, "rank_epoch_sums (count)", c.rank_epoch_sums_size(),
                          cat(sums, " (", saved_world, " ranks x ", e.sums_per_rank, " sums: loss, metrics, count)"));
  }
  check_checkpoint_finite(c.rank_epoch_sums(), "rank_epoch_sums", path);
  for (size_t r = 0; r < saved_world && e.sums_per_rank > 0; ++r) {
    const int at = static_cast<int>((r + 1) * e.sums_per_rank - 1);
    const double count = c.rank_epoch_sums(at);
    if (count < 0.0 || count != std::floor(count)) {
      fail_checkpoint_field(path, cat("rank_epoch_sums[", at, "]"), count,
                            cat("rank ", r, "'s sample count, a whole number >= 0"));
    }
  }
  check_sample_counts(c, e, path);
}

}  // namespace shardfit
