// EarlyStopping (keras/src/callbacks/early_stopping.py): stop when the monitored value has not improved for
// `patience` epochs, optionally restoring the best epoch's weights.
#include <algorithm>
#include <cmath>
#include <span>
#include <utility>
#include <vector>

#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit::callbacks {
namespace {

class EarlyStopping : public Callback {
 public:
  EarlyStopping(Monitor monitor, int64_t patience, std::optional<double> baseline, bool restore_best_weights,
                int64_t start_from_epoch)
      : monitor_(std::move(monitor)),
        patience_(patience),
        baseline_(baseline),
        restore_best_weights_(restore_best_weights),
        start_from_epoch_(start_from_epoch) {}

  std::string name() const override { return "early_stopping"; }

  void on_epoch_end(int64_t epoch, EpochLogs& logs, TrainingControl& control) override {
    const auto it = logs.find(monitor_.key);
    if (it == logs.end()) {
      if (!warned_) {
        print_line(control, cat("warning: Early stopping conditioned on metric `", monitor_.key,
                                "` which is not available. Available metrics are: ", joined_keys(logs)));
        warned_ = true;
      }
      return;
    }
    if (epoch < start_from_epoch_) return;
    const double current = it->second;
    if (restore_best_weights_ && !best_weights_) {
      // Keras: when no best is known yet, the current weights are the best.
      best_weights_ = copy_parameters(control);
      best_epoch_ = epoch;
    }
    ++wait_;
    if (monitor_.improves(current, best_)) {
      best_ = current;
      best_epoch_ = epoch;
      if (restore_best_weights_) best_weights_ = copy_parameters(control);
      // Only restart the wait when the value beats both the previous best and the baseline; the stop test is
      // skipped on an improving epoch even when the baseline is not met (Keras returns here).
      if (!baseline_ || monitor_.improves(current, baseline_)) wait_ = 0;
      return;
    }
    if (wait_ >= patience_ && epoch > 0) {
      stopped_epoch_ = epoch;
      control.stop_training = true;
    }
  }

  // Keras 3 restores the best weights at the end of training whenever it has them, whether or not it stopped.
  void on_train_end(TrainingControl& control) override {
    if (stopped_epoch_ > 0) print_line(control, cat("Epoch ", stopped_epoch_ + 1, ": early stopping"));
    if (restore_best_weights_ && best_weights_) {
      print_line(control, cat("Restoring model weights from the end of the best epoch: ", best_epoch_ + 1, "."));
      std::span<float> params = control.model->parameters();
      SF_CHECK(params.size() == best_weights_->size(),
               cat("early_stopping: the best weights hold ", best_weights_->size(), " parameters, the model has ",
                   params.size()));
      std::copy(best_weights_->begin(), best_weights_->end(), params.begin());
    }
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kEarlyStopping; }

  void save_state(proto::CallbackState& state) const override {
    proto::EarlyStoppingState& s = *state.mutable_early_stopping();
    s.set_wait(wait_);
    s.set_stopped_epoch(stopped_epoch_);
    s.set_best_epoch(best_epoch_);
    set_optional(best_, s, &proto::EarlyStoppingState::set_best);
    s.set_warned(warned_);
    if (best_weights_) s.mutable_best_weights()->mutable_values()->Assign(best_weights_->begin(), best_weights_->end());
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::EarlyStoppingState& s = state.early_stopping();
    wait_ = s.wait();
    stopped_epoch_ = s.stopped_epoch();
    best_epoch_ = s.best_epoch();
    best_ = get_optional(s.has_best(), s.best());
    warned_ = s.warned();
    best_weights_ = s.has_best_weights() ? std::optional<std::vector<float>>(std::vector<float>(
                                               s.best_weights().values().begin(), s.best_weights().values().end()))
                                         : std::nullopt;
  }

 private:
  static std::vector<float> copy_parameters(TrainingControl& control) {
    const std::span<const float> params = std::as_const(*control.model).parameters();
    return {params.begin(), params.end()};
  }

  Monitor monitor_;
  int64_t patience_;
  std::optional<double> baseline_;
  bool restore_best_weights_;
  int64_t start_from_epoch_;

  int64_t wait_ = 0;
  int64_t stopped_epoch_ = 0;
  int64_t best_epoch_ = 0;
  std::optional<double> best_;
  std::optional<std::vector<float>> best_weights_;  // the flat parameter buffer at best_epoch_
  bool warned_ = false;
};

}  // namespace

std::unique_ptr<Callback> make_early_stopping(const proto::EarlyStopping& c, const std::string& field) {
  Monitor monitor = make_monitor(field, c.has_monitor() ? c.monitor() : "val_loss", c.has_mode() ? c.mode() : "auto",
                                 c.has_min_delta() ? c.min_delta() : 0.0);
  const int64_t patience = c.has_patience() ? c.patience() : 0;
  SF_CHECK(patience >= 0, cat(field, ".patience = ", patience, ": expected >= 0"));
  const int64_t start_from_epoch = c.has_start_from_epoch() ? c.start_from_epoch() : 0;
  SF_CHECK(start_from_epoch >= 0, cat(field, ".start_from_epoch = ", start_from_epoch, ": expected >= 0"));
  std::optional<double> baseline;
  if (c.has_baseline()) {
    SF_CHECK(std::isfinite(c.baseline()), cat(field, ".baseline = ", c.baseline(), ": expected a finite number"));
    baseline = c.baseline();
  }
  return std::make_unique<EarlyStopping>(std::move(monitor), patience, baseline,
                                         c.has_restore_best_weights() && c.restore_best_weights(), start_from_epoch);
}

}  // namespace shardfit::callbacks
