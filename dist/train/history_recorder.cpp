#include "dist/train/history_recorder.h"

#include <chrono>
#include <vector>

#include "dist/io/plot_svg.h"
#include "dist/train/fit.h"
#include "kernels/memory_budget.h"

namespace shardfit {

HistoryRecorder::HistoryRecorder(Comm& comm, const FitConfig& config, proto::History& history)
    : comm_(comm), config_(config), history_(history) {
  if (comm.is_root() && config.write_history) writer_ = std::make_unique<HistoryWriter>(config.history_dir);
}

void HistoryRecorder::record(int64_t epoch, const std::map<std::string, double>& logs, double seconds,
                             double samples_per_second) {
  auto* record = history_.add_epochs();
  record->set_epoch(epoch);
  for (const auto& [key, value] : logs) (*record->mutable_values())[key] = value;
  record->set_seconds(seconds);
  record->set_samples_per_second(samples_per_second);
  // One small collective an epoch: a benchmark reads each rank's memory from run.json instead of measuring from
  // outside (mpirun's children are not the caller's to getrusage).
  const std::vector<int64_t> peaks = comm_.allgather(peak_rss_bytes());
  history_.mutable_peak_rss_bytes()->Assign(peaks.begin(), peaks.end());
  write_files(false);
}

void HistoryRecorder::finish(const proto::Diagnosis& diagnosis) {
  *history_.mutable_diagnosis() = diagnosis;
  write_files(true);
}

void HistoryRecorder::write_files(bool with_verdict) const {
  if (!writer_) return;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  writer_->write(history_);
  const auto written = Clock::now();
  if (trace_ != nullptr) trace_->epoch_span(TraceKind::kHistory, start, written);
  if (config_.plot && history_.epochs_size() > 0) {  // no curve to draw after --epochs 0
    write_history_svg(history_files(writer_->dir()).loss_svg, history_, "loss",
                      with_verdict && history_.has_diagnosis() ? &history_.diagnosis() : nullptr);
    if (trace_ != nullptr) trace_->epoch_span(TraceKind::kPlot, written, Clock::now());
  }
}

}  // namespace shardfit
