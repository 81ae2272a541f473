// The Keras callbacks driven with made-up epoch logs on a tiny real model: each decision at exactly the epoch Keras 3
// takes it, the printed lines, the files written, and a resume from saved state deciding as an uninterrupted run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "dist/io/weights_io.h"
#include "dist/train/callbacks.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A Dense(2) on 3 features, Adam at `lr`, and a control whose printed lines are kept. Not copyable: print
// captures `this`.
struct Trainer {
  explicit Trainer(float lr = 1.0F, int64_t epochs = 10) {
    model = build_model(parse_job_text(R"(model { layers { dense { units: 2 } } } loss: "mse")", "model.pbtxt"), 3);
    model->initialize(7);
    optimizer = make_adam({.learning_rate = lr}, model->param_count());
    control.model = model.get();
    control.optimizer = optimizer.get();
    control.is_root = true;
    control.epochs = epochs;
    control.print = [this](const std::string& line) { printed.push_back(line); };
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Every parameter set to `value`: lets a test tell which epoch's weights the model holds.
  void fill(float value) {
    for (float& p : model->parameters()) p = value;
  }
  std::vector<float> parameters() const {
    const std::span<const float> p = std::as_const(*model).parameters();
    return {p.begin(), p.end()};
  }

  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  TrainingControl control;
  std::vector<std::string> printed;
};

std::vector<std::unique_ptr<Callback>> callbacks_from(const std::string& text, int64_t epochs = 10) {
  return make_callbacks(parse_job_text(text, "callbacks.pbtxt"), epochs);
}

// What a run decided: the epoch it stopped after (-1: never), the rate each epoch trained with, the logs as the
// callbacks left them.
struct Trace {
  int64_t stopped_after = -1;
  std::vector<float> rates;
  std::vector<EpochLogs> logs;
};

// The fit loop's callback calls for epochs [from, to), with logs[epoch] as the epoch's values. Before each epoch's
// end the parameters are set to epoch + 1, as if training had changed them.
Trace run_epochs(std::vector<std::unique_ptr<Callback>>& callbacks, Trainer& t, const std::vector<EpochLogs>& logs,
                 int64_t from, int64_t to) {
  Trace trace;
  for (int64_t epoch = from; epoch < to; ++epoch) {
    for (auto& c : callbacks) c->on_epoch_begin(epoch, t.control);
    trace.rates.push_back(t.optimizer->learning_rate());
    t.fill(static_cast<float>(epoch + 1));
    EpochLogs values = logs.at(static_cast<size_t>(epoch));
    for (auto& c : callbacks) c->on_epoch_end(epoch, values, t.control);
    trace.logs.push_back(values);
    if (t.control.stop_training) {
      trace.stopped_after = epoch;
      break;
    }
  }
  return trace;
}

Trace fit(std::vector<std::unique_ptr<Callback>>& callbacks, Trainer& t, const std::vector<EpochLogs>& logs) {
  for (auto& c : callbacks) c->on_train_begin(t.control);
  Trace trace = run_epochs(callbacks, t, logs, 0, static_cast<int64_t>(logs.size()));
  for (auto& c : callbacks) c->on_train_end(t.control);
  return trace;
}

std::vector<EpochLogs> series(const std::string& key, const std::vector<double>& values) {
  std::vector<EpochLogs> out;
  for (double v : values) out.push_back({{key, v}});
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// --- EarlyStopping -------------------------------------------------------------------------------------------

TEST(EarlyStopping, StopsWhenWaitReachesPatience) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 2 } })");
  // 0 and 1 improve; 2 and 3 do not: the wait reaches 2 at epoch 3.
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 0.9, 0.95, 0.96, 0.5, 0.4}));
  EXPECT_EQ(trace.stopped_after, 3);
  EXPECT_EQ(t.printed, std::vector<std::string>{"Epoch 4: early stopping"});
}

TEST(EarlyStopping, DefaultsMonitorValLossWithPatienceZero) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping {} })");
  const Trace trace = fit(callbacks, t, series("val_loss", {1.0, 0.8, 0.8, 0.7}));
  EXPECT_EQ(trace.stopped_after, 2);  // equal is no improvement
  EXPECT_EQ(t.printed, std::vector<std::string>{"Epoch 3: early stopping"});
}

TEST(EarlyStopping, ImprovementSmallerThanMinDeltaDoesNotCount) {
  for (const char* delta : {"0.1", "-0.1"}) {  // Keras takes |min_delta|
    SCOPED_TRACE(delta);
    Trainer t;
    auto callbacks = callbacks_from(
        std::string(R"(callbacks { early_stopping { monitor: "loss" patience: 1 min_delta: )") + delta + " } }");
    // 0.95 is not below 1.0 - 0.1; 0.85 would have been.
    EXPECT_EQ(fit(callbacks, t, series("loss", {1.0, 0.95, 0.8})).stopped_after, 1);
  }
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 1 min_delta: 0.1 } })");
  EXPECT_EQ(fit(callbacks, t, series("loss", {1.0, 0.85, 0.74, 0.7})).stopped_after, 3);
}

TEST(EarlyStopping, AccuracyIsMaximisedInAutoMode) {
  const std::vector<EpochLogs> logs = series("val_accuracy", {0.5, 0.6, 0.55, 0.7});
  {
    Trainer t;
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "val_accuracy" patience: 1 } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 2);
  }
  {
    Trainer t;
    auto callbacks =
        callbacks_from(R"(callbacks { early_stopping { monitor: "val_accuracy" patience: 1 mode: "max" } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 2);
  }
  {
    Trainer t;  // forced min: 0.6 is worse than 0.5
    auto callbacks =
        callbacks_from(R"(callbacks { early_stopping { monitor: "val_accuracy" patience: 1 mode: "min" } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 1);
  }
}

TEST(EarlyStopping, BaselineHoldsTheWaitWhileNotBeaten) {
  const std::vector<EpochLogs> logs = series("loss", {0.8, 0.7, 0.6, 0.65, 0.66, 0.3});
  {
    // Keras 3: improving epochs skip the stop test, but keep counting while the baseline is not beaten; the first
    // epoch without improvement then stops at once (wait 4 >= patience 2).
    Trainer t;
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 2 baseline: 0.5 } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 3);
  }
  {
    Trainer t;
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 2 } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 4);
  }
  {
    Trainer t;  // a baseline that is beaten resets the wait as usual
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 2 baseline: 0.9 } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 4);
  }
}

TEST(EarlyStopping, StartFromEpochIgnoresTheFirstEpochs) {
  const std::vector<EpochLogs> logs = series("loss", {1.0, 2.0, 3.0, 4.0, 5.0});
  {
    Trainer t;
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" start_from_epoch: 2 } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 3);  // epoch 2 sets the best, 3 is worse
  }
  {
    Trainer t;
    auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" } })");
    EXPECT_EQ(fit(callbacks, t, logs).stopped_after, 1);
  }
}

TEST(EarlyStopping, RestoresTheBestEpochsWeightsWhenStopping) {
  Trainer t;
  auto callbacks =
      callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 1 restore_best_weights: true } })");
  // run_epochs sets every parameter to epoch + 1: epoch 1 (the best) holds 2.0.
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 0.5, 0.7, 0.8}));
  EXPECT_EQ(trace.stopped_after, 2);
  EXPECT_EQ(t.parameters(), std::vector<float>(static_cast<size_t>(t.model->param_count()), 2.0F));
  EXPECT_EQ(t.printed, (std::vector<std::string>{"Epoch 3: early stopping",
                                                 "Restoring model weights from the end of the best epoch: 2."}));
}

TEST(EarlyStopping, RestoresTheBestWeightsAlsoWithoutStopping) {
  // Keras 3 restores at the end of training whenever it holds best weights, stopped or not.
  Trainer t;
  auto callbacks =
      callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 5 restore_best_weights: true } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 0.9, 0.3, 0.5}));
  EXPECT_EQ(trace.stopped_after, -1);
  EXPECT_EQ(t.parameters(), std::vector<float>(static_cast<size_t>(t.model->param_count()), 3.0F));
  EXPECT_EQ(t.printed, std::vector<std::string>{"Restoring model weights from the end of the best epoch: 3."});
}

TEST(EarlyStopping, WithoutRestoreKeepsTheLastWeights) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 1 } })");
  fit(callbacks, t, series("loss", {1.0, 0.5, 0.7, 0.8}));
  EXPECT_EQ(t.parameters(), std::vector<float>(static_cast<size_t>(t.model->param_count()), 3.0F));
}

TEST(EarlyStopping, MissingMonitorWarnsOnceAndNeverStops) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "val_loss" } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 2.0, 3.0}));
  EXPECT_EQ(trace.stopped_after, -1);
  EXPECT_EQ(t.printed, std::vector<std::string>{"warning: Early stopping conditioned on metric `val_loss` which is "
                                                "not available. Available metrics are: loss"});
}

TEST(EarlyStopping, NaNIsNeverAnImprovement) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 1 } })");
  EXPECT_EQ(fit(callbacks, t, series("loss", {1.0, kNaN, 0.9})).stopped_after, 1);
}

// --- ReduceLROnPlateau -----------------------------------------------------------------------------------------

TEST(ReduceLROnPlateau, ReducesAfterPatienceEpochsWithoutImprovement) {
  Trainer t(1.0F);
  auto callbacks = callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.5 patience: 2 } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}));
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 1.0F, 0.5F, 0.5F, 0.25F}));
  EXPECT_EQ(t.printed, (std::vector<std::string>{"Epoch 3: ReduceLROnPlateau reducing learning rate to 0.5.",
                                                 "Epoch 5: ReduceLROnPlateau reducing learning rate to 0.25."}));
  // The rate each epoch trained with, logged before the reduction (Keras 3).
  for (size_t e = 0; e < trace.logs.size(); ++e) {
    EXPECT_EQ(trace.logs[e].at("learning_rate"), static_cast<double>(trace.rates[e])) << e;
  }
}

TEST(ReduceLROnPlateau, ImprovementMustExceedMinDelta) {
  Trainer t(1.0F);
  auto callbacks = callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.5 patience: 1 } })");
  // The default min_delta 1e-4: 0.99995 is no improvement on 1.0; 0.9 is, and resets the wait.
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 0.99995, 0.9, 0.89995}));
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 0.5F, 0.5F}));
  EXPECT_EQ(t.optimizer->learning_rate(), 0.25F);
}

TEST(ReduceLROnPlateau, CooldownSkipsEpochsAfterAReduction) {
  Trainer t(1.0F);
  auto callbacks =
      callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.5 patience: 1 cooldown: 2 } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}));
  // Reductions at the ends of epochs 1, 3 and 5: two epochs of cooldown each time (the second one counts again).
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 0.5F, 0.5F, 0.25F, 0.25F, 0.125F}));
  EXPECT_EQ(t.printed.size(), 3U);
}

TEST(ReduceLROnPlateau, NeverGoesBelowMinLr) {
  Trainer t(1.0F);
  auto callbacks =
      callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.1 patience: 0 min_lr: 0.05 } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 2.0, 2.0, 2.0}));
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 0.1F, 0.05F}));
  EXPECT_EQ(t.optimizer->learning_rate(), 0.05F);
  // Keras prints the double it computed: 1.0 * 0.1, then max(float32(0.1) * 0.1, 0.05).
  EXPECT_EQ(t.printed, (std::vector<std::string>{"Epoch 2: ReduceLROnPlateau reducing learning rate to 0.1.",
                                                 "Epoch 3: ReduceLROnPlateau reducing learning rate to 0.05."}));
}

TEST(ReduceLROnPlateau, PrintsTheUnroundedProductOfAFloat32Rate) {
  Trainer t(0.001F);
  auto callbacks = callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "loss" patience: 0 } })");
  fit(callbacks, t, series("loss", {1.0, 1.0}));
  // float(np.float32(0.001)) * 0.1 in Python.
  EXPECT_EQ(t.printed,
            std::vector<std::string>{"Epoch 2: ReduceLROnPlateau reducing learning rate to 0.00010000000474974513."});
  EXPECT_EQ(t.optimizer->learning_rate(), static_cast<float>(static_cast<double>(0.001F) * 0.1));
}

TEST(ReduceLROnPlateau, AccuracyIsMaximisedInAutoMode) {
  Trainer t(1.0F);
  auto callbacks =
      callbacks_from(R"(callbacks { reduce_lr_on_plateau { monitor: "val_accuracy" factor: 0.5 patience: 1 } })");
  const Trace trace = fit(callbacks, t, series("val_accuracy", {0.5, 0.6, 0.7, 0.7}));
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 1.0F, 1.0F}));
  EXPECT_EQ(t.optimizer->learning_rate(), 0.5F);
}

TEST(ReduceLROnPlateau, MissingMonitorWarnsOnceAndStillLogsTheRate) {
  Trainer t(1.0F);
  auto callbacks = callbacks_from(R"(callbacks { reduce_lr_on_plateau { patience: 0 } })");
  const Trace trace = fit(callbacks, t, series("loss", {1.0, 2.0, 3.0}));
  EXPECT_EQ(trace.rates, (std::vector<float>{1.0F, 1.0F, 1.0F}));
  EXPECT_EQ(trace.logs[2].at("learning_rate"), 1.0);
  // As in Keras, the rate is in the logs before the monitor is looked up.
  EXPECT_EQ(t.printed, std::vector<std::string>{"warning: Learning rate reduction is conditioned on metric `val_loss` "
                                                "which is not available. Available metrics are: learning_rate,loss."});
}

// --- LearningRateScheduler -------------------------------------------------------------------------------------

std::vector<float> scheduled_rates(const std::string& scheduler, int64_t epochs, float base = 0.5F) {
  Trainer t(base, epochs);
  auto callbacks = callbacks_from("callbacks { learning_rate_scheduler { " + scheduler + " } }", epochs);
  const Trace trace = fit(callbacks, t, std::vector<EpochLogs>(static_cast<size_t>(epochs), {{"loss", 1.0}}));
  for (size_t e = 0; e < trace.logs.size(); ++e) {
    EXPECT_EQ(trace.logs[e].at("learning_rate"), static_cast<double>(trace.rates[e])) << e;
  }
  return trace.rates;
}

std::vector<float> as_floats(const std::vector<double>& rates) { return {rates.begin(), rates.end()}; }

TEST(LearningRateScheduler, StepDecay) {
  EXPECT_EQ(scheduled_rates("step { factor: 0.5 every_epochs: 3 }", 8),
            as_floats({0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125}));
}

TEST(LearningRateScheduler, ExponentialDecay) {
  std::vector<double> expected;
  for (int e = 0; e < 6; ++e) expected.push_back(static_cast<double>(0.5F) * std::pow(0.9, e));
  EXPECT_EQ(scheduled_rates("exponential { rate: 0.9 }", 6), as_floats(expected));
}

TEST(LearningRateScheduler, CosineDecayWithFloor) {
  std::vector<double> expected;
  for (int e = 0; e < 7; ++e) {
    const double c = 0.5 * (1 + std::cos(M_PI * std::min(e, 4) / 4.0));
    expected.push_back(0.5 * (0.9 * c + 0.1));
  }
  const std::vector<float> rates = scheduled_rates("cosine { decay_epochs: 4 alpha: 0.1 }", 7);
  EXPECT_EQ(rates, as_floats(expected));
  EXPECT_EQ(rates[0], 0.5F);
  EXPECT_EQ(rates[4], 0.05F);
  EXPECT_EQ(rates[6], 0.05F);
}

TEST(LearningRateScheduler, CosineDecaysOverTheFitByDefault) {
  std::vector<double> expected;
  for (int e = 0; e < 5; ++e) expected.push_back(0.5 * 0.5 * (1 + std::cos(M_PI * e / 5.0)));
  EXPECT_EQ(scheduled_rates("cosine {}", 5), as_floats(expected));
}

TEST(LearningRateScheduler, WarmupThenScheduleCountedFromItsEnd) {
  // warmup from 0.25 x base over 4 epochs, then the step schedule starting at the base rate.
  EXPECT_EQ(scheduled_rates("warmup_epochs: 4 warmup_from: 0.25 step { factor: 0.5 every_epochs: 2 }", 9),
            as_floats({0.5 * 0.25, 0.5 * 0.4375, 0.5 * 0.625, 0.5 * 0.8125, 0.5, 0.5, 0.25, 0.25, 0.125}));
}

TEST(LearningRateScheduler, WarmupAloneThenConstant) {
  EXPECT_EQ(scheduled_rates("warmup_epochs: 2", 4), as_floats({0.05, 0.5 * 0.55, 0.5, 0.5}));
}

TEST(LearningRateScheduler, CosineAfterWarmupDecaysOverTheRest) {
  std::vector<double> expected = {0.5 * 0.1};
  for (int e = 0; e < 4; ++e) expected.push_back(0.5 * 0.5 * (1 + std::cos(M_PI * e / 4.0)));
  EXPECT_EQ(scheduled_rates("warmup_epochs: 1 cosine {}", 5), as_floats(expected));
}

// --- ModelCheckpoint -------------------------------------------------------------------------------------------

TEST(ModelCheckpoint, NamesFilesFromEpochAndLogs) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const fs::path pattern = dir.path() / "new" / "sub" / "w.{epoch:02d}-{val_loss:.2f}.npz";
  auto callbacks = callbacks_from("callbacks { model_checkpoint { filepath: '" + pattern.string() + "' } }");
  std::vector<EpochLogs> logs = {{{"val_loss", 0.5}}, {{"val_loss", 0.6}}, {{"val_loss", 0.1234}}};
  fit(callbacks, t, logs);
  for (const char* name : {"w.01-0.50.npz", "w.02-0.60.npz", "w.03-0.12.npz"}) {
    EXPECT_TRUE(fs::exists(dir.path() / "new" / "sub" / name)) << name;
  }
  // The weights of that epoch: run_epochs set every parameter to epoch + 1.
  Trainer loaded;
  load_weights(dir.path() / "new" / "sub" / "w.02-0.60.npz", *loaded.model);
  EXPECT_EQ(loaded.parameters(), std::vector<float>(static_cast<size_t>(loaded.model->param_count()), 2.0F));
}

TEST(ModelCheckpoint, FormatsFieldsAsPythonDoes) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const std::string pattern =
      (dir.path() / "{{x}}{epoch}_{epoch:3d}_{epoch:03}_{loss}_{loss:.3e}_{loss:08.3f}_{val_loss:g}_{acc:.1f}.npz")
          .string();
  auto callbacks = callbacks_from("callbacks { model_checkpoint { filepath: '" + pattern + "' } }");
  EpochLogs logs = {{"loss", -0.000123}, {"val_loss", 2.5}, {"acc", kNaN}};
  for (auto& c : callbacks) c->on_epoch_end(11, logs, t.control);
  const fs::path expected = dir.path() / "{x}12_ 12_012_-0.000123_-1.230e-04_-000.000_2.5_nan.npz";
  EXPECT_TRUE(fs::exists(expected)) << expected;
}

TEST(ModelCheckpoint, SaveBestOnlyWritesOnlyOnImprovement) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const std::string pattern = (dir.path() / "best.{epoch}.npz").string();
  auto callbacks =
      callbacks_from("callbacks { model_checkpoint { filepath: '" + pattern + "' save_best_only: true } }");
  fit(callbacks, t, series("val_loss", {0.5, 0.6, 0.4, 0.4, 0.3}));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"best.1.npz", "best.3.npz", "best.5.npz"}));
}

TEST(ModelCheckpoint, SaveBestOnlyInMaxModeOverwritesOneFile) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const fs::path path = dir.path() / "best.npz";
  auto callbacks = callbacks_from("callbacks { model_checkpoint { filepath: '" + path.string() +
                                  "' monitor: 'val_accuracy' save_best_only: true } }");
  fit(callbacks, t, series("val_accuracy", {0.5, 0.7, 0.6}));
  Trainer loaded;
  load_weights(path, *loaded.model);
  EXPECT_EQ(loaded.parameters(), std::vector<float>(static_cast<size_t>(loaded.model->param_count()), 2.0F));
}

TEST(ModelCheckpoint, OnlyRankZeroWrites) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  t.control.is_root = false;
  auto callbacks =
      callbacks_from("callbacks { model_checkpoint { filepath: '" + (dir.path() / "w{epoch}.npz").string() + "' } }");
  fit(callbacks, t, series("val_loss", {0.5, 0.4}));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(ModelCheckpoint, UnknownFieldIsAnErrorNamingIt) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { model_checkpoint { filepath: "w.{epoch}-{val_acc:.2f}.npz" } })");
  EpochLogs logs = {{"loss", 1.0}, {"val_loss", 1.0}};
  const std::string message = error_of([&] { callbacks[0]->on_epoch_end(0, logs, t.control); });
  EXPECT_NE(message.find("callbacks[0].model_checkpoint.filepath"), std::string::npos) << message;
  EXPECT_NE(message.find("'val_acc'"), std::string::npos) << message;
  EXPECT_NE(message.find("epoch,loss,val_loss"), std::string::npos) << message;
}

TEST(ModelCheckpoint, IntegerFormatOfAFloatIsAnError) {
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { model_checkpoint { filepath: "w.{loss:02d}.npz" } })");
  EpochLogs logs = {{"loss", 1.0}};
  const std::string message = error_of([&] { callbacks[0]->on_epoch_end(0, logs, t.control); });
  EXPECT_NE(message.find("'loss' is a float"), std::string::npos) << message;
}

// libfmt formats the names; its spec language is Python's, so specs beyond the old subset work too.
TEST(ModelCheckpoint, NamesThroughLibfmtAsPythonFormatsThem) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const std::string pattern =
      (dir.path() /
       "{epoch:02d}_{val_loss:.2f}_{epoch:>3}_{epoch:.1f}_{loss}_{loss:+.1e}_{acc:.2f}_{lr:<6g}|{loss:06}_{lr:5}.npz")
          .string();
  auto callbacks = callbacks_from("callbacks { model_checkpoint { filepath: '" + pattern + "' } }");
  EpochLogs logs = {{"loss", 2.0}, {"val_loss", 0.4567}, {"acc", -kNaN}, {"lr", 0.5}};
  for (auto& c : callbacks) c->on_epoch_end(2, logs, t.control);
  const fs::path expected = dir.path() / "03_0.46_  3_3.0_2.0_+2.0e+00_nan_0.5   |0002.0_  0.5.npz";
  EXPECT_TRUE(fs::exists(expected)) << expected;
}

TEST(ModelCheckpoint, PositionalFieldsAreRefused) {
  for (const char* tpl : {"w{}.npz", "w{0}.npz", "w{0:02d}.npz"}) {
    const std::string message =
        error_of([&] { callbacks_from(cat(R"(callbacks { model_checkpoint { filepath: ")", tpl, R"(" } })")); });
    EXPECT_NE(message.find("callbacks[0].model_checkpoint.filepath"), std::string::npos) << message;
    EXPECT_NE(message.find("a field needs a name"), std::string::npos) << message;
  }
}

TEST(ModelCheckpoint, UnknownNameFailsBeforeAnyFileIsWritten) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  auto callbacks = callbacks_from("callbacks { model_checkpoint { filepath: '" +
                                  (dir.path() / "w{epoch:02d}-{val_los:.2f}.npz").string() + "' } }");
  EpochLogs logs = {{"loss", 1.0}, {"val_loss", 0.5}};
  const std::string message = error_of([&] { callbacks[0]->on_epoch_end(2, logs, t.control); });
  EXPECT_NE(message.find("callbacks[0].model_checkpoint.filepath"), std::string::npos) << message;
  EXPECT_NE(message.find("no value named 'val_los' at epoch 3"), std::string::npos) << message;
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// --- TerminateOnNaN --------------------------------------------------------------------------------------------

TEST(TerminateOnNaN, StopsOnNaNOrInfinity) {
  for (double bad : {kNaN, kInf, -kInf}) {
    Trainer t;
    auto callbacks = callbacks_from("callbacks { terminate_on_nan {} }");
    ASSERT_TRUE(callbacks[0]->wants_batch_loss());
    callbacks[0]->on_batch_end(0, 1.5, t.control);
    callbacks[0]->on_batch_end(1, 1e30, t.control);
    EXPECT_FALSE(t.control.stop_training);
    EXPECT_TRUE(t.printed.empty());
    callbacks[0]->on_batch_end(2, bad, t.control);
    EXPECT_TRUE(t.control.stop_training);
    EXPECT_EQ(t.printed, std::vector<std::string>{"Batch 2: Invalid loss, terminating training"});
  }
}

TEST(Callbacks, OnlyTerminateOnNaNWantsBatchLosses) {
  auto callbacks = callbacks_from(R"(callbacks { early_stopping {} } callbacks { reduce_lr_on_plateau {} }
      callbacks { learning_rate_scheduler { exponential { rate: 0.9 } } }
      callbacks { model_checkpoint { filepath: "x.npz" } } callbacks { csv_logger { filename: "x.csv" } })");
  for (const auto& c : callbacks) EXPECT_FALSE(c->wants_batch_loss()) << c->name();
}

// --- CSVLogger -------------------------------------------------------------------------------------------------

TEST(CsvLogger, WritesKerasRows) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  const fs::path path = dir.path() / "logs" / "training.csv";
  auto callbacks = callbacks_from("callbacks { csv_logger { filename: '" + path.string() + "' } }");
  std::vector<EpochLogs> logs = {
      {{"loss", 1.0}, {"val_loss", 0.1}, {"accuracy", 0.5}},
      {{"loss", 1e-05}, {"val_loss", 2.0 / 3.0}, {"accuracy", 1e16}},
      {{"loss", kNaN}, {"accuracy", -kInf}, {"extra", 1.0}},  // val_loss missing: NA; extra: not a column
  };
  for (auto& c : callbacks) c->on_train_begin(t.control);
  run_epochs(callbacks, t, logs, 0, 1);
  // Flushed at every epoch: the first row is there before the second epoch.
  EXPECT_EQ(read_text(path), "epoch,accuracy,loss,val_loss\r\n0,0.5,1.0,0.1\r\n");
  run_epochs(callbacks, t, logs, 1, 3);
  for (auto& c : callbacks) c->on_train_end(t.control);
  EXPECT_EQ(read_text(path),
            "epoch,accuracy,loss,val_loss\r\n"
            "0,0.5,1.0,0.1\r\n"
            "1,1e+16,1e-05,0.6666666666666666\r\n"
            "2,-inf,nan,NA\r\n");
}

TEST(CsvLogger, SeesTheLearningRateAddedByAnEarlierCallback) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t(0.5F);
  const fs::path path = dir.path() / "training.tsv";
  auto callbacks = callbacks_from(
      "callbacks { learning_rate_scheduler { step { factor: 0.5 every_epochs: 1 } } }"
      "callbacks { csv_logger { filename: '" +
      path.string() + "' separator: ';' } }");
  fit(callbacks, t, series("loss", {2.0, 1.0}));
  EXPECT_EQ(read_text(path), "epoch;learning_rate;loss\r\n0;0.5;2.0\r\n1;0.25;1.0\r\n");
}

TEST(CsvLogger, OverwritesUnlessAppending) {
  const shardfit::testing::TempDir dir("callbacks");
  const fs::path path = dir.path() / "log.csv";
  {
    std::ofstream(path, std::ios::binary) << "old\r\n";
    Trainer t;
    auto callbacks = callbacks_from("callbacks { csv_logger { filename: '" + path.string() + "' } }");
    fit(callbacks, t, series("loss", {1.0}));
    EXPECT_EQ(read_text(path), "epoch,loss\r\n0,1.0\r\n");
  }
  {
    Trainer t;  // appending to a file with content: no second header
    auto callbacks = callbacks_from("callbacks { csv_logger { filename: '" + path.string() + "' append: true } }");
    fit(callbacks, t, series("loss", {0.5, 0.25}));
    EXPECT_EQ(read_text(path), "epoch,loss\r\n0,1.0\r\n0,0.5\r\n1,0.25\r\n");
  }
  {
    const fs::path fresh = dir.path() / "fresh.csv";
    Trainer t;  // appending to no file: a header first
    auto callbacks = callbacks_from("callbacks { csv_logger { filename: '" + fresh.string() + "' append: true } }");
    fit(callbacks, t, series("loss", {0.5}));
    EXPECT_EQ(read_text(fresh), "epoch,loss\r\n0,0.5\r\n");
  }
}

TEST(CsvLogger, OnlyRankZeroWrites) {
  const shardfit::testing::TempDir dir("callbacks");
  Trainer t;
  t.control.is_root = false;
  auto callbacks = callbacks_from("callbacks { csv_logger { filename: '" + (dir.path() / "a.csv").string() + "' } }");
  fit(callbacks, t, series("loss", {1.0}));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// --- Validation ------------------------------------------------------------------------------------------------

TEST(MakeCallbacks, ErrorsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(callbacks { early_stopping { mode: "up" } })",
       "callbacks[0].early_stopping.mode = 'up': expected auto, min or max"},
      {R"(callbacks { terminate_on_nan {} } callbacks { early_stopping { patience: -1 } })",
       "callbacks[1].early_stopping.patience = -1: expected >= 0"},
      {R"(callbacks { early_stopping { start_from_epoch: -2 } })",
       "callbacks[0].early_stopping.start_from_epoch = -2: expected >= 0"},
      {R"(callbacks { early_stopping { monitor: "" } })", "callbacks[0].early_stopping.monitor is empty"},
      {R"(callbacks { reduce_lr_on_plateau { factor: 1 } })",
       "callbacks[0].reduce_lr_on_plateau.factor = 1: expected a number in (0, 1)"},
      {R"(callbacks { reduce_lr_on_plateau { factor: 0 } })",
       "callbacks[0].reduce_lr_on_plateau.factor = 0: expected a number in (0, 1)"},
      {R"(callbacks { reduce_lr_on_plateau { cooldown: -1 } })",
       "callbacks[0].reduce_lr_on_plateau.cooldown = -1: expected >= 0"},
      {R"(callbacks { reduce_lr_on_plateau { min_lr: -1 } })",
       "callbacks[0].reduce_lr_on_plateau.min_lr = -1: expected a number >= 0"},
      {R"(callbacks { reduce_lr_on_plateau { mode: "down" } })",
       "callbacks[0].reduce_lr_on_plateau.mode = 'down': expected auto, min or max"},
      {R"(callbacks { learning_rate_scheduler {} })", "callbacks[0].learning_rate_scheduler: no schedule"},
      {R"(callbacks { learning_rate_scheduler { step { factor: 0.5 } } })",
       "callbacks[0].learning_rate_scheduler.step.every_epochs = 0: expected >= 1"},
      {R"(callbacks { learning_rate_scheduler { step { every_epochs: 2 } } })",
       "callbacks[0].learning_rate_scheduler.step.factor = 0: expected a positive number"},
      {R"(callbacks { learning_rate_scheduler { exponential { rate: -1 } } })",
       "callbacks[0].learning_rate_scheduler.exponential.rate = -1: expected a positive number"},
      {R"(callbacks { learning_rate_scheduler { cosine { alpha: 2 } } })",
       "callbacks[0].learning_rate_scheduler.cosine.alpha = 2: expected a number in [0, 1]"},
      {R"(callbacks { learning_rate_scheduler { cosine { decay_epochs: -3 } } })",
       "callbacks[0].learning_rate_scheduler.cosine.decay_epochs = -3: expected >= 1"},
      {R"(callbacks { learning_rate_scheduler { warmup_epochs: 2 warmup_from: 1.5 } })",
       "callbacks[0].learning_rate_scheduler.warmup_from = 1.5"},
      {R"(callbacks { model_checkpoint {} })", "callbacks[0].model_checkpoint.filepath is empty"},
      {R"(callbacks { model_checkpoint { filepath: "w{epoch:>3q}.npz" } })",
       "callbacks[0].model_checkpoint.filepath = 'w{epoch:>3q}.npz': format spec ':>3q' of field 'epoch' is not "
       "supported"},
      {R"(callbacks { model_checkpoint { filepath: "w{epoch.npz" } })", "'{' without a closing '}'"},
      {R"(callbacks { model_checkpoint { filepath: "w}.npz" } })", "single '}'"},
      {R"(callbacks { model_checkpoint { filepath: "w{}.npz" } })", "a field needs a name"},
      {R"(callbacks { model_checkpoint { filepath: "w{loss:.2}.npz" } })", "a precision needs a type"},
      {R"(callbacks { model_checkpoint { filepath: "w.npz" mode: "best" } })",
       "callbacks[0].model_checkpoint.mode = 'best': expected auto, min or max"},
      {R"(callbacks { csv_logger {} })", "callbacks[0].csv_logger.filename is empty"},
      {R"(callbacks { csv_logger { filename: "a.csv" separator: ";;" } })",
       "callbacks[0].csv_logger.separator = ';;': expected one character"},
      {R"(callbacks {})", "callbacks[0]: no callback set"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = error_of([&] { callbacks_from(text); });
    EXPECT_NE(message.find(expected), std::string::npos) << text << "\n  gave: " << message;
  }
}

TEST(MakeCallbacks, KeepsTheJobsOrder) {
  auto callbacks = callbacks_from(R"(callbacks { csv_logger { filename: "a.csv" } } callbacks { terminate_on_nan {} }
      callbacks { early_stopping {} })");
  ASSERT_EQ(callbacks.size(), 3U);
  EXPECT_EQ(callbacks[0]->name(), "csv_logger");
  EXPECT_EQ(callbacks[1]->name(), "terminate_on_nan");
  EXPECT_EQ(callbacks[2]->name(), "early_stopping");
  EXPECT_TRUE(callbacks_from("").empty());
}

// --- Resume ----------------------------------------------------------------------------------------------------

// Everything observable about a run: decisions, rates, logs, printed lines, final weights and the files written.
struct Outcome {
  Trace trace;
  std::vector<std::string> printed;
  std::vector<float> final_parameters;
  std::map<std::string, std::string> files;
};

std::map<std::string, std::string> files_under(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files[fs::relative(entry.path(), dir).string()] = read_text(entry.path());
  }
  return files;
}

// `job` holds "@DIR@" where the callbacks' files go. resume_at < 0: one uninterrupted fit. Otherwise the fit is
// interrupted after epoch resume_at - 1 (its state saved, as the checkpoint does), epoch resume_at is run and
// lost (a kill before the next checkpoint), and a new process (fresh callbacks, state loaded) continues.
Outcome run_job(std::string job, const std::vector<EpochLogs>& logs, int64_t resume_at, bool load_before_begin) {
  const shardfit::testing::TempDir dir("callbacks");
  for (size_t at; (at = job.find("@DIR@")) != std::string::npos;) job.replace(at, 5, dir.path().string());
  const auto epochs = static_cast<int64_t>(logs.size());
  Outcome out;
  Trainer first(0.5F, epochs);
  auto callbacks = callbacks_from(job, epochs);
  for (auto& c : callbacks) c->on_train_begin(first.control);
  if (resume_at < 0) {
    out.trace = run_epochs(callbacks, first, logs, 0, epochs);
    for (auto& c : callbacks) c->on_train_end(first.control);
    out.printed = first.printed;
    out.final_parameters = first.parameters();
  } else {
    out.trace = run_epochs(callbacks, first, logs, 0, resume_at);
    EXPECT_EQ(out.trace.stopped_after, -1) << "pick a resume epoch before the stop";
    // Through the checkpoint's wire format, as a resume reads it.
    proto::Checkpoint checkpoint;
    *checkpoint.mutable_callbacks_state() = save_callbacks_state(callbacks);
    proto::Checkpoint read_back;
    EXPECT_TRUE(read_back.ParseFromString(checkpoint.SerializeAsString()));
    const CallbackStates& blob = read_back.callbacks_state();
    const float rate = first.optimizer->learning_rate();
    const std::vector<float> parameters = first.parameters();
    const size_t printed_before_loss = first.printed.size();
    run_epochs(callbacks, first, logs, resume_at, resume_at + 1);  // lost with the process
    first.printed.resize(printed_before_loss);                     // so is what it printed, for this comparison

    Trainer second(0.5F, epochs);
    second.optimizer->set_learning_rate(rate);  // the checkpoint's optimizer state
    std::copy(parameters.begin(), parameters.end(), second.model->parameters().begin());
    auto resumed = callbacks_from(job, epochs);
    if (load_before_begin) load_callbacks_state(resumed, blob);
    for (auto& c : resumed) c->on_train_begin(second.control);
    if (!load_before_begin) load_callbacks_state(resumed, blob);
    const Trace rest = run_epochs(resumed, second, logs, resume_at, epochs);
    for (auto& c : resumed) c->on_train_end(second.control);
    out.trace.stopped_after = rest.stopped_after;
    out.trace.rates.insert(out.trace.rates.end(), rest.rates.begin(), rest.rates.end());
    out.trace.logs.insert(out.trace.logs.end(), rest.logs.begin(), rest.logs.end());
    out.printed = first.printed;
    out.printed.insert(out.printed.end(), second.printed.begin(), second.printed.end());
    out.final_parameters = second.parameters();
  }
  out.files = files_under(dir.path());
  return out;
}

void expect_same(const Outcome& a, const Outcome& b) {
  EXPECT_EQ(a.trace.stopped_after, b.trace.stopped_after);
  EXPECT_EQ(a.trace.rates, b.trace.rates);
  EXPECT_EQ(a.trace.logs, b.trace.logs);
  EXPECT_EQ(a.printed, b.printed);
  EXPECT_EQ(a.final_parameters, b.final_parameters);
  EXPECT_EQ(a.files, b.files);
}

TEST(CallbacksState, ResumeDecidesAsAnUninterruptedRun) {
  const std::string job = R"(
      callbacks { learning_rate_scheduler { warmup_epochs: 2 cosine { alpha: 0.1 } } }
      callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.5 patience: 1 cooldown: 1 } }
      callbacks { early_stopping { monitor: "val_loss" patience: 3 restore_best_weights: true baseline: 0.95 } }
      callbacks { model_checkpoint { filepath: "@DIR@/ckpt/w{epoch:02d}.npz" save_best_only: true } }
      callbacks { terminate_on_nan {} }
      callbacks { csv_logger { filename: "@DIR@/log.csv" } })";
  std::vector<EpochLogs> logs;
  const std::vector<double> loss = {1.0, 0.9, 0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7};
  const std::vector<double> val = {0.9, 0.7, 0.65, 0.7, 0.5, 0.55, 0.6, 0.58, 0.6, 0.61, 0.62, 0.63};
  for (size_t e = 0; e < loss.size(); ++e) logs.push_back({{"loss", loss[e]}, {"val_loss", val[e]}});
  const Outcome whole = run_job(job, logs, -1, true);
  EXPECT_EQ(whole.trace.stopped_after, 7);  // best at epoch 4, three epochs without improvement
  EXPECT_EQ(whole.final_parameters.front(), 5.0F);
  // val_loss improves at epochs 0, 1, 2 and 4.
  EXPECT_EQ(whole.files.size(), 5U);
  for (const char* name : {"log.csv", "ckpt/w01.npz", "ckpt/w02.npz", "ckpt/w03.npz", "ckpt/w05.npz"}) {
    EXPECT_EQ(whole.files.count(name), 1U) << name;
  }
  for (int64_t at : {1, 3, 4, 5, 6}) {
    for (bool load_before_begin : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "resume at " << at
                                        << (load_before_begin ? ", load first" : ", begin first"));
      expect_same(run_job(job, logs, at, load_before_begin), whole);
    }
  }
}

TEST(CallbacksState, ResumeOnAPlateauKeepsWaitAndCooldown) {
  // No scheduler here: it would overwrite the reduced rates. A flat loss reduces at the ends of epochs 2, 5, 8
  // and 11; resuming while a wait or a cooldown is running must not move them.
  const std::string job = R"(
      callbacks { reduce_lr_on_plateau { monitor: "loss" factor: 0.5 patience: 2 cooldown: 2 } }
      callbacks { csv_logger { filename: "@DIR@/log.csv" } })";
  const std::vector<EpochLogs> logs(12, EpochLogs{{"loss", 1.0}});
  const Outcome whole = run_job(job, logs, -1, true);
  EXPECT_EQ(whole.trace.rates, (std::vector<float>{0.5F, 0.5F, 0.5F, 0.25F, 0.25F, 0.25F, 0.125F, 0.125F, 0.125F,
                                                   0.0625F, 0.0625F, 0.0625F}));
  for (int64_t at : {1, 2, 3, 5, 6, 10}) {
    SCOPED_TRACE(::testing::Message() << "resume at " << at);
    expect_same(run_job(job, logs, at, true), whole);
  }
}

TEST(CallbacksState, ChangedCallbacksAreRefused) {
  auto saved = callbacks_from(R"(callbacks { early_stopping {} } callbacks { csv_logger { filename: "a.csv" } })");
  const CallbackStates blob = save_callbacks_state(saved);
  auto reordered = callbacks_from(R"(callbacks { csv_logger { filename: "a.csv" } } callbacks { early_stopping {} })");
  std::string message = error_of([&] { load_callbacks_state(reordered, blob); });
  EXPECT_NE(message.find("the job's callbacks (csv_logger, early_stopping) differ from the checkpoint's "
                         "(early_stopping, csv_logger): the job's callbacks changed since the checkpoint"),
            std::string::npos)
      << message;
  auto fewer = callbacks_from(R"(callbacks { early_stopping {} })");
  EXPECT_NE(error_of([&] { load_callbacks_state(fewer, blob); }).find("changed since the checkpoint"),
            std::string::npos);
  auto none = callbacks_from("");
  EXPECT_NE(error_of([&] { load_callbacks_state(none, blob); }).find("changed since the checkpoint"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_callbacks_state(fewer, save_callbacks_state(none)); }).find("(none)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_callbacks_state(fewer, CallbackStates{}); }).find("changed since the checkpoint"),
            std::string::npos);
  // Same callbacks: fine; no states with no callbacks too.
  auto same = callbacks_from(R"(callbacks { early_stopping {} } callbacks { csv_logger { filename: "a.csv" } })");
  EXPECT_EQ(error_of([&] { load_callbacks_state(same, blob); }), "(no error)");
  EXPECT_EQ(error_of([&] { load_callbacks_state(none, CallbackStates{}); }), "(no error)");
}

TEST(CallbacksState, StateOfAnotherKindIsRefused) {
  // Same count, but the checkpoint's first state is of another callback kind: refused by name, not mis-read.
  auto callbacks = callbacks_from(R"(callbacks { early_stopping {} } callbacks { csv_logger { filename: "a.csv" } })");
  CallbackStates states = save_callbacks_state(callbacks);
  ASSERT_EQ(states.size(), 2);
  ASSERT_TRUE(states[0].has_early_stopping());
  states[0].mutable_reduce_lr_on_plateau()->set_wait(1);
  std::string message = error_of([&] { load_callbacks_state(callbacks, states); });
  EXPECT_NE(message.find("the job's callbacks (early_stopping, csv_logger) differ from the checkpoint's "
                         "(reduce_lr_on_plateau, csv_logger): the job's callbacks changed since the checkpoint"),
            std::string::npos)
      << message;
  // A state that names no kind at all (written by a later shardfit with a kind this one does not know).
  states[0].Clear();
  message = error_of([&] { load_callbacks_state(callbacks, states); });
  EXPECT_NE(message.find("differ from the checkpoint's (no kind, csv_logger)"), std::string::npos) << message;
}

TEST(CallbacksState, AFieldMissingFromTheCheckpointReadsAsItsDefault) {
  // What a field added to a state message later looks like when an older checkpoint is read: absent. The other
  // fields still land where they belong (a positional blob would have shifted every one after it).
  Trainer t;
  auto callbacks = callbacks_from(R"(callbacks { early_stopping { monitor: "loss" patience: 5 } })");
  fit(callbacks, t, series("loss", {1.0, 0.5, 0.7, 0.8}));
  CallbackStates states = save_callbacks_state(callbacks);
  ASSERT_EQ(states[0].early_stopping().wait(), 2);
  states[0].mutable_early_stopping()->clear_stopped_epoch();
  load_callbacks_state(callbacks, states);
  const CallbackStates again = save_callbacks_state(callbacks);
  EXPECT_EQ(again[0].early_stopping().wait(), 2);
  EXPECT_EQ(again[0].early_stopping().best(), 0.5);
  EXPECT_EQ(again[0].early_stopping().best_epoch(), 1);
}

}  // namespace
}  // namespace shardfit
