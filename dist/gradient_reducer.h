// The gradient reducer: sums the flat gradient buffer over all ranks every step, in buckets, then divides by the
// global sample count. Not the optimizer (kernels/optimizer.h) and not MPI itself (it talks to Comm).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dist/comm.h"
#include "dist/io/trace.h"
#include "kernels/precision.h"

namespace shardfit {

// Design:
//  1. Buckets are contiguous ranges of the one flat buffer (STYLE.md #4), so a bucket is an {offset, count} and a
//     reduction is an in-place MPI_Allreduce on a pointer: no packing, no copies.
//  2. Buckets are cut from the END of the buffer: backward runs from the last layer to the first and fills the
//     gradient buffer back to front, so bucket 0 is complete first. That is the order an overlapped reducer will
//     start them in, and the order reduce() uses now.
//  3. The layout depends only on the buffer's count and bucket_bytes, and the constructor checks both are the same
//     on every rank, so every rank issues the same sequence of collectives (a mismatch would otherwise hang or
//     corrupt the sum mid-training instead of failing at setup).
//  4. 4 MiB default: MPI_Allreduce over shared memory reaches its plateau (~8 GB/s) from about 2.7 MB to 23 MB and
//     drops to ~3 GB/s at 64 MiB (docs BASELINES.md). Smaller buckets start earlier with overlap, but a sweep of
//     4 MiB / 1 MiB / 256 KiB / 64 KiB, overlap off and on, found none faster beyond the noise and 64 KiB slower with
//     overlap (a hand-over and a call per bucket), nor a gain from a small first bucket (bench/README.md, "Bucket
//     size"). fit.bucket_bytes / --bucket-bytes set it for measuring.
//  5. reduce() uses one blocking in-place MPI_Allreduce per bucket. MPI_Iallreduce + Waitall is the obvious next
//     step for overlap, but Open MPI 4.1's non-blocking allreduce (coll/libnbc) takes a binomial tree whenever
//     there are fewer than 4 ranks or the buffer is MPI_IN_PLACE, and allocates a temporary per call: for 2.68 MB
//     at 2 ranks it measured 1.4 ms against 0.38 ms blocking here. With backward handing buckets over as it
//     finishes them, MPI_Iallreduce + MPI_Testall at the ready points also slowed backward itself (the tests'
//     progress runs on the compute thread); a communication thread running the blocking calls did better (note 9).
//  6. With one rank there is nothing to sum: reduce() only scales, no MPI call at all.
//  7. One clock read after each bucket: the reducer's own timer and a timeline's bucket spans (record_to) share
//     them. The spans go on the rank's "allreduce" track, one per bucket from issue to done; with overlap the time
//     the step waits for them is the step's own "allreduce wait" span.
//  8. A few control values ride with bucket 0 (the per-step batch loss and stop signal, dist/train/step_control.h),
//     so a step makes no collective besides its buckets'. They sit in the floats right after the gradients in the
//     same allocation (Model::gradient_tail), so bucket 0, the end of the buffer, reaches them by one longer count:
//     no copy, no second call. Bucket 0 because it is issued first: the values are known after forward, before
//     backward fills any bucket. They are summed, never divided by the global count. Byte counts (a bucket's span
//     on the timeline, the benchmark's bytes per step) are the gradients': the few control bytes more are not counted.
//  9. Overlap (Overlap::kThread): backward's gradients-ready points (Model::set_gradients_ready) call ready(first),
//     which hands every bucket wholly inside [first, end) to a communication thread that runs the same blocking
//     allreduces, in the same order, while backward computes the rest (Horovod's design; bench/overlap_bench.cpp
//     measured it against MPI_Iallreduce with MPI_Testall polling: bench/README.md). The sums are the same calls on
//     the same values, so overlap on and off agree bit for bit. Every rank hands the buckets over in the same
//     order (the layout is the same everywhere, note 3, and backward runs the layers in a fixed order), so no
//     negotiation between ranks is needed, unlike Horovod's, whose tensors come ready in any order.
// 10. While a step's buckets are in flight only the communication thread calls MPI: the training thread calls
//     none between begin_step() and finish() (MPI_THREAD_SERIALIZED, which Comm asks for). A collective backward
//     itself needs in that window goes to the thread too (note 13). The thread records its clock reads; finish(),
//     on the training thread, hands them to the timeline, so the recorder has one writer.
// 11. A failure inside the step while buckets are in flight (a kernel throws mid-backward on one rank) cannot
//     unwind: the communication thread sits in an allreduce the peers may never join, and the reducer could not be
//     destroyed under it. abandon() ends the job at once through Comm::abort, the path any error inside a step
//     takes anyway (dist/comm.h, failure note 2), before anything is unwound. The destructor does the same for
//     any other unwind with buckets in flight, rather than join a thread that may never return. Both call
//     MPI_Abort while the thread is inside an allreduce, outside MPI_THREAD_SERIALIZED's rule, as the watchdog
//     does (dist/watchdog.h, note 5): the process is ending, and that is all the call has to achieve.
// 12. ReduceDtype::kBfloat16 (fit.reduce_dtype): every bucket but bucket 0 travels as bf16, half the bytes. Each
//     is rounded into a bf16 staging buffer the size of those gradients (allocated here, once), summed by
//     Comm::allreduce_sum_bf16 (f32 adds rounded to bf16, P - 1 roundings over P ranks: its header says what is
//     deterministic) and widened back in place. Bucket 0 stays f32, with the control values riding in it as in
//     note 8: they stay exact, the same sums in the same call as under float32 (no collective more; MPI has no
//     datatype that is bf16 in one part and f32 in another). So bucket 0 is made small under bfloat16,
//     kBfloat16FirstBucketCount gradients at most, and the rest is cut into buckets of the usual count: a model
//     that fits one bucket makes two calls instead of one. One rank makes no call and rounds nothing, so 1 rank
//     under bfloat16 is 1 rank under float32; P ranks differ from it by the roundings, each gradient's sum within
//     gamma(P) = P u / (1 - P u) of the sum of its magnitudes (u = 2^-8). Byte counts are what travels (2 bytes a
//     gradient in bf16 buckets).
// 13. Sums a layer makes during backward (a synchronized BatchNormalization's, dist/cross_replica_comm.h) go
//     through sum_across_ranks(). Between begin_step() and finish() with the thread it queues the sum after the
//     buckets handed over so far and blocks until the thread has made it; the layer's backward then goes on.
//     Elsewhere (forward, evaluation, overlap off, one rank) the sum is made at once on the calling thread. Every
//     rank makes the same sequence of calls on the thread: the buckets handed over before a sum are those of the
//     gradients-ready points passed before it, and backward passes the same points (the same layers in the same
//     order, a rank with no rows included: Model::backward_train) and makes its sums at the same points in layer
//     order on every rank, while the thread runs its queue in order and the training thread, blocked, hands over
//     nothing meanwhile. The sum is the same call on the same values as without overlap, so the results agree bit
//     for bit. It waits for the buckets before it, so each such sum ends the overlap of what was handed over
//     until then. It is not a bucket: no span on the timeline and not in seconds(); its time is backward's, as
//     without overlap. A failure of the sum on the thread is the thread's error (rethrown here and by finish()).
class GradientReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = int64_t{4} << 20;
  // Under bfloat16, bucket 0's gradients at most (design note 12): 16 KiB of f32, an allreduce of a few us.
  static constexpr int64_t kBfloat16FirstBucketCount = 4096;

  enum class ReduceDtype {
    kFloat32,   // every bucket as f32 (the default)
    kBfloat16,  // buckets after bucket 0 as bf16 (design note 12)
  };

  enum class Overlap {
    kOff,     // every bucket reduced in start(), after backward
    kThread,  // buckets reduced by a communication thread as backward hands them over (design note 9)
  };

  struct Bucket {
    int64_t offset;  // first element in the flat gradient buffer
    int64_t count;   // elements
  };

  // Collective (checks the layout is the same on every rank). grads must outlive the reducer; bucket_bytes is
  // rounded down to whole floats and must hold at least one.
  GradientReducer(Comm& comm, std::span<float> grads, int64_t bucket_bytes = kDefaultBucketBytes,
                  Overlap overlap = Overlap::kOff)
      : GradientReducer(comm, grads, {}, bucket_bytes, overlap) {}
  // With control values carried by bucket 0 (design note 8): control must start right after grads' last element
  // (empty: none). The caller writes them before start() (with overlap: before begin_step()); after finish() they
  // hold the sums over ranks. reduce_dtype is checked to be the same on every rank with the layout.
  GradientReducer(Comm& comm, std::span<float> grads, std::span<float> control,
                  int64_t bucket_bytes = kDefaultBucketBytes, Overlap overlap = Overlap::kOff,
                  ReduceDtype reduce_dtype = ReduceDtype::kFloat32);
  // Joins the communication thread, which must be idle: a step in flight ends in finish() or abandon().
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Collective: grads = (sum over ranks of grads) / global_count. global_count is the global mini-batch's sample
  // count (> 0), the same on every rank. No heap allocation. reduce() is start() then finish().
  void reduce(int64_t global_count) {
    start(global_count);
    finish();
  }
  // The two halves of reduce(), which the training step times apart (issued / waited). start() issues the bucket
  // allreduces: without overlap they are blocking (design note 5), so the whole exchange happens inside start();
  // with overlap it hands the rest to the communication thread. finish() waits for whatever is still outstanding
  // and divides by the global count.
  void start(int64_t global_count);
  void finish();

  // Overlap (design note 9). begin_step() before backward, once the control values are written; ready(first) at
  // each gradients-ready point: gradients [first, end) are final. Both are no-ops without overlap or with one rank.
  // start() hands over what backward did not (nothing, normally) and finish() waits for the last bucket.
  void begin_step();
  void ready(int64_t first);
  Overlap overlap() const { return overlap_; }
  // For an error inside the step on this rank: when buckets are in flight, ends the job through Comm::abort (design
  // note 11) and does not return; otherwise returns and the error goes on as usual.
  void abandon(const std::exception& error);
  // Collective: values becomes its sum over all ranks, in double. A sum a layer makes during backward (design note
  // 13): on the communication thread, after the buckets handed over so far, while a step is in flight with overlap;
  // otherwise here. With one rank, nothing.
  void sum_across_ranks(std::span<double> values);

  // In reduction order: bucket 0 is the end of the buffer. A bucket's count is of gradients; bucket 0's MPI call
  // also carries control().
  std::span<const Bucket> buckets() const { return buckets_; }
  std::span<float> control() { return control_; }
  int64_t bucket_bytes() const { return bucket_count_ * static_cast<int64_t>(sizeof(float)); }
  ReduceDtype reduce_dtype() const { return reduce_dtype_; }
  // The gradient bytes bucket k sends, and all buckets together (one reduce): 4 a gradient, 2 in a bf16 bucket.
  int64_t bucket_wire_bytes(size_t k) const;
  int64_t wire_bytes() const;

  // Seconds spent in the allreduce calls (not the scaling): of the last reduce() and of all since construction or
  // reset_timing(); for reporting the share of step time spent communicating.
  double last_seconds() const { return last_seconds_; }
  double seconds() const { return seconds_; }
  int64_t reduce_count() const { return reduce_count_; }
  void reset_timing();

  // Each bucket's allreduce becomes a span of the recorder's current step (null: none, the default).
  void record_to(TraceRecorder* trace) { trace_ = trace; }

 private:
  using Clock = std::chrono::steady_clock;
  std::span<float> bucket_values(size_t k) const;  // bucket k's floats in its MPI call (bucket 0: and control_)
  void reduce_bucket(size_t k);                    // the allreduce; its clock reads into issued_at_/done_at_[k]
  void thread_loop();
  void run_side_sum(std::unique_lock<std::mutex>& lock);  // on the thread, with the lock held (design note 13)
  void hand_over(size_t handed);
  bool threaded() const { return overlap_ == Overlap::kThread && comm_.size() > 1; }
  void allreduce_bucket(size_t k);  // in f32 or, for a bf16 bucket, through staging_ (design note 12)
  bool bf16_bucket(size_t k) const { return reduce_dtype_ == ReduceDtype::kBfloat16 && k > 0; }

  Comm& comm_;
  std::span<float> grads_;
  std::span<float> control_;  // right after grads_ (design note 8)
  int64_t bucket_count_;      // elements per full bucket
  ReduceDtype reduce_dtype_;
  std::vector<Bucket> buckets_;
  Bf16Buffer staging_;  // bfloat16: the bf16 buckets' gradients, at their offsets in grads_; else empty
  double last_seconds_ = 0.0;
  double seconds_ = 0.0;
  int64_t reduce_count_ = 0;
  int64_t global_count_ = 0;  // of the reduction start() began
  TraceRecorder* trace_ = nullptr;

  // The communication thread's state (design note 9). Buckets [0, done_) are reduced and [done_, handed_) queued;
  // issued_at_[k] / done_at_[k] are bucket k's clock reads, written by whoever reduces it. side_sum_ is a layer's
  // sum queued after them (note 13) while side_sum_pending_; in_step_ is the training thread's own: between
  // begin_step() and finish().
  Overlap overlap_;
  std::vector<Clock::time_point> issued_at_;
  std::vector<Clock::time_point> done_at_;
  std::mutex mutex_;
  std::condition_variable work_;      // the thread waits for buckets (or the end)
  std::condition_variable finished_;  // finish() waits for the last bucket, sum_across_ranks() for its sum
  size_t handed_ = 0;
  size_t done_ = 0;
  std::span<double> side_sum_;
  bool side_sum_pending_ = false;
  bool in_step_ = false;
  bool stopping_ = false;
  std::exception_ptr thread_error_;  // an MPI failure on the thread, rethrown by finish()
  std::thread thread_;
};

// "float32" | "bfloat16" (fit.reduce_dtype, --reduce-dtype); anything else is an Error naming the choices.
GradientReducer::ReduceDtype parse_reduce_dtype(const std::string& name);
std::string reduce_dtype_name(GradientReducer::ReduceDtype dtype);

}  // namespace shardfit
