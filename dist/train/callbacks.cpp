// The Keras callbacks of dist/train/callbacks.h, following keras/src/callbacks (Keras 3) decision for decision, plus
// the state each one needs to continue bit for bit after a resume. No MPI here: the fit loop reduces and broadcasts.
#include "dist/train/callbacks.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numbers>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "dist/io/history_writer.h"
#include "dist/io/weights_io.h"
#include "kernels/error.h"

namespace shardfit {
namespace {

// The optional doubles of the state messages, to and from the callbacks' members.
template <typename Message>
void set_optional(const std::optional<double>& value, Message& message, void (Message::*set)(double)) {
  if (value) (message.*set)(*value);
}
std::optional<double> get_optional(bool present, double value) {
  return present ? std::optional<double>(value) : std::nullopt;
}

// ---------------------------------------------------------------------------------------------------------------
// Monitoring, as Keras's MonitorCallback: the first value is always an improvement (best starts unset), and
// min_delta is taken as |min_delta| and applied in the direction of the mode.
// ---------------------------------------------------------------------------------------------------------------
enum class Direction { kMin, kMax };

// Keras 3 decides "auto" from the compiled metric's direction and raises when it cannot tell. Here the job's
// schema rules (proto comment): max for accuracy-like names, min otherwise — the metrics this trainer computes are
// accuracy (up) and mae / the loss (down), so the two rules agree on every name a fit can log.
Direction resolve_direction(const std::string& mode, const std::string& monitor, const std::string& field) {
  if (mode == "min") return Direction::kMin;
  if (mode == "max") return Direction::kMax;
  SF_CHECK(mode == "auto", cat(field, ".mode = '", mode, "': expected auto, min or max"));
  const std::string name = monitor.starts_with("val_") ? monitor.substr(4) : monitor;
  if (name == "loss") return Direction::kMin;
  const bool up = name.find("acc") != std::string::npos || name.starts_with("auc") || name.starts_with("precision") ||
                  name.starts_with("recall") || name.starts_with("fmeasure");
  return up ? Direction::kMax : Direction::kMin;
}

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

void print_line(TrainingControl& control, const std::string& line) {
  if (control.print) control.print(line);
}

// The logs' keys as Keras lists them in its "not available" warnings.
std::string joined_keys(const EpochLogs& logs) {
  std::string out;
  for (const auto& [key, value] : logs) out += (out.empty() ? "" : ",") + key;
  return out;
}

// Output files' folders are created as needed (Keras's ModelCheckpoint does so too).
void create_parent_folders(const std::filesystem::path& path, const std::string& who) {
  if (!path.has_parent_path()) return;
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  SF_CHECK(!error, cat(who, ": cannot create the folder '", path.parent_path().string(), "': ", error.message()));
}

// str(float) in Python: repr digits, and nan / inf / -inf.
std::string python_str(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return json_number(value);
}

// ---------------------------------------------------------------------------------------------------------------
// EarlyStopping (keras/src/callbacks/early_stopping.py).
// ---------------------------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------------------------
// ReduceLROnPlateau (keras/src/callbacks/reduce_lr_on_plateau.py).
// ---------------------------------------------------------------------------------------------------------------
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
                                  python_str(new_lr), "."));
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

// ---------------------------------------------------------------------------------------------------------------
// LearningRateScheduler with built-in schedules. Keras takes a Python function of (epoch, lr); here the rate is a
// pure function of the epoch and the base rate (the optimizer's at the first on_train_begin), so a resumed fit
// sets exactly the rates an uninterrupted one would.
// ---------------------------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------------------------
// ModelCheckpoint's file name template: Python str.format with the fields Keras passes (epoch, 1-based, and every
// logs key). Supported spec subset: [0][width][.precision][type], type one of d f e g (and F E G).
// ---------------------------------------------------------------------------------------------------------------
struct TemplatePiece {
  bool is_field = false;
  std::string text;  // the literal, or the field name
  std::string spec;  // as written, for messages
  bool zero_pad = false;
  int width = 0;
  int precision = -1;
  char type = 0;
};

TemplatePiece literal_piece(std::string text) {
  TemplatePiece piece;
  piece.text = std::move(text);
  return piece;
}

std::vector<TemplatePiece> parse_template(const std::string& tpl, const std::string& field) {
  const std::string where = cat(field, " = '", tpl, "'");
  std::vector<TemplatePiece> pieces;
  std::string literal;
  for (size_t i = 0; i < tpl.size(); ++i) {
    const char c = tpl[i];
    if (c == '}') {
      SF_CHECK(i + 1 < tpl.size() && tpl[i + 1] == '}', cat(where, ": single '}' (write '}}' for a literal brace)"));
      literal += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    if (i + 1 < tpl.size() && tpl[i + 1] == '{') {
      literal += '{';
      ++i;
      continue;
    }
    const size_t close = tpl.find('}', i);
    SF_CHECK(close != std::string::npos, cat(where, ": '{' without a closing '}'"));
    const std::string inside = tpl.substr(i + 1, close - i - 1);
    SF_CHECK(inside.find('{') == std::string::npos, cat(where, ": nested fields are not supported"));
    TemplatePiece piece;
    piece.is_field = true;
    const size_t colon = inside.find(':');
    piece.text = inside.substr(0, colon);
    piece.spec = colon == std::string::npos ? "" : inside.substr(colon + 1);
    SF_CHECK(!piece.text.empty(), cat(where, ": a field needs a name ({epoch}, {val_loss:.2f}, ...)"));
    SF_CHECK(piece.text.find_first_of("!.[]") == std::string::npos,
             cat(where, ": field '", piece.text, "': conversions, attributes and indexes are not supported"));
    // [0][width][.precision][type]
    const std::string& spec = piece.spec;
    size_t at = 0;
    if (at < spec.size() && spec[at] == '0') {
      piece.zero_pad = true;
      ++at;
    }
    while (at < spec.size() && std::isdigit(static_cast<unsigned char>(spec[at]))) {
      piece.width = piece.width * 10 + (spec[at++] - '0');
      SF_CHECK(piece.width < 1000, cat(where, ": width too large in '{", inside, "}'"));
    }
    if (at < spec.size() && spec[at] == '.') {
      ++at;
      piece.precision = 0;
      const size_t digits_from = at;
      while (at < spec.size() && std::isdigit(static_cast<unsigned char>(spec[at]))) {
        piece.precision = piece.precision * 10 + (spec[at++] - '0');
        SF_CHECK(piece.precision < 100, cat(where, ": precision too large in '{", inside, "}'"));
      }
      SF_CHECK(at > digits_from, cat(where, ": '.' without a precision in '{", inside, "}'"));
    }
    if (at < spec.size() && std::string_view("dfeFEgG").find(spec[at]) != std::string_view::npos) {
      piece.type = spec[at++];
    }
    SF_CHECK(at == spec.size(), cat(where, ": format spec ':", spec, "' of field '", piece.text,
                                    "' is not supported (supported: 0-padding, width, .precision, types d f e g)"));
    // Python would print a float with a precision and no type in its own 'g' variant; we ask for the type.
    SF_CHECK(piece.precision < 0 || piece.type != 0,
             cat(where, ": field '", piece.text, "': a precision needs a type (f, e or g)"));
    SF_CHECK(!(piece.type == 'd' && piece.precision >= 0),
             cat(where, ": field '", piece.text, "': precision is not allowed with type d"));
    if (!literal.empty()) pieces.push_back(literal_piece(std::move(literal)));
    literal.clear();
    pieces.push_back(std::move(piece));
    i = close;
  }
  if (!literal.empty()) pieces.push_back(literal_piece(std::move(literal)));
  return pieces;
}

// Pads as Python does for numbers: right-aligned with spaces, or zeros after the sign with the '0' flag.
std::string pad_number(std::string text, const TemplatePiece& piece) {
  if (static_cast<int>(text.size()) >= piece.width) return text;
  const size_t missing = static_cast<size_t>(piece.width) - text.size();
  if (!piece.zero_pad) return std::string(missing, ' ') + text;
  const size_t sign = (!text.empty() && (text[0] == '-' || text[0] == '+')) ? 1 : 0;
  text.insert(sign, missing, '0');
  return text;
}

std::string format_piece(const TemplatePiece& piece, double value, bool is_integer, const std::string& where) {
  if (piece.type == 'd' || (is_integer && piece.type == 0)) {
    SF_CHECK(is_integer, cat(where, ": field '", piece.text, "' is a float; format code 'd' needs an integer"));
    SF_CHECK(piece.precision < 0, cat(where, ": field '", piece.text, "': precision is not allowed with an integer"));
    return pad_number(std::to_string(static_cast<int64_t>(value)), piece);
  }
  if (piece.type == 0) return pad_number(python_str(value), piece);  // str(float)
  if (std::isnan(value)) return pad_number(std::isupper(static_cast<unsigned char>(piece.type)) ? "NAN" : "nan", piece);
  const int precision = piece.precision < 0 ? 6 : piece.precision;
  const char format[] = {'%', '.', '*', piece.type, '\0'};
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, format, precision, value);
  return pad_number(buffer, piece);
}

// ---------------------------------------------------------------------------------------------------------------
// ModelCheckpoint (keras/src/callbacks/model_checkpoint.py), weights only, written by rank 0 as .npz.
// ---------------------------------------------------------------------------------------------------------------
class ModelCheckpoint : public Callback {
 public:
  ModelCheckpoint(std::string filepath, std::string field, Monitor monitor, bool save_best_only)
      : filepath_(std::move(filepath)),
        field_(std::move(field)),
        pieces_(parse_template(filepath_, field_)),
        monitor_(std::move(monitor)),
        save_best_only_(save_best_only) {}

  std::string name() const override { return "model_checkpoint"; }

  void on_epoch_end(int64_t epoch, EpochLogs& logs, TrainingControl& control) override {
    // Every rank formats the name, so an unknown field fails on all of them together.
    const std::filesystem::path path = file_path(epoch, logs);
    bool save = true;
    if (save_best_only_) {
      const auto it = logs.find(monitor_.key);
      if (it == logs.end()) {
        if (!warned_) {
          print_line(control, cat("warning: Can save best model only with ", monitor_.key, " available."));
          warned_ = true;
        }
      } else if (monitor_.improves(it->second, best_)) {
        best_ = it->second;
      } else {
        save = false;
      }
    }
    if (save && control.is_root) {
      create_parent_folders(path, field_);
      save_weights(path, *control.model);
    }
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kModelCheckpoint; }

  void save_state(proto::CallbackState& state) const override {
    proto::ModelCheckpointState& s = *state.mutable_model_checkpoint();
    set_optional(best_, s, &proto::ModelCheckpointState::set_best);
    s.set_warned(warned_);
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::ModelCheckpointState& s = state.model_checkpoint();
    best_ = get_optional(s.has_best(), s.best());
    warned_ = s.warned();
  }

 private:
  std::filesystem::path file_path(int64_t epoch, const EpochLogs& logs) const {
    const std::string where = cat(field_, " = '", filepath_, "'");
    std::string out;
    for (const TemplatePiece& piece : pieces_) {
      if (!piece.is_field) {
        out += piece.text;
      } else if (piece.text == "epoch") {
        out += format_piece(piece, static_cast<double>(epoch + 1), true, where);
      } else {
        const auto it = logs.find(piece.text);
        SF_CHECK(it != logs.end(), cat(where, ": no value named '", piece.text, "' at epoch ", epoch + 1,
                                       " (available: epoch", logs.empty() ? "" : ",", joined_keys(logs), ")"));
        out += format_piece(piece, it->second, false, where);
      }
    }
    return out;
  }

  std::string filepath_;
  std::string field_;
  std::vector<TemplatePiece> pieces_;
  Monitor monitor_;
  bool save_best_only_;

  std::optional<double> best_;
  bool warned_ = false;
};

// ---------------------------------------------------------------------------------------------------------------
// TerminateOnNaN (keras/src/callbacks/terminate_on_nan.py).
// ---------------------------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------------------------
// CSVLogger (keras/src/callbacks/csv_logger.py): Python's csv module with the excel dialect, so rows end in "\r\n"
// and a field holding the separator, a quote or a line break is quoted. The columns are frozen at the first epoch
// (Keras: sorted keys of the first logs); a later epoch without one of them writes NA.
// ---------------------------------------------------------------------------------------------------------------
class CsvLogger : public Callback {
 public:
  CsvLogger(std::filesystem::path filename, char separator, bool append)
      : filename_(std::move(filename)), separator_(separator), append_(append) {}

  std::string name() const override { return "csv_logger"; }

  void on_epoch_end(int64_t epoch, EpochLogs& logs, TrainingControl& control) override {
    const bool first_row_of_fit = !keys_;
    if (first_row_of_fit) {
      keys_.emplace();
      for (const auto& [key, value] : logs) keys_->push_back(key);
    }
    if (!control.is_root) return;
    bool header = false;
    if (!opened_) {
      // The file is opened lazily, at this process's first row, so that a state loaded before or after
      // on_train_begin decides whether this is a new log or the continuation of a resumed one.
      create_parent_folders(filename_, "csv_logger");
      std::error_code error;
      const bool exists = std::filesystem::exists(filename_, error);
      const uintmax_t size = exists ? std::filesystem::file_size(filename_, error) : 0;
      if (first_row_of_fit) {
        header = !append_ || size == 0;
        if (!append_) write_bytes("", std::ios::trunc);
      } else {
        // Resumed: drop rows written after the checkpoint (a kill between this row and the checkpoint would
        // otherwise repeat an epoch), then continue the same file.
        const bool longer = exists && size > file_bytes_;
        if (longer) std::filesystem::resize_file(filename_, file_bytes_);
        header = !exists || (longer ? file_bytes_ : size) == 0;
      }
      opened_ = true;
    }
    std::string text;
    if (header) {
      text += "epoch";
      for (const std::string& key : *keys_) text += separator_ + quoted(key);
      text += "\r\n";
    }
    text += std::to_string(epoch);
    for (const std::string& key : *keys_) {
      const auto it = logs.find(key);
      text += separator_;
      text += it == logs.end() ? "NA" : python_str(it->second);
    }
    text += "\r\n";
    write_bytes(text, std::ios::app);
    file_bytes_ = std::filesystem::file_size(filename_);
  }

  proto::CallbackState::KindCase state_kind() const override { return proto::CallbackState::kCsvLogger; }

  void save_state(proto::CallbackState& state) const override {
    proto::CSVLoggerState& s = *state.mutable_csv_logger();
    if (keys_) s.mutable_keys()->mutable_keys()->Assign(keys_->begin(), keys_->end());
    s.set_file_bytes(static_cast<uint64_t>(file_bytes_));
  }

  void load_state(const proto::CallbackState& state) override {
    const proto::CSVLoggerState& s = state.csv_logger();
    keys_ = s.has_keys() ? std::optional<std::vector<std::string>>(
                               std::vector<std::string>(s.keys().keys().begin(), s.keys().keys().end()))
                         : std::nullopt;
    file_bytes_ = static_cast<uintmax_t>(s.file_bytes());
    opened_ = false;
  }

 private:
  std::string quoted(const std::string& field) const {
    if (field.find_first_of(std::string{separator_, '"', '\r', '\n'}) == std::string::npos) return field;
    std::string out = "\"";
    for (char c : field) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
  }

  void write_bytes(const std::string& text, std::ios::openmode mode) const {
    std::ofstream out(filename_, std::ios::binary | std::ios::out | mode);
    SF_CHECK(out.is_open(), cat("csv_logger: cannot open '", filename_.string(), "': ", std::strerror(errno)));
    out << text;
    out.flush();
    SF_CHECK(out.good(), cat("csv_logger: cannot write '", filename_.string(), "': ", std::strerror(errno)));
  }

  std::filesystem::path filename_;
  char separator_;
  bool append_;

  std::optional<std::vector<std::string>> keys_;  // set at the fit's first row
  uintmax_t file_bytes_ = 0;                      // the log's length after the last row (rank 0)
  bool opened_ = false;                           // this process has written (or decided on) the file
};

// ---------------------------------------------------------------------------------------------------------------
// The factory: Keras defaults for unset fields, and errors that name the field.
// ---------------------------------------------------------------------------------------------------------------
Monitor make_monitor(const std::string& field, const std::string& monitor, const std::string& mode, double min_delta) {
  SF_CHECK(!monitor.empty(), cat(field, ".monitor is empty: expected a logged name such as val_loss"));
  SF_CHECK(std::isfinite(min_delta), cat(field, ".min_delta = ", min_delta, ": expected a finite number"));
  return {monitor, resolve_direction(mode, monitor, field), std::abs(min_delta)};
}

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

std::unique_ptr<Callback> make_reduce_lr(const proto::ReduceLROnPlateau& c, const std::string& field) {
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

std::unique_ptr<Callback> make_scheduler(const proto::LearningRateScheduler& c, const std::string& field,
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

std::unique_ptr<Callback> make_model_checkpoint(const proto::ModelCheckpoint& c, const std::string& field) {
  SF_CHECK(!c.filepath().empty(),
           cat(field, ".filepath is empty: expected a file name such as \"ckpt/weights.{epoch:02d}.npz\""));
  Monitor monitor =
      make_monitor(field, c.has_monitor() ? c.monitor() : "val_loss", c.has_mode() ? c.mode() : "auto", 0.0);
  return std::make_unique<ModelCheckpoint>(c.filepath(), field + ".filepath", std::move(monitor),
                                           c.has_save_best_only() && c.save_best_only());
}

std::unique_ptr<Callback> make_csv_logger(const proto::CsvLogger& c, const std::string& field) {
  SF_CHECK(!c.filename().empty(), cat(field, ".filename is empty: expected a file name such as \"training.csv\""));
  const std::string separator = c.has_separator() ? c.separator() : ",";
  // Python's csv module takes a one-character delimiter, and so does Keras's CSVLogger.
  SF_CHECK(separator.size() == 1 && separator[0] != '"' && separator[0] != '\r' && separator[0] != '\n',
           cat(field, ".separator = '", separator, "': expected one character (not a quote or a line break)"));
  return std::make_unique<CsvLogger>(c.filename(), separator[0], c.has_append() && c.append());
}

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
        callbacks.push_back(make_early_stopping(c.early_stopping(), field + ".early_stopping"));
        break;
      case proto::Callback::kReduceLrOnPlateau:
        callbacks.push_back(make_reduce_lr(c.reduce_lr_on_plateau(), field + ".reduce_lr_on_plateau"));
        break;
      case proto::Callback::kLearningRateScheduler:
        callbacks.push_back(make_scheduler(c.learning_rate_scheduler(), field + ".learning_rate_scheduler", epochs));
        break;
      case proto::Callback::kModelCheckpoint:
        callbacks.push_back(make_model_checkpoint(c.model_checkpoint(), field + ".model_checkpoint"));
        break;
      case proto::Callback::kTerminateOnNan:
        callbacks.push_back(std::make_unique<TerminateOnNaN>());
        break;
      case proto::Callback::kCsvLogger:
        callbacks.push_back(make_csv_logger(c.csv_logger(), field + ".csv_logger"));
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
