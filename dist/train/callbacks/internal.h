// What the callback files of dist/train/callbacks/ share, and their factories: internal to shardfit_train, not part
// of dist/train/callbacks.h. One file per Keras callback, each following keras/src/callbacks (Keras 3) decision
// for decision; callbacks.cpp picks the factory by the job's oneof and keeps the checkpoint-state functions.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "dist/train/callbacks.h"

namespace shardfit::callbacks {

// Monitoring, as Keras's MonitorCallback: the first value is always an improvement (best starts unset), and
// min_delta is taken as |min_delta| and applied in the direction of the mode.
enum class Direction { kMin, kMax };

struct Monitor {
  std::string key;
  Direction direction = Direction::kMin;
  double min_delta = 0.0;  // >= 0

  // Keras: monitor_op(current - signed_min_delta, reference), the delta negated in min mode.
  bool improves(double current, const std::optional<double>& reference) const {
    if (!reference) return true;
    return direction == Direction::kMin ? (current - -min_delta) < *reference : (current - min_delta) > *reference;
  }
};

// `field` names the callback in errors ("callbacks[1].early_stopping"). Mode "auto" follows higher_is_better
// (dist/io/metric_direction.h), the rule the plot uses too.
Monitor make_monitor(const std::string& field, const std::string& monitor, const std::string& mode, double min_delta);

// A console line through control.print (rank 0, respecting verbose); nothing when the fit gave no printer.
void print_line(TrainingControl& control, const std::string& line);

// The logs' keys as Keras lists them in its "not available" warnings: "loss,val_loss".
std::string joined_keys(const EpochLogs& logs);

// Output files' folders are created as needed (Keras's ModelCheckpoint does so too). `who` names the callback in
// the error.
void create_parent_folders(const std::filesystem::path& path, const std::string& who);

// The optional doubles of the state messages, to and from the callbacks' members.
template <typename Message>
void set_optional(const std::optional<double>& value, Message& message, void (Message::*set)(double)) {
  if (value) (message.*set)(*value);
}
inline std::optional<double> get_optional(bool present, double value) {
  return present ? std::optional<double>(value) : std::nullopt;
}

// One factory per kind: Keras defaults for unset fields, and errors that name the field.
std::unique_ptr<Callback> make_early_stopping(const proto::EarlyStopping& c, const std::string& field);
std::unique_ptr<Callback> make_reduce_lr_on_plateau(const proto::ReduceLROnPlateau& c, const std::string& field);
std::unique_ptr<Callback> make_learning_rate_scheduler(const proto::LearningRateScheduler& c, const std::string& field,
                                                       int64_t epochs);
std::unique_ptr<Callback> make_model_checkpoint(const proto::ModelCheckpoint& c, const std::string& field);
std::unique_ptr<Callback> make_terminate_on_nan();
std::unique_ptr<Callback> make_csv_logger(const proto::CsvLogger& c, const std::string& field);

}  // namespace shardfit::callbacks
