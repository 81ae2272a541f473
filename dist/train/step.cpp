#include "dist/train/step.h"

#include <algorithm>
#include <chrono>

#include "dist/data_checks.h"
#include "dist/watchdog.h"

namespace shardfit {

namespace {

using Clock = std::chrono::steady_clock;

// Adds the seconds since `start` to `into`, hands the same span to the timeline when there is one, and restarts the
// clock: one clock read per phase.
void lap(Clock::time_point& start, double& into, TraceRecorder* trace, TraceKind kind) {
  const auto now = Clock::now();
  into += std::chrono::duration<double>(now - start).count();
  if (trace != nullptr) trace->step_span(kind, start, now);
  start = now;
}

}  // namespace

void EpochSums::means(const std::vector<std::string>& metric_names, std::map<std::string, double>& means) const {
  const double n = values.back() > 0.0 ? values.back() : 1.0;
  means["loss"] = values.front() / n;
  for (size_t m = 0; m < metric_names.size(); ++m) means[metric_names[m]] = values[m + 1] / n;
}

TrainStep::TrainStep(Model& model, Optimizer& optimizer, GradientReducer& reducer, const Dataset& data,
                     LabelLayout layout, const ShardPlan& plan, StepOptions options)
    : model_(model),
      optimizer_(optimizer),
      reducer_(reducer),
      data_(data),
      layout_(layout),
      plan_(plan),
      options_(std::move(options)),
      metric_sums_(model.metric_names().size()) {
  model_.reserve(std::max<int64_t>(plan_.max_local_count(), 1));  // a no-op when the caller reserved more
  rows_.resize(static_cast<size_t>(model_.capacity()));
  // Backward's gradients-ready points go to the reducer, which starts the finished buckets (design note 5).
  if (reducer_.overlap() != GradientReducer::Overlap::kOff) {
    model_.set_gradients_ready([this](int64_t first) { reducer_.ready(first); });
  }
}

TrainStep::~TrainStep() {
  if (reducer_.overlap() != GradientReducer::Overlap::kOff) model_.set_gradients_ready({});
}

void TrainStep::begin_epoch(int64_t epoch) {
  epoch_permutation(plan_.train_count(), options_.seed, epoch, options_.shuffle, permutation_);
}

void TrainStep::run(int64_t step) {
  step_ = step;
  if (trace_ != nullptr) trace_->begin_step(static_cast<int64_t>(global_step_) + 1);
  load_batch();
  forward_backward();
  reduce_gradients();
  update();
}

void TrainStep::add_to(EpochSums& sums) const {
  sums.loss() += loss_sum_;
  for (size_t m = 0; m < metric_sums_.size(); ++m) sums.metrics()[m] += metric_sums_[m];
  sums.count() += static_cast<double>(slice_.count);
}

void TrainStep::load_batch() {
  progress_beacon().enter_step(step_, Phase::kGather);  // for the watchdog (dist/watchdog.h), as each phase below
  auto clock = Clock::now();
  step_start_ = clock;
  slice_ = plan_.slice(step_);
  first_row_ = plan_.batch_start(step_) + slice_.offset;
  std::copy_n(permutation_.begin() + first_row_, slice_.count, rows_.begin());
  data_.gather({rows_.data(), static_cast<size_t>(slice_.count)}, model_.input(), model_.labels(), layout_,
               model_.label_dim());
  if (!options_.class_weights.empty()) apply_class_weights();
  lap(clock, phases_.gather, trace_, TraceKind::kLoad);
}

// sample_weights = class_weight[class of each label]: a class id, a 0/1 target for one sigmoid unit, or the hot
// index of a one-hot row.
void TrainStep::apply_class_weights() {
  const int64_t label_dim = model_.label_dim();
  for (int64_t i = 0; i < slice_.count; ++i) {
    const float* label = model_.labels() + i * label_dim;
    int64_t cls = 0;
    if (label_dim == 1) {
      cls = model_.output_dim() == 1 ? (label[0] > 0.5F ? 1 : 0) : static_cast<int64_t>(label[0]);
    } else {
      cls = std::max_element(label, label + label_dim) - label;
    }
    model_.sample_weights()[i] = options_.class_weights[static_cast<size_t>(cls)];
  }
}

void TrainStep::forward_backward() {
  const BatchContext ctx{true, options_.seed, global_step_, first_row_};
  const std::span<const int64_t> rows{rows_.data(), static_cast<size_t>(slice_.count)};
  const bool weighted = !options_.class_weights.empty();
  progress_beacon().enter(Phase::kForward);
  auto clock = Clock::now();
  // A kernel's error about one sample names its row of the label file, not its place in this rank's batch.
  loss_sum_ = naming_rows(data_, rows, [&] { return model_.forward_train(slice_.count, ctx, weighted, metric_sums_); });
  // Known now, before backward fills the first bucket: bucket 0 carries it (design note 4).
  if (control_ != nullptr) control_->offer(loss_sum_);
  lap(clock, phases_.forward, trace_, TraceKind::kForward);
  progress_beacon().enter(Phase::kBackward);
  reducer_.begin_step();
  try {
    naming_rows(data_, rows, [&] { model_.backward_train(slice_.count); });
  } catch (const std::exception& error) {
    reducer_.abandon(error);  // ends the job here when buckets are in flight (gradient_reducer.h, note 11)
    throw;
  }
  lap(clock, phases_.backward, trace_, TraceKind::kBackward);
}

void TrainStep::reduce_gradients() {
  progress_beacon().enter(Phase::kAllreduce);
  auto clock = Clock::now();
  reducer_.start(global_count());
  lap(clock, phases_.allreduce_issued, trace_, TraceKind::kAllreduce);
  progress_beacon().enter(Phase::kAllreduceWait);
  reducer_.finish();
  lap(clock, phases_.allreduce_waited, trace_, TraceKind::kAllreduceWait);
}

void TrainStep::update() {
  progress_beacon().enter(Phase::kOptimizer);
  auto clock = Clock::now();
  if (options_.clipnorm) clip_by_global_norm(model_.gradients(), *options_.clipnorm);
  optimizer_.update(model_.trainable_parameters(), model_.gradients());  // not the state (kernels/model.h)
  ++global_step_;
  lap(clock, phases_.optimizer, trace_, TraceKind::kOptimizer);
  if (trace_ != nullptr) trace_->step_span(TraceKind::kStep, step_start_, clock);
  ++phases_.steps;
}

}  // namespace shardfit
