// The history plot (plot_svg.h): lays out one chart by hand and prints it as SVG text. Text widths are estimated from
// the character count (no font metrics here), so the layout leaves generous room for the labels.
#include "dist/io/plot_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "dist/io/format.h"
#include "dist/io/history_writer.h"
#include "dist/io/metric_direction.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

// ---- layout, in SVG user units (px at 100%) ----
constexpr double kWidth = 800;
constexpr double kPlotHeight = 460;  // everything above the caption
constexpr double kMarginRight = 28;
constexpr double kHeaderRow = 30;    // baseline-ish of the title and, when it fits beside it, the legend
constexpr double kPlotTop = 64;      // below the title and the legend row
constexpr double kPlotBottom = 400;  // x axis; tick labels and "Epoch" below it
constexpr double kFontSize = 12;
constexpr double kTitleSize = 17;
constexpr double kCaptionSize = 13;
constexpr double kCaptionLine = 19;
// Average advance of a character as a fraction of the font size, on the wide side (DejaVu Sans), so estimated
// widths err towards more room.
constexpr double kCharWidth = 0.6;
// Points get a dot when there are this few: with more the dots merge into a thick line.
constexpr int kMaxDottedPoints = 60;
constexpr const char* kFont = "DejaVu Sans, Helvetica, Arial, sans-serif";
constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#e8710a";
constexpr const char* kTextColor = "#222";
constexpr const char* kMutedColor = "#555";

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (1-based epoch, value), in history order; NaN value = gap
};

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab and newline are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += "?";
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Coordinates with two decimals: sub-pixel exact, and short.
std::string coord(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value);
  return text;
}

double text_width(std::string_view text, double font_size) {
  return static_cast<double>(text.size()) * kCharWidth * font_size;
}

// Round tick values inside [lo, hi] (lo < hi): steps of 1, 2 or 5 times a power of ten, about `target` of them.
struct Ticks {
  double first;
  double step;
  int count;
  int decimals;  // enough to tell neighbouring ticks apart, no more
};

Ticks nice_ticks(double lo, double hi, int target) {
  const double rough = (hi - lo) / target;
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  const double fraction = rough / power;
  const double step = (fraction < 1.5 ? 1 : fraction < 3.5 ? 2 : fraction < 7.5 ? 5 : 10) * power;
  const double first = std::ceil(lo / step - 1e-9) * step;
  const double last = std::floor(hi / step + 1e-9) * step;
  const int count = static_cast<int>(std::lround((last - first) / step)) + 1;
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return {first, step, count, decimals};
}

std::string tick_label(double value, int decimals) {
  char text[64];
  if (decimals > 6 || std::fabs(value) >= 1e7) {
    std::snprintf(text, sizeof text, "%.3g", value);
  } else {
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
  }
  std::string out = text;
  if (out == "-0" || out.find_first_not_of("-0.") == std::string::npos) out = out[0] == '-' ? out.substr(1) : out;
  return out;
}

// Greedy word wrap to at most `width` characters per line; a longer word gets its own line.
std::vector<std::string> wrap(const std::string& text, std::size_t width) {
  std::vector<std::string> lines;
  std::istringstream words(text);
  std::string word;
  std::string line;
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

Series collect(const proto::History& history, const std::string& key) {
  Series series{key, {}};
  for (const proto::EpochRecord& record : history.epochs()) {
    const auto found = record.values().find(key);
    if (found == record.values().end()) continue;  // not validated this epoch: no point, and no gap either
    const double value = std::isfinite(found->second) ? found->second : std::nan("");
    series.points.emplace_back(static_cast<double>(record.epoch() + 1), value);
  }
  return series;
}

int finite_count(const Series& series) {
  return static_cast<int>(
      std::count_if(series.points.begin(), series.points.end(), [](const auto& p) { return !std::isnan(p.second); }));
}

}  // namespace

std::vector<std::string> plottable_metrics(const proto::History& history) {
  std::set<std::string> names;
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& [key, value] : record.values()) {
      names.insert(key.rfind("val_", 0) == 0 ? key.substr(4) : key);
    }
  }
  std::vector<std::string> out;
  if (names.erase("loss") > 0) out.push_back("loss");
  out.insert(out.end(), names.begin(), names.end());
  return out;
}

namespace {

// "Training and validation accuracy", as a person would title the figure: the metric's name in words.
std::string plot_title(const std::string& metric, bool has_train, bool has_val) {
  std::string name = metric;
  std::replace(name.begin(), name.end(), '_', ' ');
  if (!has_val && metric == "learning_rate") return "Learning rate";  // a schedule, not something trained
  if (!has_val) return "Training " + name;
  return (has_train ? "Training and validation " : "Validation ") + name;
}

// One rendered plot and its height in SVG units: the panels stack plots by their heights.
struct RenderedPlot {
  std::string svg;
  double height = 0;
};

RenderedPlot render_plot(const proto::History& history, const std::string& requested,
                         const proto::Diagnosis* diagnosis) {
  // "val_accuracy" asks for the accuracy plot: both curves, titled by the metric's own name.
  const std::string metric = requested.rfind("val_", 0) == 0 ? requested.substr(4) : requested;
  const Series train = collect(history, metric);
  const Series val = collect(history, "val_" + metric);
  if (train.points.empty() && val.points.empty()) {
    std::string known;
    for (const std::string& name : plottable_metrics(history)) known += (known.empty() ? "" : ", ") + name;
    SF_FAIL("no epoch of the history has '" + metric + "' or 'val_" + metric + "'",
            known.empty() ? "the history has no epochs" : "plottable: " + known);
  }
  const bool maximise = higher_is_better(metric);

  // ---- data ranges ----
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series* series : {&train, &val}) {
    for (const auto& [x, y] : series->points) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      if (!std::isnan(y)) {
        y_lo = std::min(y_lo, y);
        y_hi = std::max(y_hi, y);
      }
    }
  }
  const bool any_finite = y_lo <= y_hi;
  if (!any_finite) {
    y_lo = 0;
    y_hi = 1;
  }
  // The frame is the data range plus 4% above and below, so no point sits on it, and the ticks are the round values
  // inside (not the frame snapped out to round values, which can leave a fifth of the plot empty or draw an accuracy
  // axis up to 1.1).
  if (y_hi > y_lo) {
    const double y_pad = 0.04 * (y_hi - y_lo);
    // A non-negative curve never gets a negative part, and one that comes within 10% of its range to 0 (a loss,
    // usually) is drawn from 0.
    y_lo = y_lo < 0 ? y_lo - y_pad : y_lo <= 2.5 * y_pad ? 0.0 : y_lo - y_pad;
    y_hi += y_pad;
  } else {
    // One distinct value: a band around it, so the curve sits mid-height.
    const double pad = y_lo != 0 ? std::fabs(y_lo) * 0.1 : 1.0;
    y_lo -= pad;
    y_hi += pad;
  }
  const double y_min = y_lo;
  const double y_max = y_hi;
  const Ticks y_ticks = nice_ticks(y_min, y_max, 6);

  // Epochs are whole numbers: integer tick steps, and half an epoch of room on each side of a single epoch.
  if (x_hi - x_lo < 1) {
    x_lo -= 0.5;
    x_hi += 0.5;
  }
  // A little room at both ends so the first and last dots do not sit on the frame.
  const double x_pad = 0.025 * (x_hi - x_lo);
  x_lo -= x_pad;
  x_hi += x_pad;
  const Ticks x_nice = nice_ticks(x_lo, x_hi, 8);
  const double x_step = std::max(1.0, x_nice.step);

  // ---- layout: the left margin fits the widest y tick label and the rotated axis label ----
  std::vector<std::string> y_labels;
  double widest = 0;
  for (int i = 0; i < y_ticks.count; ++i) {
    y_labels.push_back(tick_label(y_ticks.first + i * y_ticks.step, y_ticks.decimals));
    widest = std::max(widest, text_width(y_labels.back(), kFontSize));
  }
  const double left = std::ceil(24 + kFontSize + 10 + widest);
  const double right = kWidth - kMarginRight;

  // The legend sits in the header row, right-aligned, outside the plot so that it never covers a curve; when a long
  // title leaves no room beside it, it gets a row of its own and the plot moves down.
  const std::string title = plot_title(metric, !train.points.empty(), !val.points.empty());
  std::vector<std::pair<std::string, std::string>> entries;  // (label, color)
  if (!train.points.empty()) entries.emplace_back(metric, kTrainColor);
  if (!val.points.empty()) entries.emplace_back("val_" + metric, kValColor);
  const auto entry_width = [](const std::string& label) { return 22 + 6 + text_width(label, kFontSize); };
  double legend_width = 0;
  for (const auto& entry : entries) legend_width += (legend_width > 0 ? 18 : 0) + entry_width(entry.first);
  const bool legend_own_row = right - legend_width < left + text_width(title, kTitleSize) + 24;
  const double legend_y = legend_own_row ? kHeaderRow + 24 : kHeaderRow;
  const double plot_top = legend_own_row ? kPlotTop + 24 : kPlotTop;
  const auto px = [&](double epoch) { return left + (epoch - x_lo) / (x_hi - x_lo) * (right - left); };
  const auto py = [&](double value) {
    return kPlotBottom - (value - y_min) / (y_max - y_min) * (kPlotBottom - plot_top);
  };

  std::vector<std::string> caption;
  if (diagnosis != nullptr && !diagnosis->summary().empty()) {
    const auto per_line = static_cast<std::size_t>((right - left) / (kCharWidth * kCaptionSize));
    caption = wrap(diagnosis->summary(), per_line);
  }
  const double height = kPlotHeight + (caption.empty() ? 0 : caption.size() * kCaptionLine + 8);

  std::ostringstream svg;
  svg << R"(<?xml version="1.0" encoding="UTF-8"?>)"
      << "\n"
      << R"(<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width=")" << kWidth << R"(" height=")" << height
      << R"(" viewBox="0 0 )" << kWidth << " " << height << R"(" font-family=")" << kFont << R"(" font-size=")"
      << kFontSize << R"(">)"
      << "\n";
  svg << "<title>" << xml_escape(title) << "</title>\n";
  svg << R"(<rect width="100%" height="100%" fill="#ffffff"/>)"
      << "\n";
  svg << R"(<text class="title" x=")" << left << R"(" y=")" << kHeaderRow + 4 << R"(" font-size=")" << kTitleSize
      << R"(" font-weight="bold" fill=")" << kTextColor << R"(">)" << xml_escape(title) << "</text>\n";

  // ---- overfitting band, behind everything else ----
  std::optional<double> band_left;
  // The verdict is read from the loss curves, so only the loss plot is shaded; on another metric's plot the band
  // would contradict that metric's own best epoch.
  if (diagnosis != nullptr && metric == "loss" && diagnosis->verdict() == "overfitting" &&
      diagnosis->overfitting_from_epoch() >= 0) {
    // The band starts halfway between the best epoch and the next, so the best-epoch line stays outside it.
    const double from = std::max(x_lo, static_cast<double>(diagnosis->overfitting_from_epoch()) + 0.5);
    if (from < x_hi) {
      band_left = px(from);
      svg << R"(<rect class="overfitting" x=")" << coord(px(from)) << R"(" y=")" << plot_top << R"(" width=")"
          << coord(px(x_hi) - px(from)) << R"(" height=")" << kPlotBottom - plot_top
          << R"(" fill="#d62728" fill-opacity="0.07"/>)"
          << "\n";
    }
  }

  // ---- grid, axes, ticks ----
  svg << R"(<g class="grid" stroke="#e6e6e6" stroke-width="1">)"
      << "\n";
  for (int i = 0; i < y_ticks.count; ++i) {
    const double y = py(y_ticks.first + i * y_ticks.step);
    svg << R"(<line x1=")" << left << R"(" x2=")" << right << R"(" y1=")" << coord(y) << R"(" y2=")" << coord(y)
        << R"("/>)"
        << "\n";
  }
  std::vector<double> x_ticks;
  for (double t = std::ceil(x_lo / x_step - 1e-9) * x_step; t <= x_hi + 1e-9; t += x_step) x_ticks.push_back(t);
  for (double t : x_ticks) {
    svg << R"(<line x1=")" << coord(px(t)) << R"(" x2=")" << coord(px(t)) << R"(" y1=")" << plot_top << R"(" y2=")"
        << kPlotBottom << R"("/>)"
        << "\n";
  }
  svg << "</g>\n";
  svg << R"(<g class="axes" stroke="#444" stroke-width="1">)"
      << "\n"
      << R"(<line x1=")" << left << R"(" x2=")" << right << R"(" y1=")" << kPlotBottom << R"(" y2=")" << kPlotBottom
      << R"("/>)"
      << "\n"
      << R"(<line x1=")" << left << R"(" x2=")" << left << R"(" y1=")" << plot_top << R"(" y2=")" << kPlotBottom
      << R"("/>)"
      << "\n";
  for (int i = 0; i < y_ticks.count; ++i) {
    const double y = py(y_ticks.first + i * y_ticks.step);
    svg << R"(<line x1=")" << left - 5 << R"(" x2=")" << left << R"(" y1=")" << coord(y) << R"(" y2=")" << coord(y)
        << R"("/>)"
        << "\n";
  }
  for (double t : x_ticks) {
    svg << R"(<line x1=")" << coord(px(t)) << R"(" x2=")" << coord(px(t)) << R"(" y1=")" << kPlotBottom << R"(" y2=")"
        << kPlotBottom + 5 << R"("/>)"
        << "\n";
  }
  svg << "</g>\n";
  svg << R"(<g class="tick-labels" fill=")" << kMutedColor << R"(">)"
      << "\n";
  for (int i = 0; i < y_ticks.count; ++i) {
    svg << R"(<text x=")" << left - 8 << R"(" y=")" << coord(py(y_ticks.first + i * y_ticks.step))
        << R"(" dy="0.35em" text-anchor="end">)" << y_labels[i] << "</text>\n";
  }
  for (double t : x_ticks) {
    svg << R"(<text x=")" << coord(px(t)) << R"(" y=")" << kPlotBottom + 20 << R"(" text-anchor="middle">)"
        << tick_label(t, 0) << "</text>\n";
  }
  svg << "</g>\n";
  svg << R"(<text class="axis-label" x=")" << coord((left + right) / 2) << R"(" y=")" << kPlotBottom + 44
      << R"(" text-anchor="middle" fill=")" << kTextColor << R"(">Epoch</text>)"
      << "\n";
  const double y_mid = (plot_top + kPlotBottom) / 2;
  svg << R"(<text class="axis-label" x="24" y=")" << y_mid << R"(" transform="rotate(-90 24 )" << y_mid
      << ")\" text-anchor=\"middle\" dy=\"0.35em\" fill=\"" << kTextColor << R"(">)" << xml_escape(metric)
      << "</text>\n";
  if (!any_finite) {
    svg << R"(<text x=")" << coord((left + right) / 2) << R"(" y=")" << y_mid << R"(" text-anchor="middle" fill=")"
        << kMutedColor << R"(">no finite values</text>)"
        << "\n";
  }

  // ---- the curves: one path each, a new subpath after every gap; dots when few points or a point stands alone ----
  const auto draw = [&](const Series& series, const char* color) {
    if (series.points.empty()) return;
    std::string d;
    std::vector<std::pair<double, double>> dots;
    const bool dotted = finite_count(series) <= kMaxDottedPoints;
    bool pen_down = false;
    for (std::size_t i = 0; i < series.points.size(); ++i) {
      const auto [x, y] = series.points[i];
      if (std::isnan(y)) {
        pen_down = false;
        continue;
      }
      const bool alone = !pen_down && (i + 1 == series.points.size() || std::isnan(series.points[i + 1].second));
      if (dotted || alone) dots.emplace_back(px(x), py(y));
      if (!d.empty()) d += ' ';
      d += pen_down ? 'L' : 'M';
      d += coord(px(x));
      d += ',';
      d += coord(py(y));
      pen_down = true;
    }
    svg << R"(<path class="curve" data-series=")" << xml_escape(series.name) << R"(" data-points=")"
        << finite_count(series) << R"(" d=")" << d << R"(" fill="none" stroke=")" << color
        << R"(" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>)"
        << "\n";
    if (!dots.empty()) {
      svg << R"(<g class="dots" fill=")" << color << R"(">)";
      for (const auto& [x, y] : dots)
        svg << R"(<circle cx=")" << coord(x) << R"(" cy=")" << coord(y) << R"(" r="2.6"/>)";
      svg << "</g>\n";
    }
  };
  draw(train, kTrainColor);
  draw(val, kValColor);

  // ---- the best epoch: a dashed line, a ring on the val point and its value, on the side of the plot the curves
  // leave free (the top for a loss, whose best is a minimum; the bottom for accuracy) ----
  std::optional<std::pair<double, double>> best;
  std::optional<std::pair<double, double>> best_label;  // (left edge, baseline) of the best-epoch label
  double best_label_width = 0;
  for (const auto& [x, y] : val.points) {
    if (!std::isnan(y) && (!best || (maximise ? y > best->second : y < best->second))) best = std::pair{x, y};
  }
  if (best) {
    const double bx = px(best->first);
    const std::string label =
        "best: epoch " + tick_label(best->first, 0) + ", val_" + metric + " " + format_value(best->second);
    // Six places for the label (top, bottom or middle, right or left of the line); the first with the fewest curve
    // points under it wins, preferring the side the best value leaves free (the top for a minimum).
    const double label_width = text_width(label, kFontSize);
    const double top_y = plot_top + 16;
    const double bottom_y = kPlotBottom - 10;
    const auto covered = [&](double x0, double baseline) {
      if (x0 < left || x0 + label_width > right) return 1 << 20;
      int count = 0;
      for (const Series* series : {&train, &val}) {
        for (const auto& [x, y] : series->points) {
          if (std::isnan(y)) continue;
          const double sx = px(x);
          const double sy = py(y);
          // 10 px of clearance to the side: the ring on the best point is 6 px wide.
          count += sx >= x0 - 10 && sx <= x0 + label_width + 10 && sy >= baseline - kFontSize - 6 && sy <= baseline + 8;
        }
      }
      return count;
    };
    std::vector<std::pair<double, double>> places;  // (left edge of the text, baseline)
    const double middle_y = (plot_top + kPlotBottom) / 2;
    for (double baseline : maximise ? std::vector{bottom_y, top_y, middle_y} : std::vector{top_y, bottom_y, middle_y}) {
      places.emplace_back(bx + 8, baseline);
      places.emplace_back(bx - 8 - label_width, baseline);
    }
    const auto place = *std::min_element(places.begin(), places.end(), [&](const auto& a, const auto& b) {
      return covered(a.first, a.second) < covered(b.first, b.second);
    });
    best_label = place;
    best_label_width = label_width;
    const bool text_left = place.first < bx;
    const double label_y = place.second;
    svg << R"(<g class="best-marker" data-epoch=")" << tick_label(best->first, 0) << R"(">)"
        << "\n"
        << R"(<line x1=")" << coord(bx) << R"(" x2=")" << coord(bx) << R"(" y1=")" << plot_top << R"(" y2=")"
        << kPlotBottom << R"(" stroke="#777" stroke-width="1" stroke-dasharray="4 3"/>)"
        << "\n"
        << R"(<circle cx=")" << coord(bx) << R"(" cy=")" << coord(py(best->second)) << R"(" r="6" fill="none" stroke=")"
        << kValColor << R"(" stroke-width="2"/>)"
        << "\n"
        << R"(<text x=")" << coord(text_left ? bx - 8 : bx + 8) << R"(" y=")" << label_y << R"(" text-anchor=")"
        << (text_left ? "end" : "start") << R"(" fill=")" << kTextColor << R"(">)" << xml_escape(label)
        << "</text>\n</g>\n";
  }

  // ---- the band's name, in its top right corner unless the best-epoch label is there ----
  if (band_left) {
    const std::string name = "overfitting";
    const double name_left = right - 6 - text_width(name, kFontSize);
    const bool fits = name_left > *band_left + 4 && !(best_label && best_label->second < plot_top + 30 &&
                                                      best_label->first + best_label_width > name_left - 8);
    if (fits) {
      svg << R"(<text class="band-label" x=")" << coord(right - 6) << R"(" y=")" << plot_top + 16
          << R"(" text-anchor="end" fill="#b22222">)" << name << "</text>\n";
    }
  }

  // ---- legend ----
  double legend_x = right - legend_width;
  svg << R"(<g class="legend">)"
      << "\n";
  for (const auto& [label, color] : entries) {
    svg << R"(<line x1=")" << coord(legend_x) << R"(" x2=")" << coord(legend_x + 22) << R"(" y1=")" << legend_y
        << R"(" y2=")" << legend_y << R"(" stroke=")" << color << R"(" stroke-width="2.5"/>)"
        << R"(<circle cx=")" << coord(legend_x + 11) << R"(" cy=")" << legend_y << R"(" r="2.6" fill=")" << color
        << R"("/>)"
        << R"(<text x=")" << coord(legend_x + 28) << R"(" y=")" << legend_y << R"(" dy="0.35em" fill=")" << kTextColor
        << R"(">)" << xml_escape(label) << "</text>\n";
    legend_x += entry_width(label) + 18;
  }
  svg << "</g>\n";

  // ---- caption: the verdict, its first words (up to the colon) in bold ----
  if (!caption.empty()) {
    svg << R"(<text class="caption" x=")" << left << R"(" y=")" << kPlotHeight + 6 << R"(" font-size=")" << kCaptionSize
        << R"(" fill=")" << kTextColor << R"(">)"
        << "\n";
    for (std::size_t i = 0; i < caption.size(); ++i) {
      svg << R"(<tspan x=")" << left << R"(" dy=")" << (i == 0 ? 0.0 : kCaptionLine) << R"(">)";
      const std::size_t colon = i == 0 ? caption[0].find(':') : std::string::npos;
      if (colon != std::string::npos) {
        svg << R"(<tspan font-weight="bold">)" << xml_escape(caption[0].substr(0, colon + 1)) << "</tspan>"
            << xml_escape(caption[0].substr(colon + 1));
      } else {
        svg << xml_escape(caption[i]);
      }
      svg << "</tspan>\n";
    }
    svg << "</text>\n";
  }
  svg << "</svg>\n";
  return {svg.str(), height};
}

}  // namespace

std::string render_history_svg(const proto::History& history, const std::string& metric,
                               const proto::Diagnosis* diagnosis) {
  return render_plot(history, metric, diagnosis).svg;
}

void write_history_svg(const std::filesystem::path& path, const proto::History& history, const std::string& metric,
                       const proto::Diagnosis* diagnosis) {
  write_file_atomically(path, render_history_svg(history, metric, diagnosis));
}

std::string render_history_panels_svg(const proto::History& history, const std::vector<std::string>& metrics,
                                      const proto::Diagnosis* diagnosis) {
  SF_CHECK(!metrics.empty(), "no metric to plot");
  if (metrics.size() == 1) return render_history_svg(history, metrics[0], diagnosis);
  // The verdict is read from the loss curves: its caption goes under the loss panel (the first when none is loss).
  size_t caption_panel = 0;
  for (size_t i = 0; i < metrics.size(); ++i) {
    if (metrics[i] == "loss" || metrics[i] == "val_loss") {
      caption_panel = i;
      break;
    }
  }
  // Each panel is the single plot as it stands, nested as an <svg> element placed below the previous one.
  constexpr std::string_view kRootOpen = R"(<svg xmlns="http://www.w3.org/2000/svg" version="1.1" )";
  std::string panels;
  double top = 0;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const RenderedPlot panel = render_plot(history, metrics[i], i == caption_panel ? diagnosis : nullptr);
    const size_t root = panel.svg.find(kRootOpen);
    SF_CHECK(root != std::string::npos, "cannot nest a rendered plot");
    panels += cat(R"(<svg class="panel" data-metric=")", xml_escape(metrics[i]), R"(" x="0" y=")", coord(top), "\" ",
                  panel.svg.substr(root + kRootOpen.size()));
    top += panel.height;
  }
  std::ostringstream svg;
  svg << R"(<?xml version="1.0" encoding="UTF-8"?>)"
      << "\n"
      << R"(<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width=")" << kWidth << R"(" height=")" << coord(top)
      << R"(" viewBox="0 0 )" << kWidth << " " << coord(top) << R"(">)"
      << "\n";
  std::string names;
  for (const std::string& metric : metrics) names += (names.empty() ? "" : ", ") + metric;
  svg << "<title>" << xml_escape("Training history: " + names) << "</title>\n" << panels << "</svg>\n";
  return svg.str();
}

void write_history_panels_svg(const std::filesystem::path& path, const proto::History& history,
                              const std::vector<std::string>& metrics, const proto::Diagnosis* diagnosis) {
  write_file_atomically(path, render_history_panels_svg(history, metrics, diagnosis));
}

}  // namespace shardfit
