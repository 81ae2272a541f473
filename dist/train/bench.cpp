// `shardfit bench`: synthetic data in memory, the model of a job or a preset, TrainStep timed on every rank, and the
// report (a table and one JSON record). The measuring rules are in bench.h.
#include "dist/train/bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <set>

#include "dist/cross_replica_comm.h"
#include "dist/gradient_reducer.h"
#include "dist/io/dataset.h"
#include "dist/io/history_writer.h"
#include "dist/io/json_writer.h"
#include "dist/placement.h"
#include "dist/sharding.h"
#include "dist/train/fit.h"
#include "dist/train/labels.h"
#include "dist/train/model_setup.h"
#include "dist/train/output_plan.h"
#include "dist/train/step.h"
#include "kernels/engine.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/memory_budget.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"
#include "kernels/random.h"

namespace shardfit {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void add_dense(proto::Model& model, int64_t units, const char* activation) {
  auto* dense = model.add_layers()->mutable_dense();
  dense->set_units(units);
  dense->set_activation(activation);
}

proto::Job classifier(int64_t input_dim, std::initializer_list<int64_t> hidden, int64_t classes) {
  proto::Job job;
  job.mutable_model()->set_input_dim(input_dim);
  for (const int64_t units : hidden) add_dense(*job.mutable_model(), units, "relu");
  add_dense(*job.mutable_model(), classes, "softmax");
  job.set_loss("sparse_categorical_crossentropy");
  job.mutable_optimizer()->mutable_sgd();
  return job;
}

// The Fashion-MNIST convnet of examples/fashion_mnist and bench/peer_torch.py --model convnet.
proto::Job convnet() {
  proto::Job job;
  proto::Model& model = *job.mutable_model();
  for (const int64_t d : {28, 28, 1}) model.add_input_shape(d);
  for (const int64_t filters : {32, 64}) {
    auto* conv = model.add_layers()->mutable_conv2d();
    conv->set_filters(filters);
    conv->add_kernel_size(3);
    conv->set_activation("relu");
    model.add_layers()->mutable_max_pooling2d()->add_pool_size(2);
  }
  model.add_layers()->mutable_flatten();
  add_dense(model, 128, "relu");
  add_dense(model, 10, "softmax");
  job.set_loss("sparse_categorical_crossentropy");
  job.mutable_optimizer()->mutable_sgd();
  return job;
}

// "784-1024-1024-10": the input width (or shape, "28x28x1") and every Dense layer's units, as the presets are named;
// a convolution adds "c" and its filters, a pooling "p": "28x28x1-c32-p-c64-p-128-10".
std::string widths_text(const proto::Job& job) {
  std::string text;
  if (job.model().has_input_dim() || job.model().input_shape_size() == 0) {
    text = std::to_string(job.model().input_dim());
  } else {
    for (const int64_t d : job.model().input_shape()) text += cat(text.empty() ? "" : "x", d);
  }
  for (const auto& layer : job.model().layers()) {
    if (layer.has_dense()) text += cat("-", layer.dense().units());
    if (layer.has_conv2d()) text += cat("-c", layer.conv2d().filters());
    if (layer.has_max_pooling2d() || layer.has_average_pooling2d()) text += "-p";
  }
  return text;
}

// Uniform values in [-1, 1) for the features; the labels the loss trains on: class ids for the cross-entropies
// over several classes, 0/1 targets for binary_crossentropy, uniform targets in [-1, 1) otherwise. The same on every
// rank (a function of the seed), as fit's data is.
Dataset synthetic_data(const Model& model, const std::string& loss, int64_t rows, uint64_t seed) {
  Rng rng(hash_key(seed, 0x42454E43ULL /*'BENC'*/));
  std::vector<float> x(static_cast<size_t>(rows * model.input_dim()));
  for (float& v : x) v = static_cast<float>(rng.uniform(-1.0, 1.0));
  const int64_t out = model.output_dim();
  const bool ids = out > 1 && (loss == "sparse_categorical_crossentropy" || loss == "categorical_crossentropy");
  const int64_t label_cols = ids ? 1 : out;
  std::vector<float> y(static_cast<size_t>(rows * label_cols));
  for (float& v : y) {
    if (ids) {
      v = static_cast<float>(rng.below(static_cast<uint64_t>(out)));
    } else if (loss == "binary_crossentropy") {
      v = static_cast<float>(rng.below(2));
    } else {
      v = static_cast<float>(rng.uniform(-1.0, 1.0));
    }
  }
  return Dataset::in_memory("bench", ArrayFile::in_memory("synthetic x", std::move(x), rows, model.input_dim()),
                            ArrayFile::in_memory("synthetic y", std::move(y), rows, label_cols), ids);
}

// "model name" of /proc/cpuinfo (x86), else its "Processor" / "CPU part" line, else "unknown".
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::string fallback;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    const size_t start = line.find_first_not_of(' ', colon + 1);
    const std::string value = start == std::string::npos ? "" : line.substr(start);
    if (key == "model name") return value;
    if (fallback.empty() && (key == "Processor" || key == "CPU part")) fallback = value;
  }
  return fallback.empty() ? "unknown" : fallback;
}

// Open MPI passes mpirun's --mca choices to the ranks as OMPI_MCA_* variables: the transports asked for, if any.
std::string mpi_transport() {
  std::string text;
  for (const char* name : {"OMPI_MCA_pml", "OMPI_MCA_btl", "OMPI_MCA_mtl", "FI_PROVIDER", "UCX_TLS"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    if (!text.empty()) text += ", ";
    text += cat(name, "=", value);
  }
  return text.empty() ? "the MPI library's default" : text;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

double mean(std::span<const double> values) {
  double sum = 0.0;
  for (const double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

// One rank's means per measured step, in the order they are gathered.
enum RankValue {
  kGather,
  kForward,
  kBackward,
  kIssued,
  kWaited,
  kOptimizer,
  kStep,
  kLocalCount,
  kPeakRss,  // the rank's peak resident bytes after the measured steps (getrusage)
  kRankValues
};

// What rank 0 has gathered, and the numbers derived from it.
struct Measured {
  int ranks = 1;
  int hosts = 1;
  std::string host_names;
  bool oversubscribed = false;
  int threads = 1;
  int64_t global_batch = 0;
  int64_t local_min = 0;
  int64_t local_max = 0;
  std::vector<double> step_seconds;  // every rank's measured steps
  std::vector<double> by_rank;       // kRankValues per rank
  int64_t parameters = 0;
  int64_t bytes_per_step = 0;  // allreduced by the step (0 at one rank)
  int64_t buckets = 0;
  int64_t bucket_bytes = 0;      // a full bucket's
  bool overlap = false;          // the buckets' allreduces overlapped backward (fit.overlap)
  double allreduce_seconds = 0;  // per step, the least over the ranks
  double raw_seconds = 0;        // one Comm::allreduce_sum of the same bytes, the least mean over the ranks
  int64_t raw_repetitions = 0;

  double rank_mean(RankValue value) const {
    double sum = 0.0;
    for (int r = 0; r < ranks; ++r) sum += by_rank[static_cast<size_t>(r * kRankValues + value)];
    return sum / ranks;
  }
  double slowest_step() const {
    double slowest = 0.0;
    for (int r = 0; r < ranks; ++r) slowest = std::max(slowest, by_rank[static_cast<size_t>(r * kRankValues + kStep)]);
    return slowest;
  }
  // global batch / the slowest rank's mean step: the ranks wait for each other in the allreduce every step.
  double samples_per_second() const { return static_cast<double>(global_batch) / slowest_step(); }
  std::vector<int64_t> peak_rss_bytes() const {
    std::vector<int64_t> peaks;
    for (int r = 0; r < ranks; ++r) {
      peaks.push_back(static_cast<int64_t>(by_rank[static_cast<size_t>(r * kRankValues + kPeakRss)]));
    }
    return peaks;
  }
  // Each rank's own samples / its own mean step.
  std::vector<double> rank_rates() const {
    std::vector<double> rates;
    for (int r = 0; r < ranks; ++r) {
      const double* v = &by_rank[static_cast<size_t>(r * kRankValues)];
      rates.push_back(v[kLocalCount] / v[kStep]);
    }
    return rates;
  }
};

double gb_per_second(int64_t bytes, double seconds) {
  return bytes > 0 && seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

std::string mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

struct Identity {
  std::string model_name;
  std::string widths;
  std::string optimizer;
  std::string loss;
  std::string dtype_policy;  // the one the model runs (float32 where the CPU has no bf16)
  std::string reduce_dtype;  // fit.reduce_dtype
  std::string cpu;
  std::string isa;
  std::string mpi;
  std::string transport;
};

std::string table_text(const BenchConfig& config, const Identity& id, const Measured& m) {
  std::string text;
  auto line = [&](const char* format, auto... values) {
    char buffer[512];
    std::snprintf(buffer, sizeof buffer, format, values...);
    text += buffer;
    text += '\n';
  };
  const bool strong = config.scaling == Scaling::kStrong;
  line("shardfit bench: %s (%s, %lld parameters, %s, %s%s), %s scaling", id.model_name.c_str(), id.widths.c_str(),
       static_cast<long long>(m.parameters), id.optimizer.c_str(), id.loss.c_str(),
       id.dtype_policy == "float32" ? "" : (", " + id.dtype_policy).c_str(), strong ? "strong" : "weak");
  line("  ranks            %d on %d host(s) x %d thread(s)%s", m.ranks, m.hosts, m.threads,
       m.oversubscribed ? " (oversubscribed: more threads than CPUs on a host)" : "");
  line("  batch            %lld global, %lld-%lld per rank; %lld warm-up + %lld measured steps",
       static_cast<long long>(m.global_batch), static_cast<long long>(m.local_min), static_cast<long long>(m.local_max),
       static_cast<long long>(config.warmup_steps), static_cast<long long>(config.steps));
  const std::vector<double> rates = m.rank_rates();
  const auto [low, high] = std::minmax_element(rates.begin(), rates.end());
  line("  samples/s        %.1f total, %.1f per rank (ranks %.1f-%.1f)", m.samples_per_second(),
       m.samples_per_second() / m.ranks, *low, *high);
  line("  step time        p50 %.3f ms, p90 %.3f ms, min %.3f ms, max %.3f ms (every rank's steps)",
       1e3 * quantile(m.step_seconds, 0.5), 1e3 * quantile(m.step_seconds, 0.9),
       1e3 * *std::min_element(m.step_seconds.begin(), m.step_seconds.end()),
       1e3 * *std::max_element(m.step_seconds.begin(), m.step_seconds.end()));
  const double step = m.rank_mean(kStep);
  line("  %-16s %10s %7s", "phase", "ms/step", "share");
  const std::pair<const char*, double> phases[] = {
      {"gather", m.rank_mean(kGather)},
      {"forward", m.rank_mean(kForward)},
      {"backward", m.rank_mean(kBackward)},
      {"optimizer", m.rank_mean(kOptimizer)},
      {"exposed comm", m.rank_mean(kIssued) + m.rank_mean(kWaited)},
  };
  double sum = 0.0;
  for (const auto& [name, seconds] : phases) {
    line("  %-16s %10.3f %6.1f%%", name, 1e3 * seconds, 100.0 * seconds / step);
    sum += seconds;
  }
  line("  %-16s %10.3f %6.1f%%  (step, mean of the ranks: %.3f ms)", "sum", 1e3 * sum, 100.0 * sum / step, 1e3 * step);
  if (m.bytes_per_step == 0) {
    line("  allreduce        none: one rank has nothing to exchange");
  } else {
    const double algbw = gb_per_second(m.bytes_per_step, m.allreduce_seconds);
    line("  allreduce        %s a step in %lld bucket(s) of up to %s%s, %.3f ms: algbw %.3f GB/s, busbw %.3f GB/s",
         mib(m.bytes_per_step).c_str(), static_cast<long long>(m.buckets), mib(m.bucket_bytes).c_str(),
         id.reduce_dtype == "float32" ? "" : (" as " + id.reduce_dtype + " after the first").c_str(),
         1e3 * m.allreduce_seconds, algbw, bus_bandwidth(algbw, m.ranks));
    const double raw = gb_per_second(m.bytes_per_step, m.raw_seconds);
    line("  raw allreduce    %s in one MPI_Allreduce, %.3f ms: algbw %.3f GB/s, busbw %.3f GB/s",
         mib(m.bytes_per_step).c_str(), 1e3 * m.raw_seconds, raw, bus_bandwidth(raw, m.ranks));
  }
  const std::vector<int64_t> peaks = m.peak_rss_bytes();
  const auto largest = std::max_element(peaks.begin(), peaks.end());
  line("  peak RSS         %s on rank %lld (the largest rank's max resident memory)",
       bytes_text(static_cast<double>(*largest)).c_str(), static_cast<long long>(largest - peaks.begin()));
  line("  overlap          %s", m.overlap ? "on: the bucket allreduces run on a communication thread during backward"
                                          : "off: the bucket allreduces run after backward");
  line("  machine          %s; oneDNN %s; %s; %s", id.cpu.c_str(), id.isa.c_str(), id.mpi.c_str(),
       id.transport.c_str());
  return text;
}

std::string record_text(const BenchConfig& config, const Identity& id, const Measured& m) {
  JsonObject model;
  model.string("name", id.model_name)
      .string("layers", id.widths)
      .integer("parameters", m.parameters)
      .string("optimizer", id.optimizer)
      .string("loss", id.loss)
      .string("dtype_policy", id.dtype_policy);
  JsonObject batch;
  batch.integer("global", m.global_batch)
      .number("per_rank", static_cast<double>(m.global_batch) / m.ranks)
      .integer("per_rank_min", m.local_min)
      .integer("per_rank_max", m.local_max);
  const std::vector<double> rates = m.rank_rates();
  JsonObject samples;
  samples.number("total", m.samples_per_second())
      .number("per_rank", m.samples_per_second() / m.ranks)
      .number("per_rank_min", *std::min_element(rates.begin(), rates.end()))
      .number("per_rank_max", *std::max_element(rates.begin(), rates.end()))
      .numbers("by_rank", rates);
  JsonObject steps;
  steps.number("mean", mean(m.step_seconds))
      .number("p50", quantile(m.step_seconds, 0.5))
      .number("p90", quantile(m.step_seconds, 0.9))
      .number("min", *std::min_element(m.step_seconds.begin(), m.step_seconds.end()))
      .number("max", *std::max_element(m.step_seconds.begin(), m.step_seconds.end()));
  const double exposed = m.rank_mean(kIssued) + m.rank_mean(kWaited);
  JsonObject phases;
  phases.number("gather", m.rank_mean(kGather))
      .number("forward", m.rank_mean(kForward))
      .number("backward", m.rank_mean(kBackward))
      .number("optimizer", m.rank_mean(kOptimizer))
      .number("exposed_comm", exposed)
      .number("allreduce_issued", m.rank_mean(kIssued))
      .number("allreduce_waited", m.rank_mean(kWaited))
      .number("sum",
              m.rank_mean(kGather) + m.rank_mean(kForward) + m.rank_mean(kBackward) + m.rank_mean(kOptimizer) + exposed)
      .number("step", m.rank_mean(kStep));
  const double algbw = gb_per_second(m.bytes_per_step, m.allreduce_seconds);
  JsonObject allreduce;
  allreduce.string("dtype", id.reduce_dtype)
      .integer("bytes_per_step", m.bytes_per_step)
      .integer("buckets", m.bytes_per_step > 0 ? m.buckets : 0)
      .integer("bucket_bytes", m.bucket_bytes)
      .number("seconds_per_step", m.allreduce_seconds)
      .number("algbw_gb_per_s", algbw)
      .number("busbw_gb_per_s", bus_bandwidth(algbw, m.ranks));
  const double raw = gb_per_second(m.bytes_per_step, m.raw_seconds);
  JsonObject raw_allreduce;
  raw_allreduce.integer("bytes", m.bytes_per_step)
      .integer("repetitions", m.raw_repetitions)
      .number("seconds", m.raw_seconds)
      .number("algbw_gb_per_s", raw)
      .number("busbw_gb_per_s", bus_bandwidth(raw, m.ranks));
  const std::vector<int64_t> peaks = m.peak_rss_bytes();
  JsonObject memory;
  memory.integers("by_rank", peaks).integer("max", *std::max_element(peaks.begin(), peaks.end()));
  JsonObject machine;
  machine.string("cpu_model", id.cpu)
      .string("onednn_isa", id.isa)
      .string("mpi_library", id.mpi)
      .string("mpi_transport", id.transport);

  JsonObject record;
  record.string("kind", "shardfit_bench")
      .string("time_utc", utc_now())
      .string("command", config.command)
      .object("model", model)
      .string("mode", config.scaling == Scaling::kStrong ? "strong" : "weak")
      .integer("ranks", m.ranks)
      .integer("hosts", m.hosts)
      .string("host_names", m.host_names)
      .integer("threads_per_rank", m.threads)
      .boolean("oversubscribed", m.oversubscribed)
      .boolean("overlap", m.overlap)
      .object("batch", batch)
      .integer("warmup_steps", config.warmup_steps)
      .integer("steps", config.steps)
      .object("samples_per_second", samples)
      .object("step_seconds", steps)
      .object("phase_seconds", phases)
      .number("exposed_comm_share", exposed / m.rank_mean(kStep))
      .object("allreduce", allreduce)
      .object("raw_allreduce", raw_allreduce)
      .object("peak_rss_bytes", memory)
      .object("machine", machine);
  return record.inline_text();
}

// Rank 0, before any work: a record that could not be written is known before the benchmark runs, not after.
void check_json_path(const fs::path& path) {
  if (path.empty()) return;
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  SF_CHECK(fs::is_directory(folder), cat("--json ", path.string(), ": the folder ", folder.string(),
                                         " does not exist: expected a file in an existing folder"));
  SF_CHECK(!fs::exists(path) || fs::is_regular_file(path),
           cat("--json ", path.string(), ": not a regular file: expected a JSON Lines file to append the record to"));
}

// The file's records so far, then this one: one JSON object per line (JSON Lines), written atomically.
void append_record(const fs::path& path, const std::string& record) {
  std::string text = fs::exists(path) ? read_text_file(path, "bench records") : std::string();
  if (!text.empty() && text.back() != '\n') text += '\n';
  write_file_atomically(path, text + record + "\n");
}

}  // namespace

const std::vector<std::string>& bench_preset_names() {
  static const std::vector<std::string> names{"mlp", "wide", "convnet"};
  return names;
}

proto::Job bench_preset(std::string_view name) {
  if (name == "mlp") return classifier(784, {1024, 1024}, 10);
  if (name == "wide") return classifier(4096, {4096, 4096}, 10);
  if (name == "convnet") return convnet();
  SF_FAIL(cat("--model ", name,
              ": no such preset: expected mlp (784-1024-1024-10), wide (4096-4096-4096-10) or convnet "
              "(28x28x1-c32-p-c64-p-128-10)"),
          "or give a job file instead: `shardfit bench JOB.pbtxt` (its model needs input_dim or input_shape)");
}

double bus_bandwidth(double algbw, int ranks) { return ranks > 1 ? algbw * 2.0 * (ranks - 1) / ranks : 0.0; }

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double at = std::clamp(q, 0.0, 1.0) * static_cast<double>(values.size() - 1);
  const auto below = static_cast<size_t>(std::floor(at));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (at - static_cast<double>(below)) * (values[above] - values[below]);
}

BenchReport run_bench(Comm& comm, const BenchConfig& config) {
  const int world = comm.size();
  const int rank = comm.rank();
  const bool strong = config.scaling == Scaling::kStrong;
  const int64_t global_batch = strong ? config.batch_size : config.batch_size * world;

  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  std::optional<Dataset> data;
  LabelLayout layout = LabelLayout::kAsIs;
  int64_t bucket_bytes = GradientReducer::kDefaultBucketBytes;
  Identity id;
  GradientReducer::ReduceDtype reduce_dtype = GradientReducer::ReduceDtype::kFloat32;
  run_agreed(comm, [&] {
    if (comm.is_root()) {
      check_json_path(config.json_path);
      // The timeline is checked as the commands' other outputs are (output_plan.h): never over a file bench reads
      // or the record it appends to, in an existing folder it can write.
      if (!config.timeline.path.empty()) {
        std::vector<InputFile> inputs;
        if (!config.job_path.empty()) inputs.push_back({"the job file", config.job_path});
        if (!config.json_path.empty()) inputs.push_back({"the --json records file", config.json_path});
        check_command_output("--timeline", config.timeline.path, inputs);
      }
    }
    SF_CHECK(config.warmup_steps >= 0 && config.steps >= 1,
             cat("bench: ", config.warmup_steps, " warm-up and ", config.steps,
                 " measured steps: expected --warmup-steps >= 0 and --steps >= 1"));
    SF_CHECK(config.batch_size >= 1, cat("bench: --batch-size ", config.batch_size, ": expected an integer >= 1"));
    SF_CHECK(global_batch >= world,
             cat("--batch-size ", config.batch_size, " in strong scaling at ", world,
                 " ranks leaves a rank without samples: expected a global batch >= the rank count"),
             "raise --batch-size, or use --mode weak (--batch-size is then each rank's batch)");
    const proto::Job& job = config.job;
    reduce_dtype = reduce_dtype_of(job.fit());
    // The synthetic samples take the model's input: input_dim features, or one input_shape tensor (an image).
    const bool shaped = !job.model().has_input_dim() && job.model().input_shape_size() > 0;
    SF_CHECK(
        shaped || (job.model().has_input_dim() && job.model().input_dim() > 0),
        cat(config.model_name,
            ": model.input_dim is not set (nor model.input_shape): bench makes synthetic data and needs its shape"),
        "add e.g. `input_dim: 784`, or `input_shape: [28, 28, 1]` for images, to the job's model { ... }");
    const int64_t local_rows = (global_batch + world - 1) / world;
    const MemoryBudget budget = rank_memory_budget(comm, local_rows, optimizer_slot_count(job.optimizer()));
    model = shaped ? build_model(job, Shape(job.model().input_shape().begin(), job.model().input_shape().end()), budget)
                   : build_model(job, job.model().input_dim(), budget);
    optimizer = make_optimizer(job.optimizer(), model->trainable_count());
    if (job.fit().has_learning_rate()) optimizer->set_learning_rate(job.fit().learning_rate());
    model->initialize(config.seed);
    data.emplace(synthetic_data(*model, job.loss(), global_batch, config.seed));
    layout = prepare_labels(*data, *model, job.loss(), "bench", rank, world);
    bucket_bytes = bucket_bytes_of(job.fit());
    id.model_name = config.model_name;
    id.widths = widths_text(job);
    id.optimizer = optimizer->kind();
    id.loss = job.loss();
    id.dtype_policy = dtype_policy_name(model->dtype_policy());
    id.reduce_dtype = reduce_dtype_name(reduce_dtype);
    id.isa = cpu_isa_name();
    id.mpi = mpi_library_version();
    id.transport = mpi_transport();
    if (comm.is_root()) id.cpu = cpu_model();
  });

  // The data is one global batch: each step is an epoch of one step (bench.h, note 1).
  const ShardPlan plan(global_batch, global_batch, world, rank);
  warn_about_dtype_policy(comm, model->dtype_policy_warning());  // a bf16 bench that runs f32 says so
  model->reserve(std::max<int64_t>(plan.max_local_count(), 1));
  // The step as fit runs it: the control values ride with bucket 0 (dist/train/step_control.h); fit.overlap
  // (--overlap on) and fit.reduce_dtype, as fit reads them.
  CommCrossReplicaSum cross_replica(comm);  // synchronized BatchNormalization's sums (dist/cross_replica_comm.h)
  model->set_cross_replica(&cross_replica);
  GradientReducer reducer(
      comm, model->gradients(), model->gradient_tail().first(StepControl::kSlots), bucket_bytes,
      config.job.fit().overlap() ? GradientReducer::Overlap::kThread : GradientReducer::Overlap::kOff, reduce_dtype);
  cross_replica.route_through(&reducer);  // its sums inside backward keep step order with the buckets
  StepControl control(reducer.control());
  StepOptions options;
  options.seed = config.seed;
  if (config.job.optimizer().has_global_clipnorm()) options.clipnorm = config.job.optimizer().global_clipnorm();
  TrainStep step(*model, *optimizer, reducer, *data, layout, plan, options);
  step.carry_control(&control);
  const std::unique_ptr<Timeline> timeline = make_timeline(comm, config.timeline);
  if (timeline) {
    step.record_to(&timeline->recorder());
    reducer.record_to(&timeline->recorder());
  }

  for (int64_t s = 0; s < config.warmup_steps; ++s) {
    step.begin_epoch(s);
    step.run(0);
  }
  comm.barrier();
  step.reset_phases();
  reducer.reset_timing();
  std::vector<double> step_seconds(static_cast<size_t>(config.steps));
  for (int64_t s = 0; s < config.steps; ++s) {
    step.begin_epoch(config.warmup_steps + s);
    const auto start = Clock::now();
    step.run(0);
    step_seconds[static_cast<size_t>(s)] = seconds_since(start);
  }
  const StepPhases& p = step.phases();
  const double steps = static_cast<double>(p.steps);
  // Without overlap the exchange is the step's allreduce phases; with it those are only what backward left exposed,
  // so the exchange is the communication thread's time inside the calls (GradientReducer::seconds; bench.h, note 3).
  const bool overlapped = reducer.overlap() != GradientReducer::Overlap::kOff;
  const double allreduce_seconds =
      comm.allreduce_min(overlapped ? reducer.seconds() / steps : (p.allreduce_issued + p.allreduce_waited) / steps);

  // The raw allreduce of the same bytes, in one call (zeros: no value grows over the repetitions).
  Measured m;
  m.ranks = world;
  m.parameters = model->param_count();
  m.buckets = static_cast<int64_t>(reducer.buckets().size());
  m.bucket_bytes = reducer.bucket_bytes();
  m.overlap = overlapped;
  m.allreduce_seconds = world > 1 ? allreduce_seconds : 0.0;
  if (world > 1) {
    // The gradients' bytes: the 12 bytes of control values bucket 0 also carries are left out (GradientReducer,
    // design note 8), as they are from the timeline's bucket spans; they change no figure at the precision shown.
    // Under --reduce-dtype bfloat16 the bf16 buckets count 2 bytes a gradient (GradientReducer, design note 12); the
    // raw allreduce below sends the same bytes as floats.
    m.bytes_per_step = reducer.wire_bytes();
    m.raw_repetitions = std::max<int64_t>(config.steps, 3);
    std::vector<float> buffer(static_cast<size_t>(m.bytes_per_step) / sizeof(float), 0.0F);
    comm.allreduce_sum(std::span<float>(buffer));  // first touch and MPI's own warm-up
    comm.barrier();
    const auto start = Clock::now();
    for (int64_t r = 0; r < m.raw_repetitions; ++r) comm.allreduce_sum(std::span<float>(buffer));
    m.raw_seconds = comm.allreduce_min(seconds_since(start) / static_cast<double>(m.raw_repetitions));
  }

  // Every rank's steps and phase means, and where it ran, to rank 0.
  const std::vector<double> mine = {p.gather / steps,
                                    p.forward / steps,
                                    p.backward / steps,
                                    p.allreduce_issued / steps,
                                    p.allreduce_waited / steps,
                                    p.optimizer / steps,
                                    mean(step_seconds),
                                    static_cast<double>(step.local_count()),
                                    static_cast<double>(peak_rss_bytes())};
  m.by_rank = comm.gather_to_root(std::span<const double>(mine));
  m.step_seconds = comm.gather_to_root(std::span<const double>(step_seconds));
  const std::vector<std::string> placements = comm.gather_text_to_root(this_rank_placement().encode());
  const int64_t timeline_steps = timeline ? timeline->write(reducer.wire_bytes(), m.buckets) : 0;

  BenchReport report;
  run_agreed(comm, [&] {
    if (!comm.is_root()) return;
    std::vector<RankPlacement> ranks;
    std::set<std::string> hosts;
    for (const auto& text : placements) {
      ranks.push_back(RankPlacement::decode(text));
      if (hosts.insert(ranks.back().host).second) {
        m.host_names += (m.host_names.empty() ? "" : ",") + ranks.back().host;
      }
    }
    m.hosts = static_cast<int>(hosts.size());
    m.oversubscribed = !placement_warnings(ranks).empty();
    m.threads = omp_get_max_threads();
    m.global_batch = global_batch;
    m.local_min = slice_of(global_batch, world - 1, world).count;
    m.local_max = slice_of(global_batch, 0, world).count;
    report.table = table_text(config, id, m);
    if (timeline) {
      report.table +=
          cat("  timeline         ", timeline_steps, " step(s) of --timeline-steps ", config.timeline.steps.first, ":",
              config.timeline.steps.last, " -> ", config.timeline.path.string(), "\n");
    }
    report.record = record_text(config, id, m);
    if (!config.json_path.empty()) append_record(config.json_path, report.record);
  });
  return report;
}

}  // namespace shardfit
