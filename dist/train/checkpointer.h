// Checkpoints of a fit: written by rank 0 at epoch ends and every N steps as the job asks, and when a stop signal
// arrives; read back by --resume. A checkpoint holds everything the next step depends on (parameters, optimizer
// slots, callbacks' state, the history so far, each rank's partial sums of the epoch, the global step), so a
// resumed run continues bit for bit (same rank and thread counts). On another rank count (a requeued job on other
// nodes) it continues with the same global batch, so the same arithmetic up to summation order. The file format is
// dist/io/checkpoint_file.h, the checks a resume makes dist/train/checkpoint_checks.h.
//
// Design notes, resuming on another rank count:
//  1. Nothing else in a checkpoint depends on the rank count: the permutation, the slices and dropout masks are
//     functions of (seed, epoch, global step, global row); parameters, optimizer slots and the global step are
//     the same on every rank; the callbacks' state and the history are rank 0's, restored alike on every rank,
//     and rank 0 stays the one that writes files.
//  2. Only the partial sums of the epoch in progress (loss, metrics..., count per rank) are per rank. The epoch's
//     loss is their global sum over the global count, so only the totals matter: they are summed in the saved rank
//     order and shared out in proportion to each new rank's samples of the steps already trained (its
//     ShardPlan::samples_in_first_steps). Every rank then holds what it would have counted had this rank count
//     trained the epoch from its start, so a checkpoint written later passes the same per-rank count checks, and
//     rank 0's progress bar shows the epoch's running mean.
//  3. Same rank count: each rank's sums are copied, untouched, and the epoch ends bit for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/data_checks.h"
#include "dist/io/trace.h"
#include "dist/sharding.h"
#include "dist/train/callbacks.h"
#include "dist/train/step.h"
#include "kernels/model.h"
#include "kernels/optimizer.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

struct FitConfig;

// What a fit's checkpoints save and restore. Every reference outlives the Checkpointer.
struct FitStateRefs {
  Model& model;
  Optimizer& optimizer;
  const std::vector<std::unique_ptr<Callback>>& callbacks;  // the job's callbacks (their typed state)
  proto::History& history;
  EpochSums& sums;
  TrainStep& step;  // its global step
};

// Where a resumed run continues.
struct ResumePoint {
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;
  int64_t global_step = 0;
  int world_size = 0;  // of the run that wrote the checkpoint
};

// This rank's partial sums of the epoch in progress ([loss, metrics..., count]), from a checkpoint's
// `saved_world` x `sums_per_rank` rank-major sums after `steps_done` steps of the epoch (design note 2): the saved
// rank's own on the same rank count, else the totals shared out by `plan`'s samples of those steps. The saved
// counts must have passed check_checkpoint (their total is the steps' samples).
std::vector<double> resumed_epoch_sums(std::span<const double> saved, int saved_world, const ShardPlan& plan,
                                       int64_t steps_done);

class Checkpointer {
 public:
  // fingerprint: the job's model, loss, optimizer, data shape, batch and seed (a resume of another job is refused).
  Checkpointer(Comm& comm, const FitConfig& config, const ShardPlan& plan, const std::vector<DataFile>& data_files,
               FitStateRefs state, std::string fingerprint);

  std::filesystem::path path() const;

  // Collective. --resume: the checkpoint's state replaces the fit's when there is one (checked against this run
  // first, on every rank), or nullopt when there is none.
  std::optional<ResumePoint> restore();
  // Collective, after each step that did not stop training: every checkpoint_every_steps global steps, except at
  // an epoch's last step (the epoch end writes that one).
  void after_step(int64_t epoch, int64_t step);
  // Collective: a stop signal ended the run after `step`; the checkpoint continues at the next step.
  void on_stop_signal(int64_t epoch, int64_t step);
  // Collective: at the end of `epoch`, every checkpoint_every_epochs epochs and at the fit's last epoch. Unlike the
  // two above it does not check the data files itself: the loop has, before the epoch's values were computed
  // (Trainer::epoch_logs), and nothing was read since.
  void at_epoch_end(int64_t epoch, bool last);

  // Each checkpoint rank 0 writes becomes a span of the recorder's epoch (null, the default: none).
  void record_to(TraceRecorder* trace) { trace_ = trace; }

 private:
  void write(int64_t epoch, int64_t step_in_epoch);

  Comm& comm_;
  const FitConfig& config_;
  const ShardPlan& plan_;
  const std::vector<DataFile>& data_files_;
  FitStateRefs state_;
  std::string fingerprint_;
  TraceRecorder* trace_ = nullptr;
};

}  // namespace shardfit
