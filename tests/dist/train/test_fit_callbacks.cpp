// The Keras callbacks inside the distributed fit, at 1, 2 and 4 ranks: each decision is checked against its rule
// applied to the run's own history, the weights against a plain run cut at the right epoch, and P ranks against one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numbers>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dist/io/dataset.h"
#include "dist/io/npy_writer.h"
#include "dist/io/weights_io.h"
#include "dist/train/fit.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/fit_fixture.h"
#include "tests/support/mpi_test_env.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;
using testing::quiet_config;
using testing::range;
using testing::relative_difference;
using testing::series_or_nan;
using testing::SharedDir;
using testing::world;
using testing::write_digits;

// Every case trains on these: 40 training digits against 200 held-out ones overfit within a few epochs, so
// val_loss falls, bumps, recovers, then rises — a curve with improving and non-improving epochs on both sides.
void write_overfit_data(const fs::path& dir) {
  write_digits(dir, "train", range(0, 40));
  write_digits(dir, "val", range(1000, 1200));
}

// The overfitting job: Adam at 0.1 on a 64-32-10 MLP, shuffled batches of 8 (5 steps an epoch). `extra` is
// appended (callbacks, metrics).
proto::Job overfit_job(int64_t epochs, const std::string& extra = "") {
  return parse_job_text(cat(R"(
      model { layers { dense { units: 32 activation: "relu" } } layers { dense { units: 10 activation: "softmax" } } }
      loss: "sparse_categorical_crossentropy"
      optimizer { adam { learning_rate: 0.1 } }
      fit { epochs: )",
                            epochs, R"( batch_size: 8 seed: 3 }
      data { train { x { path: "train_x.npy" } y { path: "train_y.npy" } }
             validation { x { path: "val_x.npy" } y { path: "val_y.npy" } } }
      )",
                            extra),
                        "callbacks.pbtxt");
}

// A run on all ranks with rank 0's console kept (verbose 2, captured on every rank: the others must print nothing).
struct Captured {
  FitResult result;
  std::string console;
};

Captured fit_capturing(const proto::Job& job, const fs::path& dir) {
  FitConfig config = quiet_config(job);
  config.verbose = 2;
  ::testing::internal::CaptureStdout();
  Captured run;
  try {
    run.result = fit(world(), job, dir, config);
  } catch (...) {
    ::testing::internal::GetCapturedStdout();
    throw;
  }
  run.console = ::testing::internal::GetCapturedStdout();
  if (!world().is_root()) {
    EXPECT_EQ(run.console, "") << "rank " << world().rank() << " printed";
  }
  return run;
}

std::vector<double> as_doubles(const std::vector<float>& values) { return {values.begin(), values.end()}; }

// The issue's "all ranks stop or change rate together": the same history length and the same final weights on
// every rank.
void expect_all_ranks_agree(const FitResult& result) {
  const std::vector<int64_t> lengths = world().allgather(static_cast<int64_t>(result.history.epochs_size()));
  for (size_t r = 0; r < lengths.size(); ++r) EXPECT_EQ(lengths[r], lengths[0]) << "history length of rank " << r;
  world().check_same_everywhere("final parameters", result.final_parameters);
}

// The same job on this process alone (comm.self()) takes the same decisions at the same epochs.
void expect_same_as_one_rank(const proto::Job& job, const fs::path& dir, const FitResult& distributed) {
  const FitResult single = fit(*world().self(), job, dir, quiet_config(job));
  ASSERT_EQ(distributed.history.epochs_size(), single.history.epochs_size())
      << world().size() << " ranks stopped at another epoch than 1";
  for (const std::string key : {"loss", "val_loss"}) {
    EXPECT_LE(relative_difference(series_or_nan(distributed.history, key), series_or_nan(single.history, key)), 1e-5)
        << key;
  }
  // A rate is decided, not computed: the same decisions give the very same rates.
  EXPECT_EQ(series_or_nan(distributed.history, "learning_rate").size(),
            series_or_nan(single.history, "learning_rate").size());
  if (distributed.history.epochs_size() > 0 && distributed.history.epochs(0).values().contains("learning_rate")) {
    EXPECT_EQ(series_or_nan(distributed.history, "learning_rate"), series_or_nan(single.history, "learning_rate"));
  }
  EXPECT_LE(relative_difference(as_doubles(distributed.final_parameters), as_doubles(single.final_parameters)), 1e-5);
}

// Keras's EarlyStopping on a val_loss sequence (mode min, no baseline, start_from_epoch 0): the epoch it stops
// after, or -1. Improvement: current + min_delta < best, the first epoch always.
int64_t early_stop_epoch(const std::vector<double>& val_loss, int64_t patience, double min_delta) {
  double best = std::numeric_limits<double>::infinity();
  int64_t wait = 0;
  for (size_t e = 0; e < val_loss.size(); ++e) {
    ++wait;
    if (val_loss[e] + min_delta < best) {
      best = val_loss[e];
      wait = 0;
      continue;
    }
    if (wait >= patience && e > 0) return static_cast<int64_t>(e);
  }
  return -1;
}

// The first epoch with the lowest value.
int64_t best_epoch(const std::vector<double>& values) {
  return std::min_element(values.begin(), values.end()) - values.begin();
}

// ---------------------------------------------------------------------------------------------------------------
// EarlyStopping
// ---------------------------------------------------------------------------------------------------------------

// patience 2: the run stops exactly where the rule stops on its own val_loss, patience epochs after the best, and
// says so; the curve has a one-epoch bump before its best, which patience 2 rides out.
TEST(FitEarlyStopping, StopsPatienceEpochsAfterTheBest) {
  const SharedDir shared("early_stop");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const int64_t epochs = 20;
  const int64_t patience = 2;
  const proto::Job job = overfit_job(epochs, "callbacks { early_stopping { patience: 2 } }");
  const Captured run = fit_capturing(job, dir);
  const auto val_loss = series_or_nan(run.result.history, "val_loss");
  const auto n = static_cast<int64_t>(val_loss.size());

  ASSERT_GT(n, 0);
  EXPECT_LT(n, epochs) << "the job was meant to stop early";
  // The rule on the run's own values stops at its last epoch, and not before.
  EXPECT_EQ(early_stop_epoch(val_loss, patience, 0.0), n - 1);
  const int64_t best = best_epoch(val_loss);
  EXPECT_EQ(n, best + patience + 1);
  // The bump: some epoch before the best did not improve (so the wait really restarted).
  bool bump = false;
  for (int64_t e = 1; e < best; ++e) {
    bump = bump || val_loss[e] >= *std::min_element(val_loss.begin(), val_loss.begin() + e);
  }
  EXPECT_TRUE(bump) << "the curve no longer has a non-improving epoch before its best; pick another job";
  for (int64_t e = 0; e < n; ++e) EXPECT_EQ(run.result.history.epochs(e).epoch(), e);
  if (world().is_root()) {
    EXPECT_NE(run.console.find(cat("Epoch ", n, ": early stopping")), std::string::npos) << run.console;
    EXPECT_EQ(run.console.find("Restoring model weights"), std::string::npos) << run.console;
  }

  // Without restore_best_weights the weights are the last epoch's: those of a plain run of n epochs.
  const proto::Job plain = overfit_job(n);
  const FitResult reference = fit(world(), plain, dir, quiet_config(plain));
  EXPECT_EQ(run.result.final_parameters, reference.final_parameters);
  EXPECT_EQ(series_or_nan(run.result.history, "val_loss"), series_or_nan(reference.history, "val_loss"));

  expect_all_ranks_agree(run.result);
  expect_same_as_one_rank(job, dir, run.result);
}

// min_delta 0.1: improvements smaller than that do not count, so the same curve stops earlier — where the rule
// with min_delta stops, an epoch at which the rule without it would still be waiting.
TEST(FitEarlyStopping, LargeMinDeltaStopsEarlier) {
  const SharedDir shared("min_delta");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const proto::Job without = overfit_job(20, "callbacks { early_stopping { patience: 2 } }");
  const proto::Job with = overfit_job(20, "callbacks { early_stopping { patience: 2 min_delta: 0.1 } }");
  const FitResult a = fit(world(), without, dir, quiet_config(without));
  const Captured b = fit_capturing(with, dir);
  const auto val_loss = series_or_nan(b.result.history, "val_loss");
  const auto n = static_cast<int64_t>(val_loss.size());

  ASSERT_GT(n, 0);
  EXPECT_LT(n, a.history.epochs_size());
  EXPECT_EQ(early_stop_epoch(val_loss, 2, 0.1), n - 1);
  EXPECT_EQ(early_stop_epoch(val_loss, 2, 0.0), -1) << "min_delta should be what stopped this run";
  // min_delta changes decisions, not training: the epochs both ran are the same.
  const auto a_val = series_or_nan(a.history, "val_loss");
  EXPECT_EQ(val_loss, std::vector<double>(a_val.begin(), a_val.begin() + std::min<int64_t>(n, a_val.size())));
  if (world().is_root()) {
    EXPECT_NE(b.console.find(cat("Epoch ", n, ": early stopping")), std::string::npos);
  }

  expect_all_ranks_agree(b.result);
  expect_same_as_one_rank(with, dir, b.result);
}

// restore_best_weights: the final weights are bit for bit those at the end of the best epoch (a plain run of
// best + 1 epochs), not the last epoch's.
TEST(FitEarlyStopping, RestoresTheBestEpochsWeights) {
  const SharedDir shared("restore_best");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const proto::Job job = overfit_job(20, "callbacks { early_stopping { patience: 2 restore_best_weights: true } }");
  const Captured run = fit_capturing(job, dir);
  const auto val_loss = series_or_nan(run.result.history, "val_loss");
  const auto n = static_cast<int64_t>(val_loss.size());
  const int64_t best = best_epoch(val_loss);
  ASSERT_EQ(early_stop_epoch(val_loss, 2, 0.0), n - 1);
  ASSERT_LT(best, n - 1);

  const proto::Job to_best = overfit_job(best + 1);
  const FitResult at_best = fit(world(), to_best, dir, quiet_config(to_best));
  EXPECT_EQ(run.result.final_parameters, at_best.final_parameters) << "not the weights of epoch " << best + 1;
  const proto::Job to_last = overfit_job(n);
  const FitResult at_last = fit(world(), to_last, dir, quiet_config(to_last));
  EXPECT_NE(run.result.final_parameters, at_last.final_parameters) << "the last epoch's weights were kept";
  // Restoring happens at the end: the history is that of the training, up to the last epoch.
  EXPECT_EQ(val_loss, series_or_nan(at_last.history, "val_loss"));
  if (world().is_root()) {
    EXPECT_NE(run.console.find(cat("Restoring model weights from the end of the best epoch: ", best + 1, ".")),
              std::string::npos)
        << run.console;
  }

  expect_all_ranks_agree(run.result);
  expect_same_as_one_rank(job, dir, run.result);
}

// ---------------------------------------------------------------------------------------------------------------
// ReduceLROnPlateau
// ---------------------------------------------------------------------------------------------------------------

struct PlateauRule {
  double factor;
  int64_t patience;
  int64_t cooldown;
  double min_lr;
  double min_delta = 1e-4;
};

// What Keras's ReduceLROnPlateau does to a float32 rate over a val_loss sequence: the rate each epoch trains with,
// how many reductions, and how many epochs the cooldown kept from counting towards patience.
struct PlateauTrace {
  std::vector<double> rates;
  int reductions = 0;
  int held_by_cooldown = 0;
};

PlateauTrace apply_plateau_rule(const std::vector<double>& val_loss, float lr, const PlateauRule& rule) {
  PlateauTrace trace;
  double best = std::numeric_limits<double>::infinity();
  int64_t wait = 0;
  int64_t cooldown_counter = 0;
  for (const double current : val_loss) {
    trace.rates.push_back(lr);
    if (cooldown_counter > 0) {
      --cooldown_counter;
      wait = 0;
    }
    if (current < best - rule.min_delta) {
      best = current;
      wait = 0;
    } else if (cooldown_counter > 0) {
      ++trace.held_by_cooldown;
    } else if (++wait >= rule.patience && lr > static_cast<float>(rule.min_lr)) {
      lr = static_cast<float>(std::max(static_cast<double>(lr) * rule.factor, rule.min_lr));
      ++trace.reductions;
      cooldown_counter = rule.cooldown;
      wait = 0;
    }
  }
  return trace;
}

int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

// factor 0.5, patience 1, min_lr 0.03 from 0.1: 0.1 -> 0.05 -> 0.03 (the floor, not 0.025) and no lower. With
// patience 1, Keras's cooldown 1 ends in the very epoch after a reduction, before it is checked, so it holds
// nothing back; cooldown 2 holds that epoch. Both are run, and each rate sequence must be the rule's.
void check_plateau(int64_t cooldown, bool expect_held) {
  const SharedDir shared("plateau");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const PlateauRule rule{0.5, 1, cooldown, 0.03};
  const proto::Job job = overfit_job(
      14, cat("callbacks { reduce_lr_on_plateau { factor: 0.5 patience: 1 cooldown: ", cooldown, " min_lr: 0.03 } }"));
  const Captured run = fit_capturing(job, dir);
  const auto val_loss = series_or_nan(run.result.history, "val_loss");
  const auto rates = series_or_nan(run.result.history, "learning_rate");
  ASSERT_EQ(val_loss.size(), 14U);

  const PlateauTrace expected = apply_plateau_rule(val_loss, 0.1F, rule);
  EXPECT_EQ(rates, expected.rates);
  EXPECT_GE(expected.reductions, 2) << "the job no longer reaches the floor; pick another";
  EXPECT_EQ(rates.back(), static_cast<double>(0.03F)) << "the rate should end on min_lr";
  EXPECT_EQ(*std::min_element(rates.begin(), rates.end()), static_cast<double>(0.03F));
  // At the floor a non-improving epoch changes nothing: at least one such epoch happened after it was reached.
  const auto at_floor = std::find(rates.begin(), rates.end(), static_cast<double>(0.03F)) - rates.begin();
  int plateau_at_floor = 0;
  for (auto e = static_cast<size_t>(at_floor); e < val_loss.size(); ++e) {
    if (val_loss[e] >= *std::min_element(val_loss.begin(), val_loss.begin() + static_cast<int64_t>(e))) {
      ++plateau_at_floor;
    }
  }
  EXPECT_GE(plateau_at_floor, 1);
  if (expect_held) {
    EXPECT_GE(expected.held_by_cooldown, 1) << "no epoch was held by the cooldown; pick another job";
  } else {
    EXPECT_EQ(expected.held_by_cooldown, 0);
  }
  if (world().is_root()) {
    EXPECT_EQ(count_of(run.console, "ReduceLROnPlateau reducing learning rate to"), expected.reductions) << run.console;
  }

  expect_all_ranks_agree(run.result);
  expect_same_as_one_rank(job, dir, run.result);
}

TEST(FitReduceLROnPlateau, FollowsTheRuleWithCooldownOne) { check_plateau(1, false); }
TEST(FitReduceLROnPlateau, FollowsTheRuleWithCooldownTwo) { check_plateau(2, true); }

// ---------------------------------------------------------------------------------------------------------------
// LearningRateScheduler
// ---------------------------------------------------------------------------------------------------------------

// Each epoch's logged rate is the schedule's formula at that epoch (base 0.1, a float32 on the optimizer).
TEST(FitLearningRateScheduler, RatesFollowTheFormulas) {
  const SharedDir shared("scheduler");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const int64_t epochs = 7;
  const double base = 0.1F;  // the optimizer's float32 rate is the base
  const double pi = std::numbers::pi;
  struct Case {
    std::string callback;
    std::function<double(int64_t)> rate;
  };
  const std::vector<Case> cases = {
      {"step { factor: 0.5 every_epochs: 2 }", [&](int64_t e) { return base * std::pow(0.5, e / 2); }},
      {"exponential { rate: 0.8 }", [&](int64_t e) { return base * std::pow(0.8, e); }},
      // decay over 4 epochs then held at the floor alpha x base
      {"cosine { decay_epochs: 4 alpha: 0.1 }",
       [&](int64_t e) {
         const double t = std::min<double>(static_cast<double>(e), 4.0) / 4.0;
         return base * (0.9 * 0.5 * (1 + std::cos(pi * t)) + 0.1);
       }},
      // linear from 0.2 x base over 3 epochs, then the step schedule counted from the warmup's end
      {"warmup_epochs: 3 warmup_from: 0.2 step { factor: 0.5 every_epochs: 2 }",
       [&](int64_t e) {
         if (e < 3) return base * (0.2 + 0.8 * static_cast<double>(e) / 3.0);
         return base * std::pow(0.5, (e - 3) / 2);
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.callback);
    const proto::Job job = overfit_job(epochs, cat("callbacks { learning_rate_scheduler { ", c.callback, " } }"));
    const FitResult result = fit(world(), job, dir, quiet_config(job));
    const auto rates = series_or_nan(result.history, "learning_rate");
    ASSERT_EQ(rates.size(), static_cast<size_t>(epochs));
    for (int64_t e = 0; e < epochs; ++e) {
      // Within float32's last bits: the formula may be evaluated in another order.
      EXPECT_FLOAT_EQ(static_cast<float>(rates[e]), static_cast<float>(c.rate(e))) << "epoch " << e;
    }
    expect_all_ranks_agree(result);
  }
}

// The scheduled rate is the one the optimizer steps with: 3 epochs of SGD under "halve every 2 epochs" are bit for
// bit 2 plain epochs at 0.1 followed, from their exported weights, by epoch 3 alone at 0.05 (SGD without
// momentum carries no state across the cut; shuffling and the step count follow initial_epoch).
TEST(FitLearningRateScheduler, TheOptimizerStepsWithTheScheduledRate) {
  const SharedDir shared("scheduled_steps");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  auto sgd_job = [](int64_t epochs, const std::string& extra) {
    return parse_job_text(cat(R"(
        model { layers { dense { units: 32 activation: "relu" } } layers { dense { units: 10 activation: "softmax" } } }
        loss: "sparse_categorical_crossentropy"
        optimizer { sgd { learning_rate: 0.1 } }
        fit { epochs: )",
                              epochs, R"( batch_size: 8 seed: 4 }
        data { train { x { path: "train_x.npy" } y { path: "train_y.npy" } }
               validation { x { path: "val_x.npy" } y { path: "val_y.npy" } } } )",
                              extra),
                          "sgd.pbtxt");
  };
  const proto::Job scheduled =
      sgd_job(3, "callbacks { learning_rate_scheduler { step { factor: 0.5 every_epochs: 2 } } }");
  const FitResult a = fit(world(), scheduled, dir, quiet_config(scheduled));
  EXPECT_EQ(series_or_nan(a.history, "learning_rate"), (std::vector<double>{0.1F, 0.1F, 0.05F}));

  const proto::Job first = sgd_job(2, "");
  FitConfig first_config = quiet_config(first);
  first_config.export_weights = dir / "two_epochs.npz";
  const FitResult b = fit(world(), first, dir, first_config);
  world().barrier();  // rank 0 wrote the weights
  const proto::Job second = sgd_job(3, "");
  FitConfig second_config = quiet_config(second);
  second_config.initial_epoch = 2;
  second_config.initial_weights = dir / "two_epochs.npz";
  second_config.learning_rate = 0.05F;
  const FitResult c = fit(world(), second, dir, second_config);

  EXPECT_EQ(series_or_nan(a.history, "val_loss")[1], series_or_nan(b.history, "val_loss")[1]);
  EXPECT_EQ(series_or_nan(a.history, "val_loss")[2], series_or_nan(c.history, "val_loss")[0]);
  EXPECT_EQ(a.final_parameters, c.final_parameters);
  // And the rate mattered: epoch 3 at the unscheduled 0.1 ends elsewhere.
  second_config.learning_rate.reset();
  const FitResult d = fit(world(), second, dir, second_config);
  EXPECT_NE(a.final_parameters, d.final_parameters);
  expect_all_ranks_agree(a);
}

// ---------------------------------------------------------------------------------------------------------------
// TerminateOnNaN
// ---------------------------------------------------------------------------------------------------------------

// SGD at 2.0 with mse on one linear unit diverges: the loss grows ~1e16 times an epoch until the outputs overflow
// float and the loss turns inf / NaN a few epochs in. The run stops in the first epoch with a non-finite batch
// loss, after ending that epoch (validation included, as Keras does), and every epoch before it is untouched.
TEST(FitTerminateOnNaN, StopsInTheFirstEpochWithAnInvalidBatchLoss) {
  const SharedDir shared("nan");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  auto diverging_job = [](const std::string& extra) {
    return parse_job_text(cat(R"(
        model { layers { dense { units: 1 } } }
        loss: "mse"
        optimizer { sgd { learning_rate: 2.0 } }
        fit { epochs: 8 batch_size: 8 seed: 3 }
        data { train { x { path: "train_x.npy" } y { path: "train_y.npy" } }
               validation { x { path: "val_x.npy" } y { path: "val_y.npy" } } } )",
                              extra),
                          "nan.pbtxt");
  };
  const proto::Job plain = diverging_job("");
  const FitResult reference = fit(world(), plain, dir, quiet_config(plain));
  const auto reference_loss = series_or_nan(reference.history, "loss");
  const auto first_bad =
      std::find_if(reference_loss.begin(), reference_loss.end(), [](double v) { return !std::isfinite(v); }) -
      reference_loss.begin();
  ASSERT_GE(first_bad, 2) << "the job diverges too fast to tell a stop from a run that never started";
  ASSERT_LT(first_bad, 7) << "the job no longer diverges within its epochs";

  const proto::Job job = diverging_job("callbacks { terminate_on_nan { } }");
  const Captured run = fit_capturing(job, dir);
  const auto loss = series_or_nan(run.result.history, "loss");
  ASSERT_EQ(static_cast<int64_t>(loss.size()), first_bad + 1);
  EXPECT_FALSE(std::isfinite(loss.back()));
  EXPECT_TRUE(run.result.history.epochs(first_bad).values().contains("val_loss")) << "the epoch was not ended";
  for (int64_t e = 0; e < first_bad; ++e) {
    EXPECT_EQ(loss[e], reference_loss[e]) << "epoch " << e;
    EXPECT_TRUE(std::isfinite(loss[e]));
  }
  // Rank 0 alone checks its console; no ASSERT here, which would leave the other ranks waiting below.
  if (world().is_root()) {
    EXPECT_EQ(count_of(run.console, "Invalid loss"), 1) << run.console;
    // "Batch N: ...": N is the step within the epoch, 0 .. steps - 1.
    const size_t at = run.console.find(": Invalid loss, terminating training");
    const size_t batch = at == std::string::npos ? at : run.console.rfind("Batch ", at);
    if (batch == std::string::npos) {
      ADD_FAILURE() << "no 'Batch N: Invalid loss, terminating training' line in:\n" << run.console;
    } else {
      const int64_t step = std::stoll(run.console.substr(batch + 6, at - batch - 6));
      EXPECT_GE(step, 0);
      EXPECT_LT(step, run.result.history.params().steps());
    }
  }
  // The weights the invalid step left behind are the same everywhere (NaN bits included).
  expect_all_ranks_agree(run.result);
  const FitResult single = fit(*world().self(), job, dir, quiet_config(job));
  EXPECT_EQ(single.history.epochs_size(), run.result.history.epochs_size());
}

// ---------------------------------------------------------------------------------------------------------------
// ModelCheckpoint and CSVLogger
// ---------------------------------------------------------------------------------------------------------------

// save_best_only: a file for exactly the epochs whose val_loss beat every earlier one, named from the epoch and
// val_loss; the last one holds, bit for bit, the weights at the end of its epoch.
TEST(FitModelCheckpoint, SaveBestOnlyWritesImprovingEpochs) {
  const SharedDir shared("model_checkpoint");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const int64_t epochs = 10;
  const proto::Job job = overfit_job(
      epochs, cat(R"(callbacks { model_checkpoint { filepath: ")",
                  (dir / "best" / "w.{epoch:02d}-{val_loss:.4f}.npz").string(), R"(" save_best_only: true } })"));
  const FitResult result = fit(world(), job, dir, quiet_config(job));
  const auto val_loss = series_or_nan(result.history, "val_loss");
  ASSERT_EQ(val_loss.size(), static_cast<size_t>(epochs));
  world().barrier();  // rank 0 wrote the files

  std::set<std::string> expected;
  int64_t last_best = -1;
  double best = std::numeric_limits<double>::infinity();
  for (int64_t e = 0; e < epochs; ++e) {
    if (val_loss[e] < best) {
      best = val_loss[e];
      last_best = e;
      char name[64];
      std::snprintf(name, sizeof name, "w.%02lld-%.4f.npz", static_cast<long long>(e + 1), val_loss[e]);
      expected.insert(name);
    }
  }
  ASSERT_LT(expected.size(), static_cast<size_t>(epochs)) << "every epoch improved; pick another job";
  std::set<std::string> written;
  for (const auto& entry : fs::directory_iterator(dir / "best")) written.insert(entry.path().filename().string());
  EXPECT_EQ(written, expected);

  char last_name[64];
  std::snprintf(last_name, sizeof last_name, "w.%02lld-%.4f.npz", static_cast<long long>(last_best + 1),
                val_loss[last_best]);
  auto model = build_model(job, 64);
  load_weights(dir / "best" / last_name, *model);
  const proto::Job to_best = overfit_job(last_best + 1);
  const FitResult at_best = fit(world(), to_best, dir, quiet_config(to_best));
  const std::span<const float> loaded = std::as_const(*model).parameters();
  EXPECT_EQ(std::vector<float>(loaded.begin(), loaded.end()), at_best.final_parameters);
  if (last_best < epochs - 1) {
    EXPECT_NE(std::vector<float>(loaded.begin(), loaded.end()), result.final_parameters);
  }

  expect_all_ranks_agree(result);
}

// One CSV row per History epoch — here cut short by EarlyStopping — with the header `epoch` + sorted keys and each
// value as History holds it (Python's repr digits read back exactly).
TEST(FitCsvLogger, OneRowPerHistoryEpoch) {
  const SharedDir shared("csv_logger");
  const fs::path& dir = shared.path();
  write_overfit_data(dir);
  const fs::path csv = dir / "log.csv";
  const proto::Job job = overfit_job(20, cat(R"(metrics: "accuracy"
      callbacks { early_stopping { patience: 2 } }
      callbacks { csv_logger { filename: ")",
                                             csv.string(), R"(" } })"));
  const FitResult result = fit(world(), job, dir, quiet_config(job));
  world().barrier();  // rank 0 wrote the file
  ASSERT_LT(result.history.epochs_size(), 20);

  std::ifstream in(csv, std::ios::binary);
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(text, line)) {
    ASSERT_TRUE(line.ends_with('\r')) << "rows end in \\r\\n";
    line.pop_back();
    lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), static_cast<size_t>(result.history.epochs_size()) + 1);
  EXPECT_EQ(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
  const std::vector<std::string> keys = {"accuracy", "loss", "val_accuracy", "val_loss"};
  for (int e = 0; e < result.history.epochs_size(); ++e) {
    std::stringstream row(lines[static_cast<size_t>(e) + 1]);
    std::string field;
    std::getline(row, field, ',');
    EXPECT_EQ(field, std::to_string(e));
    for (const std::string& key : keys) {
      ASSERT_TRUE(std::getline(row, field, ',')) << "row " << e;
      EXPECT_EQ(std::strtod(field.c_str(), nullptr), result.history.epochs(e).values().at(key))
          << key << " at epoch " << e;
    }
  }
  expect_all_ranks_agree(result);
}

}  // namespace
}  // namespace shardfit
