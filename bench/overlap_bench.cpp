// overlap_bench: how to overlap the gradient allreduce with backward, measured on the real model step. Each rank
// runs the model's forward and backward (kernels/model.h) on synthetic data and sums the gradients over the ranks
// in one of four ways, interleaved round by round so that the machine's load hits them alike:
//
//   none      no allreduce: the compute alone, the floor
//   blocking  one blocking MPI_Allreduce per bucket after backward (the reducer today)
//   iallreduce  MPI_Iallreduce per bucket as backward's gradients-ready points hand it over, MPI_Testall at each
//             point to drive progress, MPI_Waitall after backward
//   thread    a communication thread runs the blocking MPI_Allreduce of each bucket as the ready points queue them
//             (Horovod's design); the step waits for the last one after backward. Only this thread calls MPI while
//             a step runs (MPI_THREAD_SERIALIZED)
//
//   mpirun -np 2 build/bench/overlap_bench [--hidden 512] [--batch 128] [--steps 200] [--rounds 5]
//          [--first-bucket-kib 64] [--bucket-kib 1024]
//
// Per mode, rank 0 prints the median step time (rank 0's clock; every mode's step ends in a collective or, for
// none, a barrier, so the ranks stay in step), the exposed communication (step - none's step) and the share of
// blocking's exposed communication that the mode hides: (blocking - mode) / (blocking - none). Not a test.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dist/train/bench.h"
#include "kernels/error.h"
#include "kernels/model_factory.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int64_t hidden = 512;
  int64_t batch = 128;  // per rank
  int64_t steps = 200;  // per round and mode
  int64_t rounds = 5;
  int64_t first_bucket_kib = 64;
  int64_t bucket_kib = 1024;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (flag == "--hidden")
      o.hidden = value;
    else if (flag == "--batch")
      o.batch = value;
    else if (flag == "--steps")
      o.steps = value;
    else if (flag == "--rounds")
      o.rounds = value;
    else if (flag == "--first-bucket-kib")
      o.first_bucket_kib = value;
    else if (flag == "--bucket-kib")
      o.bucket_kib = value;
    else
      SF_FAIL(shardfit::cat("overlap_bench: unknown flag ", flag));
  }
  return o;
}

struct Bucket {
  int64_t offset;
  int64_t count;
};

// From the end of the buffer: a small first bucket (the last layers' gradients, ready first), then full ones.
std::vector<Bucket> layout(int64_t count, int64_t first_count, int64_t bucket_count) {
  std::vector<Bucket> buckets;
  for (int64_t end = count; end > 0;) {
    const int64_t size = buckets.empty() ? first_count : bucket_count;
    const int64_t begin = std::max<int64_t>(0, end - size);
    buckets.push_back({begin, end - begin});
    end = begin;
  }
  return buckets;
}

enum class Mode { kNone, kBlocking, kIallreduce, kThread };
const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kNone:
      return "none";
    case Mode::kBlocking:
      return "blocking";
    case Mode::kIallreduce:
      return "iallreduce";
    case Mode::kThread:
      return "thread";
  }
  return "?";
}

// The communication thread: buckets [done, handed) are queued; it reduces them in order.
class CommThread {
 public:
  CommThread(float* grads, const std::vector<Bucket>& buckets) : grads_(grads), buckets_(buckets) {
    thread_ = std::thread([this] { loop(); });
  }
  ~CommThread() {
    {
      const std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void begin_step() {
    const std::lock_guard lock(mutex_);
    handed_ = 0;
    done_ = 0;
  }
  void hand_up_to(size_t handed) {
    {
      const std::lock_guard lock(mutex_);
      if (handed <= handed_) return;
      handed_ = handed;
    }
    wake_.notify_all();
  }
  void wait_all() {
    std::unique_lock lock(mutex_);
    done_wake_.wait(lock, [this] { return done_ == buckets_.size(); });
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || done_ < handed_; });
      if (stop_) return;
      const Bucket bucket = buckets_[done_];
      lock.unlock();
      MPI_Allreduce(MPI_IN_PLACE, grads_ + bucket.offset, static_cast<int>(bucket.count), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
      lock.lock();
      ++done_;
      if (done_ == buckets_.size()) done_wake_.notify_all();
    }
  }

  float* grads_;
  const std::vector<Bucket>& buckets_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_wake_;
  size_t handed_ = 0;
  size_t done_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  // SHARDFIT_THREAD_MULTIPLE=1 asks for MPI_THREAD_MULTIPLE instead, to measure what its locking costs.
  const char* multiple = std::getenv("SHARDFIT_THREAD_MULTIPLE");
  const int wanted = multiple != nullptr && std::string(multiple) == "1" ? MPI_THREAD_MULTIPLE : MPI_THREAD_SERIALIZED;
  int provided = 0;
  MPI_Init_thread(&argc, &argv, wanted, &provided);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    const Options o = parse(argc, argv);
    shardfit::proto::Job job = shardfit::bench_preset("mlp");
    for (int i = 0; i + 1 < job.model().layers_size(); ++i) {
      job.mutable_model()->mutable_layers(i)->mutable_dense()->set_units(static_cast<int32_t>(o.hidden));
    }
    auto model = shardfit::build_model(job, 784);
    model->initialize(1337);
    model->reserve(o.batch);
    std::mt19937 rng(static_cast<unsigned>(rank + 1));
    std::uniform_real_distribution<float> uniform(0.0F, 1.0F);
    for (int64_t i = 0; i < o.batch * 784; ++i) model->input()[i] = uniform(rng);
    for (int64_t i = 0; i < o.batch; ++i) model->labels()[i] = static_cast<float>(rng() % 10);
    float* const grads = model->gradients().data();
    const auto count = static_cast<int64_t>(model->gradients().size());
    const std::vector<Bucket> buckets = layout(count, o.first_bucket_kib * 256, o.bucket_kib * 256);
    std::vector<MPI_Request> requests(buckets.size(), MPI_REQUEST_NULL);
    CommThread comm_thread(grads, buckets);
    std::vector<double> metric_sums(model->metric_names().size());

    // What the ready points do in the current mode: hand every bucket wholly within [first, end) over.
    Mode mode = Mode::kNone;
    size_t handed = 0;
    model->set_gradients_ready([&](int64_t first) {
      size_t upto = handed;
      while (upto < buckets.size() && buckets[upto].offset >= first) ++upto;
      if (mode == Mode::kIallreduce) {
        for (size_t k = handed; k < upto; ++k) {
          MPI_Iallreduce(MPI_IN_PLACE, grads + buckets[k].offset, static_cast<int>(buckets[k].count), MPI_FLOAT,
                         MPI_SUM, MPI_COMM_WORLD, &requests[k]);
        }
        int flag = 0;
        MPI_Testall(static_cast<int>(upto), requests.data(), &flag, MPI_STATUSES_IGNORE);
      } else if (mode == Mode::kThread) {
        comm_thread.hand_up_to(upto);
      }
      handed = upto;
    });

    const std::vector<Mode> modes{Mode::kNone, Mode::kBlocking, Mode::kIallreduce, Mode::kThread};
    std::vector<std::vector<double>> step_ms(modes.size());
    std::vector<std::vector<double>> backward_ms(modes.size());
    const shardfit::BatchContext ctx{true, 1, 0, 0};
    for (int64_t round = -1; round < o.rounds; ++round) {  // round -1 warms up
      for (size_t m = 0; m < modes.size(); ++m) {
        mode = modes[m];
        MPI_Barrier(MPI_COMM_WORLD);
        for (int64_t s = 0; s < o.steps; ++s) {
          const auto t0 = Clock::now();
          handed = 0;
          if (mode == Mode::kThread) comm_thread.begin_step();
          model->forward_train(o.batch, ctx, false, metric_sums);
          model->backward_train(o.batch);
          const auto t1 = Clock::now();
          switch (mode) {
            case Mode::kNone:
              break;
            case Mode::kBlocking:
              for (const Bucket& b : buckets) {
                MPI_Allreduce(MPI_IN_PLACE, grads + b.offset, static_cast<int>(b.count), MPI_FLOAT, MPI_SUM,
                              MPI_COMM_WORLD);
              }
              break;
            case Mode::kIallreduce:
              MPI_Waitall(static_cast<int>(buckets.size()), requests.data(), MPI_STATUSES_IGNORE);
              break;
            case Mode::kThread:
              comm_thread.wait_all();
              break;
          }
          const auto t2 = Clock::now();
          if (round >= 0) {
            step_ms[m].push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
            backward_ms[m].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
          }
        }
      }
    }
    mode = Mode::kNone;
    if (rank == 0) {
      double load[3] = {};
      if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        std::fclose(f);
      }
      std::printf(
          "overlap_bench ranks=%d hidden=%lld batch=%lld params=%lld buckets=%zu first_kib=%lld bucket_kib=%lld "
          "thread_level=%d load=%.2f\n",
          size, static_cast<long long>(o.hidden), static_cast<long long>(o.batch), static_cast<long long>(count),
          buckets.size(), static_cast<long long>(o.first_bucket_kib), static_cast<long long>(o.bucket_kib), provided,
          load[0]);
      // The median, and the 10th percentile: on a shared machine the low end is the step the others' load spared.
      for (const double q : {0.5, 0.1}) {
        const double none = quantile(step_ms[0], q);
        const double blocking = quantile(step_ms[1], q);
        for (size_t m = 0; m < modes.size(); ++m) {
          const double step = quantile(step_ms[m], q);
          const double hidden = blocking > none ? (blocking - step) / (blocking - none) : 0.0;
          std::printf("  q%.1f %-10s step_ms=%.3f fwd_bwd_ms=%.3f exposed_ms=%.3f hidden=%.2f\n", q,
                      mode_name(modes[m]), step, quantile(backward_ms[m], q), step - none, m >= 2 ? hidden : 0.0);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
