// The distributed fit loop, read like Keras's: for each epoch, for each step, the training step
// (dist/train/step.h: load_batch, forward_backward, reduce_gradients, update), then the values the ranks agreed on
// in it (dist/train/step_control.h); at each epoch end the reduced sums, validation, the callbacks' decisions
// (rank 0's, broadcast), the history and a checkpoint. Each collaborator owns one concern: FitConsole prints
// (the loop prints nothing itself), HistoryRecorder records and writes the history, Checkpointer writes and restores
// checkpoints, and the job's callbacks (dist/train/callbacks.h) decide. docs/design.md walks one step and one epoch
// through them.
//
// Design notes:
//  1. Everything that decides the arithmetic is a function of (seed, epoch, global step, global row): the
//     permutation, each rank's slice, dropout masks. A resumed run recomputes them, and with the parameters,
//     optimizer slots, callbacks' state and each rank's partial epoch sums restored from the checkpoint it
//     continues bit for bit (same rank and thread counts). On another rank count the global batch is the same, so
//     the arithmetic is too, up to summation order; only the partial epoch sums are per rank, and
//     Checkpointer::restore redistributes them (dist/train/checkpointer.h, design notes).
//  2. The control values ride with each step's gradient reduction (StepControl: {batch loss, stop signal}, carried
//     by bucket 0, no collective of their own): every rank sees the global batch loss (TerminateOnNaN) and agrees
//     on a SIGTERM / SIGUSR1 / SIGINT that reached only some ranks, at the same step.
//  3. Setup phases end in Comm::agree, so a bad file or config on any rank stops every rank with one message.
//  4. Each hook moves the progress beacon (dist/watchdog.h) as it starts, and the step moves it at each phase, so a
//     rank left waiting for a peer that never comes says where it waits and the watchdog ends the job.
#include "dist/train/fit.h"

#include <omp.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include "dist/cross_replica_comm.h"
#include "dist/data_checks.h"
#include "dist/gradient_reducer.h"
#include "dist/io/dataset.h"
#include "dist/io/weights_io.h"
#include "dist/placement.h"
#include "dist/sharding.h"
#include "dist/stop_signal.h"
#include "dist/timeline.h"
#include "dist/train/callbacks.h"
#include "dist/train/checkpointer.h"
#include "dist/train/diagnosis.h"
#include "dist/train/evaluate.h"
#include "dist/train/fit_console.h"
#include "dist/train/history_recorder.h"
#include "dist/train/labels.h"
#include "dist/train/model_setup.h"
#include "dist/train/output_plan.h"
#include "dist/train/step.h"
#include "dist/train/step_control.h"
#include "dist/watchdog.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"

namespace shardfit {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

class Trainer {
 public:
  Trainer(Comm& comm, const proto::Job& job, const fs::path& job_dir, const FitConfig& config)
      : comm_(comm), job_(job), job_dir_(job_dir), config_(config) {
    resolve_job_paths(job_dir_, config_, job_);
  }

  FitResult run();

 private:
  // Setup (collective; every failure agreed).
  void setup();
  std::string fingerprint() const;
  void describe_run();
  void report_rank();

  // The loop's hooks, in the order they run.
  void begin_training();
  void begin_epoch(int64_t epoch, int64_t first_step);
  void end_step(int64_t step, const StepControlValues& agreed);
  FitResult stop_for_signal(int64_t epoch, int64_t step);
  EpochLogs epoch_logs(int64_t epoch);
  void validate(EpochLogs& logs);
  void end_epoch(int64_t epoch, const EpochLogs& logs);
  void agree_on_decisions();
  FitResult end_training();
  void write_timeline();
  FitResult result();

  Comm& comm_;
  proto::Job job_;  // with its output paths resolved against job_dir_
  fs::path job_dir_;
  FitConfig config_;

  // What the job trains on and with.
  std::unique_ptr<Dataset> train_;
  std::unique_ptr<Dataset> validation_;  // null when validation rows come from the training file
  std::vector<DataFile> data_files_;     // every file above, for the agreed checks of dist/data_checks.h
  SplitCounts split_{0, 0};
  LabelLayout train_layout_ = LabelLayout::kAsIs;
  LabelLayout validation_layout_ = LabelLayout::kAsIs;
  Slice validation_slice_{0, 0};
  std::unique_ptr<Model> model_;
  std::unique_ptr<CommCrossReplicaSum> cross_replica_;  // the model's layers sum across ranks through it
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<std::unique_ptr<Callback>> callbacks_;  // the job's, in the order written
  std::vector<Callback*> batch_callbacks_;            // those of them that watch every batch's loss

  // The step and the loop's collaborators.
  std::unique_ptr<ShardPlan> plan_;
  std::unique_ptr<GradientReducer> reducer_;
  StepOptions step_options_;
  std::unique_ptr<TrainStep> step_;
  std::unique_ptr<StepControl> step_control_;
  std::unique_ptr<EpochSums> sums_;  // this rank's sums of the epoch so far
  std::unique_ptr<FitConsole> console_;
  std::unique_ptr<HistoryRecorder> history_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<Timeline> timeline_;  // --timeline; null without it, and then nothing is recorded

  TrainingControl control_;
  FitResult result_;
  int64_t start_epoch_ = 0;
  int64_t start_step_ = 0;
  Clock::time_point epoch_start_;
  double epoch_train_seconds_ = 0.0;
};

FitResult Trainer::run() {
  install_stop_signal_handlers();
  setup();
  begin_training();
  for (int64_t epoch = start_epoch_; epoch < config_.epochs && !control_.stop_training; ++epoch) {
    const int64_t first_step = epoch == start_epoch_ ? start_step_ : 0;
    begin_epoch(epoch, first_step);
    for (int64_t step = first_step; step < plan_->steps(); ++step) {
      step_->run(step);
      step_->add_to(*sums_);
      const StepControlValues agreed = step_control_->agree(step_->global_count());
      end_step(step, agreed);
      if (agreed.stop_requested) return stop_for_signal(epoch, step);
      if (control_.stop_training) break;  // TerminateOnNaN: Keras still ends the epoch (validation, callbacks)
      checkpointer_->after_step(epoch, step);
    }
    end_epoch(epoch, epoch_logs(epoch));
  }
  return end_training();
}

void Trainer::setup() {
  const int rank = comm_.rank();
  const int world = comm_.size();

  // 0. Outputs: rank 0 writes them all, so it checks them all, before anything is read or written.
  progress_beacon().enter(Phase::kSetupOutputs);
  run_agreed(comm_, [&] {
    if (comm_.is_root()) check_outputs(config_, job_, job_dir_);
  });

  // 1. Data: every rank maps the files and checks them; a file one rank cannot read fails the job here.
  progress_beacon().enter(Phase::kSetupData);
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
  progress_beacon().enter(Phase::kSetupModel);
  run_agreed(comm_, [&] {
    // What one rank may spend: the node's memory shared by its ranks, for batches of at most batch_size rows
    // (validation passes take up to that many too, see the reserve below).
    const int64_t rows = std::min<int64_t>(config_.batch_size, std::max(split_.train, split_.validation));
    model_ = build_model(job_, sample_shape_of(train_->x().shape(), train_->feature_dim()),
                         rank_memory_budget(comm_, rows, optimizer_slot_count(job_.optimizer())));
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
    cross_replica_ = std::make_unique<CommCrossReplicaSum>(comm_);
    model_->set_cross_replica(cross_replica_.get());
    optimizer_ = make_optimizer(job_.optimizer(), model_->trainable_count());
    if (config_.learning_rate) optimizer_->set_learning_rate(*config_.learning_rate);
    if (job_.optimizer().has_global_clipnorm()) step_options_.clipnorm = job_.optimizer().global_clipnorm();
    callbacks_ = make_callbacks(job_, config_.epochs);
    model_->initialize(config_.seed);
    if (!job_.fit().class_weight().empty()) {
      step_options_.class_weights.assign(static_cast<size_t>(model_->output_dim() == 1 ? 2 : model_->output_dim()),
                                         1.0F);
      for (const auto& [cls, weight] : job_.fit().class_weight()) {
        SF_CHECK(cls >= 0 && cls < static_cast<int64_t>(step_options_.class_weights.size()),
                 cat("fit.class_weight has class ", cls, ": expected a class id in [0, ",
                     step_options_.class_weights.size(), ")"));
        step_options_.class_weights[static_cast<size_t>(cls)] = weight;
      }
    }
    history_ = std::make_unique<HistoryRecorder>(comm_, config_, result_.history);
  });
  if (!config_.initial_weights.empty()) load_weights_everywhere(comm_, config_.initial_weights, *model_);
  comm_.check_same_everywhere("initial weights", model_->parameters());
  // mixed_bfloat16 asked for on a CPU without bf16: the one warning that the run trains in float32, now.
  warn_about_dtype_policy(comm_, model_->dtype_policy_warning());

  // 3. The plan of every step, the step itself and the collaborators of the loop.
  progress_beacon().enter(Phase::kSetupPlan);
  plan_ = std::make_unique<ShardPlan>(split_.train, config_.batch_size, world, rank);
  validation_slice_ = slice_of(split_.validation, rank, world);
  model_->reserve(
      std::max<int64_t>({plan_->max_local_count(), std::min(validation_slice_.count, config_.batch_size), 1}));
  reducer_ = std::make_unique<GradientReducer>(
      comm_, model_->gradients(), model_->gradient_tail().first(StepControl::kSlots), config_.bucket_bytes,
      config_.overlap ? GradientReducer::Overlap::kThread : GradientReducer::Overlap::kOff, config_.reduce_dtype);
  // A layer's sums inside backward keep step order with the buckets (dist/cross_replica_comm.h, note 2).
  cross_replica_->route_through(reducer_.get());
  step_options_.seed = config_.seed;
  step_options_.shuffle = config_.shuffle;
  step_ = std::make_unique<TrainStep>(*model_, *optimizer_, *reducer_, *train_, train_layout_, *plan_, step_options_);
  step_->set_global_step(static_cast<uint64_t>(config_.initial_epoch * plan_->steps()));
  step_control_ = std::make_unique<StepControl>(reducer_->control());
  step_->carry_control(step_control_.get());
  sums_ = std::make_unique<EpochSums>(model_->metric_names().size());
  console_ = std::make_unique<FitConsole>(comm_, config_);
  checkpointer_ = std::make_unique<Checkpointer>(
      comm_, config_, *plan_, data_files_,
      FitStateRefs{*model_, *optimizer_, callbacks_, result_.history, *sums_, *step_}, fingerprint());

  // Last: the timeline's first clock exchange is as close to the first step as setup allows.
  timeline_ = make_timeline(comm_, config_.timeline);
  if (timeline_) {
    TraceRecorder* trace = &timeline_->recorder();
    step_->record_to(trace);
    reducer_->record_to(trace);
    history_->record_to(trace);
    checkpointer_->record_to(trace);
  }

  control_.model = model_.get();
  control_.optimizer = optimizer_.get();
  control_.is_root = comm_.is_root();
  control_.epochs = config_.epochs;
  control_.print = [this](const std::string& line) { console_->say(line); };
  for (const auto& callback : callbacks_) {
    if (callback->wants_batch_loss()) batch_callbacks_.push_back(callback.get());
  }
  describe_run();
  if (config_.report_ranks) report_rank();
  start_epoch_ = config_.initial_epoch;
}

void Trainer::describe_run() {
  auto* params = result_.history.mutable_params();
  params->set_verbose(config_.verbose);
  params->set_epochs(config_.epochs);
  params->set_steps(plan_->steps());
  params->set_world_size(comm_.size());
  params->set_global_batch(config_.batch_size);
  params->set_train_samples(split_.train);
  params->set_validation_samples(split_.validation);
  params->set_threads_per_rank(omp_get_max_threads());
  params->set_loss(job_.loss());
  params->set_output_units(model_->output_dim());
  params->set_overlap(reducer_->overlap() != GradientReducer::Overlap::kOff);
  params->set_bucket_bytes(reducer_->bucket_bytes());
  params->set_dtype_policy(dtype_policy_name(model_->dtype_policy()));
  params->set_reduce_dtype(reduce_dtype_name(reducer_->reduce_dtype()));
}

std::string Trainer::fingerprint() const {
  std::ostringstream out;
  out << model_->architecture() << "loss " << job_.loss() << "; optimizer " << optimizer_->kind() << "; train "
      << split_.train << " x " << train_->feature_dim() << "; validation " << split_.validation << "; batch "
      << config_.batch_size << "; seed " << config_.seed;
  return out.str();
}

void Trainer::report_rank() {
  int64_t smallest = plan_->slice(0).count;
  int64_t largest = smallest;
  for (int64_t step = 0; step < plan_->steps(); ++step) {
    smallest = std::min(smallest, plan_->slice(step).count);
    largest = std::max(largest, plan_->slice(step).count);
  }
  console_->report_rank(comm_, this_rank_placement(), smallest, largest, validation_slice_.count);
}

void Trainer::begin_training() {
  // Callbacks start fresh (Keras resets their counters here), then a resume overwrites them with the saved state.
  for (auto& callback : callbacks_) callback->on_train_begin(control_);
  if (config_.resume) {
    progress_beacon().enter(Phase::kRestore);
    if (const auto point = checkpointer_->restore()) {
      start_epoch_ = point->epoch;
      start_step_ = point->step_in_epoch;
      result_.resumed_from_step = point->global_step;
      console_->resuming(checkpointer_->path(), start_epoch_, start_step_, point->world_size);
    } else {
      console_->no_checkpoint(config_.checkpoint_dir, start_epoch_);
    }
  }
  if (start_epoch_ == 0 && start_step_ == 0) {
    console_->banner(comm_.size(), split_, config_.batch_size, plan_->steps(), model_->param_count());
  }
}

void Trainer::begin_epoch(int64_t epoch, int64_t first_step) {
  progress_beacon().enter_epoch(epoch, Phase::kEpochBegin);
  if (first_step == 0) sums_->clear();  // a resumed epoch keeps the sums its checkpoint restored
  console_->epoch_begin(epoch);
  for (auto& callback : callbacks_) callback->on_epoch_begin(epoch, control_);
  // A schedule's learning rate is rank 0's (every rank computed the same; the broadcast keeps it so).
  float learning_rate = optimizer_->learning_rate();
  comm_.broadcast(std::span<float>(&learning_rate, 1), 0);
  optimizer_->set_learning_rate(learning_rate);
  step_->begin_epoch(epoch);
  if (timeline_) timeline_->recorder().begin_epoch(epoch, epoch * plan_->steps() + 1, (epoch + 1) * plan_->steps());
  epoch_start_ = Clock::now();
}

void Trainer::end_step(int64_t step, const StepControlValues& agreed) {
  for (Callback* callback : batch_callbacks_) callback->on_batch_end(step, agreed.global_batch_loss, control_);
  console_->step(step + 1, plan_->steps(), seconds_since(epoch_start_), *sums_, model_->metric_names());
}

FitResult Trainer::stop_for_signal(int64_t epoch, int64_t step) {
  // Every rank saw the same sum, so every rank stops here; the checkpoint continues at the next step.
  checkpointer_->on_stop_signal(epoch, step);
  // Read now, after the checkpoint: a signal sent to every rank may reach this one a little after another.
  const int signal_here = stop_signal_received();
  console_->stopped_by_signal(epoch, step, checkpointer_->path(), signal_here);
  result_.stopped_by_signal = signal_here != 0 ? signal_here : SIGTERM;  // only other ranks received one
  write_timeline();
  return result();
}

EpochLogs Trainer::epoch_logs(int64_t epoch) {
  progress_beacon().enter(Phase::kEpochEnd);
  epoch_train_seconds_ = seconds_since(epoch_start_);
  check_data_unchanged(comm_, data_files_);  // before anything computed from changed data is recorded
  // Training loss: sample-weighted mean of the batch losses over the epoch = global sum / global count.
  comm_.allreduce_sum(std::span<double>(sums_->values));
  // Per-rank moving statistics (BatchNormalization synchronized: false) become their mean before validation and
  // the callbacks read them (dist/cross_replica_comm.h, note 3).
  average_replica_state(comm_, *model_);
  EpochLogs logs;
  sums_->means(model_->metric_names(), logs);
  sums_->clear();
  if (split_.validation > 0 && (epoch + 1) % config_.validation_freq == 0) validate(logs);
  return logs;
}

void Trainer::validate(EpochLogs& logs) {
  progress_beacon().enter(Phase::kValidation);
  // Validation rows follow the training rows in the training file, or are all of data.validation.
  const Dataset& data = validation_ ? *validation_ : *train_;
  const int64_t first_row = validation_ ? 0 : split_.train;
  const auto start = Clock::now();
  for (const auto& [key, value] :
       evaluate_rows(comm_, *model_, data, validation_layout_, first_row, split_.validation)) {
    if (key != "samples") logs["val_" + key] = value;
  }
  if (timeline_) timeline_->recorder().epoch_span(TraceKind::kValidation, start, Clock::now());
}

void Trainer::end_epoch(int64_t epoch, const EpochLogs& computed) {
  progress_beacon().enter(Phase::kEpochDecisions);
  EpochLogs logs = computed;  // callbacks may add keys (learning_rate)
  for (auto& callback : callbacks_) callback->on_epoch_end(epoch, logs, control_);
  agree_on_decisions();
  const double seconds = seconds_since(epoch_start_);
  progress_beacon().enter(Phase::kHistoryWrite);
  history_->record(epoch, logs, seconds, static_cast<double>(split_.train) / epoch_train_seconds_);
  console_->epoch_end(plan_->steps(), seconds, logs);
  checkpointer_->at_epoch_end(epoch, epoch + 1 == config_.epochs || control_.stop_training);
  result_.timings.train_samples += split_.train;
}

// Rank 0's decisions are the job's: every rank computed the same from the same reduced values, and the broadcast
// keeps it so even if a callback ever depended on something rank-local.
void Trainer::agree_on_decisions() {
  double decision[2] = {control_.stop_training ? 1.0 : 0.0, static_cast<double>(optimizer_->learning_rate())};
  comm_.broadcast(std::span<double>(decision, 2), 0);
  control_.stop_training = decision[0] != 0.0;
  optimizer_->set_learning_rate(static_cast<float>(decision[1]));
}

FitResult Trainer::end_training() {
  progress_beacon().enter(Phase::kFinishing);
  for (auto& callback : callbacks_) callback->on_train_end(control_);
  // The weights exported and returned. After an epoch's end the values are already averaged and stay the same, but
  // the allreduce is still made, on every rank alike.
  average_replica_state(comm_, *model_);
  const proto::Diagnosis verdict = diagnose(result_.history);
  console_->verdict(verdict.summary());
  history_->finish(verdict);
  if (!config_.export_weights.empty() && comm_.is_root()) {
    std::error_code error;  // a missing folder was checked to be creatable at setup
    fs::create_directories(config_.export_weights.parent_path(), error);
    save_weights(config_.export_weights, *model_);
  }
  write_timeline();
  return result();
}

// Collective: every rank's spans to rank 0, which writes the one file (dist/timeline.h).
void Trainer::write_timeline() {
  if (!timeline_) return;
  const int64_t steps = timeline_->write(reducer_->wire_bytes(), static_cast<int64_t>(reducer_->buckets().size()));
  console_->timeline_written(config_.timeline.path, config_.timeline.steps, steps);
}

// What the run measured (the step's own clocks) and the final parameters.
FitResult Trainer::result() {
  const StepPhases& phases = step_->phases();
  result_.timings.phases = phases;
  result_.timings.steps = phases.steps;
  result_.timings.train_seconds = phases.total();
  result_.timings.allreduce_seconds = reducer_->seconds();
  result_.final_parameters.assign(model_->parameters().begin(), model_->parameters().end());
  return std::move(result_);
}

}  // namespace

int64_t bucket_bytes_of(const proto::FitOptions& fit) {
  if (!fit.has_bucket_bytes()) return GradientReducer::kDefaultBucketBytes;
  const int64_t bytes = fit.bucket_bytes();
  SF_CHECK(bytes >= 4 && bytes % 4 == 0,
           cat("fit.bucket_bytes = ", bytes, ": expected a multiple of 4 bytes (whole floats), at least 4"),
           cat("the default is ", GradientReducer::kDefaultBucketBytes, " (4 MiB); bench/README.md has the sweep"));
  return bytes;
}

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
  if (f.has_watchdog_warn_seconds()) c.watchdog.warn_seconds = f.watchdog_warn_seconds();
  if (f.has_watchdog_abort_seconds()) c.watchdog.abort_seconds = f.watchdog_abort_seconds();
  if (f.has_overlap()) c.overlap = f.overlap();
  c.bucket_bytes = bucket_bytes_of(f);
  c.reduce_dtype = reduce_dtype_of(f);
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
  check_watchdog_settings(c.watchdog, "fit.watchdog_warn_seconds", "fit.watchdog_abort_seconds");
  return c;
}

GradientReducer::ReduceDtype reduce_dtype_of(const proto::FitOptions& fit) {
  if (!fit.has_reduce_dtype()) return GradientReducer::ReduceDtype::kFloat32;
  const std::string& name = fit.reduce_dtype();
  SF_CHECK(name == "float32" || name == "bfloat16",
           cat("fit.reduce_dtype = \"", name, "\": expected float32 or bfloat16"));
  return parse_reduce_dtype(name);
}

FitResult fit(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir, const FitConfig& config) {
  // This rank watched from setup to the last epoch's files: silent for config.watchdog's seconds, it says where it
  // waits, and then ends the job (dist/watchdog.h).
  const Watchdog watchdog(comm.rank(), config.watchdog);
  Trainer trainer(comm, job, job_dir, config);
  return trainer.run();
}

}  // namespace shardfit
