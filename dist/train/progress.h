// The Keras console on rank 0: "Epoch 3/10", the progress bar redrawn while an epoch runs, and the line that ends
// each epoch. It formats and prints what the fit loop hands it (times and values); it measures and reduces nothing.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "dist/io/format.h"

namespace shardfit {

// Time per step, Keras's units: "2s/step" (>= 1 s, or exactly 0), "20ms/step", "350us/step"; rounded to a whole.
std::string format_step_time(double seconds_per_step);

// The ETA while an epoch runs: "42s", "1:05" (> 60 s), "1:01:05" (> 1 h); whole seconds, truncated like Keras.
std::string format_eta(double seconds);

// One progress line, without the carriage return or the newline.
struct ProgressLine {
  int64_t step_done = 0;
  int64_t steps = 0;
  bool finished = false;  // true: `seconds` is the epoch's elapsed time; false: it is the ETA
  double seconds = 0.0;
  double seconds_per_step = 0.0;
  const std::map<std::string, double>* values = nullptr;  // printed in key order; may be null
  bool ansi = false;                                      // terminal styling: bold count and time, coloured bar
};

// " 12/57 ━━━━━━━━────────────── 3s 20ms/step - accuracy: 0.9612 - loss: 0.1327" (running) and
// "57/57 ━━━━━━━━━━━━━━━━━━━━ 1s 20ms/step - loss: 0.1327 - val_loss: 0.0692" (finished). The count is right
// aligned to the width of `steps`; the bar is 20 characters, the done part '━'. The rest is '─' in plain text and a
// dim '━' with ansi (Keras draws it in a second colour). Keras 3's layout, with the keys sorted.
std::string format_progress_line(const ProgressLine& line);

// Columns a line takes on a terminal: UTF-8 code points, not counting ANSI escape sequences.
size_t visible_width(const std::string& text);

// The console of one fit, rank 0 only. verbose 0 prints nothing at all; verbose 1 on a terminal redraws the bar in
// place (at most every kRedrawSeconds) and finishes it at epoch end; verbose 2, or any verbose on a stream that is
// not a terminal, prints the finished line once per epoch. Times come from the caller (seconds since the epoch
// began), so the output is a function of the calls alone.
class ProgressPrinter {
 public:
  static constexpr double kRedrawSeconds = 0.05;

  ProgressPrinter(std::FILE* out, int verbose, bool is_terminal, int64_t epochs);

  // "Epoch 3/10" (epoch 0-based here, printed 1-based) when epochs > 1; starts the epoch's timing.
  void epoch_begin(int64_t epoch);

  // After each optimizer step: `step_done` steps of `steps` are done, `elapsed_seconds` since epoch_begin, running
  // means of the epoch so far. Call it after every step at any verbosity: the first step's time is kept out of the
  // per-step time (as Keras does: it carries one-off setup), which needs the call at step 1.
  void step(int64_t step_done, int64_t steps, double elapsed_seconds,
            const std::map<std::string, double>& running_values);

  // The epoch's final line, with the validation values among `values`; `seconds` is the epoch's wall time.
  void epoch_end(int64_t steps, double seconds, const std::map<std::string, double>& values);

  // A message of its own line ("Epoch 5: early stopping"); ends a bar that is still being redrawn first.
  // Silent at verbose 0.
  void print_line(const std::string& line);

 private:
  double seconds_per_step(int64_t step_done, double elapsed_seconds);
  bool redraws() const { return verbose_ == 1 && is_terminal_; }
  void emit(const std::string& text);

  std::FILE* out_;
  int verbose_;
  bool is_terminal_;
  int64_t epochs_;
  double last_draw_seconds_;   // elapsed time of the last redraw in this epoch; -inf before the first
  double first_step_seconds_;  // elapsed time when step 1 was done; negative until then
  size_t drawn_width_ = 0;     // columns of the line on screen, so a shorter redraw can blank the tail
  bool line_open_ = false;     // a redrawn bar is on screen without its newline
};

}  // namespace shardfit
