// The distributed fit loop. One step reads like the architecture says:
//   gather this rank's slice -> forward/backward (kernels) -> reduce gradients -> update
// and one epoch ends with the reduced training sums, sharded validation, the callbacks' decisions (rank 0's,
// broadcast), rank 0's history write and a checkpoint.
//
// Design notes:
//  1. Everything that decides the arithmetic is a function of (seed, epoch, global step, global row): the
//     permutation, each rank's slice, dropout masks. A resumed run recomputes them, and with the parameters,
//     optimizer slots, callbacks' state and each rank's partial epoch sums restored from the checkpoint it
//     continues bit for bit (same rank and thread counts).
//  2. One small allreduce per step ({batch loss, stop signal}) lets every rank see the global batch loss
//     (TerminateOnNaN) and agree on a SIGTERM / SIGUSR1 that reached only some ranks, at the same step.
//  3. Setup phases end in Comm::agree, so a bad file or config on any rank stops every rank with one message.
#include "dist/train/fit.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include "dist/data_checks.h"
#include "dist/gradient_reducer.h"
#include "dist/io/checkpoint_file.h"
#include "dist/io/dataset.h"
#include "dist/io/history_writer.h"
#include "dist/io/plot_svg.h"
#include "dist/io/weights_io.h"
#include "dist/placement.h"
#include "dist/sharding.h"
#include "dist/train/callbacks.h"
#include "dist/train/checkpoint_checks.h"
#include "dist/train/diagnosis.h"
#include "dist/train/evaluate.h"
#include "dist/train/labels.h"
#include "dist/train/output_plan.h"
#include "dist/train/progress.h"
#include "dist/train/stop_signal.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"

namespace shardfit {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Sums of one pass (loss, each metric, sample count), reduced as one double vector.
struct Sums {
  std::vector<double> values;  // [loss, metric..., count]
  explicit Sums(size_t metrics) : values(metrics + 2, 0.0) {}
  double& loss() { return values.front(); }
  double& count() { return values.back(); }
  std::span<double> metrics() { return {values.data() + 1, values.size() - 2}; }
  void clear() { std::fill(values.begin(), values.end(), 0.0); }
};

class Trainer {
 public:
  Trainer(Comm& comm, const proto::Job& job, const fs::path& job_dir, const FitConfig& config)
      : comm_(comm), job_(job), job_dir_(job_dir), config_(config) {
    resolve_job_paths(job_dir_, config_, job_);
  }

  FitResult run();

 private:
  void setup();
  MemoryBudget memory_budget() const;
  std::string fingerprint() const;
  void restore_from_checkpoint();
  void load(const Dataset& data, LabelLayout layout, int64_t count);
  // Returns false when training must stop now (a signal: the checkpoint is written and the result says so).
  bool train_epoch(int64_t epoch, int64_t first_step);
  void validate(EpochLogs& logs);
  void finish_epoch(int64_t epoch, Clock::time_point start, double train_seconds);
  void write_checkpoint(int64_t epoch, int64_t step_in_epoch);
  void write_outputs(bool final);
  void say(const std::string& line);  // a console line on rank 0, after the epoch's progress line
  void report_rank();                 // one line per rank, in rank order (--report-ranks)

  Comm& comm_;
  proto::Job job_;  // with its output paths resolved against job_dir_
  fs::path job_dir_;
  FitConfig config_;

  std::unique_ptr<Dataset> train_;
  std::unique_ptr<Dataset> validation_;  // null when validation rows come from the training file
  std::vector<DataFile> data_files_;     // every file above, for the agreed checks of dist/data_checks.h
  SplitCounts split_{0, 0};
  std::unique_ptr<Model> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<std::unique_ptr<Callback>> callbacks_;
  std::unique_ptr<ShardPlan> plan_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<HistoryWriter> writer_;
  std::unique_ptr<ProgressPrinter> progress_;
  LabelLayout train_layout_ = LabelLayout::kAsIs;
  LabelLayout validation_layout_ = LabelLayout::kAsIs;
  std::optional<double> clipnorm_;
  std::vector<float> class_weights_;
  Slice validation_slice_{0, 0};
  bool wants_batch_loss_ = false;

  TrainingControl control_;
  FitResult result_;
  std::unique_ptr<Sums> train_sums_;
  std::vector<double> batch_metrics_;
  std::vector<int64_t> permutation_;
  std::vector<int64_t> rows_;
  std::map<std::string, double> running_;
  std::vector<std::string> pending_lines_;
  uint64_t global_step_ = 0;
  int64_t start_epoch_ = 0;
  int64_t start_step_ = 0;
};

void Trainer::setup() {
  const int rank = comm_.rank();
  const int world = comm_.size();

  // 0. Outputs: rank 0 writes them all, so it checks them all, before anything is read or written.
  run_agreed(comm_, [&] {
    if (comm_.is_root()) check_outputs(config_, job_, job_dir_);
  });

  // 1. Data: every rank maps the files and checks them; a file one rank cannot read fails the job here.
  run_agreed(comm_, [&] {
    SF_CHECK(job_.data().has_train(), "data.train is not set: expected data { train { x { path: ... } y { ... } } }");
    train_ = std::make_unique<Dataset>(Dataset::open(job_.data().train(), job_dir_, "train"));
    if (job_.data().has_validation()) {
      validation_ = std::make_unique<Dataset>(Dataset::open(job_.data().validation(), job_dir_, "validation"));
      split_ = {train_->rows(), validation_->rows()};
    } else {
      split_ = split_for_validation(train_->rows(), config_.validation_split);
    }
    SF_CHECK(split_.train > 0, cat("data.train has no samples: expected at least one row in ", train_->describe()));
  });
  // 1b. Every rank reads the same files, and no value in them is NaN, infinite or an unreadable CSV cell.
  add_data_files(data_files_, *train_, "train");
  if (validation_) add_data_files(data_files_, *validation_, "validation");
  agree_on_data_files(comm_, data_files_);
  check_data_values(comm_, data_files_);

  // 2. Model, optimizer, callbacks and label layout, identical on every rank.
  run_agreed(comm_, [&] {
    model_ = build_model(job_, train_->feature_dim(), memory_budget());
    if (validation_) {
      SF_CHECK(validation_->feature_dim() == train_->feature_dim(),
               cat("data.validation has ", validation_->feature_dim(), " features per sample but data.train has ",
                   train_->feature_dim()));
    }
    train_layout_ = prepare_labels(*train_, *model_, job_.loss(), "train", rank, world);
    if (validation_) {
      validation_layout_ = prepare_labels(*validation_, *model_, job_.loss(), "validation", rank, world);
    } else {
      validation_layout_ = train_layout_;
    }
    optimizer_ = make_optimizer(job_.optimizer(), model_->param_count());
    if (config_.learning_rate) optimizer_->set_learning_rate(*config_.learning_rate);
    if (job_.optimizer().has_global_clipnorm()) clipnorm_ = job_.optimizer().global_clipnorm();
    callbacks_ = make_callbacks(job_, config_.epochs);
    model_->initialize(config_.seed);
    if (!config_.initial_weights.empty()) load_weights(config_.initial_weights, *model_);
    if (!job_.fit().class_weight().empty()) {
      class_weights_.assign(static_cast<size_t>(model_->output_dim() == 1 ? 2 : model_->output_dim()), 1.0F);
      for (const auto& [cls, weight] : job_.fit().class_weight()) {
        SF_CHECK(cls >= 0 && cls < static_cast<int64_t>(class_weights_.size()),
                 cat("fit.class_weight has class ", cls, ": expected a class id in [0, ", class_weights_.size(), ")"));
        class_weights_[static_cast<size_t>(cls)] = weight;
      }
    }
    if (comm_.is_root() && config_.write_history) writer_ = std::make_unique<HistoryWriter>(config_.history_dir);
  });
  comm_.check_same_everywhere("initial weights", model_->parameters());

  plan_ = std::make_unique<ShardPlan>(split_.train, config_.batch_size, world, rank);
  validation_slice_ = slice_of(split_.validation, rank, world);
  model_->reserve(
      std::max<int64_t>({plan_->max_local_count(), std::min(validation_slice_.count, config_.batch_size), 1}));
  reducer_ = std::make_unique<GradientReducer>(comm_, model_->gradients());
  progress_ = std::make_unique<ProgressPrinter>(stdout, comm_.is_root() ? config_.verbose : 0, config_.terminal,
                                                config_.epochs);

  for (const auto& callback : callbacks_) wants_batch_loss_ = wants_batch_loss_ || callback->wants_batch_loss();
  control_.model = model_.get();
  control_.optimizer = optimizer_.get();
  control_.is_root = comm_.is_root();
  control_.epochs = config_.epochs;
  control_.print = [this](const std::string& line) { say(line); };

  auto* params = result_.history.mutable_params();
  params->set_verbose(config_.verbose);
  params->set_epochs(config_.epochs);
  params->set_steps(plan_->steps());
  params->set_world_size(world);
  params->set_global_batch(config_.batch_size);
  params->set_train_samples(split_.train);
  params->set_validation_samples(split_.validation);
  params->set_threads_per_rank(omp_get_max_threads());
  params->set_loss(job_.loss());
  params->set_output_units(model_->output_dim());
  if (config_.report_ranks) report_rank();

  train_sums_ = std::make_unique<Sums>(model_->metric_names().size());
  batch_metrics_.resize(model_->metric_names().size());
  rows_.resize(static_cast<size_t>(model_->capacity()));
  start_epoch_ = config_.initial_epoch;
  global_step_ = static_cast<uint64_t>(config_.initial_epoch * plan_->steps());
}

// What one rank may spend on the model: the machine's memory shared by the ranks on it, for batches of at most
// batch_size rows (validation passes take up to that many too, see the reserve in setup).
MemoryBudget Trainer::memory_budget() const {
  MemoryBudget budget;
  budget.rows = std::max<int64_t>(1, std::min<int64_t>(config_.batch_size, std::max(split_.train, split_.validation)));
  budget.optimizer_slots = optimizer_slot_count(job_.optimizer());
  budget.ranks_sharing = comm_.local_size();
  return budget;
}

std::string Trainer::fingerprint() const {
  std::ostringstream out;
  out << model_->summary() << "loss " << job_.loss() << "; optimizer " << optimizer_->kind() << "; train "
      << split_.train << " x " << train_->feature_dim() << "; validation " << split_.validation << "; batch "
      << config_.batch_size << "; seed " << config_.seed;
  return out.str();
}

void Trainer::restore_from_checkpoint() {
  const fs::path path = config_.checkpoint_dir / "checkpoint.pb";
  // Rank 0 reads and broadcasts: the checkpoint directory need not be visible to every node.
  std::string bytes;
  run_agreed(comm_, [&] {
    if (comm_.is_root() && fs::exists(path)) bytes = read_checkpoint_bytes(path);
  });
  comm_.broadcast(bytes, 0);
  if (bytes.empty()) {
    say(cat("no checkpoint in ", config_.checkpoint_dir.string(), ": starting from epoch ", start_epoch_ + 1));
    for (auto& line : pending_lines_) std::printf("%s\n", line.c_str());
    pending_lines_.clear();
    return;
  }
  proto::Checkpoint checkpoint;
  run_agreed(comm_, [&] {
    checkpoint = decode_checkpoint(bytes, path);
    CheckpointExpectations expected;
    expected.epochs = config_.epochs;
    expected.train_count = plan_->train_count();
    expected.global_batch = plan_->global_batch();
    expected.world_size = comm_.size();
    expected.fingerprint = fingerprint();
    expected.param_count = model_->param_count();
    expected.optimizer_kind = optimizer_->kind();
    for (const auto& slot : optimizer_->slots()) expected.slots.emplace_back(slot.name, slot.values->count());
    expected.sums_per_rank = train_sums_->values.size();
    check_checkpoint(checkpoint, expected, path);
    load_callbacks_state(callbacks_, checkpoint.callbacks_state());
  });
  // Everything checked: now the state is replaced.
  std::copy(checkpoint.parameters().begin(), checkpoint.parameters().end(), model_->parameters().begin());
  const auto& state = checkpoint.optimizer();
  optimizer_->set_iterations(state.iterations());
  optimizer_->set_learning_rate(state.learning_rate());
  auto slots = optimizer_->slots();
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& saved = state.slots(static_cast<int>(i)).values();
    std::copy(saved.begin(), saved.end(), slots[i].values->data());
  }
  const size_t sums = train_sums_->values.size();
  for (size_t i = 0; i < sums; ++i) {
    train_sums_->values[i] = checkpoint.rank_epoch_sums(static_cast<int>(comm_.rank() * sums + i));
  }
  *result_.history.mutable_epochs() = checkpoint.history().epochs();
  start_epoch_ = checkpoint.epoch();
  start_step_ = checkpoint.step_in_epoch();
  global_step_ = static_cast<uint64_t>(checkpoint.global_step());
  result_.resumed_from_step = checkpoint.global_step();
  comm_.check_same_everywhere("resumed weights", model_->parameters());
  if (comm_.is_root() && config_.verbose > 0) {
    std::printf("resuming from %s: epoch %lld, step %lld\n", path.string().c_str(),
                static_cast<long long>(start_epoch_) + 1, static_cast<long long>(start_step_));
    std::fflush(stdout);
  }
}

void Trainer::write_checkpoint(int64_t epoch, int64_t step_in_epoch) {
  // Collective: rank 0 needs every rank's partial sums of the epoch in progress.
  const std::vector<double> sums = comm_.gather_to_root(std::span<const double>(train_sums_->values));
  if (!comm_.is_root()) return;
  proto::Checkpoint checkpoint;
  checkpoint.set_epoch(epoch);
  checkpoint.set_step_in_epoch(step_in_epoch);
  checkpoint.mutable_parameters()->Assign(model_->parameters().begin(), model_->parameters().end());
  auto* state = checkpoint.mutable_optimizer();
  state->set_kind(optimizer_->kind());
  state->set_iterations(optimizer_->iterations());
  state->set_learning_rate(optimizer_->learning_rate());
  for (const auto& slot : optimizer_->slots()) {
    auto* saved = state->add_slots();
    saved->set_name(slot.name);
    saved->mutable_values()->Assign(slot.values->data(), slot.values->data() + slot.values->count());
  }
  checkpoint.set_seed(config_.seed);
  checkpoint.set_global_step(static_cast<int64_t>(global_step_));
  *checkpoint.mutable_callbacks_state() = save_callbacks_state(callbacks_);
  *checkpoint.mutable_history() = result_.history;
  checkpoint.mutable_rank_epoch_sums()->Assign(sums.begin(), sums.end());
  checkpoint.set_world_size(comm_.size());
  checkpoint.set_job_fingerprint(fingerprint());
  write_checkpoint_file(config_.checkpoint_dir / "checkpoint.pb", checkpoint);
}

void Trainer::report_rank() {
  const RankPlacement placement = this_rank_placement();
  int64_t smallest = plan_->slice(0).count;
  int64_t largest = smallest;
  for (int64_t step = 0; step < plan_->steps(); ++step) {
    smallest = std::min(smallest, plan_->slice(step).count);
    largest = std::max(largest, plan_->slice(step).count);
  }
  char line[512];
  std::snprintf(line, sizeof line,
                "[rank %d/%d] host %s, local rank %d of %d, %d OpenMP thread(s) on cpus %s, %lld-%lld samples "
                "per step, %lld validation rows",
                comm_.rank(), comm_.size(), placement.host.c_str(), comm_.local_rank(), comm_.local_size(),
                static_cast<int>(placement.thread_cpus.size()), cpu_list_text(placement.cpus()).c_str(),
                static_cast<long long>(smallest), static_cast<long long>(largest),
                static_cast<long long>(validation_slice_.count));
  // Rank 0 prints every rank's line: output forwarded from separate processes arrives in no particular order,
  // so the lines travel to rank 0 (one gather, once, at start) and are printed in rank order.
  for (const std::string& text : comm_.gather_text_to_root(line)) std::printf("%s\n", text.c_str());
  if (comm_.is_root()) std::fflush(stdout);
}

void Trainer::say(const std::string& line) {
  if (comm_.is_root() && config_.verbose > 0) pending_lines_.push_back(line);
}

void Trainer::load(const Dataset& data, LabelLayout layout, int64_t count) {
  data.gather({rows_.data(), static_cast<size_t>(count)}, model_->input(), model_->labels(), layout,
              model_->label_dim());
  if (class_weights_.empty()) return;
  const int64_t label_dim = model_->label_dim();
  for (int64_t i = 0; i < count; ++i) {
    const float* label = model_->labels() + i * label_dim;
    int64_t cls = 0;
    if (label_dim == 1) {
      cls = model_->output_dim() == 1 ? (label[0] > 0.5F ? 1 : 0) : static_cast<int64_t>(label[0]);
    } else {
      cls = std::max_element(label, label + label_dim) - label;
    }
    model_->sample_weights()[i] = class_weights_[static_cast<size_t>(cls)];
  }
}

bool Trainer::train_epoch(int64_t epoch, int64_t first_step) {
  Model& model = *model_;
  const auto& metric_names = model.metric_names();
  const auto epoch_start = Clock::now();
  epoch_permutation(split_.train, config_.seed, epoch, config_.shuffle, permutation_);

  for (int64_t step = first_step; step < plan_->steps(); ++step) {
    const auto step_start = Clock::now();
    const Slice slice = plan_->slice(step);
    const int64_t first = plan_->batch_start(step) + slice.offset;
    std::copy_n(permutation_.begin() + first, slice.count, rows_.begin());
    load(*train_, train_layout_, slice.count);

    const BatchContext ctx{true, config_.seed, global_step_, first};
    const double batch_loss = naming_rows(*train_, {rows_.data(), static_cast<size_t>(slice.count)}, [&] {
      return model.train_batch(slice.count, ctx, !class_weights_.empty(), batch_metrics_);
    });
    train_sums_->loss() += batch_loss;
    for (size_t m = 0; m < batch_metrics_.size(); ++m) train_sums_->metrics()[m] += batch_metrics_[m];
    train_sums_->count() += static_cast<double>(slice.count);

    reducer_->reduce(plan_->batch_count(step));
    if (clipnorm_) clip_by_global_norm(model.gradients(), *clipnorm_);
    optimizer_->update(model.parameters(), model.gradients());
    ++global_step_;

    // {this batch's loss sum, a stop signal seen here}: the global batch loss and one decision for all ranks.
    double control[2] = {batch_loss, static_cast<double>(stop_signal_received())};
    comm_.allreduce_sum(std::span<double>(control, 2));
    result_.timings.train_seconds += seconds_since(step_start);
    if (wants_batch_loss_) {
      const double global_loss = control[0] / static_cast<double>(plan_->batch_count(step));
      for (auto& callback : callbacks_) {
        if (callback->wants_batch_loss()) callback->on_batch_end(step, global_loss, control_);
      }
    }

    if (comm_.is_root() && config_.verbose > 0) {  // rank 0's running means: display only, never recorded
      const double count = std::max(train_sums_->count(), 1.0);
      running_["loss"] = train_sums_->loss() / count;
      for (size_t m = 0; m < metric_names.size(); ++m) running_[metric_names[m]] = train_sums_->metrics()[m] / count;
      progress_->step(step + 1, plan_->steps(), seconds_since(epoch_start), running_);
    }

    if (control[1] != 0.0) {
      // Every rank saw the same sum, so every rank stops here; the checkpoint continues at the next step.
      check_data_unchanged(comm_, data_files_);  // no checkpoint of a state computed from changed data
      write_checkpoint(epoch, step + 1);
      if (comm_.is_root()) {
        // Rank 0 names the signal it received; a signal sent to other ranks only is "a signal".
        std::printf(
            "\nstopped by signal after epoch %lld step %lld: checkpoint written to %s (%s; exit %d, "
            "continue with --resume)\n",
            static_cast<long long>(epoch) + 1, static_cast<long long>(step) + 1,
            (config_.checkpoint_dir / "checkpoint.pb").string().c_str(), stop_signal_name(stop_signal_received()),
            kExitCheckpointed);
        std::fflush(stdout);
      }
      result_.stopped_by_signal = stop_signal_received() != 0 ? stop_signal_received() : 15;
      return false;
    }
    if (control_.stop_training) break;  // TerminateOnNaN: Keras still ends the epoch (validation, callbacks)
    if (config_.checkpoint_every_steps > 0 &&
        global_step_ % static_cast<uint64_t>(config_.checkpoint_every_steps) == 0 && step + 1 < plan_->steps()) {
      check_data_unchanged(comm_, data_files_);  // no checkpoint of a state computed from changed data
      write_checkpoint(epoch, step + 1);
    }
  }
  result_.timings.steps += plan_->steps() - first_step;
  result_.timings.train_samples += split_.train;
  finish_epoch(epoch, epoch_start, seconds_since(epoch_start));
  return true;
}

void Trainer::validate(EpochLogs& logs) {
  // Validation rows follow the training rows in the training file, or are all of data.validation.
  const Dataset& data = validation_ ? *validation_ : *train_;
  const int64_t first_row = validation_ ? 0 : split_.train;
  for (const auto& [key, value] :
       evaluate_rows(comm_, *model_, data, validation_layout_, first_row, split_.validation)) {
    if (key != "samples") logs["val_" + key] = value;
  }
}

void Trainer::finish_epoch(int64_t epoch, Clock::time_point start, double train_seconds) {
  check_data_unchanged(comm_, data_files_);  // before anything computed from changed data is recorded
  const auto& metric_names = model_->metric_names();
  // Training loss: sample-weighted mean of the batch losses over the epoch = global sum / global count.
  comm_.allreduce_sum(std::span<double>(train_sums_->values));
  EpochLogs logs;
  logs["loss"] = train_sums_->loss() / train_sums_->count();
  for (size_t m = 0; m < metric_names.size(); ++m) {
    logs[metric_names[m]] = train_sums_->metrics()[m] / train_sums_->count();
  }
  train_sums_->clear();
  if (split_.validation > 0 && (epoch + 1) % config_.validation_freq == 0) validate(logs);

  for (auto& callback : callbacks_) callback->on_epoch_end(epoch, logs, control_);
  // Rank 0's decisions are the job's: every rank computed the same from the same reduced values, and the
  // broadcast keeps it so even if a callback ever depended on something rank-local.
  double decision[2] = {control_.stop_training ? 1.0 : 0.0, static_cast<double>(optimizer_->learning_rate())};
  comm_.broadcast(std::span<double>(decision, 2), 0);
  control_.stop_training = decision[0] != 0.0;
  optimizer_->set_learning_rate(static_cast<float>(decision[1]));

  auto* record = result_.history.add_epochs();
  record->set_epoch(epoch);
  for (const auto& [key, value] : logs) (*record->mutable_values())[key] = value;
  const double epoch_seconds = seconds_since(start);
  record->set_seconds(epoch_seconds);
  record->set_samples_per_second(static_cast<double>(split_.train) / train_seconds);
  write_outputs(false);
  progress_->epoch_end(plan_->steps(), epoch_seconds, logs);
  for (const auto& line : pending_lines_) progress_->print_line(line);
  pending_lines_.clear();

  const bool last = epoch + 1 == config_.epochs || control_.stop_training;
  if (config_.checkpoint_every_epochs > 0 && ((epoch + 1) % config_.checkpoint_every_epochs == 0 || last)) {
    write_checkpoint(epoch + 1, 0);
  }
}

void Trainer::write_outputs(bool final) {
  if (!comm_.is_root() || !writer_) return;
  writer_->write(result_.history);
  if (config_.plot && result_.history.epochs_size() > 0) {  // no curve to draw after --epochs 0
    write_history_svg(config_.history_dir / "loss.svg", result_.history, "loss",
                      final && result_.history.has_diagnosis() ? &result_.history.diagnosis() : nullptr);
  }
}

FitResult Trainer::run() {
  install_stop_signal_handlers();
  setup();
  // Callbacks start fresh (Keras resets their counters here), then a resume overwrites them with the saved state.
  for (auto& callback : callbacks_) callback->on_train_begin(control_);
  if (config_.resume) restore_from_checkpoint();
  if (comm_.is_root() && config_.verbose > 0 && start_epoch_ == 0 && start_step_ == 0) {
    std::printf(
        "shardfit: %d rank(s) x %d thread(s), %lld training / %lld validation samples, global batch %lld, "
        "%lld steps per epoch, %lld parameters\n",
        comm_.size(), omp_get_max_threads(), static_cast<long long>(split_.train),
        static_cast<long long>(split_.validation), static_cast<long long>(config_.batch_size),
        static_cast<long long>(plan_->steps()), static_cast<long long>(model_->param_count()));
    std::fflush(stdout);
  }

  for (int64_t epoch = start_epoch_; epoch < config_.epochs && !control_.stop_training; ++epoch) {
    const int64_t first_step = epoch == start_epoch_ ? start_step_ : 0;
    if (first_step == 0) train_sums_->clear();
    progress_->epoch_begin(epoch);
    for (auto& callback : callbacks_) callback->on_epoch_begin(epoch, control_);
    float lr = optimizer_->learning_rate();
    comm_.broadcast(std::span<float>(&lr, 1), 0);
    optimizer_->set_learning_rate(lr);
    if (!train_epoch(epoch, first_step)) break;
  }

  if (result_.stopped_by_signal == 0) {
    for (auto& callback : callbacks_) callback->on_train_end(control_);
    *result_.history.mutable_diagnosis() = diagnose(result_.history);
    if (comm_.is_root() && config_.verbose > 0) {
      for (const auto& line : pending_lines_) progress_->print_line(line);
      pending_lines_.clear();
      progress_->print_line(result_.history.diagnosis().summary());
    }
    write_outputs(true);
    if (!config_.export_weights.empty() && comm_.is_root()) {
      std::error_code error;  // a missing folder was checked to be creatable at setup
      fs::create_directories(config_.export_weights.parent_path(), error);
      save_weights(config_.export_weights, *model_);
    }
  }
  result_.timings.allreduce_seconds = reducer_->seconds();
  result_.final_parameters.assign(model_->parameters().begin(), model_->parameters().end());
  return std::move(result_);
}

}  // namespace

FitConfig resolve_fit_config(const proto::Job& job, bool is_terminal) {
  const auto& f = job.fit();
  const auto& o = job.outputs();
  FitConfig c;
  if (f.has_epochs()) c.epochs = f.epochs();
  if (f.has_batch_size()) c.batch_size = f.batch_size();
  if (f.has_validation_split()) c.validation_split = f.validation_split();
  if (f.has_learning_rate()) c.learning_rate = f.learning_rate();
  if (f.has_shuffle()) c.shuffle = f.shuffle();
  if (f.has_seed()) c.seed = f.seed();
  if (f.has_initial_epoch()) c.initial_epoch = f.initial_epoch();
  if (f.has_validation_freq()) c.validation_freq = f.validation_freq();
  c.verbose = f.has_verbose() ? f.verbose() : (is_terminal ? 1 : 2);
  c.terminal = is_terminal;
  if (o.has_history_dir()) c.history_dir = o.history_dir();
  c.checkpoint_dir = o.has_checkpoint_dir() ? fs::path(o.checkpoint_dir()) : c.history_dir / "checkpoints";
  if (o.has_checkpoint_every_epochs()) c.checkpoint_every_epochs = o.checkpoint_every_epochs();
  if (o.has_checkpoint_every_steps()) c.checkpoint_every_steps = o.checkpoint_every_steps();
  if (o.has_plot()) c.plot = o.plot();
  if (o.has_initial_weights()) c.initial_weights = o.initial_weights();
  // As model.save after fit: the final weights by default, beside the history.
  c.export_weights = o.has_export_weights() ? fs::path(o.export_weights()) : c.history_dir / "weights.npz";

  // epochs 0 trains nothing, as in Keras: an empty history and the seeded initial weights (export_weights).
  SF_CHECK(c.epochs >= 0, cat("fit.epochs = ", c.epochs, ": expected 0 or more"));
  SF_CHECK(c.batch_size >= 1, cat("fit.batch_size = ", c.batch_size, ": expected a positive integer"));
  SF_CHECK(c.validation_split >= 0.0 && c.validation_split < 1.0,
           cat("fit.validation_split = ", c.validation_split, ": expected a fraction in [0, 1)"));
  SF_CHECK(!c.learning_rate || (*c.learning_rate > 0.0F && std::isfinite(*c.learning_rate)),
           cat("fit.learning_rate = ", c.learning_rate.value_or(0), ": expected a positive number"));
  SF_CHECK(c.initial_epoch >= 0 && (c.initial_epoch < c.epochs || c.initial_epoch == 0),
           cat("fit.initial_epoch = ", c.initial_epoch, ": expected 0 <= initial_epoch < epochs (", c.epochs, ")"));
  SF_CHECK(c.validation_freq >= 1, cat("fit.validation_freq = ", c.validation_freq, ": expected a positive integer"));
  SF_CHECK(c.verbose >= 0 && c.verbose <= 2, cat("fit.verbose = ", c.verbose, ": expected 0, 1 or 2"));
  SF_CHECK(c.checkpoint_every_epochs >= 0,
           cat("outputs.checkpoint_every_epochs = ", c.checkpoint_every_epochs, ": expected 0 (off) or more"));
  SF_CHECK(c.checkpoint_every_steps >= 0,
           cat("outputs.checkpoint_every_steps = ", c.checkpoint_every_steps, ": expected 0 (off) or more"));
  return c;
}

FitResult fit(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir, const FitConfig& config) {
  Trainer trainer(comm, job, job_dir, config);
  return trainer.run();
}

}  // namespace shardfit
