// LearningRateScheduler with built-in schedules. Keras takes a Python function of (epoch, lr); here the rate is a
// pure function of the epoch and the base rate (the optimizer's at the first on_train_begin), so a resumed fit
// sets exactly the rates an uninterrupted one would.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit::callbacks {
namespace {

struct Schedule {
  enum class Kind { kConstant, kStep, kExponential, kCosine } kind = Kind::kConstant;
  double factor = 1.0;       // step
  int64_t every_epochs = 1;  // step
  double rate = 1.0;         // exponential
  int64_t decay_epochs = 1;  // cosine
  double alpha = 0.0;        // cosine
  int64_t warmup_epochs = 0;
  double warmup_from = 0.1;

  // Warmup first: epochs [0, warmup_epochs) go linearly from warmup_from x base towards base; the schedule then
  // runs with its epoch counted from the end of the warmup, so it starts at exactly the base rate.
  double rate_at(int64_t epoch, double base) const {
    if (epoch < warmup_epochs) {
      return base *
             (warmup_from + (1.0 - warmup_from) * static_cast<double>(epoch) / static_cast<double>(warmup_epochs));
    }
    const auto e = static_cast<double>(epoch - warmup_epochs);
    switch (kind) {
      case Kind::kConstant:
        return base;
      case Kind::kStep:
        return base * std::pow(factor, std::floor(e / static_cast<double>(every_epochs)));
      case Kind::kExponential:
        return base * std::pow(rate, e);
      case Kind::kCosine: {
        const auto decay = static_cast<double>(decay_epochs);
        const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(e, decay) / decay));
        return base * ((1.0 - alpha) * cosine + alpha);
      }
    }
    return base;
  }
};

class LearningRateScheduler : public Callback {
 public:
  explicit LearningRateScheduler(Schedule schedule) : schedule_(schedule) {}

  std::string name() const override { return "learning_rate_scheduler"; }

  // A base rate loaded from a checkpoint wins over the optimizer's (which then holds a scheduled rate), whichever
  // of load_state and on_train_begin comes first.
  void on_train_begin(TrainingControl& control) override {
    if (!base_) base_ = static_cast<double>(control.optimizer->learning_rate());
  }

  void on_epoch_begin(int64_t epoch, TrainingControl& control) override {
    if (!base_) base_ = static_cast<double>(control.optimizer->learning_rate());
    control.optimizer->set_learning_rate(static_cast<float>(schedule_.rate_at(epoch, *base_)));
  }

  void on_epoch_end(int64_t /*epoch*/, EpochLogs& logs, TrainingControl& control) override {
    logs["learning_rate"] = static_cast<double>(control.optimizer->learning_rate());
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kLearningRateScheduler; }

  void save_state(proto::CallbackState& state) const override {
    set_optional(base_, *state.mutable_learning_rate_scheduler(), &proto::LearningRateSchedulerState::set_base);
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::LearningRateSchedulerState& s = state.learning_rate_scheduler();
    base_ = get_optional(s.has_base(), s.base());
  }

 private:
  Schedule schedule_;
  std::optional<double> base_;
};

}  // namespace

std::unique_ptr<Callback> make_learning_rate_scheduler(const proto::LearningRateScheduler& c, const std::string& field,
                                                       int64_t epochs) {
  Schedule s;
  s.warmup_epochs = c.has_warmup_epochs() ? c.warmup_epochs() : 0;
  SF_CHECK(s.warmup_epochs >= 0, cat(field, ".warmup_epochs = ", s.warmup_epochs, ": expected >= 0"));
  s.warmup_from = c.has_warmup_from() ? c.warmup_from() : 0.1;
  SF_CHECK(s.warmup_from >= 0.0 && s.warmup_from <= 1.0,
           cat(field, ".warmup_from = ", s.warmup_from, ": expected a fraction of the base rate in [0, 1]"));
  switch (c.schedule_case()) {
    case proto::LearningRateScheduler::kStep:
      s.kind = Schedule::Kind::kStep;
      s.factor = c.step().factor();
      s.every_epochs = c.step().every_epochs();
      SF_CHECK(s.factor > 0.0 && std::isfinite(s.factor),
               cat(field, ".step.factor = ", s.factor, ": expected a positive number"));
      SF_CHECK(s.every_epochs >= 1, cat(field, ".step.every_epochs = ", s.every_epochs, ": expected >= 1"));
      break;
    case proto::LearningRateScheduler::kExponential:
      s.kind = Schedule::Kind::kExponential;
      s.rate = c.exponential().rate();
      SF_CHECK(s.rate > 0.0 && std::isfinite(s.rate),
               cat(field, ".exponential.rate = ", s.rate, ": expected a positive number"));
      break;
    case proto::LearningRateScheduler::kCosine:
      s.kind = Schedule::Kind::kCosine;
      // Unset (0): the epochs left after the warmup, so the rate reaches the floor as the fit ends.
      s.decay_epochs =
          c.cosine().decay_epochs() != 0 ? c.cosine().decay_epochs() : std::max<int64_t>(1, epochs - s.warmup_epochs);
      s.alpha = c.cosine().alpha();
      SF_CHECK(s.decay_epochs >= 1, cat(field, ".cosine.decay_epochs = ", s.decay_epochs, ": expected >= 1"));
      SF_CHECK(s.alpha >= 0.0 && s.alpha <= 1.0,
               cat(field, ".cosine.alpha = ", s.alpha, ": expected a number in [0, 1]"));
      break;
    case proto::LearningRateScheduler::SCHEDULE_NOT_SET:
      SF_CHECK(s.warmup_epochs > 0,
               cat(field, ": no schedule: set step, exponential or cosine, or warmup_epochs for a warmup alone"));
      break;
  }
  return std::make_unique<LearningRateScheduler>(s);
}

}  // namespace shardfit::callbacks
