// The Keras console (progress.h): number and time formats, the progress line, and when to print it. Not a logger:
// errors and the end-of-fit report are printed by their owners through print_line or on their own.
#include "dist/train/progress.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string_view>

namespace shardfit {

namespace {

constexpr int kBarWidth = 20;
constexpr std::string_view kBarDone = "━";       // U+2501 heavy horizontal, Keras's bar
constexpr std::string_view kBarRestPlain = "─";  // U+2500 light horizontal: visible without colours
constexpr std::string_view kBold = "\x1b[1m";
constexpr std::string_view kGreen = "\x1b[32m";
// Dim rather than Keras's white (37): white vanishes on a light terminal, dim reads on dark and light alike.
constexpr std::string_view kDim = "\x1b[2m";
constexpr std::string_view kReset = "\x1b[0m";

template <typename... Args>
std::string format(const char* pattern, Args... args) {
  std::array<char, 64> buffer{};
  std::snprintf(buffer.data(), buffer.size(), pattern, args...);
  return buffer.data();
}

std::string repeat(std::string_view piece, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += piece;
  return out;
}

std::string styled(std::string_view style, const std::string& text, bool ansi) {
  if (!ansi) return text;
  return std::string(style) + text + std::string(kReset);
}

}  // namespace

std::string format_step_time(double seconds_per_step) {
  const double t = seconds_per_step > 0 ? seconds_per_step : 0.0;  // NaN and negatives read as "no estimate yet"
  if (t >= 1 || t == 0) return format("%.0fs/step", t);
  if (t >= 1e-3) return format("%.0fms/step", t * 1e3);
  return format("%.0fus/step", t * 1e6);
}

std::string format_eta(double seconds) {
  const double eta = seconds > 0 ? std::min(seconds, 1e15) : 0.0;
  // Keras prints the parts with %d, which truncates; on whole seconds that is integer arithmetic.
  const auto whole = static_cast<long long>(eta);
  if (eta > 3600) return format("%lld:%02lld:%02lld", whole / 3600, whole % 3600 / 60, whole % 60);
  if (eta > 60) return format("%lld:%02lld", whole / 60, whole % 60);
  return format("%llds", whole);
}

std::string format_progress_line(const ProgressLine& line) {
  const long long steps = std::max<int64_t>(line.steps, 0);
  const long long done_steps = line.step_done;
  const int digits = static_cast<int>(std::to_string(steps).size());
  std::string out = styled(kBold, format("%*lld/%lld", digits, done_steps, steps), line.ansi);
  out += ' ';

  const double fraction = steps > 0 ? std::clamp(static_cast<double>(done_steps) / steps, 0.0, 1.0) : 1.0;
  const int done = static_cast<int>(kBarWidth * fraction);  // truncated, like Keras's int(width * prog)
  if (done > 0) out += styled(kGreen, repeat(kBarDone, done), line.ansi);
  if (done < kBarWidth) {
    out += line.ansi ? styled(kDim, repeat(kBarDone, kBarWidth - done), true) : repeat(kBarRestPlain, kBarWidth - done);
  }

  const double seconds = line.seconds > 0 ? line.seconds : 0.0;
  const std::string time = line.finished ? format("%.0fs", std::min(seconds, 1e15)) : format_eta(seconds);
  out += ' ';
  out += styled(kBold, time, line.ansi);
  out += ' ';
  out += format_step_time(line.seconds_per_step);
  if (line.values != nullptr) {
    for (const auto& [key, value] : *line.values) {
      out += " - ";
      out += key;
      out += ": ";
      out += format_value(value);
    }
  }
  return out;
}

size_t visible_width(const std::string& text) {
  size_t width = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == 0x1b && i + 1 < text.size() && text[i + 1] == '[') {
      // CSI: parameters and intermediates up to a final byte in 0x40..0x7e.
      i += 2;
      while (i < text.size() && !(text[i] >= 0x40 && text[i] <= 0x7e)) ++i;
      continue;
    }
    if ((c & 0xC0) != 0x80) ++width;  // count lead bytes only
  }
  return width;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, int verbose, bool is_terminal, int64_t epochs)
    : out_(out),
      verbose_(verbose),
      is_terminal_(is_terminal),
      epochs_(epochs),
      last_draw_seconds_(-std::numeric_limits<double>::infinity()),
      first_step_seconds_(-1.0) {}

void ProgressPrinter::epoch_begin(int64_t epoch) {
  if (line_open_) emit("\n");  // a bar left open by an epoch that never reached epoch_end
  line_open_ = false;
  drawn_width_ = 0;
  last_draw_seconds_ = -std::numeric_limits<double>::infinity();
  first_step_seconds_ = -1.0;
  if (verbose_ > 0 && epochs_ > 1) {
    emit(format("Epoch %lld/%lld\n", static_cast<long long>(epoch) + 1, static_cast<long long>(epochs_)));
  }
}

// Keras's estimate: after step 1, the mean over the steps since step 1, so that the first step's one-off cost
// (primitive creation, page faults) does not inflate the per-step time and the ETA.
double ProgressPrinter::seconds_per_step(int64_t step_done, double elapsed_seconds) {
  if (step_done <= 0) return 0.0;
  double per_step = elapsed_seconds / static_cast<double>(step_done);
  if (first_step_seconds_ >= 0 && step_done > 1) {
    per_step = (elapsed_seconds - first_step_seconds_) / static_cast<double>(step_done - 1);
  }
  if (step_done == 1) first_step_seconds_ = elapsed_seconds;
  return per_step;
}

void ProgressPrinter::step(int64_t step_done, int64_t steps, double elapsed_seconds,
                           const std::map<std::string, double>& running_values) {
  const double per_step = seconds_per_step(step_done, elapsed_seconds);
  if (!redraws() || elapsed_seconds - last_draw_seconds_ < kRedrawSeconds) return;
  last_draw_seconds_ = elapsed_seconds;
  const std::string line = format_progress_line({.step_done = step_done,
                                                 .steps = steps,
                                                 .finished = false,
                                                 .seconds = per_step * static_cast<double>(steps - step_done),
                                                 .seconds_per_step = per_step,
                                                 .values = &running_values,
                                                 .ansi = true});
  const size_t width = visible_width(line);
  // A line can get shorter than the one on screen (loss 10.0123 -> 9.9876): blank the old tail.
  emit("\r" + line + std::string(drawn_width_ > width ? drawn_width_ - width : 0, ' '));
  drawn_width_ = width;
  line_open_ = true;
}

void ProgressPrinter::epoch_end(int64_t steps, double seconds, const std::map<std::string, double>& values) {
  const double per_step = seconds_per_step(steps, seconds);
  if (verbose_ <= 0) return;
  const std::string line = format_progress_line({.step_done = steps,
                                                 .steps = steps,
                                                 .finished = true,
                                                 .seconds = seconds,
                                                 .seconds_per_step = per_step,
                                                 .values = &values,
                                                 .ansi = redraws()});
  if (redraws()) {
    const size_t width = visible_width(line);
    emit("\r" + line + std::string(drawn_width_ > width ? drawn_width_ - width : 0, ' ') + "\n");
  } else {
    emit(line + "\n");
  }
  drawn_width_ = 0;
  line_open_ = false;
}

void ProgressPrinter::print_line(const std::string& line) {
  if (verbose_ <= 0) return;
  if (line_open_) emit("\n");
  line_open_ = false;
  drawn_width_ = 0;
  emit(line + "\n");
}

void ProgressPrinter::emit(const std::string& text) {
  std::fputs(text.c_str(), out_);
  std::fflush(out_);  // the bar is for a person watching; buffering would show it in bursts
}

}  // namespace shardfit
