// The Keras console: exact text of numbers, times, progress lines and of whole epochs as printed at each verbosity,
// and the redraw throttling. Output goes to an in-memory stream; time is what the test passes in.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>

#include "dist/train/progress.h"

namespace shardfit {
namespace {

// A FILE* whose bytes the test can read back.
class Capture {
 public:
  Capture() : file_(::open_memstream(&data_, &size_)) {}
  ~Capture() {
    std::fclose(file_);
    std::free(data_);
  }
  std::FILE* file() const { return file_; }
  std::string text() const {
    std::fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

std::string bar(int done, const std::string& rest_piece = "─") {
  std::string out;
  for (int i = 0; i < 20; ++i) out += i < done ? "━" : rest_piece;
  return out;
}

const std::map<std::string, double> kEpochValues = {
    {"loss", 0.13271}, {"accuracy", 0.96123}, {"val_loss", 0.0692}, {"val_accuracy", 0.98141}};

TEST(FormatValue, KerasFormats) {
  EXPECT_EQ(format_value(0.13271), "0.1327");
  EXPECT_EQ(format_value(1.23456e-4), "1.2346e-04");
  EXPECT_EQ(format_value(0.0), "0.0000e+00");
  EXPECT_EQ(format_value(1e-3), "1.0000e-03");  // not above 1e-3
  EXPECT_EQ(format_value(0.0010001), "0.0010");
  EXPECT_EQ(format_value(-2.5), "-2.5000");
  EXPECT_EQ(format_value(-5e-4), "-5.0000e-04");  // |v|, not v, decides
  EXPECT_EQ(format_value(12345.678), "12345.6780");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::quiet_NaN()), "nan");  // not glibc's "-nan"
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-inf");
}

TEST(FormatTime, KerasUnits) {
  EXPECT_EQ(format_step_time(2.4), "2s/step");
  EXPECT_EQ(format_step_time(1.0), "1s/step");
  EXPECT_EQ(format_step_time(0.0), "0s/step");
  EXPECT_EQ(format_step_time(0.02), "20ms/step");
  EXPECT_EQ(format_step_time(0.0014), "1ms/step");
  EXPECT_EQ(format_step_time(0.00035), "350us/step");
  EXPECT_EQ(format_step_time(std::nan("")), "0s/step");
  EXPECT_EQ(format_eta(0.0), "0s");
  EXPECT_EQ(format_eta(3.9), "3s");  // truncated, as Keras's %d does
  EXPECT_EQ(format_eta(60.0), "60s");
  EXPECT_EQ(format_eta(65.5), "1:05");
  EXPECT_EQ(format_eta(3665.2), "1:01:05");
  EXPECT_EQ(format_eta(-1.0), "0s");
}

TEST(FormatProgressLine, RunningAndFinished) {
  const std::map<std::string, double> values = {{"loss", 0.5}, {"accuracy", 0.25}};
  // 12 of 57: int(20 * 12 / 57) = 4 cells done.
  EXPECT_EQ(format_progress_line({.step_done = 12,
                                  .steps = 57,
                                  .finished = false,
                                  .seconds = 3.2,
                                  .seconds_per_step = 0.02,
                                  .values = &values}),
            "12/57 " + bar(4) + " 3s 20ms/step - accuracy: 0.2500 - loss: 0.5000");
  // The count is right aligned to the width of the total.
  EXPECT_EQ(format_progress_line({.step_done = 5, .steps = 1688, .seconds = 70, .seconds_per_step = 0.002}),
            "   5/1688 " + bar(0) + " 1:10 2ms/step");
  EXPECT_EQ(
      format_progress_line({.step_done = 57,
                            .steps = 57,
                            .finished = true,
                            .seconds = 1.4,
                            .seconds_per_step = 0.02,
                            .values = &kEpochValues}),
      "57/57 " + bar(20) + " 1s 20ms/step - accuracy: 0.9612 - loss: 0.1327 - val_accuracy: 0.9814 - val_loss: 0.0692");
  // Terminal styling: bold count and time, green done cells, dim rest; the width counts none of it.
  const std::string ansi = format_progress_line(
      {.step_done = 12, .steps = 57, .seconds = 3.2, .seconds_per_step = 0.02, .values = &values, .ansi = true});
  EXPECT_EQ(ansi, "\x1b[1m12/57\x1b[0m \x1b[32m━━━━\x1b[0m\x1b[2m" + bar(16, "━").substr(0, 16 * 3) +
                      "\x1b[0m \x1b[1m3s\x1b[0m 20ms/step - accuracy: 0.2500 - loss: 0.5000");
  EXPECT_EQ(visible_width(ansi), visible_width("12/57 " + bar(4) + " 3s 20ms/step - accuracy: 0.2500 - loss: 0.5000"));
  EXPECT_EQ(visible_width("12/57 " + bar(4)), 26u);
}

TEST(ProgressPrinter, Verbose2PrintsHeaderAndOneLinePerEpoch) {
  Capture out;
  ProgressPrinter printer(out.file(), 2, /*is_terminal=*/true, 10);
  printer.epoch_begin(2);
  for (int64_t s = 1; s <= 57; ++s) printer.step(s, 57, 0.02 * static_cast<double>(s), {{"loss", 0.2}});
  // 1.14 s over 57 steps, of which step 1 took 0.02 s: (1.14 - 0.02) / 56 = 20 ms per step.
  printer.epoch_end(57, 1.14, kEpochValues);
  EXPECT_EQ(out.text(), "Epoch 3/10\n57/57 " + bar(20) +
                            " 1s 20ms/step - accuracy: 0.9612 - loss: 0.1327 - val_accuracy: 0.9814 - val_loss: "
                            "0.0692\n");
}

TEST(ProgressPrinter, NoHeaderForOneEpochAndPlainLineOffTerminal) {
  Capture out;
  ProgressPrinter printer(out.file(), 1, /*is_terminal=*/false, 1);
  printer.epoch_begin(0);
  printer.step(1, 3, 0.5, {{"loss", 1e-5}});
  printer.step(2, 3, 1.0, {{"loss", 1e-5}});
  printer.epoch_end(3, 2.5, {{"loss", std::numeric_limits<double>::quiet_NaN()}, {"val_loss", 1.23456e-4}});
  // Per step after step 1: (2.5 - 0.5) / 2 = 1 s.
  EXPECT_EQ(out.text(), "3/3 " + bar(20) + " 2s 1s/step - loss: nan - val_loss: 1.2346e-04\n");
}

TEST(ProgressPrinter, Verbose0PrintsNothing) {
  Capture out;
  ProgressPrinter printer(out.file(), 0, /*is_terminal=*/true, 10);
  printer.epoch_begin(0);
  printer.step(1, 2, 0.1, {{"loss", 1.0}});
  printer.epoch_end(2, 0.2, {{"loss", 1.0}});
  printer.print_line("Epoch 1: early stopping");
  EXPECT_EQ(out.text(), "");
}

TEST(ProgressPrinter, TerminalRedrawsAtMostEvery50ms) {
  Capture out;
  ProgressPrinter printer(out.file(), 1, /*is_terminal=*/true, 2);
  printer.epoch_begin(0);
  printer.step(1, 4, 0.50, {{"loss", 10.0123}});  // drawn: the first draw of the epoch
  printer.step(2, 4, 0.51, {{"loss", 10.0123}});  // 0.01 s later: not drawn
  printer.step(3, 4, 0.60, {{"loss", 9.9876}});   // 0.10 s after the last draw: drawn, one column shorter
  printer.epoch_end(4, 0.70, {{"loss", 9.5}, {"val_loss", 9.25}});
  const auto styled = [](int done, const std::string& time, const std::string& rest) {
    std::string cells;
    for (int i = 0; i < done; ++i) cells += "━";
    std::string dim;
    for (int i = done; i < 20; ++i) dim += "━";
    return "\x1b[1m" + std::string(rest) + "\x1b[0m \x1b[32m" + cells + "\x1b[0m" +
           (done < 20 ? "\x1b[2m" + dim + "\x1b[0m" : "") + " \x1b[1m" + time + "\x1b[0m";
  };
  const std::string expected =
      "Epoch 1/2\n"
      // step 1: 0.5 s per step, ETA 3 x 0.5 = 1.5 s
      "\r" +
      styled(5, "1s", "1/4") + " 500ms/step - loss: 10.0123" +
      // step 3: (0.6 - 0.5) / 2 = 50 ms per step, ETA 0.05 s; two columns shorter (50ms, 9.9876): two blanks
      "\r" + styled(15, "0s", "3/4") + " 50ms/step - loss: 9.9876" + "  " +
      // end: (0.7 - 0.5) / 3 = 67 ms per step, 0.7 s elapsed; longer than what is on screen: no blanks
      "\r" + styled(20, "1s", "4/4") + " 67ms/step - loss: 9.5000 - val_loss: 9.2500\n";
  EXPECT_EQ(out.text(), expected);
}

TEST(ProgressPrinter, ThrottleRestartsEachEpoch) {
  Capture out;
  ProgressPrinter printer(out.file(), 1, /*is_terminal=*/true, 2);
  printer.epoch_begin(0);
  printer.step(1, 2, 0.01, {});
  printer.epoch_end(2, 0.02, {});
  printer.epoch_begin(1);
  printer.step(1, 2, 0.01, {});  // a new epoch's clock starts at 0 again: drawn
  const std::string text = out.text();
  size_t redraws = 0;
  for (size_t at = text.find('\r'); at != std::string::npos; at = text.find('\r', at + 1)) ++redraws;
  EXPECT_EQ(redraws, 3u) << text;  // step, end, step
  EXPECT_NE(text.find("Epoch 2/2\n\r"), std::string::npos) << text;
}

TEST(ProgressPrinter, PrintLineEndsAnOpenBarFirst) {
  Capture out;
  ProgressPrinter printer(out.file(), 1, /*is_terminal=*/true, 1);
  printer.epoch_begin(0);
  printer.step(1, 2, 0.01, {});
  printer.print_line("Epoch 1: early stopping");
  const std::string text = out.text();
  ASSERT_GE(text.size(), 25u);
  EXPECT_EQ(text.substr(text.size() - 25), "\nEpoch 1: early stopping\n");

  Capture plain;
  ProgressPrinter after_epoch(plain.file(), 2, /*is_terminal=*/false, 1);
  after_epoch.epoch_end(1, 0.5, {{"loss", 0.5}});
  after_epoch.print_line("Epoch 1: early stopping");
  EXPECT_EQ(plain.text(), "1/1 " + bar(20) + " 0s 500ms/step - loss: 0.5000\nEpoch 1: early stopping\n");
}

}  // namespace
}  // namespace shardfit
