// The communicator's implementation: MPI setup and teardown, chunked collectives, agreement and abort.
// Everything else in dist/ reaches MPI through this file (the gradient reducer calls Comm, not MPI).
#include "dist/comm.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "kernels/precision.h"
#include "kernels/random.h"

namespace shardfit {

namespace detail {

void fail_mpi(const char* file, int line, const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  int error_class = 0;
  std::string hint;
  if (MPI_Error_class(code, &error_class) == MPI_SUCCESS &&
      (error_class == MPI_ERR_TRUNCATE || error_class == MPI_ERR_COUNT)) {
    hint = "the ranks passed different element counts to the same collective";
  }
  const std::string description = length > 0 ? std::string(text, static_cast<size_t>(length)) : "unknown MPI error";
  throw Error(cat(file, ":", line), cat(call, " failed: ", description, " (code ", code, ")"), std::move(hint));
}

}  // namespace detail

namespace {

// Rank in MPI_COMM_WORLD while MPI is running, else -1 (before init, after finalize).
int world_rank_or_unknown() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

[[noreturn]] void print_and_end_job(const std::string& message) {
  // stdout first, so progress lines already written come before the error on a shared terminal.
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  // MPI_Abort does not return with Open MPI; this is for MPI not running (or an implementation that returns).
  std::_Exit(1);
}

std::string describe(const std::exception_ptr& error, int rank) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return format_error(e, rank);
  } catch (...) {
    return format_error(std::runtime_error("unknown exception (not derived from std::exception)"), rank);
  }
}

std::string hex64(uint64_t value) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

std::string format_error(const std::exception& error, int rank) {
  if (dynamic_cast<const AgreedFailure*>(&error) != nullptr) return error.what();
  std::string text = rank >= 0 ? cat("error on rank ", rank) : std::string("error");
  const auto* ours = dynamic_cast<const Error*>(&error);
  if (ours != nullptr && !ours->where().empty()) text += cat(" (", ours->where(), ")");
  text += cat(": ", error.what());
  if (ours != nullptr && !ours->hint().empty()) text += cat("\nhint: ", ours->hint());
  return text;
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_CHECK(MPI_Get_library_version(text, &length));
  std::string version(text, static_cast<size_t>(std::max(length, 0)));
  version = version.substr(0, version.find('\n'));
  while (!version.empty() && (version.back() == '\0' || version.back() == ' ')) version.pop_back();
  return version;
}

uint64_t float_checksum(std::span<const float> values) {
  uint64_t hash = 0x243F6A8885A308D3ULL ^ values.size();
  for (const float value : values) hash = mix64(hash ^ std::bit_cast<uint32_t>(value));
  return hash;
}

namespace {

// MPI_User_function for Comm::allreduce_sum_bf16: inout[i] = bf16(f32(in[i]) + f32(inout[i])). The f32 sum of
// two bf16 values is exact unless their exponents are more than 15 apart, and then its rounding is far below the
// one to bf16 (kernels/precision.h).
void mpi_add_bf16(void* in, void* inout, int* count, MPI_Datatype* /*type*/) {
  add_bf16(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), *count);
}

}  // namespace

Comm::Comm(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  SF_CHECK(!initialized, "MPI is already initialised", "construct exactly one shardfit::Comm per process");
  int provided = MPI_THREAD_SINGLE;
  // Errors on MPI_COMM_WORLD are fatal by default, so a failed init aborts inside MPI with its own message.
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    SF_FAIL(cat("MPI gave thread level ", provided, ", below MPI_THREAD_SERIALIZED (", MPI_THREAD_SERIALIZED, ")"),
            "use an MPI library built with thread support");
  }
  attach(MPI_COMM_WORLD);
}

Comm::Comm(MPI_Comm parent, OwnsNothing /*unused*/) : owns_mpi_(false) { attach(parent); }

std::unique_ptr<Comm> Comm::self() const { return std::unique_ptr<Comm>(new Comm(MPI_COMM_SELF, OwnsNothing{})); }

void Comm::attach(MPI_Comm parent) {
  MPI_CHECK(MPI_Comm_dup(parent, &world_));
  MPI_CHECK(MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(world_, &rank_));
  MPI_CHECK(MPI_Comm_size(world_, &size_));
  MPI_CHECK(MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_));
  MPI_CHECK(MPI_Comm_set_errhandler(local_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(local_, &local_rank_));
  MPI_CHECK(MPI_Comm_size(local_, &local_size_));
  // A datatype of its own rather than MPI_UINT16_T, so that no predefined op can be applied to bf16 by mistake.
  MPI_CHECK(MPI_Type_contiguous(1, MPI_UINT16_T, &bf16_type_));
  MPI_CHECK(MPI_Type_set_name(bf16_type_, "bf16"));
  MPI_CHECK(MPI_Type_commit(&bf16_type_));
  MPI_CHECK(MPI_Op_create(&mpi_add_bf16, /*commute=*/1, &bf16_sum_));
}

Comm::~Comm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (bf16_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&bf16_type_);
  if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
  if (world_ != MPI_COMM_NULL) MPI_Comm_free(&world_);
  if (owns_mpi_) MPI_Finalize();
}

void Comm::set_max_chunk_count(int64_t count) {
  SF_CHECK(count >= 1 && count <= kMaxChunkCount, cat("chunk count ", count, " is outside [1, ", kMaxChunkCount, "]"));
  max_chunk_count_ = count;
}

template <typename T>
void Comm::allreduce_in_place(std::span<T> values, MPI_Datatype type, MPI_Op op) {
  const auto count = static_cast<int64_t>(values.size());
  for (int64_t offset = 0; offset < count;) {
    const int chunk_count = static_cast<int>(std::min(count - offset, max_chunk_count_));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data() + offset, chunk_count, type, op, world_));
    collective_calls_.fetch_add(1, std::memory_order_relaxed);
    offset += chunk_count;
  }
}

template <typename T>
void Comm::broadcast_chunked(std::span<T> values, MPI_Datatype type, int root) {
  SF_CHECK(root >= 0 && root < size_, cat("broadcast root ", root, " is not a rank of ", size_));
  const auto count = static_cast<int64_t>(values.size());
  for (int64_t offset = 0; offset < count;) {
    const int chunk_count = static_cast<int>(std::min(count - offset, max_chunk_count_));
    MPI_CHECK(MPI_Bcast(values.data() + offset, chunk_count, type, root, world_));
    collective_calls_.fetch_add(1, std::memory_order_relaxed);
    offset += chunk_count;
  }
}

void Comm::allreduce_sum(std::span<float> values) { allreduce_in_place(values, MPI_FLOAT, MPI_SUM); }
void Comm::allreduce_sum(std::span<double> values) { allreduce_in_place(values, MPI_DOUBLE, MPI_SUM); }
void Comm::allreduce_sum(std::span<int64_t> values) { allreduce_in_place(values, MPI_INT64_T, MPI_SUM); }
void Comm::allreduce_sum_bf16(std::span<uint16_t> values) { allreduce_in_place(values, bf16_type_, bf16_sum_); }

double Comm::allreduce_sum(double value) {
  allreduce_in_place(std::span<double>(&value, 1), MPI_DOUBLE, MPI_SUM);
  return value;
}
int64_t Comm::allreduce_sum(int64_t value) {
  allreduce_in_place(std::span<int64_t>(&value, 1), MPI_INT64_T, MPI_SUM);
  return value;
}
double Comm::allreduce_max(double value) {
  allreduce_in_place(std::span<double>(&value, 1), MPI_DOUBLE, MPI_MAX);
  return value;
}
int64_t Comm::allreduce_max(int64_t value) {
  allreduce_in_place(std::span<int64_t>(&value, 1), MPI_INT64_T, MPI_MAX);
  return value;
}
double Comm::allreduce_min(double value) {
  allreduce_in_place(std::span<double>(&value, 1), MPI_DOUBLE, MPI_MIN);
  return value;
}
int64_t Comm::allreduce_min(int64_t value) {
  allreduce_in_place(std::span<int64_t>(&value, 1), MPI_INT64_T, MPI_MIN);
  return value;
}

void Comm::broadcast(std::span<float> values, int root) { broadcast_chunked(values, MPI_FLOAT, root); }
void Comm::broadcast(std::span<double> values, int root) { broadcast_chunked(values, MPI_DOUBLE, root); }
void Comm::broadcast(std::span<int64_t> values, int root) { broadcast_chunked(values, MPI_INT64_T, root); }
void Comm::broadcast(std::span<std::byte> bytes, int root) { broadcast_chunked(bytes, MPI_BYTE, root); }

int64_t Comm::broadcast(int64_t value, int root) {
  broadcast_chunked(std::span<int64_t>(&value, 1), MPI_INT64_T, root);
  return value;
}

void Comm::broadcast(std::string& text, int root) {
  const int64_t bytes = broadcast(static_cast<int64_t>(text.size()), root);
  if (rank_ != root) text.resize(static_cast<size_t>(bytes));
  broadcast(std::as_writable_bytes(std::span<char>(text.data(), text.size())), root);
}

std::vector<double> Comm::allgather(double value) {
  std::vector<double> values(static_cast<size_t>(size_));
  MPI_CHECK(MPI_Allgather(&value, 1, MPI_DOUBLE, values.data(), 1, MPI_DOUBLE, world_));
  collective_calls_.fetch_add(1, std::memory_order_relaxed);
  return values;
}

std::vector<int64_t> Comm::allgather(int64_t value) {
  std::vector<int64_t> values(static_cast<size_t>(size_));
  MPI_CHECK(MPI_Allgather(&value, 1, MPI_INT64_T, values.data(), 1, MPI_INT64_T, world_));
  collective_calls_.fetch_add(1, std::memory_order_relaxed);
  return values;
}

void Comm::barrier() {
  MPI_CHECK(MPI_Barrier(world_));
  collective_calls_.fetch_add(1, std::memory_order_relaxed);
}

namespace {
// The one tag of Comm's point-to-point messages: MPI keeps the order of messages between two ranks on one tag.
constexpr int kPointToPointTag = 7;
}  // namespace

void Comm::send(std::span<const int64_t> values, int to) {
  SF_CHECK(values.size() <= static_cast<size_t>(max_chunk_count_),
           cat("sending ", values.size(), " values exceeds one MPI call's count (", max_chunk_count_, ")"));
  MPI_CHECK(MPI_Send(values.data(), static_cast<int>(values.size()), MPI_INT64_T, to, kPointToPointTag, world_));
}

void Comm::receive(std::span<int64_t> values, int from) {
  SF_CHECK(values.size() <= static_cast<size_t>(max_chunk_count_),
           cat("receiving ", values.size(), " values exceeds one MPI call's count (", max_chunk_count_, ")"));
  MPI_CHECK(MPI_Recv(values.data(), static_cast<int>(values.size()), MPI_INT64_T, from, kPointToPointTag, world_,
                     MPI_STATUS_IGNORE));
}

template <typename T>
std::vector<T> Comm::gather_to_root_as(std::span<const T> local, MPI_Datatype type, std::vector<int64_t>* counts_out) {
  // Counts first, so the root can place each rank's block: rank order = row order for contiguous slices.
  const std::vector<int64_t> counts = allgather(static_cast<int64_t>(local.size()));
  if (counts_out != nullptr) *counts_out = counts;
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  SF_CHECK(total <= max_chunk_count_,
           cat("gathering ", total, " values exceeds one MPI call's count (", max_chunk_count_, ")"),
           "predict in several runs over parts of the input");
  std::vector<int> recv_counts;
  std::vector<int> displacements;
  std::vector<T> all;
  if (is_root()) {
    all.resize(static_cast<size_t>(total));
    int64_t offset = 0;
    for (int64_t c : counts) {
      recv_counts.push_back(static_cast<int>(c));
      displacements.push_back(static_cast<int>(offset));
      offset += c;
    }
  }
  MPI_CHECK(MPI_Gatherv(local.data(), static_cast<int>(local.size()), type, all.data(), recv_counts.data(),
                        displacements.data(), type, 0, world_));
  collective_calls_.fetch_add(1, std::memory_order_relaxed);
  return all;
}

std::vector<float> Comm::gather_to_root(std::span<const float> local) { return gather_to_root_as(local, MPI_FLOAT); }
std::vector<double> Comm::gather_to_root(std::span<const double> local) { return gather_to_root_as(local, MPI_DOUBLE); }

std::vector<std::string> Comm::gather_text_to_root(const std::string& text) {
  std::vector<int64_t> lengths;
  const std::vector<char> bytes =
      gather_to_root_as(std::span<const char>(text.data(), text.size()), MPI_CHAR, &lengths);
  std::vector<std::string> texts;
  if (!is_root()) return texts;
  size_t offset = 0;
  for (const int64_t length : lengths) {
    texts.emplace_back(bytes.data() + offset, static_cast<size_t>(length));
    offset += static_cast<size_t>(length);
  }
  return texts;
}

void Comm::check_same_everywhere(std::string_view what, std::span<const float> values) {
  // One allgather of (count, checksum) per rank: every rank sees the whole table and so builds the same message
  // without a second round.
  const int64_t mine[2] = {static_cast<int64_t>(values.size()), std::bit_cast<int64_t>(float_checksum(values))};
  std::vector<int64_t> table(2 * static_cast<size_t>(size_));
  MPI_CHECK(MPI_Allgather(mine, 2, MPI_INT64_T, table.data(), 2, MPI_INT64_T, world_));
  collective_calls_.fetch_add(1, std::memory_order_relaxed);

  const auto count_of = [&](int r) { return table[2 * static_cast<size_t>(r)]; };
  const auto checksum_of = [&](int r) { return static_cast<uint64_t>(table[2 * static_cast<size_t>(r) + 1]); };
  int first = -1;
  int differing_count = 0;
  for (int r = 1; r < size_; ++r) {
    if (count_of(r) != count_of(0) || checksum_of(r) != checksum_of(0)) {
      if (first < 0) first = r;
      ++differing_count;
    }
  }
  if (first < 0) return;
  std::string message =
      cat(what, " differ across ranks: rank ", first, " has checksum ", hex64(checksum_of(first)), " (count ",
          count_of(first), ") but rank 0 has ", hex64(checksum_of(0)), " (count ", count_of(0), ")");
  if (differing_count > 1) message += cat("; ", differing_count, " of ", size_, " ranks differ from rank 0");
  const Error error(cat(__FILE__, ":", __LINE__), message,
                    "every rank must start from the same values: same seed, same job file, same checkpoint");
  throw AgreedFailure(first, differing_count, format_error(error, first));
}

void Comm::agree(const std::exception_ptr& local_error) {
  // An allgather of one flag per rank, not an allreduce of the minimum: it gives both the lowest failing rank and
  // the number of failures in one round, and P int64s are nothing next to the broadcast that follows.
  const std::vector<int64_t> failed = allgather(static_cast<int64_t>(local_error ? 1 : 0));
  int first = -1;
  int failed_count = 0;
  for (int r = 0; r < size_; ++r) {
    if (failed[r] != 0) {
      if (first < 0) first = r;
      ++failed_count;
    }
  }
  if (first < 0) return;
  std::string message;
  if (rank_ == first) message = describe(local_error, rank_);
  broadcast(message, first);
  if (failed_count > 1) message += cat("\n(", failed_count, " of ", size_, " ranks failed; the lowest is shown)");
  throw AgreedFailure(first, failed_count, message);
}

void Comm::abort(const std::exception& error) { print_and_end_job(format_error(error, rank_)); }

void abort_job(const std::exception& error) { print_and_end_job(format_error(error, world_rank_or_unknown())); }

int run_ranks(int argc, char** argv, const std::function<int(Comm&)>& body) {
  std::optional<Comm> comm;
  try {
    comm.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    abort_job(e);
  }
  int status = 0;
  try {
    status = body(*comm);
    status = static_cast<int>(comm->allreduce_max(static_cast<int64_t>(status)));
  } catch (const AgreedFailure& e) {
    // Every rank holds the same text; one copy on the console is enough.
    if (comm->is_root()) {
      std::fflush(stdout);
      std::fprintf(stderr, "%s\n", e.what());
      std::fflush(stderr);
    }
    status = 1;
  } catch (const std::exception& e) {
    comm->abort(e);
  } catch (...) {
    comm->abort(std::runtime_error("unknown exception (not derived from std::exception)"));
  }
  comm.reset();  // MPI_Finalize on every rank before the process exits with the status
  return status;
}

}  // namespace shardfit
