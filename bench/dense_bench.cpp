// dense_bench: shardfit's Dense forward+backward at the MLP 784-512-512-10 against oneDNN's own plain matmul
// throughput at the same sizes, measured side by side in one run. It times and reports; it checks no numbers.
//
// Why the reference and the method are what they are:
//  1. Each of Dense's matmuls (forward, backward-data, backward-weights) is paired with a plain oneDNN matmul of
//     the same (M, K, N): row-major src (M, K) x row-major weights (K, N), no bias, no post-ops, created once and
//     executed many times over buffers wired as Dense's are (so cache reuse between layers is the same on both
//     sides). That is oneDNN with its preferred plain layouts; anything Dense adds (bias, fused relu, operands
//     read transposed through strides, eltwise backward, bias column sums) shows up as a ratio below 1. The loss
//     and the optimizer are not part of Dense and are not timed.
//  2. ratio = reference time / Dense time over the same FLOPs. The two alternate call by call (A B A B ...),
//     each call timed on its own, so a noisy shared machine slows both alike; each repeat is >= 0.2 s of calls
//     per side and the median of the repeats decides, so one bad repeat does not. The ratio of the fastest
//     repeats is printed too: noise only ever adds time.
//  3. The per-primitive breakdown times the MLP's own Dense layers piece by piece through Dense::pieces(): each
//     piece runs the same primitive over the same memory (or the same loop) that Dense's forward()/backward()
//     run, so the figures are the production code's and cannot drift from it. bench/ keeps no copy of Dense.
//     (The --prototype option, a fused relu-backward + bias-sums loop timed on a copy of Dense that this file
//     used to keep, went with that copy; it had measured no gain.)
//  4. --dtype bf16 (or both): Dense under mixed_bfloat16 (kernels/precision.h) against the bf16 ceiling, plain
//     oneDNN matmuls with bf16 src and weights and f32 dst at the same (M, K, N) -- the dst Dense writes, so
//     the gap is Dense's additions plus its conversions. The bf16 Dense step includes the once-per-step refresh
//     of the bf16 weight copy, as the model's step does. With "both", the fp32 and bf16 steps and their
//     references alternate in one group of four, so bf16 / fp32 is a ratio measured side by side too. The bf16
//     layers are wired as the model wires them: the activations between two of them bf16 where the producer
//     writes and the consumer reads bf16 (Model::activation_is_bf16), so L1 and L2 convert no x. The reference
//     keeps its f32 dst there, the same ceiling as before bf16 activations.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "kernels/buffer.h"
#include "kernels/dense.h"
#include "kernels/engine.h"
#include "kernels/precision.h"
#include "kernels/random.h"

namespace shardfit {
namespace {

using dnnl::memory;

// ---------------------------------------------------------------------------------------------------------------
// Command line

struct Options : bench::TimingOptions {
  Options() {
    batches = {32, 64, 128, 256, 512};
    min_iterations = 50;
  }
  bool primitives = true;  // the per-primitive breakdown (shorter repeats: it is for diagnosis)
  bool fp32 = true;        // --dtype fp32 | bf16 | both
  bool bf16 = false;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "dense_bench: " << problem << "\n"
            << "usage: dense_bench [--csv PATH] [--batches 32,64,...] [--repeats N] [--min-seconds S]\n"
            << "                   [--min-iterations N] [--no-primitives] [--dtype fp32|bf16|both]\n"
            << "Threads come from OMP_NUM_THREADS.\n";
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (bench::take_timing_option(arg, value, options)) {
      continue;
    }
    if (arg == "--no-primitives") {
      options.primitives = false;
    } else if (arg == "--dtype") {
      const std::string dtype = value();
      if (dtype != "fp32" && dtype != "bf16" && dtype != "both") usage("--dtype takes fp32, bf16 or both");
      options.fp32 = dtype != "bf16";
      options.bf16 = dtype != "fp32";
    } else {
      usage("unknown argument " + arg);
    }
  }
  if (const std::string problem = bench::timing_options_problem(options); !problem.empty()) usage(problem);
  return options;
}

// ---------------------------------------------------------------------------------------------------------------
// Timing: interleaved repeats, medians

using bench::Candidate;
using bench::Clock;
using bench::csv_field;
using bench::fill_uniform;
using bench::Group;
using bench::load_average;
using bench::measure_interleaved;

// ---------------------------------------------------------------------------------------------------------------
// Shapes and buffers

constexpr int64_t kInput = 784;
constexpr int64_t kHidden = 512;
constexpr int64_t kClasses = 10;

struct LayerShape {
  int64_t in;
  int64_t out;
  bool relu;
};
constexpr LayerShape kLayers[] = {{kInput, kHidden, true}, {kHidden, kHidden, true}, {kHidden, kClasses, false}};
constexpr int kLayerCount = 3;

// "L1 bwd-data": layer index and what the piece computes. Built by appending: GCC 12 reports a false
// -Wrestrict on "L" + std::to_string(l).
std::string piece_name(int layer, const char* what) {
  std::string name = "L";
  name += std::to_string(layer);
  name += ' ';
  name += what;
  return name;
}

// Weights use Glorot's limit, as Dense's default initializer, so activations stay O(1) through the layers on every
// side.
double glorot_limit(int64_t in, int64_t out) { return std::sqrt(6.0 / static_cast<double>(in + out)); }

// The activations and gradients of one batch: act[0] is the input, act[l + 1] layer l's output; grad[l] is
// d loss / d act[l] (grad[0] is never written: the first layer's dx is not needed).
struct MlpBuffers {
  FloatBuffer act[kLayerCount + 1];
  FloatBuffer grad[kLayerCount + 1];
  FloatBuffer scratch[kLayerCount];

  explicit MlpBuffers(int64_t n) {
    act[0].resize(n * kInput);
    for (int l = 0; l < kLayerCount; ++l) {
      act[l + 1].resize(n * kLayers[l].out);
      grad[l + 1].resize(n * kLayers[l].out);
      scratch[l].resize(n * kLayers[l].out);
    }
    fill_uniform(act[0], 1, 1.0);
    fill_uniform(grad[kLayerCount], 2, 1.0);  // d loss / d logits: stands in for the loss, which is not timed
  }
};

// ---------------------------------------------------------------------------------------------------------------
// One timed piece of a step: a oneDNN primitive or a loop of ours, with its matmul size when it is one.

struct Step {
  std::string name;
  int64_t m = 0, k = 0, n = 0;  // 0 when not a matmul
  bool backward = false;
  std::string impl;
  std::function<void()> run;
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n); }
};

Step primitive_step(std::string name, int64_t m, int64_t k, int64_t n, bool backward,
                    const dnnl::primitive_desc_base& pd, dnnl::primitive primitive,
                    std::vector<std::pair<int, memory>> args) {
  auto call = std::make_shared<PrimitiveCall>(std::move(primitive), std::move(args));
  return {std::move(name), m, k, n, backward, pd.impl_info_str(), [call] { call->execute(); }};
}

// ---------------------------------------------------------------------------------------------------------------
// Side A: shardfit's own Dense layers, called through the Layer interface exactly as the model calls them.

class ShardfitMlp {
 public:
  ShardfitMlp(int64_t n, bool bf16) : n_(n), buffers_(n) {
    int64_t count = 0;
    for (int l = 0; l < kLayerCount; ++l) {
      Dense::Options options;
      options.activation = kLayers[l].relu ? ActivationKind::kRelu : ActivationKind::kLinear;
      options.bf16 = bf16;
      layers_.push_back(std::make_unique<Dense>(piece_name(l, "dense"), kLayers[l].in, kLayers[l].out, options));
      count += layers_.back()->param_count();
    }
    params_.resize(count);
    grads_.resize(count);
    if (bf16) {
      params_bf16_.resize(count);
    }
    Rng rng(7);
    int64_t offset = 0;
    for (int l = 0; l < kLayerCount; ++l) {
      layers_[l]->bind(params_.data() + offset, grads_.data() + offset);
      if (bf16) layers_[l]->bind_compute_weights(params_bf16_.data() + offset);
      layers_[l]->initialize(rng);
      offset += layers_[l]->param_count();
    }
    for (int l = 1; l < kLayerCount; ++l) {  // bf16 edges, as Model chooses them
      if (layers_[l - 1]->writes_bf16_output() && layers_[l]->reads_bf16_input()) {
        act_bf16_[l].resize(n * kLayers[l].in);
      }
    }
    for (int l = 0; l < kLayerCount; ++l) {
      LayerBuffers b;
      b.x = buffers_.act[l].data();
      b.y = buffers_.act[l + 1].data();
      b.dy = buffers_.grad[l + 1].data();
      b.dx = l == 0 ? nullptr : buffers_.grad[l].data();
      b.scratch = kLayers[l].relu ? buffers_.scratch[l].data() : nullptr;
      if (act_bf16_[l].count() > 0) {
        b.x = nullptr;
        b.x_bf16 = act_bf16_[l].data();
      }
      if (act_bf16_[l + 1].count() > 0) {
        b.y = nullptr;
        b.y_bf16 = act_bf16_[l + 1].data();
      }
      layers_[l]->prepare(n, b);
    }
  }

  // Under bf16 the forward starts with the refresh of the weight copy, as the model's first forward after an
  // update does.
  void forward() {
    refresh();
    const BatchContext ctx{.training = true};
    for (auto& layer : layers_) layer->forward(n_, ctx);
  }
  void backward() {
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) (*it)->backward(n_);
  }

  // The layers' own pieces (Dense::pieces) in the order forward() then backward() above run them: "L1 bwd-data"
  // executes layer 1's backward-data primitive, the very one its backward() executes.
  std::vector<Step> pieces() {
    std::vector<Step> all;
    if (params_bf16_.count() > 0) {
      all.push_back({"weights-to-bf16", 0, 0, 0, false, "to_bf16 array (OpenMP)", [this] { refresh(); }});
    }
    std::vector<Step> backward[kLayerCount];
    for (int l = 0; l < kLayerCount; ++l) {
      for (DensePiece& piece : layers_[l]->pieces(n_)) {
        Step step{piece_name(l, piece.name.c_str()),
                  piece.m,
                  piece.k,
                  piece.n,
                  piece.backward,
                  std::move(piece.impl),
                  std::move(piece.run)};
        (piece.backward ? backward[l] : all).push_back(std::move(step));
      }
    }
    for (int l = kLayerCount - 1; l >= 0; --l) {  // backward runs from the last layer
      for (Step& step : backward[l]) all.push_back(std::move(step));
    }
    return all;
  }

 private:
  int64_t n_;
  MlpBuffers buffers_;
  FloatBuffer params_;
  FloatBuffer grads_;
  Bf16Buffer params_bf16_;                // bf16 only: the model's weight copy
  Bf16Buffer act_bf16_[kLayerCount + 1];  // bf16 only: [l] layer l's input where it is a bf16 edge, else empty
  // bf16 only: params_ -> params_bf16_, the conversion Model::refresh_compute_weights makes.
  void refresh() {
    if (params_bf16_.count() > 0) to_bf16(params_.data(), params_bf16_.data(), params_bf16_.count());
  }
  std::vector<std::unique_ptr<Dense>> layers_;
};

// ---------------------------------------------------------------------------------------------------------------
// Side B: the reference. Plain row-major (M, K) x (K, N) -> (M, N) oneDNN matmuls, no bias, no post-ops, one per
// Dense matmul and in the same order. They run over the same kind of buffers as Dense, wired the same way (layer
// l's output is layer l+1's input, dz feeds both backward matmuls), so both sides touch the same bytes and
// neither gains cache reuse the other lacks. Where Dense reads an operand transposed, the reference reads the
// same buffer as a plain row-major matrix of the transposed shape: other values, same bytes, same timing.

// Under bf16 the operands are bf16 copies of the same values (x and dz per layer, the weights), read as Dense
// reads its own copies, and every dst stays f32.
class ReferenceMatmuls {
 public:
  ReferenceMatmuls(int64_t batch, bool bf16) : bf16_(bf16), buffers_(batch) {
    const int64_t n = batch;
    std::vector<Step> per_layer_backward[kLayerCount];
    for (int l = 0; l < kLayerCount; ++l) {
      const auto [in, out, relu] = kLayers[l];
      float* w = new_buffer(in * out, 30 + l, glorot_limit(in, out));
      float* dw = new_buffer(in * out, 0, 0);
      float* x = buffers_.act[l].data();
      float* y = buffers_.act[l + 1].data();
      float* dz = relu ? buffers_.scratch[l].data() : buffers_.grad[l + 1].data();  // as Dense: dz feeds both
      float* dx = buffers_.grad[l].data();
      if (relu) fill_uniform(buffers_.scratch[l], 40 + l, 1.0);  // Dense's relu backward would have written it
      const void* x_op = bf16 ? bf16_copy(x, n * in) : static_cast<const void*>(x);
      const void* w_op = bf16 ? bf16_copy(w, in * out) : static_cast<const void*>(w);
      const void* dz_op = bf16 ? bf16_copy(dz, n * out) : static_cast<const void*>(dz);
      steps_.push_back(plain_matmul(piece_name(l, "fwd"), false, n, in, out, x_op, w_op, y));
      auto& bwd = per_layer_backward[l];
      if (l > 0) bwd.push_back(plain_matmul(piece_name(l, "bwd-data"), true, n, out, in, dz_op, w_op, dx));
      bwd.push_back(plain_matmul(piece_name(l, "bwd-weights"), true, in, n, out, x_op, dz_op, dw));
    }
    for (int l = kLayerCount - 1; l >= 0; --l) {
      for (Step& s : per_layer_backward[l]) steps_.push_back(std::move(s));
    }
  }
  const std::vector<Step>& steps() const { return steps_; }
  void forward() const {
    for (const Step& s : steps_)
      if (!s.backward) s.run();
  }
  void backward() const {
    for (const Step& s : steps_)
      if (s.backward) s.run();
  }

 private:
  // c (m, n) f32 = a (m, k) . b (k, n), all row-major; a and b f32, or bf16 under bf16_.
  Step plain_matmul(std::string name, bool backward, int64_t m, int64_t k, int64_t n, const void* a, const void* b,
                    float* c) const {
    const auto a_md = row_major(m, k, bf16_ ? kBf16 : kF32);
    const auto b_md = row_major(k, n, bf16_ ? kBf16 : kF32);
    const auto c_md = row_major(m, n);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), cpu_engine());
    return primitive_step(std::move(name), m, k, n, backward, pd, dnnl::matmul(pd),
                          {{DNNL_ARG_SRC, memory(a_md, cpu_engine(), const_cast<void*>(a))},
                           {DNNL_ARG_WEIGHTS, memory(b_md, cpu_engine(), const_cast<void*>(b))},
                           {DNNL_ARG_DST, wrap(c_md, c)}});
  }
  const uint16_t* bf16_copy(const float* values, int64_t count) {
    Bf16Buffer& copy = copies_.emplace_back(count);
    for (int64_t i = 0; i < count; ++i) copy.data()[i] = to_bf16(values[i]);
    return copy.data();
  }
  float* new_buffer(int64_t count, uint64_t seed, double limit) {
    params_.emplace_back(count);
    if (seed != 0) fill_uniform(params_.back(), seed, limit);
    return params_.back().data();
  }

  bool bf16_;
  MlpBuffers buffers_;
  std::deque<FloatBuffer> params_;  // a deque keeps addresses stable while it grows
  std::deque<Bf16Buffer> copies_;   // bf16 operands
  std::vector<Step> steps_;
};

// ---------------------------------------------------------------------------------------------------------------
// Reporting

struct CsvRow {
  int threads;
  int64_t batch;
  std::string scope;  // step, primitive, primitive-in-step
  std::string name;   // fwd+bwd / fwd / bwd for steps, "L1 bwd-data" etc. for primitives
  int64_t m, k, n;    // 0 unless a matmul
  double flops;
  double shardfit_seconds;   // median per call
  double reference_seconds;  // 0 when the piece has no matmul counterpart
  double shardfit_fastest;   // fastest repeat
  double reference_fastest;
  std::string shardfit_impl;
  std::string reference_impl;
};

void write_csv(const std::string& path, const std::vector<CsvRow>& rows) {
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write " + path);
  file << "threads,batch,scope,name,m,k,n,flops,shardfit_s,reference_s,shardfit_gflops,reference_gflops,ratio,"
          "shardfit_fastest_s,reference_fastest_s,ratio_fastest,shardfit_impl,reference_impl\n";
  char line[512];
  for (const CsvRow& r : rows) {
    const bool paired = r.reference_seconds > 0;
    const double a = r.flops > 0 ? r.flops / r.shardfit_seconds * 1e-9 : 0;
    const double b = r.flops > 0 && paired ? r.flops / r.reference_seconds * 1e-9 : 0;
    std::snprintf(line, sizeof line, "%d,%lld,%s,%s,%lld,%lld,%lld,%.0f,%.9g,%.9g,%.2f,%.2f,%.4f,%.9g,%.9g,%.4f,",
                  r.threads, static_cast<long long>(r.batch), r.scope.c_str(), r.name.c_str(),
                  static_cast<long long>(r.m), static_cast<long long>(r.k), static_cast<long long>(r.n), r.flops,
                  r.shardfit_seconds, r.reference_seconds, a, b, paired ? r.reference_seconds / r.shardfit_seconds : 0,
                  r.shardfit_fastest, r.reference_fastest, paired ? r.reference_fastest / r.shardfit_fastest : 0);
    file << line << csv_field(r.shardfit_impl) << "," << csv_field(r.reference_impl) << "\n";
  }
}

// Each piece timed inside whole steps: Dense's step run piece by piece and the reference step alternate, every
// call timed on its own.
// Unlike a piece repeated alone, this sees the caches and thread placement the previous piece left behind.
// Returns the median over repeats of the mean time per call, for every piece of `ours` then of `theirs`.
std::vector<double> in_step_times(const std::vector<const Step*>& ours, const std::vector<const Step*>& theirs,
                                  int repeats, double min_seconds, int min_rounds) {
  std::vector<const Step*> all = ours;
  all.insert(all.end(), theirs.begin(), theirs.end());
  auto one_round = [&all](std::vector<double>& total) {
    for (size_t i = 0; i < all.size(); ++i) {
      const auto start = Clock::now();
      all[i]->run();
      total[i] += std::chrono::duration<double>(Clock::now() - start).count();
    }
  };
  std::vector<double> scratch(all.size(), 0.0);
  const auto start = Clock::now();
  for (int i = 0; i < 3; ++i) one_round(scratch);  // warm-up
  const double round_seconds = std::chrono::duration<double>(Clock::now() - start).count() / 3;
  const int64_t rounds = std::max<int64_t>(min_rounds, static_cast<int64_t>(std::ceil(min_seconds / round_seconds)));
  std::vector<std::vector<double>> per_repeat(all.size());
  for (int r = 0; r < repeats; ++r) {
    std::vector<double> total(all.size(), 0.0);
    for (int64_t k = 0; k < rounds; ++k) one_round(total);
    for (size_t i = 0; i < all.size(); ++i) per_repeat[i].push_back(total[i] / static_cast<double>(rounds));
  }
  std::vector<double> medians;
  for (auto& values : per_repeat) {
    std::sort(values.begin(), values.end());
    medians.push_back(values[values.size() / 2]);
  }
  return medians;
}

// Per-primitive table: each of Dense's pieces beside the reference matmul of the same name (and so the same
// size), timed alone (a piece and its reference alternating) and inside whole steps.
void time_primitives(const std::string& scope, int threads, int64_t batch, const std::vector<Step>& ours,
                     const ReferenceMatmuls& reference, const Options& options, std::vector<CsvRow>& rows) {
  std::vector<const Step*> mine;
  for (const Step& s : ours) mine.push_back(&s);
  std::vector<const Step*> theirs;
  for (const Step& r : reference.steps()) theirs.push_back(&r);
  std::vector<int> partner(mine.size(), -1);  // index into theirs
  std::deque<Candidate> a, b;
  std::vector<Group> groups;  // each piece with its reference matmul
  for (size_t i = 0; i < mine.size(); ++i) {
    groups.push_back({&a.emplace_back(mine[i]->run)});
    for (size_t k = 0; k < theirs.size(); ++k) {
      if (theirs[k]->name == mine[i]->name) partner[i] = static_cast<int>(k);
    }
    b.emplace_back(partner[i] >= 0 ? theirs[partner[i]]->run : std::function<void()>());
    if (partner[i] >= 0) groups.back().push_back(&b.back());
  }
  // Diagnosis only: fewer and shorter repeats than the step figures.
  const int repeats = std::max(3, options.repeats / 2);
  measure_interleaved(groups, repeats, options.min_seconds / 4, 20);
  const std::vector<double> in_step = in_step_times(mine, theirs, repeats, options.min_seconds, 20);

  std::printf("  %-17s %-13s %23s | %23s |\n", "", "", "alone", "inside whole steps");
  std::printf("  %-17s %-13s %8s %8s %5s | %8s %8s %5s | %7s  %s | %s\n", scope.c_str(), "M x K x N", "ours us",
              "ref us", "ratio", "ours us", "ref us", "ratio", "GFLOP/s", "our impl", "reference impl");
  for (size_t i = 0; i < mine.size(); ++i) {
    const Step& s = *mine[i];
    const Step* p = partner[i] >= 0 ? theirs[partner[i]] : nullptr;
    const double t = a[i].median();
    const double r = p != nullptr ? b[i].median() : 0;
    const double t_in = in_step[i];
    const double r_in = p != nullptr ? in_step[mine.size() + partner[i]] : 0;
    char size[32] = "-";
    if (s.m > 0) {
      std::snprintf(size, sizeof size, "%lldx%lldx%lld", static_cast<long long>(s.m), static_cast<long long>(s.k),
                    static_cast<long long>(s.n));
    }
    char alone[48] = "       -     -";
    char inside[48] = "       -     -";
    if (p != nullptr) {
      std::snprintf(alone, sizeof alone, "%8.1f %5.2f", r * 1e6, r / t);
      std::snprintf(inside, sizeof inside, "%8.1f %5.2f", r_in * 1e6, r_in / t_in);
    }
    char gflops[16] = "      -";
    if (s.m > 0) std::snprintf(gflops, sizeof gflops, "%7.1f", s.flops() / t_in * 1e-9);
    std::printf("  %-17s %-13s %8.1f %s | %8.1f %s | %s  %s | %s\n", s.name.c_str(), size, t * 1e6, alone, t_in * 1e6,
                inside, gflops, s.impl.c_str(), p != nullptr ? p->impl.c_str() : "-");
    const std::string ref_impl = p != nullptr ? p->impl : "";
    rows.push_back({threads, batch, scope, s.name, s.m, s.k, s.n, s.flops(), t, r, a[i].fastest(),
                    p != nullptr ? b[i].fastest() : 0, s.impl, ref_impl});
    rows.push_back({threads, batch, scope + "-in-step", s.name, s.m, s.k, s.n, s.flops(), t_in, r_in, t_in, r_in,
                    s.impl, ref_impl});
  }
  double ours_total = 0, theirs_total = 0;
  for (size_t i = 0; i < in_step.size(); ++i) (i < mine.size() ? ours_total : theirs_total) += in_step[i];
  std::printf("  %-17s %-13s %8s %8s %5s | %8.1f %8.1f %5.2f |\n", "total", "", "", "", "", ours_total * 1e6,
              theirs_total * 1e6, theirs_total / ours_total);
}

// One network's step, forward and backward candidates.
struct NetCandidates {
  Candidate step, forward, backward;
  template <typename Net>
  explicit NetCandidates(Net& net)
      : step([&net] {
          net.forward();
          net.backward();
        }),
        forward([&net] { net.forward(); }),
        backward([&net] { net.backward(); }) {}
};

struct BatchResult {
  int64_t batch = 0;
  double fwd_flops = 0, bwd_flops = 0;
  double dense[3] = {}, reference[3] = {};  // median seconds: step, fwd, bwd
  double dense_fastest = 0, reference_fastest = 0;
};

void add_step_rows(std::vector<CsvRow>& rows, const std::string& scope, int threads, const BatchResult& r,
                   const NetCandidates& ours, const NetCandidates& reference) {
  const double flops[3] = {r.fwd_flops + r.bwd_flops, r.fwd_flops, r.bwd_flops};
  const char* names[3] = {"fwd+bwd", "fwd", "bwd"};
  const Candidate* a[3] = {&ours.step, &ours.forward, &ours.backward};
  const Candidate* b[3] = {&reference.step, &reference.forward, &reference.backward};
  for (int i = 0; i < 3; ++i) {
    rows.push_back({threads, r.batch, scope, names[i], 0, 0, 0, flops[i], a[i]->median(), b[i]->median(),
                    a[i]->fastest(), b[i]->fastest(), "", ""});
  }
}

void print_summary_row(const BatchResult& r, int threads, const double* ours, double ours_fastest, const char* what) {
  const double flops = r.fwd_flops + r.bwd_flops;
  std::printf("%6lld %7d %9.3f %9.0f %8.1f %8.1f %6.2f %9.2f %9.2f %8.2f  %s\n", static_cast<long long>(r.batch),
              threads, ours[0] * 1e3, r.batch / ours[0], flops / ours[0] * 1e-9, flops / r.reference[0] * 1e-9,
              r.reference[0] / ours[0], r.reference[1] / ours[1], r.reference[2] / ours[2],
              r.reference_fastest / ours_fastest, what);
}

int run(const Options& options) {
  const int threads = omp_get_max_threads();
  const char* env_threads = std::getenv("OMP_NUM_THREADS");
  const dnnl_version_t* version = dnnl_version();
  std::printf("dense_bench: shardfit Dense fwd+bwd, MLP 784-512-512-10 (relu, relu, linear), %s\n",
              options.fp32 && options.bf16 ? "fp32 and bf16"
              : options.bf16               ? "bf16"
                                           : "fp32");
  std::printf("oneDNN %d.%d.%d, effective ISA %s; OMP_NUM_THREADS=%s (omp_get_max_threads %d); load average %s\n",
              version->major, version->minor, version->patch, cpu_isa_name().c_str(),
              env_threads != nullptr ? env_threads : "(unset)", threads, load_average().c_str());
  std::printf(
      "reference: plain row-major (M,K)x(K,N) oneDNN matmuls of the same sizes, no bias, no post-ops.\n"
      "ratio = reference time / Dense time (same FLOPs); calls alternate A B A B; medians of %d repeats of\n"
      ">= %.2f s and >= %d calls per side.\n\n",
      options.repeats, options.min_seconds, options.min_iterations);

  std::vector<CsvRow> rows;
  std::vector<BatchResult> results;  // per batch: fp32 then bf16, as asked
  std::vector<bool> results_bf16;
  std::vector<bool> precisions;  // bf16?
  if (options.fp32) precisions.push_back(false);
  if (options.bf16) precisions.push_back(true);
  for (const int64_t batch : options.batches) {
    // Both precisions' nets exist side by side; their steps alternate in one group, their halves pairwise.
    std::vector<std::unique_ptr<ReferenceMatmuls>> references;
    std::vector<std::unique_ptr<ShardfitMlp>> nets;
    std::deque<NetCandidates> ours, theirs;
    Group steps;
    std::vector<Group> halves;
    for (const bool bf16 : precisions) {
      references.push_back(std::make_unique<ReferenceMatmuls>(batch, bf16));
      nets.push_back(std::make_unique<ShardfitMlp>(batch, bf16));
      nets.back()->forward();  // the backward-only candidates reuse these activations
      NetCandidates& a = ours.emplace_back(*nets.back());
      NetCandidates& b = theirs.emplace_back(*references.back());
      steps.push_back(&a.step);
      steps.push_back(&b.step);
      halves.push_back({&a.forward, &b.forward});
      halves.push_back({&a.backward, &b.backward});
    }
    measure_interleaved({steps}, options.repeats, options.min_seconds, options.min_iterations);
    measure_interleaved(halves, options.repeats, options.min_seconds, options.min_iterations);

    for (size_t p = 0; p < precisions.size(); ++p) {
      const bool bf16 = precisions[p];
      const std::string suffix = bf16 ? "-bf16" : "";
      BatchResult r;
      r.batch = batch;
      for (const Step& s : references[p]->steps()) (s.backward ? r.bwd_flops : r.fwd_flops) += s.flops();
      const NetCandidates* sets[2] = {&ours[p], &theirs[p]};
      double* medians[2] = {r.dense, r.reference};
      for (int s = 0; s < 2; ++s) {
        medians[s][0] = sets[s]->step.median();
        medians[s][1] = sets[s]->forward.median();
        medians[s][2] = sets[s]->backward.median();
      }
      r.dense_fastest = ours[p].step.fastest();
      r.reference_fastest = theirs[p].step.fastest();
      add_step_rows(rows, "step" + suffix, threads, r, ours[p], theirs[p]);
      const double flops = r.fwd_flops + r.bwd_flops;
      std::printf("batch %lld, %s: Dense %.3f ms/step (%.1f GFLOP/s), reference %.3f ms (%.1f GFLOP/s), ratio %.2f\n",
                  static_cast<long long>(batch), bf16 ? "bf16" : "fp32", r.dense[0] * 1e3, flops / r.dense[0] * 1e-9,
                  r.reference[0] * 1e3, flops / r.reference[0] * 1e-9, r.reference[0] / r.dense[0]);
      if (options.primitives) {
        time_primitives("primitive" + suffix, threads, batch, nets[p]->pieces(), *references[p], options, rows);
      }
      results.push_back(r);
      results_bf16.push_back(bf16);
    }
    if (precisions.size() == 2) {
      const BatchResult& f = results[results.size() - 2];
      const BatchResult& b = results.back();
      std::printf("batch %lld: bf16 step / fp32 step speed %.2f (Dense), %.2f (reference matmuls)\n",
                  static_cast<long long>(batch), f.dense[0] / b.dense[0], f.reference[0] / b.reference[0]);
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  std::printf(
      "Summary, %d thread(s), load average %s at the end. ratio = reference time / ours; 'fastest' is\n"
      "the ratio of the fastest repeats. Dense = kernels/dense.cpp as built.\n",
      threads, load_average().c_str());
  std::printf("%6s %7s %9s %9s %8s %8s %6s %9s %9s %8s  %s\n", "batch", "threads", "ms/step", "samples/s", "GFLOP/s",
              "ref GF/s", "ratio", "fwd ratio", "bwd ratio", "fastest", "what");
  for (size_t i = 0; i < results.size(); ++i) {
    const BatchResult& r = results[i];
    print_summary_row(r, threads, r.dense, r.dense_fastest,
                      results_bf16[i] ? "Dense bf16 (ref: bf16 matmuls, f32 dst)" : "Dense fp32");
  }
  if (!options.csv_path.empty()) {
    write_csv(options.csv_path, rows);
    std::printf("CSV: %s\n", options.csv_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace shardfit

int main(int argc, char** argv) {
  try {
    return shardfit::run(shardfit::parse_options(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "dense_bench: " << e.what() << "\n";
    return 1;
  }
}
