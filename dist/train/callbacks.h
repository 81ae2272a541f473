// Keras callbacks for the distributed fit: EarlyStopping, ReduceLROnPlateau, LearningRateScheduler,
// ModelCheckpoint, TerminateOnNaN, CSVLogger. Every rank runs the same callbacks on the same globally reduced
// values, so their decisions agree; the fit loop still broadcasts rank 0's decision (stop, learning rate) as the
// single source of truth. Only rank 0 writes files or prints.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/model.h"
#include "kernels/optimizer.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

// What callbacks may read and change. The same on every rank.
struct TrainingControl {
  Model* model = nullptr;
  Optimizer* optimizer = nullptr;
  bool is_root = false;                           // only rank 0 writes files and prints
  int64_t epochs = 1;                             // the fit's final epoch number
  bool stop_training = false;                     // set to end fit after this epoch (or batch)
  std::function<void(const std::string&)> print;  // a console line on rank 0 (respects verbose); no-op elsewhere
};

using EpochLogs = std::map<std::string, double>;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;
  virtual void on_train_begin(TrainingControl& /*control*/) {}
  virtual void on_epoch_begin(int64_t /*epoch*/, TrainingControl& /*control*/) {}
  // Called after each optimizer step with the global mean loss of that batch, only when wants_batch_loss().
  virtual bool wants_batch_loss() const { return false; }
  virtual void on_batch_end(int64_t /*step*/, double /*batch_loss*/, TrainingControl& /*control*/) {}
  // logs: the epoch's globally reduced values (loss, metrics, val_*); a callback may add keys (learning_rate).
  virtual void on_epoch_end(int64_t /*epoch*/, EpochLogs& /*logs*/, TrainingControl& /*control*/) {}
  virtual void on_train_end(TrainingControl& /*control*/) {}
  // Everything needed to continue bit for bit after a resume (wait counters, best values, best weights, ...), in
  // this callback's own message of CallbackState: a field added later reads as its default from an older checkpoint.
  // state_kind() is the oneof case written and read; load_state is only called with a state of that case.
  virtual proto::CallbackState::KindCase state_kind() const = 0;
  virtual void save_state(proto::CallbackState& state) const = 0;
  virtual void load_state(const proto::CallbackState& state) = 0;
};

// The job's callbacks, in the order written. Their file names (ModelCheckpoint's filepath, CSVLogger's filename)
// arrive already resolved by resolve_callback_paths (dist/train/output_plan.h): a job file's relative to its folder,
// a --callback flag's to the working directory. Errors name the field ("callbacks[1].early_stopping.mode = 'up':
// expected auto, min or max").
std::vector<std::unique_ptr<Callback>> make_callbacks(const proto::Job& job, int64_t epochs);

// All callbacks' states for the checkpoint (Checkpoint.callbacks_state), and back. Loading matches them to the
// job's callbacks by position and kind; a job whose callbacks changed since the checkpoint is refused by name.
using CallbackStates = google::protobuf::RepeatedPtrField<proto::CallbackState>;
CallbackStates save_callbacks_state(const std::vector<std::unique_ptr<Callback>>& callbacks);
void load_callbacks_state(const std::vector<std::unique_ptr<Callback>>& callbacks, const CallbackStates& states);

}  // namespace shardfit
