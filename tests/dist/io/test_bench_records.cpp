// Bench records read back (bench_records.h): the fields, series grouping, the speedup / ideal / efficiency
// arithmetic, the table, the chart's series and markers, and the errors for damaged files (file, line, field named).
// Also the JSON reader they share with the history reader (json_reader.h). No MPI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "dist/io/bench_records.h"
#include "dist/io/json_reader.h"
#include "dist/io/plot_svg.h"
#include "kernels/error.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

struct BenchRun {
  std::string mode = "strong";
  int ranks = 1;
  double samples_per_second = 1000;
  int threads = 1;
  int64_t batch = 256;  // strong: global; weak: per rank
  bool oversubscribed = false;
  std::string model = "mlp";
  std::string optimizer = "sgd";
  std::string cpu = "Test CPU";
};

// One record as `shardfit bench --json` writes it, with the fields the reader uses (and a few it ignores). overlap:
// none leaves the field out, as records written before bench recorded it.
std::string record_line(const BenchRun& run, std::optional<bool> overlap = std::nullopt) {
  const int64_t global = run.mode == "strong" ? run.batch : run.batch * run.ranks;
  const double busbw = run.ranks > 1 ? 2.5 : 0.0;
  char text[2048];
  std::snprintf(
      text, sizeof text,
      R"({"kind": "shardfit_bench", "mode": "%s", "model": {"name": "%s", "layers": "784-1024-1024-10", )"
      R"("parameters": 1863690, "optimizer": "%s"}, "ranks": %d, "hosts": 1, "host_names": "h", "threads_per_rank": %d, )"
      R"("oversubscribed": %s, "batch": {"global": %lld, "per_rank": %s}, "samples_per_second": )"
      R"({"total": %s, "per_rank": 1.0}, "exposed_comm_share": 0.125, "allreduce": {"busbw_gb_per_s": %s}, )"
      R"("raw_allreduce": {"busbw_gb_per_s": %s}, "machine": {"cpu_model": "%s"}%s})",
      run.mode.c_str(), run.model.c_str(), run.optimizer.c_str(), run.ranks, run.threads,
      run.oversubscribed ? "true" : "false", static_cast<long long>(global),
      std::to_string(static_cast<double>(global) / run.ranks).c_str(), std::to_string(run.samples_per_second).c_str(),
      std::to_string(busbw).c_str(), std::to_string(busbw * 1.5).c_str(), run.cpu.c_str(),
      !overlap ? "" : (*overlap ? R"(, "overlap": true)" : R"(, "overlap": false)"));
  return text;
}

class BenchRecords : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("shardfit_bench_records_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  fs::path write_runs(const std::vector<BenchRun>& runs) {
    std::string text;
    for (const BenchRun& run : runs) text += record_line(run) + "\n";
    return write("records.jsonl", text);
  }

  // The Error's message for reading `text` as records.
  std::string error_of(const std::string& text) {
    const fs::path path = write("bad.jsonl", text);
    try {
      read_bench_records(path);
    } catch (const Error& error) {
      return error.what();
    }
    ADD_FAILURE() << "no error for:\n" << text;
    return "";
  }

  fs::path dir_;
};

// The sweep scaling.sh runs on 2 cores: strong and weak at 1, 2, 4 ranks, 4 oversubscribed.
std::vector<BenchRun> sweep() {
  return {{"strong", 1, 1000},     {"strong", 2, 1500},      {"strong", 4, 1200, 1, 256, true},
          {"weak", 1, 800, 1, 64}, {"weak", 2, 1400, 1, 64}, {"weak", 4, 1000, 1, 64, true}};
}

TEST_F(BenchRecords, ReadsEveryFieldTheTableUses) {
  const fs::path path = write_runs(sweep());
  EXPECT_TRUE(looks_like_bench_records(path));
  const std::vector<BenchRecord> records = read_bench_records(path);
  ASSERT_EQ(records.size(), 6U);
  const BenchRecord& r = records[5];
  EXPECT_EQ(r.line, 6);
  EXPECT_EQ(r.mode, "weak");
  EXPECT_EQ(r.model, "mlp");
  EXPECT_EQ(r.layers, "784-1024-1024-10");
  EXPECT_EQ(r.optimizer, "sgd");
  EXPECT_EQ(r.ranks, 4);
  EXPECT_EQ(r.hosts, 1);
  EXPECT_EQ(r.threads_per_rank, 1);
  EXPECT_TRUE(r.oversubscribed);
  EXPECT_FALSE(records[0].oversubscribed);
  EXPECT_EQ(r.global_batch, 256);
  EXPECT_DOUBLE_EQ(r.per_rank_batch, 64);
  EXPECT_DOUBLE_EQ(r.samples_per_second, 1000);
  EXPECT_DOUBLE_EQ(r.exposed_comm_share, 0.125);
  EXPECT_DOUBLE_EQ(r.busbw_gb_per_s, 2.5);
  EXPECT_DOUBLE_EQ(r.raw_busbw_gb_per_s, 3.75);
  EXPECT_EQ(r.cpu_model, "Test CPU");
}

TEST_F(BenchRecords, GroupsByModeAndComputesSpeedupAgainstTheSmallestRankCount) {
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(write_runs(sweep())));
  ASSERT_EQ(series.size(), 2U);
  EXPECT_EQ(series[0].label, "strong");  // nothing else differs between the series
  EXPECT_EQ(series[1].label, "weak");
  EXPECT_EQ(series[0].batch, 256);
  EXPECT_EQ(series[1].batch, 64);  // weak: the per-rank batch
  for (const ScalingSeries& s : series) {
    EXPECT_TRUE(s.scales());
    EXPECT_EQ(s.base_ranks, 1);
    ASSERT_EQ(s.points.size(), 3U);
    const double base = s.points[0].record.samples_per_second;
    for (const ScalingPoint& p : s.points) {
      EXPECT_DOUBLE_EQ(p.speedup, p.record.samples_per_second / base);
      EXPECT_DOUBLE_EQ(p.ideal, p.record.ranks);
      EXPECT_DOUBLE_EQ(p.efficiency, p.speedup / p.ideal);
    }
  }
  EXPECT_DOUBLE_EQ(series[0].points[1].speedup, 1.5);
  EXPECT_DOUBLE_EQ(series[0].points[1].efficiency, 0.75);
  EXPECT_DOUBLE_EQ(series[1].points[2].speedup, 1.25);
  EXPECT_DOUBLE_EQ(series[1].points[2].efficiency, 0.3125);
}

TEST_F(BenchRecords, ThreadsBatchAndModelSplitSeriesAndNameThem) {
  const std::vector<BenchRun> runs = {
      {"strong", 2, 2000, 1, 256}, {"strong", 4, 3000, 1, 256}, {"strong", 2, 2500, 8, 256},
      {"strong", 4, 4000, 8, 256}, {"strong", 2, 1000, 1, 512}, {"strong", 4, 1800, 1, 512},
      {"strong", 1, 500, 16, 256},
  };
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(write_runs(runs)));
  ASSERT_EQ(series.size(), 4U);
  EXPECT_EQ(series[0].label, "strong, 1 thread, batch 256");
  EXPECT_EQ(series[1].label, "strong, 8 threads, batch 256");
  EXPECT_EQ(series[2].label, "strong, 1 thread, batch 512");
  EXPECT_EQ(series[3].label, "strong, 16 threads, batch 256");
  // The baseline is the smallest rank count run, here 2: ideal 2 at 4 ranks.
  EXPECT_EQ(series[1].base_ranks, 2);
  EXPECT_DOUBLE_EQ(series[1].points[1].speedup, 1.6);
  EXPECT_DOUBLE_EQ(series[1].points[1].ideal, 2.0);
  EXPECT_DOUBLE_EQ(series[1].points[1].efficiency, 0.8);
  EXPECT_FALSE(series[3].scales());

  const std::vector<BenchRun> models = {
      {"strong", 1, 100, 1, 256, false, "mlp"}, {"strong", 2, 150, 1, 256, false, "mlp"},
      {"strong", 1, 10, 1, 256, false, "wide"}, {"strong", 2, 19, 1, 256, false, "wide"},
      {"weak", 1, 90, 1, 32, false, "wide"},    {"weak", 2, 170, 1, 32, false, "wide"}};
  const std::vector<ScalingSeries> by_model = scaling_series(read_bench_records(write_runs(models)));
  ASSERT_EQ(by_model.size(), 3U);
  EXPECT_EQ(by_model[0].label, "strong, mlp");  // one batch per mode: the batch tells nothing apart
  EXPECT_EQ(by_model[1].label, "strong, wide");
  EXPECT_EQ(by_model[2].label, "weak, wide");
}

// Overlap on and off are two series, each against its own baseline; a record without the field (written before bench
// recorded it) ran without overlap and joins the off series.
TEST_F(BenchRecords, OverlapSplitsSeriesAndAnOldRecordWithoutTheFieldIsOff) {
  const std::vector<BenchRun> runs = {
      {"strong", 1, 1000}, {"strong", 2, 1500}, {"strong", 1, 1000}, {"strong", 2, 1800}};
  const std::string on = record_line(runs[3], true);
  const std::vector<BenchRecord> records =
      read_bench_records(write("records.jsonl", record_line(runs[0]) + "\n" + record_line(runs[1], false) + "\n" +
                                                    record_line(runs[2], true) + "\n" + on + "\n"));
  EXPECT_FALSE(records[0].overlap);
  EXPECT_TRUE(records[3].overlap);
  const std::vector<ScalingSeries> series = scaling_series(records);
  ASSERT_EQ(series.size(), 2U);
  EXPECT_EQ(series[0].label, "strong, overlap off");
  EXPECT_EQ(series[1].label, "strong, overlap on");
  EXPECT_DOUBLE_EQ(series[0].points[1].speedup, 1.5);
  EXPECT_DOUBLE_EQ(series[1].points[1].speedup, 1.8);
  EXPECT_NE(scaling_table_markdown(series).find("global batch 256, Test CPU, overlap on; baseline"), std::string::npos)
      << scaling_table_markdown(series);
  EXPECT_NE(error_of(std::regex_replace(on, std::regex(R"("overlap": true)"), R"("overlap": 1)")).find("field overlap"),
            std::string::npos)
      << "a number is not a flag";
}

TEST_F(BenchRecords, OptimizerAndMachineSplitSeriesSoNoneIsComparedWithAnothersBaseline) {
  // Two files concatenated: the same sweep with adam, and with sgd on another machine.
  const std::vector<BenchRun> runs = {{"strong", 1, 1000},
                                      {"strong", 2, 1500},
                                      {"strong", 1, 400, 1, 256, false, "mlp", "adam"},
                                      {"strong", 2, 700, 1, 256, false, "mlp", "adam"},
                                      {"strong", 1, 3000, 1, 256, false, "mlp", "sgd", "Other CPU"},
                                      {"strong", 2, 3300, 1, 256, false, "mlp", "sgd", "Other CPU"}};
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(write_runs(runs)));
  ASSERT_EQ(series.size(), 3U);
  EXPECT_EQ(series[0].label, "strong, sgd, Test CPU");
  EXPECT_EQ(series[1].label, "strong, adam, Test CPU");
  EXPECT_EQ(series[2].label, "strong, sgd, Other CPU");
  EXPECT_EQ(series[1].optimizer, "adam");
  EXPECT_EQ(series[2].cpu_model, "Other CPU");
  for (const ScalingSeries& s : series) {
    ASSERT_EQ(s.points.size(), 2U);
    EXPECT_EQ(s.base_ranks, 1);
  }
  EXPECT_DOUBLE_EQ(series[0].points[1].speedup, 1.5);
  EXPECT_DOUBLE_EQ(series[1].points[1].speedup, 1.75);
  EXPECT_DOUBLE_EQ(series[2].points[1].speedup, 1.1);
  const std::string table = scaling_table_markdown(series);
  EXPECT_NE(table.find("- strong, adam, Test CPU: mlp (784-1024-1024-10), adam, 1 thread(s) per rank, global batch "
                       "256, Test CPU; baseline 1 rank(s), 400.0 samples/s\n"),
            std::string::npos)
      << table;
}

TEST_F(BenchRecords, RerunsKeepTheirRowsAndTheBaselineIsTheMedianAtTheSmallestRankCount) {
  const std::vector<BenchRun> runs = {
      {"strong", 2, 1800}, {"strong", 1, 1000}, {"strong", 1, 900}, {"strong", 4, 2000}, {"strong", 1, 1200}};
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(write_runs(runs)));
  ASSERT_EQ(series.size(), 1U);
  ASSERT_EQ(series[0].points.size(), 5U);
  EXPECT_EQ(series[0].points[0].record.line, 2);  // ranks order, file order within a rank count
  EXPECT_EQ(series[0].points[1].record.line, 3);
  EXPECT_EQ(series[0].points[2].record.line, 5);
  EXPECT_EQ(series[0].base_runs, 3);
  EXPECT_DOUBLE_EQ(series[0].base_samples_per_second, 1000);  // the median of 1000, 900, 1200
  EXPECT_DOUBLE_EQ(series[0].points[1].speedup, 0.9);
  EXPECT_DOUBLE_EQ(series[0].points[2].speedup, 1.2);
  EXPECT_DOUBLE_EQ(series[0].points[3].speedup, 1.8);
  EXPECT_DOUBLE_EQ(series[0].points[4].speedup, 2.0);
  EXPECT_DOUBLE_EQ(series[0].points[4].efficiency, 0.5);
  const std::string table = scaling_table_markdown(series);
  EXPECT_NE(table.find("baseline 1 rank(s), 1000.0 samples/s (the median of its 3 runs); warning: 3 runs at 1 "
                       "rank(s) (records' lines 2, 3, 5), each its own row\n"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| strong | 1 | 1 | 1 | strong | 256 | 1200.0 | 1.20 | 1.00 | 120.0% |"), std::string::npos);

  // Two runs: the median is their mean.
  const std::vector<ScalingSeries> two =
      scaling_series(read_bench_records(write_runs({{"strong", 1, 1000}, {"strong", 2, 1500}, {"strong", 1, 1400}})));
  EXPECT_DOUBLE_EQ(two[0].base_samples_per_second, 1200);
  EXPECT_DOUBLE_EQ(two[0].points[2].speedup, 1.25);
}

TEST_F(BenchRecords, ASeriesOfOneRankCountHasNoSpeedupInTheTable) {
  // As the 16-core records' 2 x 8 and 4 x 4 runs: one rank count each, beside a series that scales.
  std::vector<BenchRun> runs = sweep();
  runs.push_back({"strong", 2, 5000, 8});
  const std::string table = scaling_table_markdown(scaling_series(read_bench_records(write_runs(runs))));
  EXPECT_NE(table.find("| strong, 8 threads | 2 | 1 | 8 | strong | 256 | 5000.0 | - | - | - | 12.5% | 2.500 | "
                       "3.750 | no |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("- strong, 8 threads: mlp (784-1024-1024-10), sgd, 8 thread(s) per rank, global batch 256, "
                       "Test CPU; 2 rank(s) only, 5000.0 samples/s: nothing to scale against, so no speedup, ideal "
                       "or efficiency (\"-\")"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| strong | 2 | 1 | 1 | strong | 256 | 1500.0 | 1.50 | 2.00 | 75.0% |"), std::string::npos)
      << table;
}

TEST_F(BenchRecords, DrawnSeriesAreNamedByWhatTellsThemApartFromTheOtherDrawnSeries) {
  // The 16-core records: every drawn series runs 1 thread, so the legend does not say "1 thread" on each line;
  // the 16-thread run at one rank (table only) still says its threads.
  std::vector<BenchRun> runs = {{"strong", 1, 1000, 1, 1024},
                                {"strong", 2, 1500, 1, 1024},
                                {"weak", 1, 800, 1, 128},
                                {"weak", 2, 1400, 1, 128},
                                {"strong", 1, 9000, 16, 1024},
                                {"strong", 1, 90, 1, 512, false, "wide"},
                                {"strong", 2, 150, 1, 512, false, "wide"}};
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(write_runs(runs)));
  ASSERT_EQ(series.size(), 4U);
  EXPECT_EQ(series[0].label, "strong, mlp, batch 1024");
  EXPECT_EQ(series[1].label, "weak, mlp");
  EXPECT_EQ(series[2].label, "strong, mlp, 16 threads, batch 1024");
  EXPECT_EQ(series[3].label, "strong, wide, batch 512");
  const std::string svg = render_scaling_svg(series);
  EXPECT_EQ(svg.find("thread"), svg.find("16 threads") + 3);  // in the "Not drawn" note only
  EXPECT_NE(svg.find("Not drawn (one rank count; in the table): strong, mlp, 16 threads, batch 1024."),
            std::string::npos);
}

TEST_F(BenchRecords, TheTableRoundsTheSameArithmetic) {
  const std::string table = scaling_table_markdown(scaling_series(read_bench_records(write_runs(sweep()))));
  EXPECT_NE(table.find("| series | ranks | hosts | threads | mode | global batch | samples/s | speedup | ideal | "
                       "efficiency | exposed comm | busbw GB/s | raw busbw GB/s | oversubscribed |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| strong | 1 | 1 | 1 | strong | 256 | 1000.0 | 1.00 | 1.00 | 100.0% | 12.5% | - | - | no |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| strong | 2 | 1 | 1 | strong | 256 | 1500.0 | 1.50 | 2.00 | 75.0% | 12.5% | 2.500 | 3.750 | "
                       "no |"),
            std::string::npos)
      << table;
  EXPECT_NE(
      table.find("| weak | 4 | 1 | 1 | weak | 256 | 1000.0 | 1.25 | 4.00 | 31.2% | 12.5% | 2.500 | 3.750 | yes |"),
      std::string::npos)
      << table;
  EXPECT_NE(table.find("- weak: mlp (784-1024-1024-10), sgd, 1 thread(s) per rank, batch 64 per rank, Test CPU; "
                       "baseline 1 rank(s), 800.0 samples/s\n"),
            std::string::npos)
      << table;
}

int count(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  return static_cast<int>(std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

TEST_F(BenchRecords, TheChartHasTwoPanelsOneLinePerSeriesTheIdealAndHollowOversubscribedPoints) {
  const std::string svg = render_scaling_svg(scaling_series(read_bench_records(write_runs(sweep()))));
  EXPECT_EQ(count(svg, R"(<g class="panel" data-panel="speedup">)"), 1);
  EXPECT_EQ(count(svg, R"(<g class="panel" data-panel="efficiency">)"), 1);
  EXPECT_EQ(count(svg, R"(<path class="series" data-series="strong" data-mode="strong" data-points="3")"), 2);
  EXPECT_EQ(count(svg, R"(<path class="series" data-series="weak" data-mode="weak" data-points="3")"), 2);
  EXPECT_EQ(count(svg, R"(<path class="ideal" data-base-ranks="1")"), 2);  // one per panel
  EXPECT_EQ(count(svg, R"(<circle class="point" [^>]*data-ranks="4" data-oversubscribed="true"[^>]*fill="#ffffff")"),
            4);
  EXPECT_EQ(count(svg, R"(<circle class="point" [^>]*data-oversubscribed="false"[^>]*fill="#ffffff")"), 0);
  EXPECT_EQ(count(svg, R"(data-series="strong" data-ranks="2" data-oversubscribed="false" data-value="1.5")"), 1);
  EXPECT_EQ(count(svg, R"(data-series="strong" data-ranks="2" data-oversubscribed="false" data-value="0.75")"), 1);
  EXPECT_NE(svg.find("oversubscribed (more threads than CPUs)"), std::string::npos);
  EXPECT_NE(svg.find("Test CPU"), std::string::npos);
  EXPECT_EQ(svg.find("Not drawn"), std::string::npos);
}

TEST_F(BenchRecords, ASeriesOfOneRankCountIsLeftOutOfTheChartAndNamed) {
  std::vector<BenchRun> runs = sweep();
  runs.push_back({"strong", 1, 5000, 16});
  const std::string svg = render_scaling_svg(scaling_series(read_bench_records(write_runs(runs))));
  EXPECT_EQ(count(svg, R"(<path class="series")"), 4);
  EXPECT_NE(svg.find("Not drawn (one rank count; in the table): strong, 16 threads."), std::string::npos);
  EXPECT_THROW(render_scaling_svg(scaling_series(read_bench_records(write_runs({{"strong", 2, 10}})))), Error);
}

TEST_F(BenchRecords, DamagedRecordsAreRefusedNamingFileLineAndField) {
  const std::string good = record_line({});
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
  };
  const std::string bad = (dir_ / "bad.jsonl").string();
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {good + "\n\n" + with("\"ranks\": 1, ", ""), bad + ":3: field ranks: missing"},
      {good + "\n" + with("\"total\": 1000.000000", "\"total\": \"fast\""),
       bad + ":2: field samples_per_second.total: expected a number"},
      {with("\"total\": 1000.000000", "\"total\": NaN"), bad + ":1: field samples_per_second.total: nan"},
      {with("\"total\": 1000.000000", "\"total\": 0"), bad + ":1: field samples_per_second.total: 0: expected a rate"},
      {with("\"ranks\": 1", "\"ranks\": 0"), bad + ":1: field ranks: 0: expected a whole number from 1 to 1073741824"},
      {with("\"ranks\": 1", "\"ranks\": 1.5"), bad + ":1: field ranks: 1.5: expected a whole number from 1"},
      {with("\"oversubscribed\": false", "\"oversubscribed\": 0"), bad + ":1: field oversubscribed: expected true"},
      {with("\"mode\": \"strong\"", "\"mode\": \"fast\""), bad + ":1: field mode: 'fast': expected strong or weak"},
      {with("\"machine\": {\"cpu_model\": \"Test CPU\"}", "\"machine\": 3"),
       bad + ":1: field machine.cpu_model: missing"},
      {good + "\n" + good.substr(0, 40) + "\n", bad + ":2: not valid JSON"},
      {good + "\n{\"loss\": [1.0, 0.5]}\n", bad + ":2: not a shardfit bench record"},
      {"\n \n", bad + ": no record in the file"},
  };
  for (const Case& c : cases) {
    const std::string message = error_of(c.text);
    EXPECT_NE(message.find(c.expected), std::string::npos) << "got: " << message << "\nexpected: " << c.expected;
  }
}

TEST_F(BenchRecords, ContentTellsRecordsFromAHistory) {
  EXPECT_TRUE(looks_like_bench_records(write("records.json", "\n" + record_line({}) + "\n")));
  EXPECT_FALSE(looks_like_bench_records(write("history.json", "{\"loss\": [1.0, 0.5], \"val_loss\": [1.1, 0.6]}\n")));
  EXPECT_FALSE(looks_like_bench_records(write("history.csv", "epoch,loss\n0,1.0\n")));
  EXPECT_FALSE(looks_like_bench_records(write("broken.jsonl", "{\"kind\": \"shardfit_bench\"\n")));
  EXPECT_FALSE(looks_like_bench_records(dir_ / "missing.jsonl"));
  EXPECT_FALSE(looks_like_bench_records(dir_));
}

TEST(JsonReader, ReadsTheValuesAndNamesTheLineOfAnError) {
  const JsonValue value =
      parse_json(R"({"a": [1, -2.5e3, NaN, -Infinity], "t": true, "f": false, "s": "x\ny", "n": null})", "inline");
  ASSERT_EQ(value.kind, JsonValue::Kind::kObject);
  ASSERT_EQ(value.find("a")->items.size(), 4U);
  EXPECT_EQ(value.find("a")->items[1].number, -2500);
  EXPECT_TRUE(std::isnan(value.find("a")->items[2].number));
  EXPECT_EQ(value.find("a")->items[3].number, -INFINITY);
  EXPECT_EQ(value.find("t")->kind, JsonValue::Kind::kBool);
  EXPECT_EQ(value.find("t")->number, 1.0);
  EXPECT_EQ(value.find("f")->number, 0.0);
  EXPECT_EQ(value.find("s")->text, "x\ny");
  EXPECT_EQ(value.find("n")->kind, JsonValue::Kind::kNull);
  EXPECT_EQ(value.find("missing"), nullptr);
  try {
    parse_json("{\n\"a\": 1,\n\"b\" 2}", "some.json");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("some.json:3: not valid JSON: expected ':' after a key"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace shardfit
