// diagnose(): each verdict on histories built to show it (a U-shaped val_loss, a stall, flat high curves, curves
// still falling, converged and noisy-but-converged ones, a real digits run, a training loss that climbs or blew up),
// the undetermined cases, and the summary quoting only numbers that the numbers map holds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "dist/train/diagnosis.h"

namespace shardfit {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

proto::History make_history(const std::vector<double>& loss, const std::vector<double>& val_loss) {
  proto::History history;
  for (std::size_t e = 0; e < loss.size(); ++e) {
    proto::EpochRecord& record = *history.add_epochs();
    record.set_epoch(static_cast<std::int64_t>(e));
    (*record.mutable_values())["loss"] = loss[e];
    if (e < val_loss.size()) (*record.mutable_values())["val_loss"] = val_loss[e];
  }
  return history;
}

// a + b * exp(-e / tau) for e = 0..epochs-1: the usual shape of a loss curve.
std::vector<double> decay(int epochs, double a, double b, double tau) {
  std::vector<double> out(epochs);
  for (int e = 0; e < epochs; ++e) out[e] = a + b * std::exp(-e / tau);
  return out;
}

// A U: 0.5 at epoch 9 (0-based), 0.004 (e - 9)^2 above it elsewhere.
std::vector<double> u_shape(int epochs) {
  std::vector<double> out(epochs);
  for (int e = 0; e < epochs; ++e) out[e] = 0.5 + 0.004 * (e - 9) * (e - 9);
  return out;
}

// Every "fell X% (a -> b)" / "rose X% (a -> b)" of the summary is |a - b| / a of exactly the two values printed (so
// a user can redo it from the plot), and no fall of a non-negative loss exceeds 100%.
void expect_changes_match_their_values(const proto::Diagnosis& diagnosis) {
  const std::string& summary = diagnosis.summary();
  const std::regex change(R"((fell|rose|falling) ([0-9.]+)% (only )?\(([0-9.e+-]+) -> (best )?([0-9.e+-]+)\))");
  for (auto it = std::sregex_iterator(summary.begin(), summary.end(), change); it != std::sregex_iterator(); ++it) {
    const double from = std::stod((*it)[4].str());
    const double to = std::stod((*it)[6].str());
    char expected[64];
    std::snprintf(expected, sizeof expected, "%.1f", 100 * std::fabs(to - from) / from);
    EXPECT_EQ((*it)[2].str(), expected) << it->str() << " in \"" << summary << "\"";
    EXPECT_EQ((*it)[1].str() != "rose", to < from) << it->str() << " in \"" << summary << "\"";
  }
  const std::regex fell(R"((?:fell|falling) ([0-9.]+)%)");
  for (auto it = std::sregex_iterator(summary.begin(), summary.end(), fell); it != std::sregex_iterator(); ++it) {
    EXPECT_LE(std::stod((*it)[1].str()), 100.0) << "a loss cannot fall more than 100%: \"" << summary << "\"";
  }
}

// Every number in the summary must be one the numbers map holds: as printed (%.4f / %.4e), as a percentage
// (%.1f of 100 |v|), or as an epoch or count (v or v + 1, for whole v).
void expect_summary_numbers_in_map(const proto::Diagnosis& diagnosis) {
  std::set<std::string> allowed;
  for (const auto& [key, value] : diagnosis.numbers()) {
    char text[64];
    std::snprintf(text, sizeof text, std::fabs(value) > 1e-3 ? "%.4f" : "%.4e", value);
    allowed.insert(text);
    std::snprintf(text, sizeof text, "%.1f", 100 * std::fabs(value));
    allowed.insert(text);
    // Ratios far from 1 ("2.4e+08 x the chance level").
    std::snprintf(text, sizeof text, "%.1f", value);
    allowed.insert(text);
    std::snprintf(text, sizeof text, "%.1e", value);
    allowed.insert(text);
    if (value == std::round(value)) {
      allowed.insert(std::to_string(static_cast<long long>(value)));
      allowed.insert(std::to_string(static_cast<long long>(value) + 1));
    }
  }
  const std::string& summary = diagnosis.summary();
  const std::regex number(R"([0-9]+(\.[0-9]+)?(e[-+][0-9]+)?)");
  int seen = 0;
  for (auto it = std::sregex_iterator(summary.begin(), summary.end(), number); it != std::sregex_iterator(); ++it) {
    ++seen;
    EXPECT_EQ(allowed.count(it->str()), 1u) << "'" << it->str() << "' of \"" << summary << "\" is not in numbers";
  }
  EXPECT_GT(seen, 0) << summary;
  expect_changes_match_their_values(diagnosis);
}

TEST(Diagnosis, UShapedValLossIsOverfittingFromTheEpochAfterTheBest) {
  // val_loss falls to its minimum at epoch 9 (0-based), then climbs; the training loss keeps falling.
  const proto::Diagnosis d = diagnose(make_history(decay(30, 0.01, 1.0, 5), u_shape(30)));
  EXPECT_EQ(d.verdict(), "overfitting");
  EXPECT_EQ(d.best_epoch(), 9);
  EXPECT_DOUBLE_EQ(d.best_val_loss(), 0.5);
  EXPECT_EQ(d.overfitting_from_epoch(), 10);
  // Printed 1-based, like the console's "Epoch N/M".
  EXPECT_NE(d.summary().find("overfitting from epoch 11:"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("at epoch 10 of 30"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("rose to"), std::string::npos) << d.summary();
  EXPECT_GT(d.numbers().at("val_change_after_best"), 0.10);
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, ValStallWhileTrainingFallsIsOverfitting) {
  // val_loss reaches 0.40 at epoch 8 and then stays within 2% of it; the training loss halves after that.
  std::vector<double> val = decay(30, 0.40, 1.0, 2);
  for (int e = 8; e < 30; ++e) val[e] = e == 8 ? 0.40 : 0.40 + 0.006 * ((e % 3) + 1);
  std::vector<double> loss = decay(30, 0.0, 0.5, 12);
  const proto::Diagnosis d = diagnose(make_history(loss, val));
  EXPECT_EQ(d.verdict(), "overfitting");
  EXPECT_EQ(d.best_epoch(), 8);
  EXPECT_EQ(d.overfitting_from_epoch(), 9);
  EXPECT_NE(d.summary().find("stalled at"), std::string::npos) << d.summary();
  EXPECT_LT(d.numbers().at("loss_change_after_best"), -0.20);
  EXPECT_LT(d.numbers().at("val_change_after_best"), 0.10);
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, FlatHighCurvesAreUnderfitting) {
  // No loss name, so no chance level: judged by how little both curves moved.
  const proto::Diagnosis d = diagnose(make_history(decay(20, 0.9, 0.1, 8), decay(20, 0.95, 0.08, 8)));
  EXPECT_EQ(d.verdict(), "underfitting");
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_EQ(d.numbers().count("chance_level"), 0u);
  EXPECT_GT(d.numbers().at("loss_change_total"), -0.30);
  EXPECT_NE(d.summary().find("both stay high"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, NearTheChanceLevelOfCrossEntropyIsUnderfitting) {
  // A bad start (5.0) that falls by more than half, but only to 2.1: ln 10 = 2.30 is guessing among 10 classes.
  proto::History history = make_history(decay(15, 2.1, 2.9, 1.5), decay(15, 2.15, 1.0, 1.5));
  history.mutable_params()->set_loss("sparse_categorical_crossentropy");
  history.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "underfitting");
  EXPECT_NEAR(d.numbers().at("chance_level"), std::log(10.0), 1e-12);
  EXPECT_NE(d.summary().find("chance level 2.3026"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // The same curves without the loss name fell too much to count as "barely moved".
  EXPECT_NE(diagnose(make_history(decay(15, 2.1, 2.9, 1.5), decay(15, 2.15, 1.0, 1.5))).verdict(), "underfitting");
}

TEST(Diagnosis, FarBelowChanceIsNotUnderfittingHoweverLittleItMoved) {
  // Learned within the first epoch: the curves barely move afterwards, but sit far below ln 10.
  proto::History history = make_history(decay(20, 0.08, 0.02, 3), decay(20, 0.10, 0.02, 3));
  history.mutable_params()->set_loss("categorical_crossentropy");
  history.mutable_params()->set_output_units(10);
  EXPECT_EQ(diagnose(history).verdict(), "good_fit");
  history.mutable_params()->clear_loss();
  EXPECT_EQ(diagnose(history).verdict(), "underfitting");  // without the baseline, only "barely moved" is left
}

TEST(Diagnosis, ChanceLevel) {
  proto::HistoryParams params;
  EXPECT_EQ(chance_level(params), 0.0);
  params.set_loss("binary_crossentropy");
  EXPECT_NEAR(chance_level(params), std::log(2.0), 1e-15);
  params.set_loss("sparse_categorical_crossentropy");
  EXPECT_EQ(chance_level(params), 0.0);  // K unknown
  params.set_output_units(7);
  EXPECT_NEAR(chance_level(params), std::log(7.0), 1e-15);
  params.set_loss("mse");
  EXPECT_EQ(chance_level(params), 0.0);
}

TEST(Diagnosis, BothStillFallingIsStillImproving) {
  const proto::Diagnosis d = diagnose(make_history(decay(12, 0.0, 1.0, 6), decay(12, 0.05, 1.0, 8)));
  EXPECT_EQ(d.verdict(), "still_improving");
  EXPECT_EQ(d.best_epoch(), 11);
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_LT(d.numbers().at("val_tail_change"), -0.05);
  EXPECT_NE(d.summary().find("more epochs would help"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, ConvergedIsAGoodFit) {
  // Both curves level off by epoch ~15 of 40, val a little above train.
  const proto::Diagnosis d = diagnose(make_history(decay(40, 0.20, 1.0, 3), decay(40, 0.24, 1.0, 3)));
  EXPECT_EQ(d.verdict(), "good_fit");
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, NoisyButConvergedIsAGoodFit) {
  // The plateau of val_loss jitters by up to +-3% and the training loss by +-1%, as a small validation set does;
  // neither the position of the noisy minimum nor a noisy last epoch may turn it into another verdict.
  for (unsigned seed = 1; seed <= 50; ++seed) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<double> jitter(-1.0, 1.0);
    std::vector<double> loss = decay(40, 0.20, 1.0, 3);
    std::vector<double> val = decay(40, 0.25, 1.0, 3);
    for (int e = 0; e < 40; ++e) {
      loss[e] *= 1 + 0.01 * jitter(random);
      val[e] *= 1 + 0.03 * jitter(random);
    }
    const proto::Diagnosis d = diagnose(make_history(loss, val));
    EXPECT_EQ(d.verdict(), "good_fit") << "seed " << seed << ": " << d.summary();
  }
}

TEST(Diagnosis, ScaleFree) {
  std::vector<double> loss = decay(30, 0.01, 1.0, 5);
  const std::vector<double> val = u_shape(30);
  const proto::Diagnosis unit = diagnose(make_history(loss, val));
  for (double factor : {1e-6, 1e3}) {
    std::vector<double> scaled_loss = loss;
    std::vector<double> scaled_val = val;
    for (double& v : scaled_loss) v *= factor;
    for (double& v : scaled_val) v *= factor;
    const proto::Diagnosis scaled = diagnose(make_history(scaled_loss, scaled_val));
    EXPECT_EQ(scaled.verdict(), unit.verdict());
    EXPECT_EQ(scaled.best_epoch(), unit.best_epoch());
    EXPECT_NEAR(scaled.numbers().at("val_change_after_best"), unit.numbers().at("val_change_after_best"), 1e-9);
    EXPECT_NEAR(scaled.numbers().at("loss_change_after_best"), unit.numbers().at("loss_change_after_best"), 1e-9);
  }
}

TEST(Diagnosis, BestIsTheFirstOfEqualMinima) {
  const proto::Diagnosis d =
      diagnose(make_history({1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3}, {1.0, 0.5, 0.6, 0.5, 0.7, 0.8, 0.9}));
  EXPECT_EQ(d.best_epoch(), 1);
  EXPECT_EQ(d.verdict(), "overfitting");
  EXPECT_EQ(d.overfitting_from_epoch(), 2);
}

TEST(Diagnosis, ValidationFreqUsesEpochIndicesNotValCounts) {
  // validation every 3rd epoch (epochs 2, 5, 8, ...); val_loss bottoms out at epoch 11 and then climbs.
  proto::History history = make_history(decay(30, 0.01, 1.0, 6), {});
  const std::map<int, double> val = {{2, 0.9},  {5, 0.7},   {8, 0.6},  {11, 0.5},  {14, 0.55},
                                     {17, 0.6}, {20, 0.65}, {23, 0.7}, {26, 0.75}, {29, 0.8}};
  for (const auto& [epoch, value] : val) (*history.mutable_epochs(epoch)->mutable_values())["val_loss"] = value;
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "overfitting");
  EXPECT_EQ(d.best_epoch(), 11);
  EXPECT_EQ(d.overfitting_from_epoch(), 12);
  EXPECT_EQ(d.numbers().at("val_epochs"), 10);
  EXPECT_EQ(d.numbers().at("epochs"), 30);
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, RealDigitsRunOverfitsFromWhereValLossStalled) {
  // examples/digits/mlp.pbtxt, 30 epochs, seed 1337 (shardfit fit ... --history): val_loss reaches its floor at
  // epoch 17 (1-based; 0.3265, within 5% of the best 0.3117 at epoch 22) and stalls near 0.32 while the training
  // loss keeps falling by more than half.
  const std::vector<double> loss = {1.9771, 1.2228, 0.7021, 0.4519, 0.3244, 0.2584, 0.2070, 0.1753, 0.1546, 0.1331,
                                    0.1187, 0.1086, 0.0988, 0.0922, 0.0838, 0.0775, 0.0735, 0.0674, 0.0619, 0.0570,
                                    0.0551, 0.0511, 0.0479, 0.0446, 0.0440, 0.0409, 0.0386, 0.0373, 0.0347, 0.0323};
  const std::vector<double> val = {1.6258, 1.0212, 0.7156, 0.5679, 0.5080, 0.4438, 0.4233, 0.4093, 0.3837, 0.3725,
                                   0.3559, 0.3727, 0.3540, 0.3449, 0.3525, 0.3398, 0.3265, 0.3212, 0.3360, 0.3404,
                                   0.3317, 0.3117, 0.3151, 0.3195, 0.3300, 0.3250, 0.3168, 0.3330, 0.3205, 0.3145};
  proto::History history = make_history(loss, val);
  history.mutable_params()->set_loss("sparse_categorical_crossentropy");
  history.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "overfitting") << d.summary();
  EXPECT_EQ(d.best_epoch(), 21);
  EXPECT_EQ(d.overfitting_from_epoch(), 17);
  EXPECT_NE(d.summary().find("overfitting from epoch 18:"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // The same run cut at 10 epochs was still improving; at 20 the floor (epoch 17) is too recent to call; at 25 the
  // stall has lasted 9 epochs while the training loss fell 40%.
  const std::vector<double> loss10(loss.begin(), loss.begin() + 10), val10(val.begin(), val.begin() + 10);
  EXPECT_EQ(diagnose(make_history(loss10, val10)).verdict(), "still_improving");
  const std::vector<double> loss20(loss.begin(), loss.begin() + 20), val20(val.begin(), val.begin() + 20);
  EXPECT_NE(diagnose(make_history(loss20, val20)).verdict(), "overfitting");
  const std::vector<double> loss25(loss.begin(), loss.begin() + 25), val25(val.begin(), val.begin() + 25);
  const proto::Diagnosis d25 = diagnose(make_history(loss25, val25));
  EXPECT_EQ(d25.verdict(), "overfitting") << d25.summary();
  EXPECT_EQ(d25.overfitting_from_epoch(), 17);
}

TEST(Diagnosis, ShortRunWhoseLastEpochIsTheBestIsNotOverfitting) {
  // Issue 7 point 17a: 4 epochs, val_loss within 5% of its best from the first epoch and setting a new low in the
  // last one, the training loss falling from its first-epoch average. It was "overfitting from epoch 2: ... stalled at
  // 0.3850 (mean of last 0, 0.0% above the best)"; the last epoch holds the best weights, so nothing earlier was
  // better to stop at, and the curves read as levelled off.
  const proto::Diagnosis d = diagnose(make_history({0.90, 0.50, 0.40, 0.33}, {0.400, 0.390, 0.395, 0.385}));
  EXPECT_EQ(d.verdict(), "good_fit") << d.summary();
  EXPECT_EQ(d.best_epoch(), 3);
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_EQ(d.summary().find("mean of last 0"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("at epoch 4 of 4"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // The same stall with one epoch after the best is still a stall: only a best in the very last epoch is excluded.
  const proto::Diagnosis after =
      diagnose(make_history({0.90, 0.50, 0.40, 0.33, 0.28}, {0.400, 0.390, 0.395, 0.385, 0.392}));
  EXPECT_EQ(after.verdict(), "overfitting") << after.summary();
  EXPECT_EQ(after.overfitting_from_epoch(), 1);
  EXPECT_NE(after.summary().find("(last epoch, "), std::string::npos) << after.summary();
  expect_summary_numbers_in_map(after);
}

TEST(Diagnosis, FastConvergenceIsNotAStallAgainstTheFirstEpochsAverage) {
  // val_loss is at its floor after one epoch and both curves stay level; only the first epoch's training loss, a
  // mean over a model fresh from its initialisation, is high. Measured from that epoch the training loss "fell 65%"
  // and the run read as overfitting from epoch 2; measured from the first epoch trained from the floor's weights it
  // fell 12%.
  const std::vector<double> loss = {0.90, 0.36, 0.345, 0.335, 0.33, 0.325, 0.32, 0.318};
  const std::vector<double> val = {0.362, 0.350, 0.352, 0.347, 0.351, 0.349, 0.346, 0.348};
  const proto::Diagnosis d = diagnose(make_history(loss, val));
  EXPECT_EQ(d.verdict(), "good_fit") << d.summary();
  EXPECT_EQ(d.numbers().at("plateau_epoch"), 0);
  EXPECT_EQ(d.numbers().at("loss_from_epoch"), 1);
  EXPECT_DOUBLE_EQ(d.numbers().at("loss_at_plateau"), 0.36);
  EXPECT_GT(d.numbers().at("loss_change_after_plateau"), -0.20);
  expect_summary_numbers_in_map(d);
}

TEST(Diagnosis, ValLossAboveChanceWhileTrainingLearnsIsNotGeneralizing) {
  // Issue 7 point 17b: raw, unscaled wine data (3 classes) with Adam and validation_split holding out the tail of a
  // file sorted by class: val_accuracy 0.0, val_loss 2.6x the chance level ln 3, the training loss well below it.
  // Both curves flatten, so the shape alone read as a "good fit".
  proto::History history = make_history(decay(20, 0.35, 0.8, 4), decay(20, 2.85, 0.4, 4));
  history.mutable_params()->set_loss("sparse_categorical_crossentropy");
  history.mutable_params()->set_output_units(3);
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "not_generalizing") << d.summary();
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_GE(d.numbers().at("best_val_over_chance"), 2.5);
  EXPECT_LT(d.numbers().at("loss_end_over_chance"), 0.8);
  EXPECT_EQ(d.summary().rfind("not generalizing: ", 0), 0u) << d.summary();
  EXPECT_NE(d.summary().find("chance level 1.0986"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("worse than guessing"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("validation_split"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // Both curves near or above chance is underfitting (it learned nothing), not this.
  proto::History both = make_history(decay(20, 1.05, 0.2, 4), decay(20, 2.85, 0.4, 4));
  *both.mutable_params() = history.params();
  EXPECT_EQ(diagnose(both).verdict(), "underfitting");
  // A best val_loss a little below chance is judged by the shape of the curves as before.
  proto::History below = make_history(decay(20, 0.35, 0.8, 4), decay(20, 1.05, 0.4, 4));
  *below.mutable_params() = history.params();
  EXPECT_NE(diagnose(below).verdict(), "not_generalizing");
}

TEST(Diagnosis, ChangesArePrintedFromThePlottedValues) {
  // Review of issue 7 point 17: "since epoch N ... loss fell X%" came from a least-squares line, not from the values
  // plotted. On the digits run cut at 5 epochs it said "loss fell 93.1%" where the curve fell 83.6% (1.9771 ->
  // 0.3244), and a loss that drops steeply and levels off fell "125%".
  const std::vector<double> loss = {1.9771, 1.2228, 0.7021, 0.4519, 0.3244};
  const std::vector<double> val = {1.6258, 1.0212, 0.7156, 0.5679, 0.5080};
  const proto::Diagnosis digits = diagnose(make_history(loss, val));
  EXPECT_NE(digits.summary().find("since epoch 1 val_loss fell 68.8% (1.6258 -> 0.5080) and loss fell 83.6% "
                                  "(1.9771 -> 0.3244)"),
            std::string::npos)
      << digits.summary();
  expect_summary_numbers_in_map(digits);

  const proto::Diagnosis steep = diagnose(make_history({2.0, 0.3, 0.1, 0.05, 0.04}, {0.5, 0.45, 0.42, 0.41, 0.40}));
  EXPECT_NE(steep.summary().find("loss fell 98.0% (2.0000 -> 0.0400)"), std::string::npos) << steep.summary();
  EXPECT_NE(steep.summary().find("val_loss fell 20.0% (0.5000 -> 0.4000)"), std::string::npos) << steep.summary();
  expect_summary_numbers_in_map(steep);
}

TEST(Diagnosis, TrainingLossRisingIsDivergingNotOverfitting) {
  // val_loss is U-shaped as in the overfitting case, but the training loss rises with it (0.2 at epoch 10, 1-based,
  // 1.4 at epoch 30): the optimizer is not fitting the training set any more, which is no overfitting. It was
  // "overfitting from epoch 11: ... while loss rose 600.0%".
  std::vector<double> loss(30);
  for (int e = 0; e < 30; ++e) loss[e] = 0.2 + 0.003 * (e - 9) * (e - 9);
  const proto::Diagnosis d = diagnose(make_history(loss, u_shape(30)));
  EXPECT_EQ(d.verdict(), "diverging") << d.summary();
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_EQ(d.summary().rfind("diverging: ", 0), 0u) << d.summary();
  EXPECT_NE(d.summary().find("loss rose 600.0% (0.2000 -> 1.4000)"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("learning rate"), std::string::npos) << d.summary();
  EXPECT_EQ(d.summary().find("overfitting"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // A training loss that ends a little above its value at the best epoch (within 10%) is noise, not divergence: it
  // stayed at its low while val_loss rose, which is overfitting, and the line says so without "loss rose".
  std::vector<double> level = decay(30, 0.2, 1.0, 2);
  for (int e = 9; e < 30; ++e) level[e] = level[9] * (1 + 0.002 * (e - 9));
  const proto::Diagnosis flat = diagnose(make_history(level, u_shape(30)));
  EXPECT_EQ(flat.verdict(), "overfitting") << flat.summary();
  EXPECT_NE(flat.summary().find("loss stayed near its low"), std::string::npos) << flat.summary();
  EXPECT_EQ(flat.summary().find("while loss rose"), std::string::npos) << flat.summary();
  expect_summary_numbers_in_map(flat);

  // Nor is a loss near zero that wobbles up by 30% of itself (0.0010 -> 0.0013) after falling from 2.0: it gave back
  // a few hundredths of a percent of its fall. The classic picture, memorised training set and val_loss climbing.
  std::vector<double> memorised = decay(30, 0.0, 2.0, 1.3);
  for (int e = 9; e < 30; ++e) memorised[e] = 0.0010 * (1 + 0.3 * (e - 9) / 20.0);
  const proto::Diagnosis near_zero = diagnose(make_history(memorised, u_shape(30)));
  EXPECT_EQ(near_zero.verdict(), "overfitting") << near_zero.summary();
  EXPECT_EQ(near_zero.overfitting_from_epoch(), 10);
  expect_summary_numbers_in_map(near_zero);
}

TEST(Diagnosis, TrainingLossRisingFromItsLowIsDivergingWhenTheLowIsNotNearZero) {
  // The digits MLP (examples/digits/mlp.pbtxt, 2 ranks) with Adam at learning rate 0.3, 30 epochs: the training loss
  // wanders between 1.27 and 1.96 (chance ln 10 = 2.30) and ends 33% above its low. Read against its fall from a
  // first epoch at 6.44 it was "overfitting from epoch 4: ... while loss stayed near its low (1.3394 -> 1.6944)".
  const std::vector<double> lr03_loss = {6.4401, 1.4806, 1.3394, 1.4803, 1.4414, 1.4928, 1.3687, 1.3255,
                                         1.2952, 1.2736, 1.4324, 1.3993, 1.6843, 1.5335, 1.5448, 1.4233,
                                         1.3696, 1.4313, 1.3527, 1.2818, 1.4483, 1.3650, 1.5075, 1.8717,
                                         1.9647, 1.7187, 1.7033, 1.4909, 1.4479, 1.6944};
  const std::vector<double> lr03_val = {1.4618, 1.9354, 1.4304, 1.7410, 2.2164, 1.5876, 1.8701, 1.7209, 1.5128, 1.7377,
                                        1.7467, 1.7161, 1.7460, 1.6367, 1.7522, 1.8470, 1.7377, 1.8943, 1.4589, 1.5052,
                                        1.5404, 1.7042, 1.6164, 2.3399, 1.6877, 1.8971, 1.6558, 1.5157, 1.5246, 2.2703};
  proto::History lr03 = make_history(lr03_loss, lr03_val);
  lr03.mutable_params()->set_loss("sparse_categorical_crossentropy");
  lr03.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(lr03);
  EXPECT_EQ(d.verdict(), "diverging") << d.summary();
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  // The rise is read from the low after the best epoch (1.2736 at epoch 10), not from the best epoch's 1.3394.
  EXPECT_NE(d.summary().find("loss rose 33.0% (1.2736 -> 1.6944) from its low at epoch 10"), std::string::npos)
      << d.summary();
  EXPECT_NE(d.summary().find("learning rate"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // Learning rate 0.1, 20 epochs: best val_loss at epoch 3, the training loss's low 0.0972 at epoch 13, then back up
  // to 0.2613. It was "loss stayed near its low (0.2275 -> 0.2613)".
  const std::vector<double> lr01_loss = {1.2298, 0.2395, 0.2275, 0.1567, 0.1494, 0.1538, 0.1224,
                                         0.1489, 0.1808, 0.1775, 0.1026, 0.2088, 0.0972, 0.1724,
                                         0.1362, 0.1976, 0.2141, 0.2225, 0.1500, 0.2613};
  const std::vector<double> lr01_val = {0.5931, 0.8189, 0.5494, 0.7752, 0.7163, 0.9278, 0.7686, 0.7876, 1.2839, 1.0926,
                                        1.3301, 1.2321, 1.3551, 1.6573, 1.4402, 1.6455, 1.3354, 1.2530, 1.3161, 1.2629};
  proto::History lr01 = make_history(lr01_loss, lr01_val);
  *lr01.mutable_params() = lr03.params();
  const proto::Diagnosis d01 = diagnose(lr01);
  EXPECT_EQ(d01.verdict(), "diverging") << d01.summary();
  EXPECT_NE(d01.summary().find("(0.0972 -> 0.2613) from its low at epoch 13"), std::string::npos) << d01.summary();
  expect_summary_numbers_in_map(d01);

  // A memorised training set wobbling near zero (0.0010 -> 0.0013, 0.06% of the chance level) while val_loss climbs
  // stays overfitting, with or without a chance level, and the line names the low it stayed near.
  std::vector<double> memorised = decay(30, 0.0, 2.0, 1.3);
  for (int e = 9; e < 30; ++e) memorised[e] = 0.0010 * (1 + 0.3 * (e - 9) / 20.0);
  proto::History near_zero = make_history(memorised, u_shape(30));
  for (bool with_chance : {false, true}) {
    if (with_chance) *near_zero.mutable_params() = lr03.params();
    const proto::Diagnosis o = diagnose(near_zero);
    EXPECT_EQ(o.verdict(), "overfitting") << o.summary();
    EXPECT_EQ(o.overfitting_from_epoch(), 10);
    EXPECT_NE(o.summary().find("loss stayed near zero (its low 1.0000e-03 at epoch 10, 0.0013 at the end"),
              std::string::npos)
        << o.summary();
    expect_summary_numbers_in_map(o);
  }
  // A low loss that ends 20x above its low (0.0050 -> 0.1004 of ln 10, as digits at learning rate 0.05 does) has not
  // stayed near zero: 4.4% of the chance level is above the 2% that counts as learned down to nothing.
  std::vector<double> spiky = memorised;
  spiky[29] = 0.1004;
  proto::History spiky_history = make_history(spiky, u_shape(30));
  *spiky_history.mutable_params() = lr03.params();
  EXPECT_EQ(diagnose(spiky_history).verdict(), "diverging") << diagnose(spiky_history).summary();
  // The same 30% wobble at a loss that is not near zero (0.5 -> 0.65 of ln 10) is unstable training.
  std::vector<double> high = memorised;
  for (int e = 9; e < 30; ++e) high[e] = 500 * memorised[e];
  proto::History high_history = make_history(high, u_shape(30));
  *high_history.mutable_params() = lr03.params();
  high_history.mutable_epochs(0)->mutable_values()->at("loss") = 2.2;
  EXPECT_EQ(diagnose(high_history).verdict(), "diverging") << diagnose(high_history).summary();
}

TEST(Diagnosis, BlownUpThenNearChanceIsDivergingNotUnderfitting) {
  // The digits MLP at learning rate 5 and 1, 30 epochs: the first epoch's loss at 1276.8 (555x chance) and 55.0, then
  // the loss sits at 1.2x and 1.04x chance. Both were "underfitting ... more epochs may help"; the weights blew up
  // and never recovered, and the advice is to lower the learning rate.
  const std::vector<double> lr5_loss = {1276.7922, 2.7055, 2.4963, 2.6787, 2.6860, 2.6493, 2.6006, 2.8255,
                                        2.6780,    2.7531, 2.7166, 2.8054, 2.8192, 2.5989, 2.6733, 2.6868,
                                        2.7537,    2.8314, 2.6396, 2.6505, 2.6153, 2.6634, 2.7228, 2.6707,
                                        2.6660,    2.6600, 2.6878, 2.6536, 2.7572, 2.7473};
  const std::vector<double> lr5_val = {2.8400, 2.5839, 2.4202, 2.6119, 2.6954, 2.4113, 2.8181, 2.6566, 2.6261, 2.5316,
                                       2.7286, 2.9053, 2.7247, 2.6446, 2.6698, 2.8193, 2.7570, 2.7168, 2.5558, 2.7298,
                                       2.6018, 2.9240, 2.7622, 2.6368, 2.8853, 2.6713, 2.6846, 2.6555, 2.7372, 2.4937};
  proto::History lr5 = make_history(lr5_loss, lr5_val);
  lr5.mutable_params()->set_loss("sparse_categorical_crossentropy");
  lr5.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(lr5);
  EXPECT_EQ(d.verdict(), "diverging") << d.summary();
  EXPECT_NE(d.summary().find("loss reached 1276.7922 at epoch 1"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("ended at 2.7473"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("lower the learning rate"), std::string::npos) << d.summary();
  EXPECT_EQ(d.summary().find("more epochs"), std::string::npos) << d.summary();
  expect_summary_numbers_in_map(d);

  // A bad initialisation that starts at 5x chance but ends well below it is judged on its curves as before.
  std::vector<double> bad_init = decay(20, 0.2, 11.0, 1.0);
  proto::History recovered = make_history(bad_init, decay(20, 0.3, 2.0, 2.0));
  *recovered.mutable_params() = lr5.params();
  EXPECT_NE(diagnose(recovered).verdict(), "diverging") << diagnose(recovered).summary();
  // Near chance without a blow-up stays underfitting.
  proto::History near = make_history(decay(15, 2.1, 2.9, 1.5), decay(15, 2.15, 1.0, 1.5));
  *near.mutable_params() = lr5.params();
  EXPECT_EQ(diagnose(near).verdict(), "underfitting") << diagnose(near).summary();
}

TEST(Diagnosis, UnderfittingSaysMoreEpochsMayHelpOnlyWhenBothCurvesFell) {
  // val_loss read between two single epochs can start on a spike: here the last five val_loss values are 2.885 (a
  // spike) ... 2.494 while the training loss rose 3%. "since epoch 5 val_loss fell 13.6%, more epochs may help" was
  // misleading; with no blow-up before it this is underfitting, without that advice.
  proto::History spike = make_history({2.60, 2.58, 2.57, 2.56, 2.55, 2.66, 2.69, 2.65, 2.70, 2.7473},
                                      {2.50, 2.49, 2.48, 2.47, 2.46, 2.8853, 2.67, 2.68, 2.66, 2.4937});
  spike.mutable_params()->set_loss("sparse_categorical_crossentropy");
  spike.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(spike);
  EXPECT_EQ(d.verdict(), "underfitting") << d.summary();
  EXPECT_EQ(d.summary().find("more epochs"), std::string::npos) << d.summary();
  // Both curves falling at the end still adds it.
  proto::History falling = make_history(decay(10, 1.9, 1.2, 4), decay(10, 2.0, 1.2, 4));
  *falling.mutable_params() = spike.params();
  const proto::Diagnosis f = diagnose(falling);
  EXPECT_EQ(f.verdict(), "underfitting") << f.summary();
  EXPECT_NE(f.summary().find("more epochs may help"), std::string::npos) << f.summary();
  expect_summary_numbers_in_map(f);
}

TEST(Diagnosis, FarAboveTheChanceLevelIsDivergingNotUnderfitting) {
  // A run whose loss blew up to 5.5e8 within its first epoch and stayed there, with 10 classes (chance ln 10): it was
  // "underfitting: ... (23977505555.3% and ... of it)". A training loss 3x the chance level is worse than any guess.
  proto::History history =
      make_history({6.0e8, 5.6e8, 5.5e8, 5.5e8, 5.5e8, 5.5e8}, {6.1e8, 5.7e8, 5.6e8, 5.6e8, 5.6e8, 5.6e8});
  history.mutable_params()->set_loss("sparse_categorical_crossentropy");
  history.mutable_params()->set_output_units(10);
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "diverging") << d.summary();
  EXPECT_EQ(d.summary().rfind("diverging: ", 0), 0u) << d.summary();
  EXPECT_NE(d.summary().find("2.4e+08 x the chance level 2.3026"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("learning rate"), std::string::npos) << d.summary();
  EXPECT_EQ(std::regex_search(d.summary(), std::regex("[0-9]{4,}\\.[0-9]%")), false) << d.summary();
  expect_summary_numbers_in_map(d);

  // The digits MLP (examples/digits/mlp.pbtxt) with SGD at learning rate 50, 8 epochs on 2 ranks: a first epoch at
  // 57000x the chance level, then about 9x. It was "underfitting: ... (927.3% of it and 748.5% of it); ... more epochs
  // may help".
  proto::History lr50 = make_history({132267.0457, 30.5782, 22.5719, 25.6054, 18.7128, 22.5845, 20.3578, 21.3517},
                                     {38.4954, 23.5074, 31.1105, 21.1003, 19.8921, 22.9892, 27.7583, 17.2341});
  *lr50.mutable_params() = history.params();
  const proto::Diagnosis blown = diagnose(lr50);
  EXPECT_EQ(blown.verdict(), "diverging") << blown.summary();
  EXPECT_NE(blown.summary().find("loss ended at 21.3517, 927.3% of the chance level 2.3026"), std::string::npos)
      << blown.summary();
  EXPECT_EQ(blown.summary().find("more epochs"), std::string::npos) << blown.summary();
  expect_summary_numbers_in_map(blown);

  // Near chance, with a val_loss far above it, is underfitting as before; the val_loss is then given as a ratio.
  proto::History high_val = make_history(decay(10, 2.1, 0.3, 2), decay(10, 60.0, 5.0, 2));
  *high_val.mutable_params() = history.params();
  const proto::Diagnosis u = diagnose(high_val);
  EXPECT_EQ(u.verdict(), "underfitting") << u.summary();
  EXPECT_NE(u.summary().find("26.1 x it"), std::string::npos) << u.summary();
  expect_summary_numbers_in_map(u);
}

TEST(Diagnosis, NonFiniteValuesReadAsPythonPrintsThem) {
  // glibc prints a NaN with its sign bit set as "-nan"; the console and the verdict both say "nan".
  const proto::Diagnosis d = diagnose(make_history({1.0, 0.5, -kNaN, 0.3}, {1.1, 0.6, 0.5, 0.5}));
  EXPECT_EQ(d.verdict(), "diverging");
  EXPECT_NE(d.summary().find("loss is nan at epoch 3"), std::string::npos) << d.summary();
  EXPECT_EQ(d.summary().find("-nan"), std::string::npos) << d.summary();
}

TEST(Diagnosis, UndeterminedWithoutEpochs) {
  proto::History history;
  history.mutable_params()->set_epochs(0);
  const proto::Diagnosis d = diagnose(history);
  EXPECT_EQ(d.verdict(), "undetermined");
  EXPECT_NE(d.summary().find("no epochs were trained"), std::string::npos) << d.summary();
}

TEST(Diagnosis, UndeterminedWithoutValidation) {
  const proto::Diagnosis d = diagnose(make_history({1.0, 0.5, 0.25, 0.2}, {}));
  EXPECT_EQ(d.verdict(), "undetermined");
  EXPECT_EQ(d.best_epoch(), -1);
  EXPECT_TRUE(std::isnan(d.best_val_loss()));
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_NE(d.summary().find("no val_loss"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("validation_split"), std::string::npos) << d.summary();
}

TEST(Diagnosis, UndeterminedWithTooFewEpochs) {
  const proto::Diagnosis d = diagnose(make_history({1.0, 0.5}, {1.1, 0.6}));
  EXPECT_EQ(d.verdict(), "undetermined");
  EXPECT_NE(d.summary().find("only 2 epochs"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("needs 3"), std::string::npos) << d.summary();
  EXPECT_EQ(diagnose(make_history({1.0, 0.5, 0.4}, {1.1, 0.6, 0.5})).verdict(), "still_improving");
  EXPECT_EQ(diagnose(proto::History()).verdict(), "undetermined");
}

TEST(Diagnosis, NonFiniteLossIsDivergingWithoutNumbers) {
  const proto::Diagnosis d = diagnose(make_history({1.0, 0.5, 0.4, kNaN, kNaN}, {1.1, 0.6, 0.5, 0.5, 0.5}));
  EXPECT_EQ(d.verdict(), "diverging");
  EXPECT_NE(d.summary().find("diverging: loss is nan at epoch 4"), std::string::npos) << d.summary();
  EXPECT_NE(d.summary().find("learning rate"), std::string::npos) << d.summary();
  // The curve before the break is not judged: no best epoch, no numbers.
  EXPECT_EQ(d.best_epoch(), -1);
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_TRUE(d.numbers().empty());
  const proto::Diagnosis inf =
      diagnose(make_history({1.0, 0.5, 0.4, 0.3}, {1.1, 0.6, std::numeric_limits<double>::infinity(), 0.5}));
  EXPECT_EQ(inf.verdict(), "diverging");
  EXPECT_NE(inf.summary().find("val_loss is inf at epoch 3"), std::string::npos) << inf.summary();
}

}  // namespace
}  // namespace shardfit
