// The communicator: the one RAII owner of MPI (init, a private duplicate of MPI_COMM_WORLD, finalize), typed and
// chunked collectives, and the two ways a failure ends every rank. Not the gradient reducer or the sharding logic.
#pragma once

// The C API only: Open MPI's deprecated C++ bindings do not compile cleanly under -Wextra and are never used.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/error.h"

namespace shardfit {

namespace detail {
[[noreturn]] void fail_mpi(const char* file, int line, const char* call, int code);
}  // namespace detail

// MPI_CHECK(MPI_Foo(...)): every MPI call on our communicators returns its status (MPI_ERRORS_RETURN); a failure
// becomes a shardfit::Error naming the call and MPI's own description of the code.
#define MPI_CHECK(call)                                                      \
  do {                                                                       \
    const int sf_mpi_code_ = (call);                                         \
    if (sf_mpi_code_ != MPI_SUCCESS) {                                       \
      ::shardfit::detail::fail_mpi(__FILE__, __LINE__, #call, sf_mpi_code_); \
    }                                                                        \
  } while (false)

// The same failure, seen by every rank: thrown by Comm::agree and Comm::check_same_everywhere on ALL ranks with the
// same text. what() is complete and printable: "error on rank R (where): message" and a "hint: ..." line.
class AgreedFailure : public Error {
 public:
  AgreedFailure(int failed_rank, int failed_count, const std::string& message)
      : Error({}, message), failed_rank_(failed_rank), failed_count_(failed_count) {}

  int failed_rank() const { return failed_rank_; }    // the lowest rank that failed
  int failed_count() const { return failed_count_; }  // how many ranks failed

 private:
  int failed_rank_;
  int failed_count_;
};

// "error on rank 3 (dist/io/dataset.cpp:88): cannot open x.npy" plus "\nhint: ..." when the Error carries one.
// An AgreedFailure is already formatted and comes back unchanged; a rank < 0 means "rank unknown" (before MPI).
std::string format_error(const std::exception& error, int rank);

// Design of the failure path:
//  1. Phases every rank reaches (setup, loading data, building the model, epoch boundaries) end in agree(): one
//     small collective finds the lowest failing rank, that rank's message is broadcast, and every rank throws the
//     same AgreedFailure. Rank 0 prints it once; every rank finalizes MPI and exits 1. No rank is left waiting.
//  2. An error on one rank between those points (inside the step, while peers may already sit in an allreduce)
//     cannot be agreed on: the peers will never reach a matching collective. abort() prints the message at once,
//     naming the rank, and calls MPI_Abort on MPI_COMM_WORLD, which makes Open MPI's runtime kill every rank;
//     mpirun exits non-zero. Measured with Open MPI 4.1.4 (2 and 4 ranks on 2 cores, --oversubscribe,
//     mpi_yield_when_idle 1): the job is over 0.01-0.04 s after the throw while the peers wait in MPI_Allreduce
//     (tests/dist/test_abort.cpp checks < 20 s and prints the time).
//  3. run_ranks() is the one boundary where exceptions are caught and routed to 1 or 2, so the rest of the code
//     just throws.
class Comm {
 public:
  // Largest element count passed to one MPI call (MPI counts are int).
  static constexpr int64_t kMaxChunkCount = 2147483647;

  // Calls MPI_Init_thread asking for MPI_THREAD_SERIALIZED: MPI calls come from one thread at a time, the thread
  // that built the Comm or, while a step's gradient buckets are in flight, the reducer's communication thread
  // (dist/gradient_reducer.h, note 10); OpenMP workers never call MPI. SERIALIZED is the least level that allows
  // that; whether Open MPI 4.1 costs more per call at it than at FUNNELED is not measured yet. Throws Error if MPI
  // was already initialised or gives a lower thread level.
  Comm(int* argc, char*** argv);
  // Frees the communicators and finalizes MPI, unless MPI is already finalized.
  ~Comm();
  // A one-rank communicator over this process alone, sharing the MPI this Comm initialised: for running the
  // single-rank version of a computation beside the distributed one (tests, benchmarks). Not collective.
  std::unique_ptr<Comm> self() const;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // rank among the ranks sharing this node's memory
  int local_size() const { return local_size_; }
  bool is_root() const { return rank_ == 0; }
  // The private duplicate of MPI_COMM_WORLD that all our collectives use (errors return, never abort).
  MPI_Comm handle() const { return world_; }

  // Elementwise sums, in place, every rank passing the same count.
  void allreduce_sum(std::span<float> values);
  void allreduce_sum(std::span<double> values);
  void allreduce_sum(std::span<int64_t> values);
  // bf16 values (as stored, uint16_t: kernels/precision.h), summed in place. MPI has no bf16 type: a user MPI_Op
  // on a 16-bit datatype adds each pair in f32 and rounds the sum to bf16 (round to nearest even), so a sum over P
  // ranks takes P - 1 such roundings, in the association order MPI's algorithm picks. The op is commutative bit
  // for bit (f32 addition is), so the order in which a pair is combined never matters; the grouping does (bf16
  // addition is not associative), and it is fixed by the algorithm Open MPI chooses for this rank count and
  // message size: the same every run. Every rank gets the same bits, as with MPI_SUM on floats: each allreduce
  // algorithm of Open MPI either computes an element's final sum once and copies it (ring, reduce + broadcast,
  // Rabenseifner) or has both partners of a pair compute the same commutative sum (recursive doubling).
  void allreduce_sum_bf16(std::span<uint16_t> values);
  double allreduce_sum(double value);
  int64_t allreduce_sum(int64_t value);
  double allreduce_max(double value);
  int64_t allreduce_max(int64_t value);
  double allreduce_min(double value);
  int64_t allreduce_min(int64_t value);

  // Root's values replace everyone's; the counts must match (for the string, only root's length matters).
  void broadcast(std::span<float> values, int root);
  void broadcast(std::span<double> values, int root);
  void broadcast(std::span<int64_t> values, int root);
  void broadcast(std::span<std::byte> bytes, int root);
  void broadcast(std::string& text, int root);
  int64_t broadcast(int64_t value, int root);

  // Element r is rank r's value.
  std::vector<double> allgather(double value);
  std::vector<int64_t> allgather(int64_t value);

  void barrier();

  // Point to point, for the few exchanges between two ranks that are not collectives (the timeline's clock
  // ping-pong, dist/timeline.h): `to` receives exactly values.size() values from this rank, in send order.
  void send(std::span<const int64_t> values, int to);
  void receive(std::span<int64_t> values, int from);

  // Collective: rank 0 receives every rank's values concatenated in rank order (others get an empty vector).
  std::vector<float> gather_to_root(std::span<const float> local);
  std::vector<double> gather_to_root(std::span<const double> local);
  // Collective: rank 0 receives every rank's text, element r from rank r (others get an empty vector).
  std::vector<std::string> gather_text_to_root(const std::string& text);

  // Collective: every rank passes its own copy of something that must be bit-identical everywhere (initial
  // weights, a loaded checkpoint). Count and a 64-bit checksum of the float bits are gathered; on a mismatch every
  // rank throws the same AgreedFailure, "<what> differ across ranks: rank 2 has checksum ... (count ...) but rank 0
  // has ...".
  void check_same_everywhere(std::string_view what, std::span<const float> values);

  // Collective: every rank passes its error or nullptr. If any rank failed, every rank throws the same
  // AgreedFailure carrying the lowest failing rank's formatted message (and how many ranks failed).
  void agree(const std::exception_ptr& local_error);

  // Not collective: prints format_error(error, rank()) to stderr at once and ends every rank of the job.
  [[noreturn]] void abort(const std::exception& error);

  // Testing only: a smaller chunk limit so the chunking path runs on small buffers.
  void set_max_chunk_count(int64_t count);
  int64_t max_chunk_count() const { return max_chunk_count_; }
  // Collective MPI calls this Comm has made (allreduce, broadcast, allgather, gather, barrier; one per chunk), for
  // tests that count a step's collectives. Atomic (relaxed): a communication thread may make some of the calls.
  int64_t collective_calls() const { return collective_calls_.load(std::memory_order_relaxed); }

 private:
  template <typename T>
  void allreduce_in_place(std::span<T> values, MPI_Datatype type, MPI_Op op);
  // counts, when given, receives every rank's element count (on every rank).
  template <typename T>
  std::vector<T> gather_to_root_as(std::span<const T> local, MPI_Datatype type, std::vector<int64_t>* counts = nullptr);
  template <typename T>
  void broadcast_chunked(std::span<T> values, MPI_Datatype type, int root);

  struct OwnsNothing {};
  Comm(MPI_Comm parent, OwnsNothing);
  void attach(MPI_Comm parent);  // duplicates parent and reads rank, size and the node-local split

  bool owns_mpi_ = true;  // false for self(): MPI stays up for the Comm that initialised it
  MPI_Comm world_ = MPI_COMM_NULL;
  MPI_Comm local_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  int64_t max_chunk_count_ = kMaxChunkCount;
  std::atomic<int64_t> collective_calls_ = 0;
  MPI_Datatype bf16_type_ = MPI_DATATYPE_NULL;  // allreduce_sum_bf16's element: 2 bytes, named "bf16"
  MPI_Op bf16_sum_ = MPI_OP_NULL;               // its op: f32 add, rounded to bf16
};

// A phase every rank goes through: runs body here, then Comm::agree, so either every rank continues or every rank
// throws the same AgreedFailure naming the lowest rank that failed.
template <typename Body>
void run_agreed(Comm& comm, Body&& body) {
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  comm.agree(error);
}

// 64-bit checksum of the exact float bits, order-sensitive (-0.0 != 0.0, NaN payloads count).
uint64_t float_checksum(std::span<const float> values);

// MPI_Get_library_version's first line, e.g. "Open MPI v4.1.4, package: Debian OpenMPI, ...": which MPI (and so
// which transports) a benchmark's numbers came from.
std::string mpi_library_version();

// Prints the message to stderr (flushed) and ends the whole job: MPI_Abort if MPI is running, else exit(1).
[[noreturn]] void abort_job(const std::exception& error);

// The boundary the executable's main() uses: builds the Comm, runs body on every rank and returns the exit status.
// An AgreedFailure is printed once (rank 0) and every rank returns 1 after finalizing; any other exception goes to
// Comm::abort. The returned status is the maximum of the ranks' statuses.
int run_ranks(int argc, char** argv, const std::function<int(Comm&)>& body);

}  // namespace shardfit
