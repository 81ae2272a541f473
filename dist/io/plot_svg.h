// The training curves as a standalone SVG: one metric and its val_ twin over the epochs, the best epoch marked and
// the verdict as a caption; and the scaling chart of bench records. No fonts, scripts or other files needed; not a
// general plotting library.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "dist/io/bench_records.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

// The plot of `metric` (training) and `val_<metric>` over the epochs, x axis 1-based like the console's "Epoch N/M".
// "val_accuracy" plots the same as "accuracy". The title reads "Training and validation accuracy" ("Training
// loss" / "Validation loss" when one curve is missing).
// Values are matched to epochs by the record they sit in, so val lists thinned by validation_freq line up; a NaN or
// infinite value leaves a gap in its curve. The best epoch (lowest val value, highest for accuracy-like metrics:
// accuracy, auc, precision, recall, f1) is marked when there is a val curve; `diagnosis`, when given, adds its
// summary as a caption and, on the loss plot, shades the epochs from overfitting_from_epoch on. Throws Error when no
// epoch has `metric` or `val_<metric>` (naming the plottable ones).
// For tests and tools: each curve is <path class="curve" data-series="loss" data-points="N"> with one M or L command
// per finite point; the best epoch is <g class="best-marker" data-epoch="E"> with E 1-based.
std::string render_history_svg(const proto::History& history, const std::string& metric = "loss",
                               const proto::Diagnosis* diagnosis = nullptr);

// render_history_svg written to `path` atomically (a reader sees the old file or the new one, never a mix).
void write_history_svg(const std::filesystem::path& path, const proto::History& history,
                       const std::string& metric = "loss", const proto::Diagnosis* diagnosis = nullptr);

// Several metrics in one SVG: the plot of each (as render_history_svg draws it), stacked top to bottom in the order
// given, each nested as <svg class="panel" data-metric="NAME">. The caption goes under the loss panel only (the first
// panel when none is loss). One metric gives exactly render_history_svg's text.
std::string render_history_panels_svg(const proto::History& history, const std::vector<std::string>& metrics,
                                      const proto::Diagnosis* diagnosis = nullptr);

// render_history_panels_svg written to `path` atomically.
void write_history_panels_svg(const std::filesystem::path& path, const proto::History& history,
                              const std::vector<std::string>& metrics, const proto::Diagnosis* diagnosis = nullptr);

// The keys render_history_svg accepts: every value key of the history without the val_ prefix (plus the bare name
// of a val_ key whose training twin is missing), "loss" first, the rest sorted.
std::vector<std::string> plottable_metrics(const proto::History& history);

// The scaling chart of bench records (bench_records.h): two panels in one SVG, one above the other, sharing the
// ranks axis (log2, a tick at each rank count run) and one legend: speedup against ranks (log-log, so the ideal
// P / P0 is a straight line, drawn dashed for each baseline rank count P0), then parallel efficiency in percent
// (the ideal is the 100% line). One line per series that has more than one rank count; a series with one rank
// count is left out of the chart (the table has it) and named in a note. Oversubscribed runs get a hollow marker,
// explained in the legend. Throws Error when no series has two rank counts.
// For tests and tools: each panel is <g class="panel" data-panel="speedup|efficiency">; in it each series is
// <path class="series" data-series="LABEL" data-mode="strong|weak" data-points="N">, each run a
// <circle class="point" data-series="LABEL" data-ranks="P" data-oversubscribed="true|false" data-value="V"> (V: the
// speedup, or the efficiency as a fraction), and the ideal <path class="ideal" data-base-ranks="P0">.
std::string render_scaling_svg(const std::vector<ScalingSeries>& series);

// render_scaling_svg written to `path` atomically.
void write_scaling_svg(const std::filesystem::path& path, const std::vector<ScalingSeries>& series);

}  // namespace shardfit
