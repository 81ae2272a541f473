// ReduceLROnPlateau (keras/src/callbacks/reduce_lr_on_plateau.py): multiply the learning rate by `factor` when the
// monitored value has not improved for `patience` epochs, then wait `cooldown` epochs.
#include <algorithm>
#include <cmath>
#include <utility>

#include "dist/io/format.h"
#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit::callbacks {
namespace {

class ReduceLrOnPlateau : public Callback {
 public:
  ReduceLrOnPlateau(Monitor monitor, double factor, int64_t patience, int64_t cooldown, double min_lr)
      : monitor_(std::move(monitor)), factor_(factor), patience_(patience), cooldown_(cooldown), min_lr_(min_lr) {}

  std::string name() const override { return "reduce_lr_on_plateau"; }

  void on_epoch_end(int64_t epoch, EpochLogs& logs, TrainingControl& control) override {
    // The rate this epoch trained with, before any reduction below (Keras logs it first).
    logs["learning_rate"] = static_cast<double>(control.optimizer->learning_rate());
    const auto it = logs.find(monitor_.key);
    if (it == logs.end()) {
      if (!warned_) {
        print_line(control, cat("warning: Learning rate reduction is conditioned on metric `", monitor_.key,
                                "` which is not available. Available metrics are: ", joined_keys(logs), "."));
        warned_ = true;
      }
      return;
    }
    const double current = it->second;
    if (cooldown_counter_ > 0) {
      --cooldown_counter_;
      wait_ = 0;
    }
    if (monitor_.improves(current, best_)) {
      best_ = current;
      wait_ = 0;
    } else if (cooldown_counter_ <= 0) {
      ++wait_;
      if (wait_ >= patience_) {
        // The optimizer's rate is a float32 variable in Keras too: compared with float32(min_lr), the product
        // taken in double, and the result stored back as float32.
        const float old_lr = control.optimizer->learning_rate();
        if (old_lr > static_cast<float>(min_lr_)) {
          const double new_lr = std::max(static_cast<double>(old_lr) * factor_, min_lr_);
          control.optimizer->set_learning_rate(static_cast<float>(new_lr));
          print_line(control, cat("Epoch ", epoch + 1, ": ReduceLROnPlateau reducing learning rate to ",
                                  python_float(new_lr), "."));
          cooldown_counter_ = cooldown_;
          wait_ = 0;
        }
      }
    }
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kReduceLrOnPlateau; }

  void save_state(proto::CallbackState& state) const override {
    proto::ReduceLROnPlateauState& s = *state.mutable_reduce_lr_on_plateau();
    s.set_wait(wait_);
    s.set_cooldown_counter(cooldown_counter_);
    set_optional(best_, s, &proto::ReduceLROnPlateauState::set_best);
    s.set_warned(warned_);
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::ReduceLROnPlateauState& s = state.reduce_lr_on_plateau();
    wait_ = s.wait();
    cooldown_counter_ = s.cooldown_counter();
    best_ = get_optional(s.has_best(), s.best());
    warned_ = s.warned();
  }

 private:
  Monitor monitor_;
  double factor_;
  int64_t patience_;
  int64_t cooldown_;
  double min_lr_;

  int64_t wait_ = 0;
  int64_t cooldown_counter_ = 0;
  std::optional<double> best_;
  bool warned_ = false;
};

}  // namespace

std::unique_ptr<Callback> make_reduce_lr_on_plateau(const proto::ReduceLROnPlateau& c, const std::string& field) {
  Monitor monitor = make_monitor(field, c.has_monitor() ? c.monitor() : "val_loss", c.has_mode() ? c.mode() : "auto",
                                 c.has_min_delta() ? c.min_delta() : 1e-4);
  const double factor = c.has_factor() ? c.factor() : 0.1;
  SF_CHECK(factor > 0.0 && factor < 1.0, cat(field, ".factor = ", factor, ": expected a number in (0, 1)"));
  const int64_t patience = c.has_patience() ? c.patience() : 10;
  SF_CHECK(patience >= 0, cat(field, ".patience = ", patience, ": expected >= 0"));
  const int64_t cooldown = c.has_cooldown() ? c.cooldown() : 0;
  SF_CHECK(cooldown >= 0, cat(field, ".cooldown = ", cooldown, ": expected >= 0"));
  const double min_lr = c.has_min_lr() ? c.min_lr() : 0.0;
  SF_CHECK(min_lr >= 0.0 && std::isfinite(min_lr), cat(field, ".min_lr = ", min_lr, ": expected a number >= 0"));
  return std::make_unique<ReduceLrOnPlateau>(std::move(monitor), factor, patience, cooldown, min_lr);
}

}  // namespace shardfit::callbacks
