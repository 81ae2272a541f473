// The shardfit executable: parses the command line, reads the job, runs the command on every rank. All
// failures go through run_ranks: printed once, naming the rank, and every rank exits non-zero.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/io/bench_records.h"
#include "dist/io/format.h"
#include "dist/io/history_reader.h"
#include "dist/io/history_writer.h"
#include "dist/io/json_writer.h"
#include "dist/io/paths.h"
#include "dist/io/plot_svg.h"
#include "dist/placement.h"
#include "dist/stop_signal.h"
#include "dist/train/bench.h"
#include "dist/train/evaluate.h"
#include "dist/train/fit.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "launch/cli.h"
#include "launch/command_output.h"
#include "launch/console_kind.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

proto::Dataset inference_data(const Command& command, const proto::Job& job) {
  if (command.x.empty()) return job.data().test();
  proto::Dataset data = job.data().test();  // keeps x_scale / label options of data.test when files are overridden
  data.mutable_x()->Clear();
  data.mutable_x()->set_path(resolve_path({}, command.x).string());
  data.clear_y();
  if (!command.y.empty()) data.mutable_y()->set_path(resolve_path({}, command.y).string());
  return data;
}

// {"accuracy": 0.9199, "loss": 0.5744, "samples": 1797.0}: evaluate's values, each the shortest text that reads
// back to the same double, keys sorted (as history.json writes them).
std::string metrics_json(const std::map<std::string, double>& values) {
  JsonObject fields;
  for (const auto& [key, value] : values) fields.number(key, value);
  return fields.inline_text() + "\n";
}

// Bench records (told by content, bench_records.h): the scaling chart, its table beside it (CHART.md) and on stdout.
void plot_bench_records(const Command& command) {
  const fs::path records = command.job_path;
  SF_CHECK(command.metrics.size() == 1 && command.metrics[0] == "loss",
           cat(records.string(), " holds bench records: --metric applies to a history's curves"),
           "the scaling chart has its own two panels, speedup and efficiency; drop --metric");
  const fs::path chart = command.output.empty() ? records.parent_path() / "scaling.svg" : fs::path(command.output);
  fs::path table = chart;
  table.replace_extension(".md");
  check_scaling_plot_output(command, chart, table);  // before reading: a refused -o costs no work
  const std::vector<ScalingSeries> series = scaling_series(read_bench_records(records));
  const std::string markdown = scaling_table_markdown(series);
  // The table first: a sweep at one rank count (threads only, say) has no line to draw, and the chart's refusal
  // must not cost the user the table of the runs it measured.
  write_file_atomically(table, markdown);
  std::fputs(markdown.c_str(), stdout);
  std::printf("\n%s\n", table.string().c_str());
  std::fflush(stdout);
  write_scaling_svg(chart, series);
  std::printf("%s\n", chart.string().c_str());
}

int run_plot(Comm& comm, const Command& command) {
  run_agreed(comm, [&] {
    if (!comm.is_root()) return;
    const fs::path source = command.job_path;
    const std::string extension = source.extension().string();
    if (looks_like_bench_records(source) || extension == ".jsonl" || extension == ".ndjson") {
      plot_bench_records(command);  // a .jsonl that holds no bench record is refused there, naming its first line
      return;
    }
    check_plot_output(command);  // before reading: a refused -o costs no work
    const proto::History history = read_history_any(source);
    const proto::Diagnosis* diagnosis = history.has_diagnosis() ? &history.diagnosis() : nullptr;
    if (!command.output.empty()) {  // one file; several metrics become panels of it
      write_history_panels_svg(command.output, history, command.metrics, diagnosis);
      std::printf("%s\n", command.output.c_str());
      return;
    }
    const fs::path folder = fs::is_directory(source) ? source : source.parent_path();
    for (const auto& metric : command.metrics) {
      const fs::path out = folder / (metric + ".svg");
      write_history_svg(out, history, metric, diagnosis);
      std::printf("%s\n", out.string().c_str());
    }
  });
  return 0;
}

// The command line as typed, recorded in bench's records and in a timeline.
std::string command_text(int argc, char** argv) {
  std::string text = "shardfit";
  for (int i = 1; i < argc; ++i) text += cat(" ", argv[i]);
  return text;
}

TimelineSettings timeline_settings(const Command& command, int argc, char** argv) {
  TimelineSettings settings;
  settings.path = command.timeline;
  settings.steps = command.timeline_steps;
  settings.command = command_text(argc, argv);
  return settings;
}

// The benchmark's model: a preset or the job file's, the flags merged over it, sgd unless an optimizer is named.
int run_bench_command(Comm& comm, const Command& command, const proto::Job& file_job, int argc, char** argv) {
  BenchConfig config;
  run_agreed(comm, [&] {
    config.job = command.model.empty() ? file_job : bench_preset(command.model);
    if (!command.model.empty()) apply_overrides(command.overrides, config.job);
    if (config.job.optimizer().kind_case() == proto::Optimizer::KIND_NOT_SET)
      config.job.mutable_optimizer()->mutable_sgd();
    config.model_name = command.model.empty() ? command.job_path : command.model;
    config.scaling = command.mode == "weak" ? Scaling::kWeak : Scaling::kStrong;
    config.batch_size = command.batch_size;
    config.warmup_steps = command.warmup_steps;
    config.steps = command.steps;
    if (config.job.fit().has_seed()) config.seed = config.job.fit().seed();
    config.json_path = command.json;
    config.command = command_text(argc, argv);
    config.timeline = timeline_settings(command, argc, argv);
    config.job_path = command.job_path;
  });
  warn_about_placement(comm);
  const BenchReport report = run_bench(comm, config);
  if (comm.is_root()) {
    std::fputs(report.table.c_str(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

int run(Comm& comm, int argc, char** argv, const ConsoleKind& console) {
  Command command;
  proto::Job job;
  // Rank 0 reads the job file and sends its text: one read however many ranks, and the job need only be visible
  // where rank 0 runs. Every rank parses the same text, so a syntax error is found (and agreed on) everywhere.
  std::string job_text;
  run_agreed(comm, [&] {
    command = parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
    if (comm.is_root() && command.name != "help" && command.name != "version" && command.name != "plot" &&
        !command.job_path.empty()) {
      job_text = read_text_file(command.job_path, "job file");
    }
  });
  comm.broadcast(job_text, 0);
  run_agreed(comm, [&] {
    if (command.name == "fit" || command.name == "evaluate" || command.name == "predict" ||
        (command.name == "bench" && !command.job_path.empty())) {
      job = parse_job_text(job_text, command.job_path);
      apply_overrides(command.overrides, job);
    }
  });
  if (command.name == "help" || command.name == "version") {
    if (comm.is_root()) std::fputs(command.name == "help" ? usage().c_str() : "shardfit 0.1.0\n", stdout);
    return 0;
  }
  if (command.name == "plot") return run_plot(comm, command);
  if (command.name == "bench") return run_bench_command(comm, command, job, argc, argv);

  const auto job_dir = fs::absolute(command.job_path).parent_path();
  if (command.name == "evaluate" || command.name == "predict") {
    InferenceOptions options;
    options.weights = command.weights;
    options.batch_size = command.batch_size;
    options.data = inference_data(command, job);
    run_agreed(comm, [&] {
      if (comm.is_root()) check_inference_output(command, options, job, job_dir);  // before any weights or data load
    });
    if (command.name == "predict") {
      const int64_t rows = predict(comm, job, job_dir, options, command.output);
      if (comm.is_root())
        std::printf("predicted %lld rows -> %s\n", static_cast<long long>(rows), command.output.c_str());
      return 0;
    }
    const auto values = evaluate(comm, job, job_dir, options);
    run_agreed(comm, [&] {
      if (!comm.is_root()) return;
      std::string line = cat(static_cast<long long>(values.at("samples")), " samples");
      for (const auto& [key, value] : values) {
        if (key != "samples") line += " - " + key + ": " + format_value(value);
      }
      std::printf("%s\n", line.c_str());
      // The console rounds to 4 digits; scripts comparing runs need the doubles themselves.
      if (!command.output.empty()) write_file_atomically(command.output, metrics_json(values));
    });
    return 0;
  }

  FitConfig config;
  run_agreed(comm, [&] {
    config = resolve_fit_config(job, console.person_watching());
    config.terminal = console.stdout_is_terminal;  // so that --verbose 1 draws the bar under a launcher too
    config.resume = command.resume;
    config.overwrite = command.overwrite;
    config.job_file = fs::absolute(command.job_path);
    config.report_ranks = command.report_ranks;
    config.timeline = timeline_settings(command, argc, argv);
  });
  warn_about_placement(comm);
  const FitResult result = fit(comm, job, job_dir, config);
  return result.stopped_by_signal != 0 ? kExitCheckpointed : 0;
}

}  // namespace
}  // namespace shardfit

int main(int argc, char** argv) {
  const shardfit::ConsoleKind console = shardfit::detect_console_kind();  // before MPI_Init changes the environment
  return shardfit::run_ranks(argc, argv,
                             [&](shardfit::Comm& comm) { return shardfit::run(comm, argc, argv, console); });
}
