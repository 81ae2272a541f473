// reduce_dtype_bench: the gradient reducer alone, float32 against bfloat16 transport (fit.reduce_dtype,
// dist/gradient_reducer.h note 9), on the same gradient count, under mpirun. Not a test; bench/README.md says
// what it showed.
//
// Why a benchmark of its own: `shardfit bench` times the reduction inside whole steps, where on a loaded machine
// the allreduce also absorbs the wait for a descheduled peer. Here the two reducers alternate call by call over
// the same buffer (A B A B ...), each call after a barrier, and the least time of each side over the repeats is
// compared: load only ever adds time. The bf16 side is split into its parts, each timed the same way: the two
// conversions (f32 -> bf16 staging, back) and the MPI call with the bf16 op, next to a plain f32 MPI_Allreduce of
// the same bytes.
//
//   mpirun -np 2 build/bench/reduce_dtype_bench [--count N] [--repeats R]   (default: the MLP 784-512-512-10,
//   669706 gradients, 200 repeats)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/gradient_reducer.h"
#include "kernels/precision.h"

namespace {

using shardfit::Comm;
using shardfit::GradientReducer;
using Clock = std::chrono::steady_clock;

// The least over repeats of the slowest rank's time for one call of `body`, each call started after a barrier.
double least_time(Comm& comm, const std::function<void()>& body, double* least) {
  comm.barrier();
  const auto start = Clock::now();
  body();
  const double seconds = comm.allreduce_max(std::chrono::duration<double>(Clock::now() - start).count());
  *least = std::min(*least, seconds);
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  Comm comm(&argc, &argv);
  int64_t count = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10;
  int repeats = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--count") == 0) count = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::atoi(argv[i + 1]);
  }
  std::vector<float> f32_buffer(static_cast<size_t>(count + 3), 0.001F);
  std::vector<float> bf16_buffer(static_cast<size_t>(count + 3), 0.001F);
  const auto grads = [&](std::vector<float>& b) { return std::span<float>(b.data(), static_cast<size_t>(count)); };
  const auto control = [&](std::vector<float>& b) { return std::span<float>(b.data() + count, 3); };
  GradientReducer f32(comm, grads(f32_buffer), control(f32_buffer));
  GradientReducer bf16(comm, grads(bf16_buffer), control(bf16_buffer), GradientReducer::kDefaultBucketBytes,
                       GradientReducer::Overlap::kOff, GradientReducer::ReduceDtype::kBfloat16);
  const int64_t staged = count - bf16.buckets()[0].count;  // the gradients that travel as bf16
  shardfit::Bf16Buffer half(staged);
  std::vector<float> raw(static_cast<size_t>(bf16.wire_bytes() / 4), 0.0F);

  const double inf = 1e30;
  double t_f32 = inf, t_bf16 = inf, t_to = inf, t_from = inf, t_op = inf, t_raw = inf;
  for (int r = 0; r < repeats; ++r) {
    // Values that stay bounded however often they are summed: reset before each reduction.
    std::fill(f32_buffer.begin(), f32_buffer.end(), 0.001F);
    least_time(
        comm, [&] { f32.reduce(1); }, &t_f32);
    std::fill(bf16_buffer.begin(), bf16_buffer.end(), 0.001F);
    least_time(
        comm, [&] { bf16.reduce(1); }, &t_bf16);
    least_time(
        comm, [&] { shardfit::to_bf16(bf16_buffer.data(), half.data(), staged); }, &t_to);
    least_time(
        comm, [&] { comm.allreduce_sum_bf16(std::span<uint16_t>(half.data(), staged)); }, &t_op);
    least_time(
        comm, [&] { shardfit::from_bf16(half.data(), bf16_buffer.data(), staged); }, &t_from);
    least_time(
        comm, [&] { comm.allreduce_sum(std::span<float>(raw)); }, &t_raw);
  }
  if (comm.is_root()) {
    std::printf("reduce_dtype_bench: %d ranks x %d thread(s), %lld gradients, least of %d alternating repeats\n",
                comm.size(), omp_get_max_threads(), static_cast<long long>(count), repeats);
    std::printf("  float32  reduce        %8.1f us  (%lld bytes, %zu bucket(s))\n", 1e6 * t_f32,
                static_cast<long long>(f32.wire_bytes()), f32.buckets().size());
    std::printf("  bfloat16 reduce        %8.1f us  (%lld bytes, %zu bucket(s)): %.2fx float32's time\n", 1e6 * t_bf16,
                static_cast<long long>(bf16.wire_bytes()), bf16.buckets().size(), t_bf16 / t_f32);
    std::printf("    f32 -> bf16          %8.1f us  (%lld values)\n", 1e6 * t_to, static_cast<long long>(staged));
    std::printf("    bf16 allreduce (op)  %8.1f us\n", 1e6 * t_op);
    std::printf("    bf16 -> f32          %8.1f us\n", 1e6 * t_from);
    std::printf("  f32 MPI_Allreduce of the bf16 reduce's bytes %8.1f us  (the op's cost is the difference)\n",
                1e6 * t_raw);
  }
  return 0;
}
