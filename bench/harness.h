// What dense_bench and conv_bench share: their common command-line options, the interleaved timing of candidates
// (medians of repeats), the machine's load average for the report, CSV quoting and uniform fill of the inputs.
// Benchmarks only: it checks no numbers.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/random.h"

namespace shardfit::bench {

// The options every kernel benchmark takes: --csv PATH --batches 32,128,512 --repeats N --min-seconds S
// --min-iterations N. A benchmark's own Options derive from it and add their flags.
struct TimingOptions {
  std::vector<int64_t> batches = {32, 128, 512};
  int repeats = 7;
  double min_seconds = 0.2;  // per repeat of one candidate
  int min_iterations = 10;   // per repeat of one candidate
  std::string csv_path;
};

// Takes arg (and its value, through `value`) when it is one of TimingOptions' flags; false for any other.
inline bool take_timing_option(const std::string& arg, const std::function<std::string()>& value,
                               TimingOptions& options) {
  if (arg == "--csv") {
    options.csv_path = value();
  } else if (arg == "--batches") {
    options.batches.clear();
    std::stringstream list(value());
    for (std::string item; std::getline(list, item, ',');) options.batches.push_back(std::stoll(item));
  } else if (arg == "--repeats") {
    options.repeats = std::stoi(value());
  } else if (arg == "--min-seconds") {
    options.min_seconds = std::stod(value());
  } else if (arg == "--min-iterations") {
    options.min_iterations = std::stoi(value());
  } else {
    return false;
  }
  return true;
}

// "" when the options can run, else what is wrong with them.
inline std::string timing_options_problem(const TimingOptions& options) {
  if (options.batches.empty() || options.repeats < 1) return "need at least one batch and one repeat";
  for (const int64_t batch : options.batches) {
    if (batch < 1) return "batch sizes must be positive";
  }
  return "";
}

using Clock = std::chrono::steady_clock;

inline double seconds_for(const std::function<void()>& run, int64_t iterations) {
  const auto start = Clock::now();
  for (int64_t i = 0; i < iterations; ++i) run();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Candidate {
  Candidate() = default;
  explicit Candidate(std::function<void()> f) : run(std::move(f)) {}

  std::function<void()> run;
  int64_t iterations = 0;
  std::vector<double> per_iteration;  // seconds, one per repeat

  double median() const {
    std::vector<double> sorted = per_iteration;
    std::sort(sorted.begin(), sorted.end());
    const size_t mid = sorted.size() / 2;
    return sorted.size() % 2 == 1 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
  }
  double fastest() const { return *std::min_element(per_iteration.begin(), per_iteration.end()); }
};

// Candidates compared with each other (the layer and the reference of one piece) form a group. Within a group the
// calls alternate one by one (A B A B ...), each timed on its own, so a slow phase of the shared machine -- even
// one shorter than a repeat -- lands on every member alike. A repeat is `rounds` such rounds, enough for each
// member to run >= min_seconds and >= min_iterations; groups take turns per repeat.
using Group = std::vector<Candidate*>;

inline void measure_interleaved(const std::vector<Group>& groups, int repeats, double min_seconds, int min_iterations) {
  std::vector<int64_t> rounds(groups.size(), min_iterations);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (Candidate* c : groups[g]) {
      // First executions pay for page faults, oneDNN's JIT and the OpenMP pool start; keep them out.
      int64_t warm = 0;
      const auto start = Clock::now();
      while (warm < 3 || std::chrono::duration<double>(Clock::now() - start).count() < 0.02) {
        c->run();
        ++warm;
      }
      const double one = seconds_for(c->run, 5) / 5;
      rounds[g] = std::max<int64_t>(rounds[g], static_cast<int64_t>(std::ceil(min_seconds / one)));
      c->per_iteration.clear();
    }
  }
  for (int r = 0; r < repeats; ++r) {
    for (size_t g = 0; g < groups.size(); ++g) {
      std::vector<double> total(groups[g].size(), 0.0);
      for (int64_t i = 0; i < rounds[g]; ++i) {
        for (size_t c = 0; c < groups[g].size(); ++c) {
          const auto start = Clock::now();
          groups[g][c]->run();
          total[c] += std::chrono::duration<double>(Clock::now() - start).count();
        }
      }
      for (size_t c = 0; c < groups[g].size(); ++c) {
        groups[g][c]->iterations = rounds[g];
        groups[g][c]->per_iteration.push_back(total[c] / static_cast<double>(rounds[g]));
      }
    }
  }
}

inline std::string load_average() {
  double load[3] = {};
  if (getloadavg(load, 3) != 3) return "unknown";
  char text[64];
  std::snprintf(text, sizeof text, "%.2f %.2f %.2f", load[0], load[1], load[2]);
  return text;
}

inline std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return quoted + "\"";
}

// Uniform in [-limit, limit] (values do not change fp32 timing, but infinities would).
inline void fill_uniform(FloatBuffer& buffer, uint64_t seed, double limit) {
  Rng rng(seed);
  for (int64_t i = 0; i < buffer.count(); ++i) buffer[i] = static_cast<float>(rng.uniform(-limit, limit));
}

}  // namespace shardfit::bench
