// Bench records read back and grouped into a scaling study (bench_records.h). Every line is checked field by field, so
// a damaged or hand-edited file is refused with the line and the field, never plotted as zeros.
#include "dist/io/bench_records.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string_view>

#include "dist/io/json_reader.h"
#include "kernels/error.h"
#include "kernels/job_file.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRecordsHint =
    "shardfit bench --json FILE appends one record a line; plot reads such a file, or a history (folder, "
    "history.json, history.csv or history.pb)";

// The text's lines, each with its 1-based number; a trailing \r (a file edited on Windows) is dropped.
std::vector<std::pair<int, std::string_view>> lines_of(std::string_view text) {
  std::vector<std::pair<int, std::string_view>> lines;
  int number = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.emplace_back(++number, line);
    start = end + 1;
  }
  return lines;
}

bool blank(std::string_view line) { return line.find_first_not_of(" \t") == std::string_view::npos; }

// One record's fields, looked up by dotted path, each failure naming file, line and field.
class RecordFields {
 public:
  RecordFields(const JsonValue& record, const fs::path& path, int line) : record_(record), path_(path), line_(line) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    SF_FAIL(cat(path_.string(), ":", line_, ": field ", field, ": ", what), kRecordsHint);
  }

  const JsonValue& need(const std::string& field, JsonValue::Kind kind, const char* expected) const {
    const JsonValue* value = &record_;
    size_t start = 0;
    while (true) {
      const size_t dot = field.find('.', start);
      const std::string key = field.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      value = value->kind == JsonValue::Kind::kObject ? value->find(key) : nullptr;
      if (value == nullptr) fail(field, "missing (every shardfit bench record has it)");
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (value->kind != kind) fail(field, cat("expected ", expected));
    return *value;
  }

  std::string text(const std::string& field) const { return need(field, JsonValue::Kind::kString, "a string").text; }

  double number(const std::string& field) const {
    const double value = need(field, JsonValue::Kind::kNumber, "a number").number;
    if (!std::isfinite(value) || value < 0) fail(field, cat(value, ": expected a finite number >= 0"));
    return value;
  }

  // A whole number in [least, most]; `most` keeps a damaged value from overflowing the int it is read into.
  int64_t count(const std::string& field, int64_t least, int64_t most = int64_t{1} << 50) const {
    const double value = need(field, JsonValue::Kind::kNumber, "a whole number").number;
    if (!(value >= static_cast<double>(least)) || value != std::floor(value) || value > static_cast<double>(most)) {
      fail(field, cat(value, ": expected a whole number from ", least, " to ", most));
    }
    return static_cast<int64_t>(value);
  }

  bool flag(const std::string& field) const {
    return need(field, JsonValue::Kind::kBool, "true or false").number != 0.0;
  }

 private:
  const JsonValue& record_;
  const fs::path& path_;
  int line_;
};

// The line parsed as JSON; an error names the file's line (parse_json counts lines within the text it is given).
JsonValue parse_line(std::string_view line, const fs::path& path, int number) {
  try {
    return parse_json(line, path);
  } catch (const Error& error) {
    const std::string what = error.what();
    const std::string marker = "not valid JSON: ";
    const size_t at = what.find(marker);
    SF_FAIL(cat(path.string(), ":", number,
                ": not valid JSON: ", at == std::string::npos ? what : what.substr(at + marker.size())),
            kRecordsHint);
  }
}

bool is_bench_record(const JsonValue& value) {
  if (value.kind != JsonValue::Kind::kObject) return false;
  const JsonValue* kind = value.find("kind");
  return kind != nullptr && kind->kind == JsonValue::Kind::kString && kind->text == "shardfit_bench";
}

BenchRecord record_of(const JsonValue& json, const fs::path& path, int line) {
  if (!is_bench_record(json)) {
    SF_FAIL(cat(path.string(), ":", line,
                ": not a shardfit bench record (expected a JSON object with \"kind\": \"shardfit_bench\")"),
            kRecordsHint);
  }
  const RecordFields fields(json, path, line);
  BenchRecord record;
  record.line = line;
  record.mode = fields.text("mode");
  if (record.mode != "strong" && record.mode != "weak") {
    fields.fail("mode", "'" + record.mode + "': expected strong or weak");
  }
  record.model = fields.text("model.name");
  record.layers = fields.text("model.layers");
  record.optimizer = fields.text("model.optimizer");
  constexpr int64_t kMostProcesses = int64_t{1} << 30;
  record.ranks = static_cast<int>(fields.count("ranks", 1, kMostProcesses));
  record.hosts = static_cast<int>(fields.count("hosts", 1, kMostProcesses));
  record.threads_per_rank = static_cast<int>(fields.count("threads_per_rank", 1, kMostProcesses));
  record.oversubscribed = fields.flag("oversubscribed");
  record.global_batch = fields.count("batch.global", 1);
  record.per_rank_batch = fields.number("batch.per_rank");
  record.samples_per_second = fields.number("samples_per_second.total");
  if (record.samples_per_second <= 0) fields.fail("samples_per_second.total", "0: expected a rate > 0");
  record.exposed_comm_share = fields.number("exposed_comm_share");
  record.busbw_gb_per_s = fields.number("allreduce.busbw_gb_per_s");
  record.raw_busbw_gb_per_s = fields.number("raw_allreduce.busbw_gb_per_s");
  record.cpu_model = fields.text("machine.cpu_model");
  // Records written before bench recorded overlap ran without it.
  if (json.find("overlap") != nullptr) record.overlap = fields.flag("overlap");
  return record;
}

std::string fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

}  // namespace

bool looks_like_bench_records(const fs::path& path) {
  try {
    std::error_code error;
    if (!fs::is_regular_file(path, error)) return false;
    const std::string text = read_text_file(path, "bench records");
    for (const auto& [number, line] : lines_of(text)) {
      if (blank(line)) continue;
      return line[line.find_first_not_of(" \t")] == '{' && is_bench_record(parse_json(line, path));
    }
  } catch (const Error&) {
  }
  return false;
}

std::vector<BenchRecord> read_bench_records(const fs::path& path) {
  const std::string text = read_text_file(path, "bench records");
  std::vector<BenchRecord> records;
  for (const auto& [number, line] : lines_of(text)) {
    if (blank(line)) continue;
    records.push_back(record_of(parse_line(line, path, number), path, number));
  }
  SF_CHECK(!records.empty(), cat(path.string(), ": no record in the file"), kRecordsHint);
  return records;
}

bool ScalingSeries::scales() const {
  return points.size() > 1 && points.front().record.ranks != points.back().record.ranks;
}

namespace {

// The median of the values (the mean of the middle two for an even count).
double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// Each series' label: its mode, then each property that tells it apart from the series of `among`.
void label_series(const std::vector<ScalingSeries*>& to_label, const std::vector<const ScalingSeries*>& among) {
  std::set<std::string> models, optimizers, cpus;
  std::set<int> threads;
  std::set<bool> overlaps;
  std::set<std::pair<std::string, int64_t>> batches;
  for (const ScalingSeries* s : among) {
    models.insert(s->model + " " + s->layers);
    optimizers.insert(s->optimizer);
    cpus.insert(s->cpu_model);
    overlaps.insert(s->overlap);
    threads.insert(s->threads_per_rank);
    batches.insert({s->mode, s->batch});
  }
  std::map<std::string, int> batches_per_mode;
  for (const auto& [mode, batch] : batches) ++batches_per_mode[mode];
  for (ScalingSeries* s : to_label) {
    s->label = s->mode;
    if (models.size() > 1) s->label += ", " + s->model;
    if (optimizers.size() > 1) s->label += ", " + s->optimizer;
    if (threads.size() > 1) {
      s->label += cat(", ", s->threads_per_rank, s->threads_per_rank == 1 ? " thread" : " threads");
    }
    if (batches_per_mode[s->mode] > 1) {
      s->label += s->mode == "strong" ? cat(", batch ", s->batch) : cat(", batch ", s->batch, "/rank");
    }
    if (cpus.size() > 1) s->label += ", " + s->cpu_model;
    if (overlaps.size() > 1) s->label += s->overlap ? ", overlap on" : ", overlap off";
  }
}

}  // namespace

std::vector<ScalingSeries> scaling_series(const std::vector<BenchRecord>& records) {
  std::vector<ScalingSeries> series;
  for (const BenchRecord& record : records) {
    const int64_t batch = record.mode == "strong" ? record.global_batch : std::llround(record.per_rank_batch);
    auto found = std::find_if(series.begin(), series.end(), [&](const ScalingSeries& s) {
      return s.mode == record.mode && s.model == record.model && s.layers == record.layers &&
             s.optimizer == record.optimizer && s.threads_per_rank == record.threads_per_rank && s.batch == batch &&
             s.cpu_model == record.cpu_model && s.overlap == record.overlap;
    });
    if (found == series.end()) {
      ScalingSeries added;
      added.mode = record.mode;
      added.model = record.model;
      added.layers = record.layers;
      added.optimizer = record.optimizer;
      added.threads_per_rank = record.threads_per_rank;
      added.batch = batch;
      added.cpu_model = record.cpu_model;
      added.overlap = record.overlap;
      series.push_back(added);
      found = series.end() - 1;
    }
    found->points.push_back({record});
  }

  // Labels: a drawn series (one that scales) among the drawn ones, as the chart's legend shows them together; a
  // series of one rank count, in the table only, among all of them.
  std::vector<ScalingSeries*> drawn, not_drawn;
  std::vector<const ScalingSeries*> drawn_among, all;
  for (ScalingSeries& s : series) {
    (s.scales() ? drawn : not_drawn).push_back(&s);
    if (s.scales()) drawn_among.push_back(&s);
    all.push_back(&s);
  }
  label_series(drawn, drawn_among);
  label_series(not_drawn, all);

  for (ScalingSeries& s : series) {
    // Stable: runs of the same rank count stay in file order.
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const ScalingPoint& a, const ScalingPoint& b) { return a.record.ranks < b.record.ranks; });
    s.base_ranks = s.points.front().record.ranks;
    std::vector<double> base_rates;
    for (const ScalingPoint& point : s.points) {
      if (point.record.ranks == s.base_ranks) base_rates.push_back(point.record.samples_per_second);
    }
    s.base_runs = static_cast<int>(base_rates.size());
    s.base_samples_per_second = median(base_rates);
    for (ScalingPoint& point : s.points) {
      point.speedup = point.record.samples_per_second / s.base_samples_per_second;
      point.ideal = static_cast<double>(point.record.ranks) / s.base_ranks;
      point.efficiency = point.speedup / point.ideal;
    }
  }
  return series;
}

std::string scaling_table_markdown(const std::vector<ScalingSeries>& series) {
  std::string text =
      "| series | ranks | hosts | threads | mode | global batch | samples/s | speedup | ideal | efficiency | "
      "exposed comm | busbw GB/s | raw busbw GB/s | oversubscribed |\n"
      "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const ScalingSeries& s : series) {
    for (const ScalingPoint& point : s.points) {
      const BenchRecord& r = point.record;
      const bool exchanged = r.ranks > 1;
      // A series of one rank count has no second point to compare with: its 1.00 / 1.00 / 100% would read as
      // perfect scaling, so those cells stay empty ("-").
      const bool scales = s.scales();
      text +=
          cat("| ", s.label, " | ", r.ranks, " | ", r.hosts, " | ", r.threads_per_rank, " | ", r.mode, " | ",
              r.global_batch, " | ", fixed(r.samples_per_second, 1), " | ", scales ? fixed(point.speedup, 2) : "-",
              " | ", scales ? fixed(point.ideal, 2) : "-", " | ", scales ? fixed(100 * point.efficiency, 1) + "%" : "-",
              " | ", fixed(100 * r.exposed_comm_share, 1), "% | ", exchanged ? fixed(r.busbw_gb_per_s, 3) : "-", " | ",
              exchanged ? fixed(r.raw_busbw_gb_per_s, 3) : "-", " | ", r.oversubscribed ? "yes" : "no", " |\n");
    }
  }
  text += "\n";
  for (const ScalingSeries& s : series) {
    text += cat("- ", s.label, ": ", s.model, " (", s.layers, "), ", s.optimizer, ", ", s.threads_per_rank,
                " thread(s) per rank, ",
                s.mode == "strong" ? cat("global batch ", s.batch) : cat("batch ", s.batch, " per rank"), ", ",
                s.cpu_model, s.overlap ? ", overlap on" : "", "; ");
    if (!s.scales()) {
      text += cat(s.base_ranks, " rank(s) only, ", fixed(s.base_samples_per_second, 1),
                  " samples/s: nothing to scale against, so no speedup, ideal or efficiency (\"-\")");
    } else {
      text += cat("baseline ", s.base_ranks, " rank(s), ", fixed(s.base_samples_per_second, 1), " samples/s",
                  s.base_runs > 1 ? cat(" (the median of its ", s.base_runs, " runs)") : "");
    }
    // Reruns appended to the records: each keeps its row; say so, since a chart line or a speedup read from one row
    // hides the other.
    for (size_t i = 0; i < s.points.size();) {
      size_t j = i;
      std::string lines;
      for (; j < s.points.size() && s.points[j].record.ranks == s.points[i].record.ranks; ++j) {
        lines += cat(j == i ? "" : ", ", s.points[j].record.line);
      }
      if (j - i > 1) {
        text += cat("; warning: ", j - i, " runs at ", s.points[i].record.ranks, " rank(s) (records' lines ", lines,
                    "), each its own row");
      }
      i = j;
    }
    text += "\n";
  }
  return text;
}

}  // namespace shardfit
