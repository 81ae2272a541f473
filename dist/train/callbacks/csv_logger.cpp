// CSVLogger (keras/src/callbacks/csv_logger.py): Python's csv module with the excel dialect, so rows end in "\r\n"
// and a field holding the separator, a quote or a line break is quoted (dist/io/csv_writer.h). The columns are
// frozen at the first epoch (Keras: sorted keys of the first logs); a later epoch without one of them writes NA.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <utility>
#include <vector>

#include "dist/io/csv_writer.h"
#include "dist/io/format.h"
#include "dist/train/callbacks/internal.h"
#include "kernels/error.h"

namespace shardfit::callbacks {
namespace {

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
    std::vector<std::string> fields = {"epoch"};
    if (header) {
      fields.insert(fields.end(), keys_->begin(), keys_->end());
      text += csv_row(fields, separator_, "\r\n");
    }
    fields = {std::to_string(epoch)};
    for (const std::string& key : *keys_) {
      const auto it = logs.find(key);
      fields.push_back(it == logs.end() ? "NA" : python_float(it->second));
    }
    text += csv_row(fields, separator_, "\r\n");
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

}  // namespace

std::unique_ptr<Callback> make_csv_logger(const proto::CsvLogger& c, const std::string& field) {
  SF_CHECK(!c.filename().empty(), cat(field, ".filename is empty: expected a file name such as \"training.csv\""));
  const std::string separator = c.has_separator() ? c.separator() : ",";
  // Python's csv module takes a one-character delimiter, and so does Keras's CSVLogger.
  SF_CHECK(separator.size() == 1 && separator[0] != '"' && separator[0] != '\r' && separator[0] != '\n',
           cat(field, ".separator = '", separator, "': expected one character (not a quote or a line break)"));
  return std::make_unique<CsvLogger>(c.filename(), separator[0], c.has_append() && c.append());
}

}  // namespace shardfit::callbacks
