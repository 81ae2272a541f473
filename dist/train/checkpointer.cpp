#include "dist/train/checkpointer.h"

#include <algorithm>
#include <chrono>

#include "dist/cross_replica_comm.h"
#include "dist/io/checkpoint_file.h"
#include "dist/train/checkpoint_checks.h"
#include "dist/train/fit.h"
#include "dist/watchdog.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

Checkpointer::Checkpointer(Comm& comm, const FitConfig& config, const ShardPlan& plan,
                           const std::vector<DataFile>& data_files, FitStateRefs state, std::string fingerprint)
    : comm_(comm),
      config_(config),
      plan_(plan),
      data_files_(data_files),
      state_(state),
      fingerprint_(std::move(fingerprint)) {}

std::vector<double> resumed_epoch_sums(std::span<const double> saved, int saved_world, const ShardPlan& plan,
                                       int64_t steps_done) {
  SF_CHECK(saved_world >= 1 && saved.size() % static_cast<size_t>(saved_world) == 0,
           cat(saved.size(), " saved epoch sums for ", saved_world, " ranks: expected a whole number per rank"));
  const size_t per_rank = saved.size() / static_cast<size_t>(saved_world);
  if (per_rank == 0) return {};
  if (saved_world == plan.world_size()) {
    const auto mine = saved.subspan(static_cast<size_t>(plan.rank()) * per_rank, per_rank);
    return {mine.begin(), mine.end()};
  }
  std::vector<double> totals(per_rank, 0.0);
  for (size_t r = 0; r < static_cast<size_t>(saved_world); ++r) {
    for (size_t i = 0; i < per_rank; ++i) totals[i] += saved[r * per_rank + i];
  }
  // The new ranks' counts add up to the saved total (check_checkpoint's count checks), so the shares do too; one
  // rank alone gets fraction 1 and the totals exactly.
  const auto count = static_cast<double>(plan.samples_in_first_steps(steps_done));
  const double fraction = totals.back() > 0.0 ? count / totals.back() : 0.0;
  std::vector<double> mine(per_rank);
  for (size_t i = 0; i + 1 < per_rank; ++i) mine[i] = totals[i] * fraction;
  mine.back() = count;
  return mine;
}

fs::path Checkpointer::path() const { return checkpoint_path(config_.checkpoint_dir); }

std::optional<ResumePoint> Checkpointer::restore() {
  const fs::path file = path();
  // Rank 0 reads and broadcasts: the checkpoint directory need not be visible to every node.
  std::string bytes;
  run_agreed(comm_, [&] {
    if (comm_.is_root() && fs::exists(file)) bytes = read_checkpoint_bytes(file);
  });
  comm_.broadcast(bytes, 0);
  if (bytes.empty()) return std::nullopt;

  Model& model = state_.model;
  Optimizer& optimizer = state_.optimizer;
  std::vector<double>& sums = state_.sums.values;
  proto::Checkpoint checkpoint;
  run_agreed(comm_, [&] {
    checkpoint = decode_checkpoint(bytes, file);
    CheckpointExpectations expected;
    expected.epochs = config_.epochs;
    expected.train_count = plan_.train_count();
    expected.global_batch = plan_.global_batch();
    expected.fingerprint = fingerprint_;
    expected.param_count = model.param_count();
    expected.state_count = model.state_count();
    expected.optimizer_kind = optimizer.kind();
    for (const auto& slot : optimizer.slots()) expected.slots.emplace_back(slot.name, slot.values->count());
    expected.sums_per_rank = sums.size();
    check_checkpoint(checkpoint, expected, file);
    load_callbacks_state(state_.callbacks, checkpoint.callbacks_state());
  });
  // Everything checked: now the state is replaced.
  std::copy(checkpoint.parameters().begin(), checkpoint.parameters().end(), model.parameters().begin());
  const auto& saved = checkpoint.optimizer();
  optimizer.set_iterations(saved.iterations());
  optimizer.set_learning_rate(saved.learning_rate());
  auto slots = optimizer.slots();
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& values = saved.slots(static_cast<int>(i)).values();
    std::copy(values.begin(), values.end(), slots[i].values->data());
  }
  const std::vector<double> resumed =
      resumed_epoch_sums(std::span<const double>(checkpoint.rank_epoch_sums().data(),
                                                 static_cast<size_t>(checkpoint.rank_epoch_sums_size())),
                         checkpoint.world_size(), plan_, checkpoint.step_in_epoch());
  std::copy(resumed.begin(), resumed.end(), sums.begin());  // as many as checked
  *state_.history.mutable_epochs() = checkpoint.history().epochs();
  state_.step.set_global_step(static_cast<uint64_t>(checkpoint.global_step()));
  comm_.check_same_everywhere("resumed weights", model.parameters());
  return ResumePoint{checkpoint.epoch(), checkpoint.step_in_epoch(), checkpoint.global_step(), checkpoint.world_size()};
}

void Checkpointer::after_step(int64_t epoch, int64_t step) {
  const auto every = static_cast<uint64_t>(config_.checkpoint_every_steps);
  if (every == 0 || state_.step.global_step() % every != 0 || step + 1 >= plan_.steps()) return;
  progress_beacon().enter(Phase::kCheckpoint);  // the watchdog names the data check and the write below
  check_data_unchanged(comm_, data_files_);     // no checkpoint of a state computed from changed data
  write(epoch, step + 1);
}

void Checkpointer::on_stop_signal(int64_t epoch, int64_t step) {
  progress_beacon().enter(Phase::kCheckpoint);
  check_data_unchanged(comm_, data_files_);  // no checkpoint of a state computed from changed data
  write(epoch, step + 1);
}

void Checkpointer::at_epoch_end(int64_t epoch, bool last) {
  const int64_t every = config_.checkpoint_every_epochs;
  if (every > 0 && ((epoch + 1) % every == 0 || last)) {
    progress_beacon().enter(Phase::kCheckpoint);
    write(epoch + 1, 0);
  }
}

void Checkpointer::write(int64_t epoch, int64_t step_in_epoch) {
  const auto start = std::chrono::steady_clock::now();
  // Collective: per-rank moving statistics are averaged before they are saved (dist/cross_replica_comm.h, note 3).
  average_replica_state(comm_, state_.model);
  // Collective: rank 0 needs every rank's partial sums of the epoch in progress.
  const std::vector<double> sums = comm_.gather_to_root(std::span<const double>(state_.sums.values));
  if (!comm_.is_root()) return;
  Optimizer& optimizer = state_.optimizer;
  proto::Checkpoint checkpoint;
  checkpoint.set_epoch(epoch);
  checkpoint.set_step_in_epoch(step_in_epoch);
  checkpoint.mutable_parameters()->Assign(state_.model.parameters().begin(), state_.model.parameters().end());
  auto* saved = checkpoint.mutable_optimizer();
  saved->set_kind(optimizer.kind());
  saved->set_iterations(optimizer.iterations());
  saved->set_learning_rate(optimizer.learning_rate());
  for (const auto& slot : optimizer.slots()) {
    auto* values = saved->add_slots();
    values->set_name(slot.name);
    values->mutable_values()->Assign(slot.values->data(), slot.values->data() + slot.values->count());
  }
  checkpoint.set_seed(config_.seed);
  checkpoint.set_global_step(static_cast<int64_t>(state_.step.global_step()));
  *checkpoint.mutable_callbacks_state() = save_callbacks_state(state_.callbacks);
  *checkpoint.mutable_history() = state_.history;
  checkpoint.mutable_rank_epoch_sums()->Assign(sums.begin(), sums.end());
  checkpoint.set_world_size(comm_.size());
  checkpoint.set_job_fingerprint(fingerprint_);
  write_checkpoint_file(path(), checkpoint);
  if (trace_ != nullptr) trace_->epoch_span(TraceKind::kCheckpoint, start, std::chrono::steady_clock::now());
}

}  // namespace shardfit
