// Reading history files back (history_reader.h): history.json and run.json through the JSON reader (json_reader.h), a
// CSV reader for history.csv, and the choice of file.
#include "dist/io/history_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dist/io/history_writer.h"
#include "dist/io/json_reader.h"
#include "kernels/error.h"
#include "kernels/job_file.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWhatPlotReads =
    "a history folder, history.pb, history.json (with run.json beside it for the verdict) or history.csv";

int64_t json_integer(const JsonValue* value, int64_t fallback) {
  return value != nullptr && value->kind == JsonValue::Kind::kNumber ? static_cast<int64_t>(value->number) : fallback;
}

// run.json's params and diagnosis, for the plot's caption and shading; the rest of run.json is not needed here.
void read_run_json(const fs::path& path, proto::History& history) {
  const JsonValue run = read_json(path);
  SF_CHECK(run.kind == JsonValue::Kind::kObject, cat(path.string(), ": expected a JSON object"));
  if (const JsonValue* params = run.find("params"); params != nullptr) {
    proto::HistoryParams& out = *history.mutable_params();
    out.set_epochs(json_integer(params->find("epochs"), 0));
    out.set_steps(json_integer(params->find("steps"), 0));
    out.set_world_size(static_cast<int32_t>(json_integer(params->find("world_size"), 0)));
    out.set_global_batch(json_integer(params->find("global_batch"), 0));
    if (const JsonValue* job = params->find("job"); job != nullptr) out.set_job(job->text);
  }
  if (const JsonValue* diagnosis = run.find("diagnosis"); diagnosis != nullptr) {
    proto::Diagnosis& out = *history.mutable_diagnosis();
    if (const JsonValue* verdict = diagnosis->find("verdict"); verdict != nullptr) out.set_verdict(verdict->text);
    if (const JsonValue* summary = diagnosis->find("summary"); summary != nullptr) out.set_summary(summary->text);
    out.set_best_epoch(json_integer(diagnosis->find("best_epoch"), -1));
    out.set_overfitting_from_epoch(json_integer(diagnosis->find("overfitting_from_epoch"), -1));
    if (const JsonValue* best = diagnosis->find("best_val_loss"); best != nullptr) out.set_best_val_loss(best->number);
  }
}

proto::History read_history_json(const fs::path& path) {
  const JsonValue json = read_json(path);
  SF_CHECK(json.kind == JsonValue::Kind::kObject,
           cat(path.string(), ": expected an object of lists ({\"loss\": [...], ...}), as fit writes history.json"));
  proto::History history;
  for (const auto& [key, list] : json.members) {
    bool numbers = list.kind == JsonValue::Kind::kArray;
    for (const JsonValue& item : list.items) {
      numbers = numbers && item.kind != JsonValue::Kind::kObject && item.kind != JsonValue::Kind::kArray &&
                item.kind != JsonValue::Kind::kString;
    }
    SF_CHECK(numbers, cat(path.string(), ": \"", key, "\" is not a list of numbers"),
             "history.json holds one list of numbers per key (Keras's history.history); a history.json written "
             "before run.json existed also holds params: plot the history.pb beside it");
    while (history.epochs_size() < static_cast<int>(list.items.size())) {
      history.add_epochs()->set_epoch(history.epochs_size() - 1);
    }
    for (size_t i = 0; i < list.items.size(); ++i) {
      const JsonValue& item = list.items[i];
      if (item.kind != JsonValue::Kind::kNumber || std::isnan(item.number)) continue;  // padding: no value
      (*history.mutable_epochs(static_cast<int>(i))->mutable_values())[key] = item.number;
    }
  }
  const fs::path run = history_files(path.parent_path()).run_json;
  if (fs::exists(run)) read_run_json(run, history);
  return history;
}

// ---- CSV ----

// One record of history.csv: RFC 4180 fields (quotes only around a field holding the separator, a quote or a line
// break, as history_writer writes them).
std::vector<std::string> csv_fields(std::string_view line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

proto::History read_history_csv(const fs::path& path) {
  const std::string text = read_text_file(path, "history file");
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  SF_CHECK(!lines.empty(), cat(path.string(), " is empty: expected a header `epoch,loss,...`"));
  const std::vector<std::string> header = csv_fields(lines[0]);
  SF_CHECK(header[0] == "epoch", cat(path.string(), ":1: the first column is '", header[0], "', expected 'epoch'"),
           "history.csv is written by shardfit fit (CSVLogger's layout)");
  proto::History history;
  for (size_t row = 1; row < lines.size(); ++row) {
    const std::vector<std::string> fields = csv_fields(lines[row]);
    SF_CHECK(fields.size() == header.size(),
             cat(path.string(), ":", row + 1, ": ", fields.size(), " fields for ", header.size(), " columns"));
    proto::EpochRecord& record = *history.add_epochs();
    char* end = nullptr;
    const long long epoch = std::strtoll(fields[0].c_str(), &end, 10);
    SF_CHECK(!fields[0].empty() && *end == '\0' && epoch >= 0,
             cat(path.string(), ":", row + 1, ": epoch '", fields[0], "', expected a whole number >= 0"));
    record.set_epoch(epoch);
    for (size_t c = 1; c < fields.size(); ++c) {
      if (fields[c].empty()) continue;  // the epoch has no value for this key
      const double value = std::strtod(fields[c].c_str(), &end);
      SF_CHECK(*end == '\0',
               cat(path.string(), ":", row + 1, ": ", header[c], " = '", fields[c], "', expected a number"));
      (*record.mutable_values())[header[c]] = value;
    }
  }
  return history;
}

}  // namespace

proto::History read_history_any(const fs::path& path) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    const HistoryFiles files = history_files(path);
    for (const fs::path& file : {files.pb, files.json, files.csv}) {  // the fullest first
      if (fs::exists(file)) return read_history_any(file);
    }
    SF_FAIL(cat(path.string(), " holds no history.pb, history.json or history.csv"),
            "pass the folder fit wrote its history to (outputs.history_dir / --history)");
  }
  SF_CHECK(fs::exists(path, error), cat("no such history: '", path.string(), "': expected ", kWhatPlotReads));
  const fs::path extension = path.extension();
  if (extension == ".pb") return read_history_pb(path);
  if (extension == ".json") return read_history_json(path);
  if (extension == ".csv") return read_history_csv(path);
  SF_FAIL(cat("cannot plot '", path.string(), "': expected ", kWhatPlotReads));
}

}  // namespace shardfit
