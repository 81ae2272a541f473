// Keras's History callback: one record per epoch in the fit's proto::History, and on rank 0 the history files
// (dist/io/history_writer.h) and loss.svg rewritten after each epoch, so a job killed at any moment leaves files for
// the epochs done. At the end, the verdict goes into the history and onto the plot.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "dist/comm.h"
#include "dist/io/history_writer.h"
#include "dist/io/trace.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

struct FitConfig;

class HistoryRecorder {
 public:
  // Creates the history folder on rank 0 when the fit writes one (throws Error naming it when it cannot).
  HistoryRecorder(Comm& comm, const FitConfig& config, proto::History& history);

  // The epoch's values (loss, metrics, val_*, learning_rate ...), its wall time and training throughput, and every
  // rank's peak RSS so far (gathered: a collective, so every rank calls it).
  void record(int64_t epoch, const std::map<std::string, double>& logs, double seconds, double samples_per_second);
  // After the last epoch: the verdict joins the history, and the files and the plot are written a last time.
  void finish(const proto::Diagnosis& diagnosis);

  // Each rewrite of the history files and of the plot becomes a span of the recorder's epoch (null: none).
  void record_to(TraceRecorder* trace) { trace_ = trace; }

 private:
  void write_files(bool with_verdict) const;

  Comm& comm_;  // record() gathers the ranks' peak RSS
  const FitConfig& config_;
  proto::History& history_;
  std::unique_ptr<HistoryWriter> writer_;  // rank 0, when the fit writes a history
  TraceRecorder* trace_ = nullptr;
};

}  // namespace shardfit
