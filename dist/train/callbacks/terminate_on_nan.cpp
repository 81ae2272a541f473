// TerminateOnNaN (keras/src/callbacks/terminate_on_nan.py): stop at the first batch whose loss is NaN or infinite.
#include <cmath>

#include "dist/train/callbacks/internal.h"

namespace shardfit::callbacks {
namespace {

class TerminateOnNaN : public Callback {
 public:
  std::string name() const override { return "terminate_on_nan"; }
  bool wants_batch_loss() const override { return true; }
  void on_batch_end(int64_t step, double batch_loss, TrainingControl& control) override {
    if (std::isfinite(batch_loss)) return;
    print_line(control, cat("Batch ", step, ": Invalid loss, terminating training"));
    control.stop_training = true;
  }

  // Nothing to keep, but a message of its own, so that the job's callbacks are matched by kind on resume.
  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kTerminateOnNan; }
  void save_state(proto::CallbackState& state) const override { state.mutable_terminate_on_nan(); }
  void load_state(const proto::CallbackState& /*state*/) override {}
};

}  // namespace

std::unique_ptr<Callback> make_terminate_on_nan() { return std::make_unique<TerminateOnNaN>(); }

}  // namespace shardfit::callbacks
