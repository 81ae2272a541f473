// The over/underfitting verdict (diagnosis.h). The rule and the reasons for each threshold are in docs/verdict.md;
// keep the two in step. Everything is relative (to the best val_loss, the first loss, or the chance level), so the
// verdict does not depend on the loss's units or scale.
#include "dist/train/diagnosis.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "dist/io/format.h"

namespace shardfit {

namespace {

// Fewer validated epochs than this and there is no "after the best" to read a trend from.
constexpr int kMinValEpochs = 3;
// "Late" = the last 20% of the validated epochs (at least the last one): a best there means the curve had no time to
// turn, so it cannot be called overfitting, and if it is still falling more epochs would help.
constexpr double kLateFraction = 0.2;
// "The end of the run" for still improving is the late epochs but at least this many, so that the change read between
// its first and last epoch spans more than one epoch's noise.
constexpr int kMinTailEpochs = 5;
// val_loss after the best is averaged over at most this many of the last validated epochs, so one noisy epoch at
// the end neither makes nor hides a rise.
constexpr int kEndWindow = 3;
// A rise of val_loss this far above its best (relative) is overfitting, well above the epoch-to-epoch noise of a
// few percent that a converged val_loss shows.
constexpr double kOverfitRise = 0.10;
// The training loss falling this much more (relative to its value at the best epoch) while val_loss stalls is the
// other half of the textbook picture: the model keeps fitting the training set and the validation set does not follow.
constexpr double kTrainStillFalling = 0.20;
// val_loss and loss both falling this much over the last 20% of the validated epochs (from the first of them to the
// last, the values plotted) = still improving: at that rate a run 25% longer buys another 5%. Measured over a share of
// the run rather than per epoch, so the threshold means the same for 10 epochs and for 1000. Two plotted values rather
// than a fitted line, so that the printed change is one a user can redo from the plot (a line through a curve that
// drops steeply and levels off ends below zero: "fell 125%"); requiring the nearly noise-free training loss to fall
// too keeps one noisy val_loss from deciding.
constexpr double kStillImprovingFall = 0.05;
// val_loss within this much (relative) of its best counts as having reached its floor. On a flat stretch the
// position of the single lowest point is noise; the stall is measured from where the floor was first reached.
constexpr double kPlateauBand = 0.05;
// With a chance level (cross-entropy): a loss at 80% of chance or more has learned little beyond guessing.
constexpr double kNearChance = 0.8;
// A best val_loss at or above the chance level is no better than guessing on the validation data. When the training
// loss is meanwhile well below chance (not underfitting), what the model learned does not carry over at all.
constexpr double kWorseThanChance = 1.0;
// A training loss that ends this far above the chance level is confidently wrong on the very data it trains on: the
// weights blew up (too large a learning rate, unscaled inputs), which is no under- or overfitting. Predicting the
// class frequencies scores at most the chance level and a freshly initialised model sits near it (1.1x on digits), so
// a model that merely learned nothing stays well below 3x; the digits MLP at learning rate 50 ends at 9.3x after a
// first epoch at 57000x, and was read as "underfitting ... more epochs may help" with a threshold of 10x.
constexpr double kDivergedOverChance = 3.0;
// A training loss that ends more than this much above its value at the best val_loss's epoch, and has climbed back by
// more than this share of what it had fallen up to that epoch, has stopped fitting the training set: unstable or
// diverging training, not overfitting (which needs the training loss to stay down while val_loss turns). The first
// is well above the noise of an epoch's mean loss; the second keeps a loss near zero that wobbles from 0.0010 to
// 0.0013 after falling from 2.0 (a relative rise of 30%, an absolute one of nothing) from being read as one.
constexpr double kTrainRose = 0.10;
// A training loss that ends below this share of its scale has been learned down to about nothing, and a relative rise
// of it (0.0010 -> 0.0013: 30%) is no sign of unstable training. The scale is the chance level for cross-entropy, or
// else the lower of the first epoch's loss and val_loss (the first epoch's loss alone averages over a model that may
// have blown up within it). 2% of ln 10 is 0.046 on digits: above the 0.032 a memorised training set ends at after 30
// epochs, below the 0.10 and 0.26 that the digits MLP at learning rates 0.05 and 0.1 climbs back to from 0.005 / 0.097.
constexpr double kNearZeroLoss = 0.02;
// Without one: a loss that fell less than 30% from its first epoch barely moved. The first epoch's loss is already
// an average over a moving model, so a model that learns at all is usually far below it by the end.
constexpr double kBarelyMoved = 0.3;

struct Point {
  std::int64_t epoch;  // 0-based
  double value;
};

// (to - from) / |from|; 0 when `from` is 0 (no scale to be relative to).
double relative_change(double from, double to) { return from != 0 ? (to - from) / std::fabs(from) : 0.0; }

// A relative change as a percentage with one decimal: 0.3691 -> "36.9%".
std::string percent(double fraction) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f%%", 100.0 * fraction);
  return text;
}

// "fell 36.9%" / "rose 4.0%" / "was flat (0.0%)" for a relative change.
std::string change_text(double change) {
  if (std::fabs(change) < 0.0005) return "was flat (" + percent(std::fabs(change)) + ")";
  return (change < 0 ? "fell " : "rose ") + percent(std::fabs(change));
}

std::string epoch_text(std::int64_t epoch) { return std::to_string(epoch + 1); }

// A value relative to the chance level, followed by "it" / "the chance level": "91.2% of" below 10x; beyond that a
// percentage reads badly ("23977505555.3% of it"), so a ratio: "26.1 x", "2.4e+08 x".
std::string share_of(double ratio) {
  if (std::fabs(ratio) < 10) return percent(ratio) + " of";
  char text[64];
  std::snprintf(text, sizeof text, std::fabs(ratio) < 1000 ? "%.1f x" : "%.1e x", ratio);
  return text;
}

// "fell 36.9% (0.5000 -> 0.3155)": a change and the two values it is the change between.
std::string change_between(double from, double to) {
  const double change = relative_change(from, to);
  const std::string values = "(" + format_value(from) + " -> " + format_value(to) + ")";
  if (std::fabs(change) < 0.0005) return "was flat " + values;
  return (change < 0 ? "fell " : "rose ") + percent(std::fabs(change)) + " " + values;
}

// A verdict without curves to read: no best epoch, no numbers.
proto::Diagnosis without_curves(const std::string& verdict, const std::string& summary) {
  proto::Diagnosis diagnosis;
  diagnosis.set_verdict(verdict);
  diagnosis.set_best_epoch(-1);
  diagnosis.set_best_val_loss(std::numeric_limits<double>::quiet_NaN());
  diagnosis.set_overfitting_from_epoch(-1);
  diagnosis.set_summary(summary);
  return diagnosis;
}

proto::Diagnosis undetermined(const std::string& why) { return without_curves("undetermined", "undetermined: " + why); }

}  // namespace

double chance_level(const proto::HistoryParams& params) {
  const std::string& loss = params.loss();
  if (loss == "binary_crossentropy") return std::log(2.0);
  if ((loss == "sparse_categorical_crossentropy" || loss == "categorical_crossentropy") && params.output_units() >= 2) {
    return std::log(static_cast<double>(params.output_units()));
  }
  return 0.0;
}

proto::Diagnosis diagnose(const proto::History& history) {
  if (history.epochs_size() == 0) return undetermined("no epochs were trained");
  std::vector<Point> train;
  std::vector<Point> val;
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const char* key : {"loss", "val_loss"}) {
      const auto found = record.values().find(key);
      if (found == record.values().end()) continue;
      // A NaN / infinite loss is the end of a diverged run: say so and where it broke rather than judge the curve
      // before it.
      if (!std::isfinite(found->second)) {
        return without_curves("diverging", "diverging: " + std::string(key) + " is " + format_value(found->second) +
                                               " at epoch " + epoch_text(record.epoch()) +
                                               "; lower the learning rate (or scale the inputs)");
      }
      (key[0] == 'l' ? train : val).push_back({record.epoch(), found->second});
    }
  }
  if (train.empty()) return undetermined("the history has no training loss");
  if (val.empty()) {
    return undetermined("no val_loss (fit without validation data; set validation_split or validation_data)");
  }
  const std::size_t n = val.size();
  if (n < kMinValEpochs) {
    return undetermined("val_loss for only " + std::to_string(n) + " epoch" + (n == 1 ? "" : "s") +
                        ", the verdict needs " + std::to_string(kMinValEpochs));
  }

  // ---- the numbers ----
  const std::size_t best =
      std::min_element(val.begin(), val.end(), [](const Point& a, const Point& b) { return a.value < b.value; }) -
      val.begin();  // min_element keeps the first of equal values
  const double best_val = val[best].value;
  const std::int64_t best_epoch = val[best].epoch;
  // Relative changes of val_loss are taken against its best; the floor keeps a best of exactly 0 from dividing by 0
  // while staying scale-free.
  const double scale =
      std::max({std::fabs(best_val), 1e-6 * std::max(std::fabs(val.front().value), std::fabs(train.front().value)),
                std::numeric_limits<double>::min()});

  const std::size_t late_count = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(kLateFraction * n)));
  const bool late = best >= n - late_count;

  const std::size_t after_best = n - 1 - best;
  const std::size_t end_window = std::min<std::size_t>(kEndWindow, after_best);
  double val_end = best_val;
  if (end_window > 0) {
    val_end = 0;
    for (std::size_t i = n - end_window; i < n; ++i) val_end += val[i].value;
    val_end /= static_cast<double>(end_window);
  }
  const double val_rise = (val_end - best_val) / scale;

  const std::size_t tail_window = std::min(n, std::max<std::size_t>(kMinTailEpochs, late_count));
  const std::int64_t tail_first_epoch = val[n - tail_window].epoch;
  const double val_at_tail_first = val[n - tail_window].value;
  const double val_last = val.back().value;
  const double val_tail_change = relative_change(val_at_tail_first, val_last);

  // The training loss of the best epoch: the same record in a well-formed history; otherwise the last one before it.
  double train_at_best = train.front().value;
  for (const Point& point : train) {
    if (point.epoch <= best_epoch) train_at_best = point.value;
  }
  const double train_end = train.back().value;
  const double train_change = relative_change(train_at_best, train_end);  // negative: still falling
  // Where val_loss first reached its floor, and how much the training loss fell from there.
  std::size_t plateau = 0;
  while (plateau < best && (val[plateau].value - best_val) / scale > kPlateauBand) ++plateau;
  const std::int64_t plateau_epoch = val[plateau].epoch;
  const bool plateau_late = plateau >= n - late_count;
  // The training loss is read from the first epoch trained from the floor's weights, not from the plateau epoch
  // itself: an epoch's loss is the mean over that epoch's batches, so the plateau epoch's own loss still holds the
  // learning that reached the floor. Most of all the first epoch's, which averages over a model fresh from its
  // initialisation: in a short run whose val_loss was near its floor after one epoch, the fall from there would read
  // as a stall however well the curves levelled off.
  double train_at_plateau = train.front().value;
  std::int64_t train_from_epoch = train.front().epoch;
  for (const Point& point : train) {
    train_at_plateau = point.value;
    train_from_epoch = point.epoch;
    if (point.epoch > plateau_epoch) break;
  }
  const double train_change_plateau = relative_change(train_at_plateau, train_end);
  // The training loss over the same epochs as the val tail.
  std::size_t train_tail_begin = 0;
  while (train_tail_begin < train.size() && train[train_tail_begin].epoch < tail_first_epoch) ++train_tail_begin;
  const double train_at_tail_first =
      train_tail_begin < train.size() ? train[train_tail_begin].value : train.back().value;
  const double train_tail_change = relative_change(train_at_tail_first, train_end);

  const double train_first = train.front().value;
  const double val_first = val.front().value;

  proto::Diagnosis diagnosis;
  diagnosis.set_best_epoch(best_epoch);
  diagnosis.set_best_val_loss(best_val);
  diagnosis.set_overfitting_from_epoch(-1);
  auto& numbers = *diagnosis.mutable_numbers();
  numbers["epochs"] = static_cast<double>(history.epochs_size());
  numbers["val_epochs"] = static_cast<double>(n);
  numbers["best_epoch"] = static_cast<double>(best_epoch);
  numbers["best_val_loss"] = best_val;
  numbers["late_window"] = static_cast<double>(late_count);
  numbers["val_end"] = val_end;
  numbers["val_end_window"] = static_cast<double>(end_window);
  numbers["val_change_after_best"] = val_rise;
  numbers["val_tail_change"] = val_tail_change;
  numbers["tail_window"] = static_cast<double>(tail_window);
  numbers["tail_first_epoch"] = static_cast<double>(tail_first_epoch);
  numbers["val_at_tail_first"] = val_at_tail_first;
  numbers["val_last"] = val_last;
  numbers["loss_at_tail_first"] = train_at_tail_first;
  numbers["loss_at_best"] = train_at_best;
  numbers["loss_end"] = train_end;
  numbers["loss_change_after_best"] = train_change;
  numbers["loss_tail_change"] = train_tail_change;
  numbers["loss_first"] = train_first;
  numbers["val_first"] = val_first;
  numbers["plateau_epoch"] = static_cast<double>(plateau_epoch);
  numbers["loss_at_plateau"] = train_at_plateau;
  numbers["loss_from_epoch"] = static_cast<double>(train_from_epoch);
  numbers["loss_change_after_plateau"] = train_change_plateau;
  numbers["threshold_plateau_band"] = kPlateauBand;
  numbers["threshold_overfit_rise"] = kOverfitRise;
  numbers["threshold_loss_still_falling"] = kTrainStillFalling;
  numbers["threshold_still_improving_fall"] = kStillImprovingFall;
  numbers["threshold_loss_rose"] = kTrainRose;

  const std::string last_epoch = epoch_text(history.epochs(history.epochs_size() - 1).epoch());
  const std::string best_text =
      "best val_loss " + format_value(best_val) + " at epoch " + epoch_text(best_epoch) + " of " + last_epoch;
  // "0.3226 (mean of last 3, 3.5% above the best)": where val_loss ended, and how it was measured.
  const std::string end_text =
      format_value(val_end) + " (" +
      (end_window == 1 ? std::string("last epoch") : "mean of last " + std::to_string(end_window)) + ", " +
      percent(val_rise) + " above the best)";
  // The end of both curves, between the values plotted at the first tail epoch and at the last: "since epoch 6
  // val_loss fell 16.1% (0.4438 -> 0.3725) and loss fell 48.5% (0.2584 -> 0.1331)" (an epoch, not a count: with
  // validation_freq the window spans more epochs than it has val points).
  const std::string tail_text = "since epoch " + epoch_text(tail_first_epoch) + " val_loss " +
                                change_between(val_at_tail_first, val_last) + " and loss " +
                                change_between(train_at_tail_first, train_end);

  // ---- diverging: the training loss blew up or climbed; nothing else about the curves means anything then ----
  const double chance = chance_level(history.params());
  if (chance > 0) {
    numbers["chance_level"] = chance;
    numbers["loss_end_over_chance"] = train_end / chance;
    numbers["best_val_over_chance"] = best_val / chance;
    numbers["threshold_diverged_over_chance"] = kDivergedOverChance;
  }
  if (chance > 0 && train_end / chance > kDivergedOverChance) {
    diagnosis.set_verdict("diverging");
    diagnosis.set_summary("diverging: loss ended at " + format_value(train_end) + ", " + share_of(train_end / chance) +
                          " the chance level " + format_value(chance) +
                          " (worse than any guess); lower the learning rate (or scale the inputs)");
    return diagnosis;
  }
  // The highest training loss: one far above chance means the weights blew up at some point. Ending near or above
  // the chance level after that is no underfitting ("more epochs may help") but a run that never recovered.
  std::size_t peak = 0;
  for (std::size_t i = 1; i < train.size(); ++i) {
    if (train[i].value > train[peak].value) peak = i;
  }
  if (chance > 0) {
    numbers["loss_peak"] = train[peak].value;
    numbers["loss_peak_epoch"] = static_cast<double>(train[peak].epoch);
    numbers["loss_peak_over_chance"] = train[peak].value / chance;
    numbers["threshold_near_chance"] = kNearChance;
  }
  if (chance > 0 && train[peak].value / chance > kDivergedOverChance && train_end / chance >= kNearChance) {
    diagnosis.set_verdict("diverging");
    diagnosis.set_summary("diverging: loss reached " + format_value(train[peak].value) + " at epoch " +
                          epoch_text(train[peak].epoch) + " (" + share_of(train[peak].value / chance) +
                          " the chance level " + format_value(chance) + ") and ended at " + format_value(train_end) +
                          " (" + share_of(train_end / chance) +
                          " it): it blew up and never learned; lower the learning rate (or scale the inputs)");
    return diagnosis;
  }

  // The training loss's own low from the best epoch on: a rise is measured from there, not from its value at the best
  // epoch, which may sit above a later low (digits at learning rate 0.1: 0.2275 at the best epoch, 0.0972 later).
  std::size_t low = 0;
  while (low + 1 < train.size() && train[low].epoch < best_epoch) ++low;
  for (std::size_t i = low + 1; i < train.size(); ++i) {
    if (train[i].value < train[low].value) low = i;
  }
  const double train_low = train[low].value;
  const double train_rise_from_low = relative_change(train_low, train_end);
  const double near_zero_scale = chance > 0 ? chance : std::min(std::fabs(train_first), std::fabs(val_first));
  const bool train_near_zero = std::fabs(train_end) < kNearZeroLoss * near_zero_scale;
  numbers["loss_change_to_best"] = relative_change(train_first, train_at_best);
  numbers["loss_low"] = train_low;
  numbers["loss_low_epoch"] = static_cast<double>(train[low].epoch);
  numbers["loss_change_from_low"] = train_rise_from_low;
  numbers["loss_change_to_low"] = relative_change(train_first, train_low);
  numbers["near_zero_scale"] = near_zero_scale;
  numbers["threshold_near_zero_loss"] = kNearZeroLoss;
  if (train_rise_from_low > kTrainRose && !train_near_zero) {
    diagnosis.set_verdict("diverging");
    diagnosis.set_summary("diverging: the training loss rose " + percent(train_rise_from_low) + " (" +
                          format_value(train_low) + " -> " + format_value(train_end) + ") from its low at epoch " +
                          epoch_text(train[low].epoch) + ", after the " + best_text +
                          ", instead of falling; lower the learning rate");
    return diagnosis;
  }

  // ---- underfitting: both curves stay high; not generalizing: only val_loss does, above guessing ----
  bool underfitting = false;
  std::string underfitting_text;
  if (chance > 0) {
    // A known guessing level is the better baseline: a loss far below it is not underfitting however little it
    // moved (it may have learned within the first epoch).
    const double train_over_chance = train_end / chance;
    const double val_over_chance = best_val / chance;
    numbers["threshold_worse_than_chance"] = kWorseThanChance;
    underfitting = train_over_chance >= kNearChance && val_over_chance >= kNearChance;
    underfitting_text = "loss " + format_value(train_end) + " and best val_loss " + format_value(best_val) +
                        " stay near or above the chance level " + format_value(chance) + " (" +
                        share_of(train_over_chance) + " it and " + share_of(val_over_chance) + " it)";
    // The training set was learned, yet no epoch did better than guessing on the validation set: no curve shape
    // (a rise, a stall, a late best) makes that a good fit. The usual cause is validation data unlike the training
    // data, e.g. validation_split holding out the tail of a file sorted by class.
    if (!underfitting && val_over_chance >= kWorseThanChance) {
      diagnosis.set_verdict("not_generalizing");
      diagnosis.set_summary("not generalizing: " + best_text + " is " + share_of(val_over_chance) +
                            " the chance level " + format_value(chance) +
                            " (worse than guessing) while loss ended at " + format_value(train_end) + " (" +
                            share_of(train_over_chance) +
                            " it); check that the validation data come from the same distribution as the training "
                            "data (validation_split holds out the last rows of the file, unshuffled)");
      return diagnosis;
    }
  } else {
    const double train_total = relative_change(train_first, train_end);
    const double val_total = relative_change(val_first, best_val);
    numbers["loss_change_total"] = train_total;
    numbers["best_val_change_total"] = val_total;
    numbers["threshold_barely_moved"] = kBarelyMoved;
    underfitting = train_total > -kBarelyMoved && val_total > -kBarelyMoved;
    underfitting_text = "loss " + change_text(train_total) + " only (" + format_value(train_first) + " -> " +
                        format_value(train_end) + ") and val_loss " + change_text(val_total) + " (" +
                        format_value(val_first) + " -> best " + format_value(best_val) + "); both stay high";
  }

  if (underfitting) {
    diagnosis.set_verdict("underfitting");
    std::string summary = "underfitting: " + underfitting_text;
    // Both curves, as for still improving: val_loss alone read between two single epochs can start on a spike
    // (digits at learning rate 5: "val_loss fell 13.6% (2.8853 -> 2.4937)" while the training loss rose).
    if (val_tail_change <= -kStillImprovingFall && train_tail_change <= -kStillImprovingFall) {
      summary += "; " + tail_text + ", more epochs may help";
    }
    diagnosis.set_summary(summary);
    return diagnosis;
  }

  // Rising: val_loss climbed above its best. Stalled: val_loss sat at its floor (within kPlateauBand of the best)
  // from an epoch that is not late while the training loss kept falling.
  // Overfitting is the training loss staying down (falling, or level at its low) while val_loss turns; one that
  // climbed back up is diverging, above.
  const bool rose = !late && val_rise > kOverfitRise;
  // A stall needs val_loss to have stopped improving: when the last validated epoch holds the best val_loss, no
  // earlier epoch's weights were better, so "overfitting from epoch N" would point the user at worse weights (and
  // there is no epoch after the best to measure a stall on).
  const bool best_is_last = best == n - 1;
  const bool stalled = !rose && !plateau_late && !best_is_last && train_change_plateau < -kTrainStillFalling;
  if (rose || stalled) {
    const std::int64_t from = (rose ? best_epoch : plateau_epoch) + 1;
    diagnosis.set_verdict("overfitting");
    diagnosis.set_overfitting_from_epoch(from);
    numbers["overfitting_from_epoch"] = static_cast<double>(from);
    if (rose) {
      // "while loss fell 92.6% (0.1753 -> 0.0130)". A training loss that did not fall further is at the low it had
      // reached, within noise, or near zero (any other rise is diverging, above): say which, where the low was, and
      // how far it had come down to it.
      const std::string fall_to_low = " after falling " + percent(-relative_change(train_first, train_low)) + " (" +
                                      format_value(train_first) + " -> " + format_value(train_low) + ")";
      std::string train_text;
      if (train_change < 0) {
        train_text = "loss " + change_between(train_at_best, train_end);
      } else if (train_rise_from_low <= kTrainRose) {
        train_text = "loss stayed near its low " + format_value(train_low) + " at epoch " +
                     epoch_text(train[low].epoch) + " (ended at " + format_value(train_end) + ")" + fall_to_low;
      } else {
        numbers["loss_end_over_near_zero_scale"] = train_end / near_zero_scale;
        train_text = "loss stayed near zero (its low " + format_value(train_low) + " at epoch " +
                     epoch_text(train[low].epoch) + ", " + format_value(train_end) + " at the end, " +
                     share_of(train_end / near_zero_scale) +
                     (chance > 0 ? " the chance level " : " the first epoch's loss or val_loss, the lower, ") +
                     format_value(near_zero_scale) + ")" + fall_to_low;
      }
      diagnosis.set_summary("overfitting from epoch " + epoch_text(from) + ": " + best_text +
                            ", then val_loss rose to " + end_text + " while " + train_text);
    } else {
      diagnosis.set_summary("overfitting from epoch " + epoch_text(from) + ": val_loss reached its floor at epoch " +
                            epoch_text(plateau_epoch) + " (within " + percent(kPlateauBand) + " of the " + best_text +
                            ") and stalled at " + end_text + " while loss " + change_text(train_change_plateau) +
                            " from epoch " + epoch_text(train_from_epoch) + " (" + format_value(train_at_plateau) +
                            " -> " + format_value(train_end) + ")");
    }
    return diagnosis;
  }

  // Both curves, not val_loss alone: the training loss is an average over many batches and nearly free of noise, so
  // requiring it to fall too keeps a noisy last val_loss from being read as progress.
  if (late && val_tail_change <= -kStillImprovingFall && train_tail_change <= -kStillImprovingFall) {
    diagnosis.set_verdict("still_improving");
    diagnosis.set_summary("still improving: " + best_text + "; " + tail_text + "; more epochs would help");
    return diagnosis;
  }

  diagnosis.set_verdict("good_fit");
  std::string summary = "good fit: " + best_text;
  if (end_window > 0) {
    // "stayed at" unless it rose by more than noise, which is possible here only after a late best (too few epochs
    // after it to call the turn).
    summary += std::string("; after it val_loss ") + (val_rise > kOverfitRise ? "rose to " : "stayed at ") + end_text +
               " while loss " + change_between(train_at_best, train_end);
  } else {
    summary += "; " + tail_text;  // the best is the last epoch: the trends up to it say it has levelled off
  }
  diagnosis.set_summary(summary);
  return diagnosis;
}

}  // namespace shardfit
