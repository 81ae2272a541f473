// The callbacks' factory and their checkpoint state (dist/train/callbacks.h). Each callback lives in a file of its
// own under dist/train/callbacks/, following keras/src/callbacks (Keras 3) decision for decision. No MPI here: the
// fit loop reduces and broadcasts.
#include "dist/train/callbacks.h"

#include <string>

#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit {
namespace {

// A callback state's kind as the job file spells it, for messages.
std::string kind_name(proto::CallbackState::KindCase kind) {
  if (kind == proto::CallbackState::KIND_NOT_SET) return "no kind";
  return std::string(proto::CallbackState::descriptor()->FindFieldByNumber(static_cast<int>(kind))->name());
}

}  // namespace

std::vector<std::unique_ptr<Callback>> make_callbacks(const proto::Job& job, int64_t epochs) {
  std::vector<std::unique_ptr<Callback>> callbacks;
  for (int i = 0; i < job.callbacks_size(); ++i) {
    const proto::Callback& c = job.callbacks(i);
    const std::string field = cat("callbacks[", i, "]");
    switch (c.kind_case()) {
      case proto::Callback::kEarlyStopping:
        callbacks.push_back(callbacks::make_early_stopping(c.early_stopping(), field + ".early_stopping"));
        break;
      case proto::Callback::kReduceLrOnPlateau:
        callbacks.push_back(
            callbacks::make_reduce_lr_on_plateau(c.reduce_lr_on_plateau(), field + ".reduce_lr_on_plateau"));
        break;
      case proto::Callback::kLearningRateScheduler:
        callbacks.push_back(callbacks::make_learning_rate_scheduler(c.learning_rate_scheduler(),
                                                                    field + ".learning_rate_scheduler", epochs));
        break;
      case proto::Callback::kModelCheckpoint:
        callbacks.push_back(callbacks::make_model_checkpoint(c.model_checkpoint(), field + ".model_checkpoint"));
        break;
      case proto::Callback::kTerminateOnNan:
        callbacks.push_back(callbacks::make_terminate_on_nan());
        break;
      case proto::Callback::kCsvLogger:
        callbacks.push_back(callbacks::make_csv_logger(c.csv_logger(), field + ".csv_logger"));
        break;
      case proto::Callback::KIND_NOT_SET:
        SF_FAIL(cat(field,
                    ": no callback set: expected one of early_stopping, reduce_lr_on_plateau, "
                    "learning_rate_scheduler, model_checkpoint, terminate_on_nan, csv_logger"));
    }
  }
  return callbacks;
}

// One CallbackState per callback, in the job's order. Kinds are checked in order, so a job whose callbacks were
// added, removed or reordered since the checkpoint is refused.
CallbackStates save_callbacks_state(const std::vector<std::unique_ptr<Callback>>& callbacks) {
  CallbackStates states;
  for (const auto& callback : callbacks) callback->save_state(*states.Add());
  return states;
}

void load_callbacks_state(const std::vector<std::unique_ptr<Callback>>& callbacks, const CallbackStates& states) {
  auto listed = [](std::string out) { return out.empty() ? std::string("none") : out; };
  std::string names_of_job;
  for (const auto& callback : callbacks) names_of_job += (names_of_job.empty() ? "" : ", ") + callback->name();
  std::string names_saved;
  for (const proto::CallbackState& state : states) {
    names_saved += (names_saved.empty() ? "" : ", ") + kind_name(state.kind_case());
  }
  bool same = static_cast<size_t>(states.size()) == callbacks.size();
  for (size_t i = 0; same && i < callbacks.size(); ++i) {
    same = states[static_cast<int>(i)].kind_case() == callbacks[i]->state_kind();
  }
  SF_CHECK(same,
           cat("the job's callbacks (", listed(names_of_job), ") differ from the checkpoint's (", listed(names_saved),
               "): the job's callbacks changed since the checkpoint"),
           "resume with the job file the checkpoint was written with, or start a new fit");
  for (size_t i = 0; i < callbacks.size(); ++i) callbacks[i]->load_state(states[static_cast<int>(i)]);
}

}  // namespace shardfit
