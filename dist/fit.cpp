// The distributed fit loop. One step reads like the architecture says:
//   gather this rank's slice -> forward/backward (kernels) -> reduce gradients -> update
// and one epoch ends with the reduced training sums, sharded validation and rank 0's history write.
#include "dist/fit.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include "dist/dataset.h"
#include "dist/gradient_reducer.h"
#include "dist/history_writer.h"
#include "dist/progress.h"
#include "dist/sharding.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"

namespace shardfit {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs one setup phase on every rank and agrees on its outcome: either every rank continues, or every rank
// throws the same AgreedFailure naming the lowest rank that failed.
template <typename Body>
void agreed_phase(Comm& comm, Body body) {
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  comm.agree(error);
}

// Where labels come from and how they reach the model's label layout.
LabelLayout choose_label_layout(const Dataset& data, const Model& model, const std::string& loss,
                                const std::string& role) {
  const int64_t out = model.output_dim();
  if (model.label_dim() == 1) {  // sparse cross-entropy: class ids
    if (data.labels_are_ids()) return LabelLayout::kAsIs;
    SF_CHECK(data.label_cols() == out,
             cat("data.", role, ".y has ", data.label_cols(), " values per sample but the model has ", out,
                 " outputs: expected class ids (one per sample) or one-hot rows of ", out));
    return LabelLayout::kOneHotToIds;
  }
  if (data.label_cols() == out && !(out > 1 && data.labels_are_ids() && data.label_cols() == 1)) {
    return LabelLayout::kAsIs;
  }
  if (data.labels_are_ids() && out > 1 && loss == "categorical_crossentropy") return LabelLayout::kIdsToOneHot;
  SF_FAIL(cat("data.", role, ".y has ", data.label_cols(), " value(s) per sample but the model has ", out,
              " outputs and loss '", loss, "': expected ", out, " values per sample",
              out > 1 ? " (or class ids with a cross-entropy loss)" : ""),
          "check the last Dense layer's units against the labels");
}

bool needs_class_ids(LabelLayout layout, const Model& model) {
  return layout == LabelLayout::kIdsToOneHot || (layout == LabelLayout::kAsIs && model.label_dim() == 1);
}

// Sums of one pass (loss, each metric, sample count), reduced as one double vector.
struct Sums {
  std::vector<double> values;  // [loss, metric..., count]
  explicit Sums(size_t metrics) : values(metrics + 2, 0.0) {}
  double& loss() { return values.front(); }
  double& count() { return values.back(); }
  std::span<double> metrics() { return {values.data() + 1, values.size() - 2}; }
  void clear() { std::fill(values.begin(), values.end(), 0.0); }
};

struct TrainingSetup {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> validation;  // null when validation rows come from the training file
  SplitCounts split{0, 0};
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  LabelLayout train_layout = LabelLayout::kAsIs;
  LabelLayout validation_layout = LabelLayout::kAsIs;
  std::optional<double> clipnorm;
};

}  // namespace

FitConfig resolve_fit_config(const proto::Job& job, bool is_terminal) {
  const auto& f = job.fit();
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
  if (job.outputs().has_history_dir()) c.history_dir = job.outputs().history_dir();

  SF_CHECK(c.epochs >= 1, cat("fit.epochs = ", c.epochs, ": expected a positive integer"));
  SF_CHECK(c.batch_size >= 1, cat("fit.batch_size = ", c.batch_size, ": expected a positive integer"));
  SF_CHECK(c.validation_split >= 0.0 && c.validation_split < 1.0,
           cat("fit.validation_split = ", c.validation_split, ": expected a fraction in [0, 1)"));
  SF_CHECK(!c.learning_rate || (*c.learning_rate > 0.0F && std::isfinite(*c.learning_rate)),
           cat("fit.learning_rate = ", c.learning_rate.value_or(0), ": expected a positive number"));
  SF_CHECK(c.initial_epoch >= 0 && c.initial_epoch < c.epochs,
           cat("fit.initial_epoch = ", c.initial_epoch, ": expected 0 <= initial_epoch < epochs (", c.epochs, ")"));
  SF_CHECK(c.validation_freq >= 1, cat("fit.validation_freq = ", c.validation_freq, ": expected a positive integer"));
  SF_CHECK(c.verbose >= 0 && c.verbose <= 2, cat("fit.verbose = ", c.verbose, ": expected 0, 1 or 2"));
  return c;
}

FitResult fit(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir, const FitConfig& config) {
  const int rank = comm.rank();
  const int world = comm.size();
  TrainingSetup s;

  // 1. Data: every rank maps the files and checks them; a file one rank cannot read fails the job here.
  agreed_phase(comm, [&] {
    SF_CHECK(job.data().has_train(), "data.train is not set: expected data { train { x { path: ... } y { ... } } }");
    s.train = std::make_unique<Dataset>(Dataset::open(job.data().train(), job_dir, "train"));
    if (job.data().has_validation()) {
      s.validation = std::make_unique<Dataset>(Dataset::open(job.data().validation(), job_dir, "validation"));
      s.split = {s.train->rows(), s.validation->rows()};
    } else {
      s.split = split_for_validation(s.train->rows(), config.validation_split);
    }
    SF_CHECK(s.split.train > 0, cat("data.train has no samples: expected at least one row in ", s.train->describe()));
  });

  // 2. Model, optimizer and label layout, identical on every rank.
  agreed_phase(comm, [&] {
    s.model = build_model(job, s.train->feature_dim());
    if (s.validation) {
      SF_CHECK(s.validation->feature_dim() == s.train->feature_dim(),
               cat("data.validation has ", s.validation->feature_dim(), " features per sample but data.train has ",
                   s.train->feature_dim()));
    }
    s.train_layout = choose_label_layout(*s.train, *s.model, job.loss(), "train");
    if (needs_class_ids(s.train_layout, *s.model)) s.train->check_class_ids(s.model->output_dim());
    if (s.validation) {
      s.validation_layout = choose_label_layout(*s.validation, *s.model, job.loss(), "validation");
      if (needs_class_ids(s.validation_layout, *s.model)) s.validation->check_class_ids(s.model->output_dim());
    } else {
      s.validation_layout = s.train_layout;
    }
    s.optimizer = make_optimizer(job.optimizer(), s.model->param_count());
    if (config.learning_rate) s.optimizer->set_learning_rate(*config.learning_rate);
    if (job.optimizer().has_global_clipnorm()) s.clipnorm = job.optimizer().global_clipnorm();
    s.model->initialize(config.seed);
  });
  comm.check_same_everywhere("initial weights", s.model->parameters());

  Model& model = *s.model;
  const ShardPlan plan(s.split.train, config.batch_size, world, rank);
  const Dataset& validation_data = s.validation ? *s.validation : *s.train;
  const int64_t validation_offset = s.validation ? 0 : s.split.train;  // validation rows follow the training rows
  const Slice validation_slice = slice_of(s.split.validation, rank, world);
  model.reserve(std::max<int64_t>({plan.max_local_count(), std::min(validation_slice.count, config.batch_size), 1}));
  GradientReducer reducer(comm, model.gradients());

  const bool weighted = !job.fit().class_weight().empty();
  std::vector<float> class_weights;
  if (weighted) {
    class_weights.assign(static_cast<size_t>(model.output_dim() == 1 ? 2 : model.output_dim()), 1.0F);
    for (const auto& [cls, w] : job.fit().class_weight()) {
      SF_CHECK(cls >= 0 && cls < static_cast<int64_t>(class_weights.size()),
               cat("fit.class_weight has class ", cls, ": expected a class id in [0, ", class_weights.size(), ")"));
      class_weights[cls] = w;
    }
  }

  FitResult result;
  proto::History& history = result.history;
  auto* params = history.mutable_params();
  params->set_verbose(config.verbose);
  params->set_epochs(config.epochs);
  params->set_steps(plan.steps());
  params->set_world_size(world);
  params->set_global_batch(config.batch_size);
  params->set_train_samples(s.split.train);
  params->set_validation_samples(s.split.validation);
  params->set_threads_per_rank(omp_get_max_threads());

  std::unique_ptr<HistoryWriter> writer;
  agreed_phase(comm, [&] {
    if (comm.is_root() && config.write_history) writer = std::make_unique<HistoryWriter>(config.history_dir);
  });
  ProgressPrinter progress(stdout, comm.is_root() ? config.verbose : 0, config.terminal, config.epochs);
  if (comm.is_root() && config.verbose > 0 && config.initial_epoch == 0) {
    std::fprintf(stdout, "shardfit: %d rank(s) x %d thread(s), %lld training / %lld validation samples, "
                         "global batch %lld, %lld steps per epoch, %lld parameters\n",
                 world, omp_get_max_threads(), static_cast<long long>(s.split.train),
                 static_cast<long long>(s.split.validation), static_cast<long long>(config.batch_size),
                 static_cast<long long>(plan.steps()), static_cast<long long>(model.param_count()));
    std::fflush(stdout);
  }

  const auto& metric_names = model.metric_names();
  Sums train_sums(metric_names.size());
  Sums validation_sums(metric_names.size());
  std::vector<double> batch_metrics(metric_names.size());
  std::vector<int64_t> permutation;
  std::vector<int64_t> rows(static_cast<size_t>(model.capacity()));
  std::map<std::string, double> running;  // rank 0's running means, for the progress bar only
  std::map<std::string, double> values;
  uint64_t global_step = static_cast<uint64_t>(config.initial_epoch * plan.steps());

  // Fills the model's batch buffers with `count` rows of `data` listed in rows[0..count).
  const auto load = [&](const Dataset& data, LabelLayout layout, int64_t count) {
    data.gather({rows.data(), static_cast<size_t>(count)}, model.input(), model.labels(), layout, model.label_dim());
    if (!weighted) return;
    const int64_t label_dim = model.label_dim();
    for (int64_t i = 0; i < count; ++i) {
      const float* label = model.labels() + i * label_dim;
      int64_t cls = 0;
      if (label_dim == 1) {
        cls = model.output_dim() == 1 ? (label[0] > 0.5F ? 1 : 0) : static_cast<int64_t>(label[0]);
      } else {
        cls = std::max_element(label, label + label_dim) - label;
      }
      model.sample_weights()[i] = class_weights[static_cast<size_t>(cls)];
    }
  };

  for (int64_t epoch = config.initial_epoch; epoch < config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    progress.epoch_begin(epoch);
    epoch_permutation(s.split.train, config.seed, epoch, config.shuffle, permutation);
    train_sums.clear();

    for (int64_t step = 0; step < plan.steps(); ++step) {
      const auto step_start = Clock::now();
      const Slice slice = plan.slice(step);
      const int64_t first = plan.batch_start(step) + slice.offset;
      std::copy_n(permutation.begin() + first, slice.count, rows.begin());
      load(*s.train, s.train_layout, slice.count);

      const BatchContext ctx{true, config.seed, global_step, first};
      train_sums.loss() += model.train_batch(slice.count, ctx, weighted, batch_metrics);
      for (size_t m = 0; m < batch_metrics.size(); ++m) train_sums.metrics()[m] += batch_metrics[m];
      train_sums.count() += static_cast<double>(slice.count);

      reducer.reduce(plan.batch_count(step));
      if (s.clipnorm) clip_by_global_norm(model.gradients(), *s.clipnorm);
      s.optimizer->update(model.parameters(), model.gradients());
      ++global_step;
      result.timings.train_seconds += seconds_since(step_start);

      if (comm.is_root() && config.verbose > 0) {  // rank 0's running means: display only, never recorded
        const double count = std::max(train_sums.count(), 1.0);
        running["loss"] = train_sums.loss() / count;
        for (size_t m = 0; m < metric_names.size(); ++m) running[metric_names[m]] = train_sums.metrics()[m] / count;
        progress.step(step + 1, plan.steps(), seconds_since(epoch_start), running);
      }
    }
    const double train_seconds = seconds_since(epoch_start);
    result.timings.steps += plan.steps();
    result.timings.train_samples += s.split.train;

    // Training loss: sample-weighted mean of the batch losses over the epoch = global sum / global count.
    comm.allreduce_sum(std::span<double>(train_sums.values));
    values.clear();
    values["loss"] = train_sums.loss() / train_sums.count();
    for (size_t m = 0; m < metric_names.size(); ++m) values[metric_names[m]] = train_sums.metrics()[m] / train_sums.count();

    // Validation: each rank its contiguous slice, in chunks of at most the model's capacity; each sample once.
    if (s.split.validation > 0 && (epoch + 1) % config.validation_freq == 0) {
      validation_sums.clear();
      for (int64_t done = 0; done < validation_slice.count;) {
        const int64_t count = std::min(model.capacity(), validation_slice.count - done);
        for (int64_t i = 0; i < count; ++i) rows[i] = validation_offset + validation_slice.offset + done + i;
        load(validation_data, s.validation_layout, count);
        validation_sums.loss() += model.evaluate_batch(count, batch_metrics);
        for (size_t m = 0; m < batch_metrics.size(); ++m) validation_sums.metrics()[m] += batch_metrics[m];
        validation_sums.count() += static_cast<double>(count);
        done += count;
      }
      comm.allreduce_sum(std::span<double>(validation_sums.values));
      values["val_loss"] = validation_sums.loss() / validation_sums.count();
      for (size_t m = 0; m < metric_names.size(); ++m) {
        values["val_" + metric_names[m]] = validation_sums.metrics()[m] / validation_sums.count();
      }
    }

    auto* record = history.add_epochs();
    record->set_epoch(epoch);
    for (const auto& [key, value] : values) (*record->mutable_values())[key] = value;
    const double epoch_seconds = seconds_since(epoch_start);
    record->set_seconds(epoch_seconds);
    record->set_samples_per_second(static_cast<double>(s.split.train) / train_seconds);
    if (writer) writer->write(history);
    progress.epoch_end(plan.steps(), epoch_seconds, values);
  }

  result.timings.allreduce_seconds = reducer.seconds();
  result.final_parameters.assign(model.parameters().begin(), model.parameters().end());
  return result;
}

}  // namespace shardfit
