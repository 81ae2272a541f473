// One training step of one rank, as a unit anything can call and time: the fit loop (dist/train/fit.cpp), the
// benchmarks (bench/fit_bench.cpp) and a timeline read the same code and the same clocks.
//
//   load_batch();        this rank's slice of the global batch: rows of the epoch's permutation, gathered
//   forward_backward();  forward, loss and metric sums, backward (kernels/)
//   reduce_gradients();  allreduce over ranks, divided by the global sample count (dist/gradient_reducer.h)
//   update();            global-norm clipping when asked, then the optimizer
//
// Design notes:
//  1. What decides the arithmetic is a function of (seed, epoch, global step, global row): the permutation, the
//     slice, the dropout masks. So a step is reproducible from those numbers alone, and a resumed run continues bit
//     for bit once set_global_step() has put the counter back.
//  2. The per-phase timers are always on: ten steady_clock reads a step (~20 ns each) against steps of tens of
//     microseconds at the smallest. They are sums over the steps since construction or reset_phases(); a reader divides
//     by steps.
//  3. A timeline (record_to) gets each phase as a span from the same clock reads as the timers, and the whole step
//     as one span from the load's first read to the optimizer's last; none is recorded when it is null.
//  4. The step computes; it does not decide. Whether to stop, print or checkpoint is the loop's. The values the
//     ranks must agree on after a step (StepControl, dist/train/step_control.h) ride with the gradients: the step
//     offers its loss sum right after forward, bucket 0 of the reduction carries it, and the loop reads the sums
//     back after run(). The step's only collectives are its buckets' allreduces.
//  5. With an overlapping reducer (GradientReducer::Overlap::kThread) backward hands each bucket over as its
//     layers finish, so the bucket allreduces run during the backward phase; reduce_gradients() then issues what is
//     left (nothing, normally) and "allreduce wait" is what the step still waits for after backward: the exposed
//     communication. Without overlap the whole exchange is inside "allreduce" as before. The control values are
//     offered before backward hands over bucket 0, so they still ride with it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dist/gradient_reducer.h"
#include "dist/io/dataset.h"
#include "dist/io/trace.h"
#include "dist/sharding.h"
#include "dist/train/step_control.h"
#include "dist/train/step_phases.h"
#include "kernels/model.h"
#include "kernels/optimizer.h"

namespace shardfit {

// How every step of a fit treats the data: fixed for the whole fit.
struct StepOptions {
  uint64_t seed = 1337;
  bool shuffle = true;
  std::optional<double> clipnorm;    // optimizer.global_clipnorm
  std::vector<float> class_weights;  // fit.class_weight by class id; empty: unweighted
};

// This rank's sums over the epoch so far, in the order the checkpoint keeps them: [loss, metric..., count].
struct EpochSums {
  std::vector<double> values;
  explicit EpochSums(size_t metrics) : values(metrics + 2, 0.0) {}
  double& loss() { return values.front(); }
  double& count() { return values.back(); }
  std::span<double> metrics() { return {values.data() + 1, values.size() - 2}; }
  void clear() { std::fill(values.begin(), values.end(), 0.0); }
  // {"loss": sum / count, metric name: sum / count, ...} into `means`, whose other keys are left as they are.
  // count 0 reads as 1, so an empty epoch gives zeros rather than NaN (the console before the first step).
  void means(const std::vector<std::string>& metric_names, std::map<std::string, double>& means) const;
};

class TrainStep {
 public:
  // Every reference must outlive the step. The model is reserved for the plan's largest local slice here.
  TrainStep(Model& model, Optimizer& optimizer, GradientReducer& reducer, const Dataset& data, LabelLayout layout,
            const ShardPlan& plan, StepOptions options);
  // Takes the step's hook off the model (a TrainStep sets it when the reducer overlaps).
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // The epoch's permutation of the training rows (the same on every rank).
  void begin_epoch(int64_t epoch);
  // Step `step` of the epoch (0-based). Collective: every rank runs the same steps.
  void run(int64_t step);

  // What the last run() computed on this rank: the sum of its samples' losses, its metric sums, its sample count,
  // and the global batch's sample count (all ranks).
  double loss_sum() const { return loss_sum_; }
  std::span<const double> metric_sums() const { return metric_sums_; }
  int64_t local_count() const { return slice_.count; }
  int64_t global_count() const { return plan_.batch_count(step_); }
  // Adds the last step's sums to an epoch's.
  void add_to(EpochSums& sums) const;

  // Steps done over the whole fit (dropout masks are keyed by it); a resume sets it back.
  uint64_t global_step() const { return global_step_; }
  void set_global_step(uint64_t step) { global_step_ = step; }

  // Since construction or the last reset_phases() (a benchmark leaves its warm-up steps out).
  const StepPhases& phases() const { return phases_; }
  void reset_phases() { phases_ = StepPhases{}; }

  // Every phase of every step becomes a span of the recorder (design note 3); null, the default: none.
  void record_to(TraceRecorder* trace) { trace_ = trace; }
  // Each step offers its loss sum and stop signal to `control` (whose slots the reducer carries) before the
  // reduction (design note 4); null, the default: none.
  void carry_control(StepControl* control) { control_ = control; }

 private:
  void load_batch();
  void forward_backward();
  void reduce_gradients();
  void update();
  void apply_class_weights();

  Model& model_;
  Optimizer& optimizer_;
  GradientReducer& reducer_;
  const Dataset& data_;
  LabelLayout layout_;
  const ShardPlan& plan_;
  StepOptions options_;

  std::vector<int64_t> permutation_;
  std::vector<int64_t> rows_;  // this step's global rows, in batch order
  std::vector<double> metric_sums_;
  int64_t step_ = 0;
  Slice slice_{0, 0};
  int64_t first_row_ = 0;  // position of the slice's first sample in the epoch's permutation
  double loss_sum_ = 0.0;
  uint64_t global_step_ = 0;
  StepPhases phases_;
  TraceRecorder* trace_ = nullptr;
  StepControl* control_ = nullptr;
  std::chrono::steady_clock::time_point step_start_;  // the load's first clock read, for the step's span
};

}  // namespace shardfit
