// The records `shardfit bench --json FILE` appends (JSON Lines, one run a line) read back for `shardfit plot`, and the
// scaling study made of them: runs grouped into series, each run's speedup and parallel efficiency against its
// series' smallest rank count, and the table. The chart itself is plot_svg.h's render_scaling_svg. No MPI here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace shardfit {

// The fields of one record that the table and the chart use (README.md, "Scaling benchmark", has them all).
struct BenchRecord {
  int line = 0;           // 1-based line of the file, for messages
  std::string mode;       // "strong" or "weak"
  std::string model;      // model.name: "mlp", "wide" or a job file's path
  std::string layers;     // model.layers: "784-1024-1024-10"
  std::string optimizer;  // model.optimizer: "sgd", "adam", "rmsprop"
  int ranks = 1;
  int hosts = 1;
  int threads_per_rank = 1;
  bool oversubscribed = false;
  int64_t global_batch = 0;
  double per_rank_batch = 0;
  double samples_per_second = 0;  // samples_per_second.total
  double exposed_comm_share = 0;  // of the step, 0..1
  double busbw_gb_per_s = 0;      // allreduce.busbw_gb_per_s: the reducer's exchange inside the step; 0 at one rank
  double raw_busbw_gb_per_s = 0;  // raw_allreduce.busbw_gb_per_s: one MPI_Allreduce of the same bytes
  std::string cpu_model;          // machine.cpu_model
  bool overlap = false;           // overlap: the allreduce overlapped backward (false in records written before it)
};

// Whether `path` is a file whose first non-blank line is a JSON object with "kind": "shardfit_bench". Never throws:
// `shardfit plot` asks this to tell bench records from a history by content, whatever the file is called.
bool looks_like_bench_records(const std::filesystem::path& path);

// Every record of the file, in file order; blank lines are skipped. Throws Error naming the file, the line and the
// field for a line that is not JSON, not a bench record, or lacks a field or has it of the wrong type (a string
// where a number goes, a rank count < 1, a mode other than strong / weak), and for a file with no record.
std::vector<BenchRecord> read_bench_records(const std::filesystem::path& path);

// One run in its series, with the numbers derived from the series' baseline (its smallest rank count P0):
// speedup = samples/s(P) / samples/s(P0), where samples/s(P0) is the median of the series' runs at P0; ideal = P / P0
// (strong: the same global batch done P/P0 times faster; weak: P/P0 times the samples in the same time); efficiency =
// speedup / ideal.
struct ScalingPoint {
  BenchRecord record;
  double speedup = 1;
  double ideal = 1;
  double efficiency = 1;
};

// Runs that scale along the rank count and nothing else: the same mode, model (name and layers), optimizer, threads
// per rank, batch (strong: the global batch; weak: the per-rank batch), CPU model and overlap, so records appended or
// concatenated from another optimizer or machine are never measured against this series' baseline. Points are in
// rank order (file order among runs of the same rank count). Several runs at one rank count (a rerun appended to
// the file) each keep their point and row; the baseline is the median samples/s of the runs at the smallest rank
// count, so one slow or fast rerun does not move every speedup of the series.
struct ScalingSeries {
  std::string mode;
  std::string model;
  std::string layers;
  std::string optimizer;
  int threads_per_rank = 1;
  int64_t batch = 0;  // strong: global; weak: per rank
  std::string cpu_model;
  bool overlap = false;
  int base_ranks = 1;
  int base_runs = 1;                   // runs at base_ranks
  double base_samples_per_second = 0;  // their median
  std::string label;  // the legend's and the table's name: the mode, then what tells it from the other series
  std::vector<ScalingPoint> points;

  // More than one rank count: a series the chart can draw a line through.
  bool scales() const;
};

// The series, in the order their first record appears in the file. Labels name the mode, then each of model,
// optimizer, threads per rank, batch (among series of the same mode), CPU model and overlap that differs between the
// series
// ("strong", "weak, 8 threads", "strong, wide, batch 512"). A series that scales (the chart draws it) is told apart
// from the other drawn series only, so a legend does not repeat what all its lines share; a series of one rank
// count (in the table only) from every series of the file.
std::vector<ScalingSeries> scaling_series(const std::vector<BenchRecord>& records);

// The table as Markdown, one row per run in series order: series, ranks, hosts, threads, mode, global batch,
// samples/s, speedup, ideal, efficiency ("-" for a series of one rank count: nothing to scale against), exposed comm
// share, busbw and raw busbw (GB/s; "-" at one rank), oversubscribed ("yes" / "no"). Numbers are rounded for
// reading: speedup and ideal to 2 decimals, efficiency and the comm share to 0.1%, samples/s to 0.1. Under it, one
// line per series naming its baseline and any rank count run more than once (with the records' lines).
std::string scaling_table_markdown(const std::vector<ScalingSeries>& series);

}  // namespace shardfit
