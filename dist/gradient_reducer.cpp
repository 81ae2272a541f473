// The gradient reducer's implementation: the bucket layout, the per-step allreduce and the scaling by the global
// sample count. Communication goes through Comm (chunking and error checks live there).
#include "dist/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>

namespace shardfit {

namespace {

// Below this, an OpenMP team costs more than it saves.
constexpr int64_t kParallelScaleCount = 32768;

}  // namespace

GradientReducer::GradientReducer(Comm& comm, std::span<float> grads, std::span<float> control, int64_t bucket_bytes,
                                 Overlap overlap, ReduceDtype reduce_dtype)
    : comm_(comm),
      grads_(grads),
      control_(control),
      bucket_count_(bucket_bytes / static_cast<int64_t>(sizeof(float))),
      reduce_dtype_(reduce_dtype),
      overlap_(overlap) {
  SF_CHECK(bucket_count_ >= 1, cat("gradient bucket of ", bucket_bytes, " bytes holds no float"),
           "use a bucket size of at least 4 bytes (the default is 4 MiB)");
  SF_CHECK(control_.empty() || control_.data() == grads_.data() + grads_.size(),
           cat("the ", control_.size(), " control values do not follow the gradient buffer in memory"),
           "pass the floats right after the gradients (Model::gradient_tail)");
  // One MPI call per bucket: keep a bucket, with the control values bucket 0 carries, within an int count so Comm
  // never has to split it.
  bucket_count_ = std::min(bucket_count_, Comm::kMaxChunkCount - static_cast<int64_t>(control_.size()));

  const auto count = static_cast<int64_t>(grads_.size());
  buckets_.reserve(static_cast<size_t>((count + bucket_count_ - 1) / bucket_count_));
  // Under bfloat16 bucket 0, which stays f32, is small (design note 12).
  const int64_t first_count =
      reduce_dtype_ == ReduceDtype::kBfloat16 ? std::min(bucket_count_, kBfloat16FirstBucketCount) : bucket_count_;
  for (int64_t end = count; end > 0;) {
    const int64_t begin = std::max<int64_t>(0, end - (buckets_.empty() ? first_count : bucket_count_));
    buckets_.push_back({begin, end - begin});
    end = begin;
  }
  // No gradients at all (a model of activations only): the control values still need their one call.
  if (buckets_.empty() && !control_.empty()) buckets_.push_back({0, 0});

  // Every rank must issue the same collectives in the same order (rationale 3 in the header). Each rank compares
  // itself with rank 0, so the lowest differing rank is the one named.
  std::exception_ptr mismatch;
  const std::vector<int64_t> counts = comm_.allgather(count);
  const std::vector<int64_t> bucket_counts = comm_.allgather(bucket_count_);
  const std::vector<int64_t> control_counts = comm_.allgather(static_cast<int64_t>(control_.size()));
  const std::vector<int64_t> dtypes = comm_.allgather(static_cast<int64_t>(reduce_dtype_));
  try {
    SF_CHECK(counts[0] == count && bucket_counts[0] == bucket_count_ &&
                 control_counts[0] == static_cast<int64_t>(control_.size()) &&
                 dtypes[0] == static_cast<int64_t>(reduce_dtype_),
             cat("gradient buffer layout differs across ranks: rank ", comm_.rank(), " has ", count,
                 " gradients in buckets of ", bucket_count_, " but rank 0 has ", counts[0], " in buckets of ",
                 bucket_counts[0], "; control values: ", control_.size(), " here, ", control_counts[0],
                 " on rank 0; reduce dtype: ", reduce_dtype_name(reduce_dtype_), " here, ",
                 reduce_dtype_name(static_cast<ReduceDtype>(dtypes[0])), " on rank 0"),
             "every rank must build the same model with the same bucket size and reduce dtype");
  } catch (const Error&) {
    mismatch = std::current_exception();
  }
  comm_.agree(mismatch);
  // The bf16 buckets are all of the gradients before bucket 0.
  if (reduce_dtype_ == ReduceDtype::kBfloat16 && buckets_.size() > 1) staging_.resize(buckets_[0].offset);
  issued_at_.resize(buckets_.size());
  done_at_.resize(buckets_.size());
  if (threaded()) thread_ = std::thread([this] { thread_loop(); });
}

GradientReducer::~GradientReducer() {
  if (!thread_.joinable()) return;
  bool in_flight = false;
  {
    const std::lock_guard lock(mutex_);
    in_flight = done_ < handed_;
    stopping_ = true;
  }
  // Unwound with buckets in flight, past abandon() (an error after backward, e.g. in start()): joining would wait
  // on an allreduce the peers may never join, so the job ends here instead (design note 11).
  if (in_flight) {
    try {
      SF_FAIL("the step failed while gradient bucket allreduces were in flight",
              "the error that caused it is reported by the rank it happened on");
    } catch (const Error& error) {
      comm_.abort(error);
    }
  }
  work_.notify_all();
  thread_.join();
}

void GradientReducer::thread_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return stopping_ || done_ < handed_ || side_sum_pending_; });
    if (stopping_) return;
    // The buckets handed over first: a layer's sum waits for them (design note 13). Its caller, blocked until the
    // sum is made, hands over nothing meanwhile, so the queue is the same on every rank.
    if (done_ >= handed_) {  // > after a failed bucket
      run_side_sum(lock);
      continue;
    }
    const size_t k = done_;
    lock.unlock();
    std::exception_ptr error;
    try {
      reduce_bucket(k);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {  // nothing more is reduced this step; finish() rethrows (handed_ is the training thread's)
      thread_error_ = error;
      done_ = buckets_.size();
    } else {
      ++done_;
    }
    if (done_ == buckets_.size()) finished_.notify_all();
  }
}

void GradientReducer::run_side_sum(std::unique_lock<std::mutex>& lock) {
  const std::span<double> values = side_sum_;
  // After a failed bucket this rank makes no more calls this step (as for the buckets); the caller rethrows.
  if (!thread_error_) {
    lock.unlock();
    std::exception_ptr error;
    try {
      comm_.allreduce_sum(values);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {  // nothing more is reduced this step, as after a failed bucket
      thread_error_ = error;
      done_ = buckets_.size();
    }
  }
  side_sum_pending_ = false;
  finished_.notify_all();
}

void GradientReducer::sum_across_ranks(std::span<double> values) {
  if (comm_.size() == 1) return;
  if (!threaded() || !in_step_) {
    comm_.allreduce_sum(values);
    return;
  }
  {
    const std::lock_guard lock(mutex_);
    side_sum_ = values;
    side_sum_pending_ = true;
  }
  work_.notify_one();
  std::unique_lock lock(mutex_);
  finished_.wait(lock, [this] { return !side_sum_pending_; });
  // Not exchanged: finish() rethrows it too, should anything reach it.
  if (thread_error_) std::rethrow_exception(thread_error_);
}

int64_t GradientReducer::bucket_wire_bytes(size_t k) const {
  return buckets_[k].count * static_cast<int64_t>(bf16_bucket(k) ? sizeof(uint16_t) : sizeof(float));
}

int64_t GradientReducer::wire_bytes() const {
  int64_t bytes = 0;
  for (size_t k = 0; k < buckets_.size(); ++k) bytes += bucket_wire_bytes(k);
  return bytes;
}

void GradientReducer::allreduce_bucket(size_t k) {
  const Bucket& bucket = buckets_[k];
  if (!bf16_bucket(k)) {
    comm_.allreduce_sum(bucket_values(k));
    return;
  }
  float* const values = grads_.data() + bucket.offset;
  uint16_t* const staged = staging_.data() + bucket.offset;
  // On the communication thread (overlap) the conversions stay on it: an OpenMP team of its own would take the
  // cores backward's team is computing on.
  const bool team = !threaded();
  to_bf16(values, staged, bucket.count, team);
  comm_.allreduce_sum_bf16(std::span<uint16_t>(staged, static_cast<size_t>(bucket.count)));
  from_bf16(staged, values, bucket.count, team);
}

std::span<float> GradientReducer::bucket_values(size_t k) const {
  const Bucket& bucket = buckets_[k];
  // Bucket 0 ends where the gradients end, so its call runs on into the control values (design note 8).
  const int64_t count = bucket.count + (k == 0 ? static_cast<int64_t>(control_.size()) : 0);
  return {grads_.data() + bucket.offset, static_cast<size_t>(count)};
}

void GradientReducer::reduce_bucket(size_t k) {
  issued_at_[k] = Clock::now();
  allreduce_bucket(k);
  done_at_[k] = Clock::now();
}

void GradientReducer::hand_over(size_t handed) {
  {
    const std::lock_guard lock(mutex_);
    if (handed <= handed_) return;
    handed_ = handed;
  }
  work_.notify_one();
}

void GradientReducer::begin_step() {
  if (!threaded()) return;
  const std::lock_guard lock(mutex_);
  SF_CHECK(handed_ == 0, "GradientReducer::begin_step: the previous step's buckets were never waited for (finish)");
  in_step_ = true;
}

void GradientReducer::ready(int64_t first) {
  if (!threaded()) return;
  // Only the training thread moves handed_, so it reads it without the lock.
  size_t upto = handed_;
  while (upto < buckets_.size() && buckets_[upto].offset >= first) ++upto;
  hand_over(upto);
}

void GradientReducer::abandon(const std::exception& error) {
  if (!threaded()) return;
  bool in_flight = false;
  {
    const std::lock_guard lock(mutex_);
    in_flight = done_ < handed_;
  }
  if (in_flight) comm_.abort(error);
  in_step_ = false;  // the error goes on; nothing of this step is on the thread
}

void GradientReducer::start(int64_t global_count) {
  SF_CHECK(global_count > 0, cat("global sample count is ", global_count, "; cannot average the gradients"),
           "a step needs at least one sample across all ranks");

  last_seconds_ = 0.0;
  global_count_ = global_count;
  ++reduce_count_;
  if (threaded()) {
    hand_over(buckets_.size());  // what backward's ready points did not hand over (nothing, normally)
    return;
  }
  if (comm_.size() > 1) {
    const auto start = Clock::now();
    auto done = start;  // the previous bucket's end: design note 7
    for (size_t k = 0; k < buckets_.size(); ++k) {
      allreduce_bucket(k);
      const auto now = Clock::now();
      if (trace_ != nullptr) trace_->bucket_span(static_cast<int64_t>(k), bucket_wire_bytes(k), done, now);
      done = now;
    }
    last_seconds_ = std::chrono::duration<double>(done - start).count();
  }
  seconds_ += last_seconds_;
}

void GradientReducer::finish() {
  if (threaded()) {
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [this] { return done_ == buckets_.size(); });
    handed_ = done_ = 0;  // ready for the next step's buckets
    in_step_ = false;
    if (thread_error_) std::rethrow_exception(std::exchange(thread_error_, nullptr));
    lock.unlock();
    // The thread's clock reads, now on the training thread (design note 10): the time inside the allreduce calls.
    for (size_t k = 0; k < buckets_.size(); ++k) {
      last_seconds_ += std::chrono::duration<double>(done_at_[k] - issued_at_[k]).count();
      if (trace_ != nullptr) {
        trace_->bucket_span(static_cast<int64_t>(k), bucket_wire_bytes(k), issued_at_[k], done_at_[k]);
      }
    }
    seconds_ += last_seconds_;
  }
  // Multiply by the float reciprocal instead of dividing: at most one extra rounding, far below the spread that
  // summing in another order (another rank count) gives anyway, and the loop stays a plain vector multiply.
  const float scale = static_cast<float>(1.0 / static_cast<double>(global_count_));
  float* const values = grads_.data();
  const auto count = static_cast<int64_t>(grads_.size());
#pragma omp parallel for simd schedule(static) if (count >= kParallelScaleCount)
  for (int64_t i = 0; i < count; ++i) values[i] *= scale;
}

void GradientReducer::reset_timing() {
  last_seconds_ = 0.0;
  seconds_ = 0.0;
  reduce_count_ = 0;
}

GradientReducer::ReduceDtype parse_reduce_dtype(const std::string& name) {
  if (name == "float32") return GradientReducer::ReduceDtype::kFloat32;
  if (name == "bfloat16") return GradientReducer::ReduceDtype::kBfloat16;
  SF_FAIL(cat("unknown reduce dtype '", name, "': expected float32 or bfloat16"));
}

std::string reduce_dtype_name(GradientReducer::ReduceDtype dtype) {
  return dtype == GradientReducer::ReduceDtype::kBfloat16 ? "bfloat16" : "float32";
}

}  // namespace shardfit
