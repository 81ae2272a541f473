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

// The document's start, common to every chart: the svg element sized kWidth x height, its title, a white
// background and the bold title line at (left, title_y).
void open_svg(std::ostringstream& svg, double height, const std::string& title, double left, double title_y) {
  svg << R"(<?xml version="1.0" encoding="UTF-8"?>)"
      << "\n"
      << R"(<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width=")" << kWidth << R"(" height=")" << height
      << R"(" viewBox="0 0 )" << kWidth << " " << height << R"(" font-family=")" << kFont << R"(" font-size=")"
      << kFontSize << R"(">)"
      << "\n";
  svg << "<title>" << xml_escape(title) << "</title>\n";
  svg << R"(<rect width="100%" height="100%" fill="#ffffff"/>)"
      << "\n";
  svg << R"(<text class="title" x=")" << left << R"(" y=")" << title_y << R"(" font-size=")" << kTitleSize
      << R"(" font-weight="bold" fill=")" << kTextColor << R"(">)" << xml_escape(title) << "</text>\n";
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
  open_svg(svg, height, title, left, kHeaderRow + 4);

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

// ---- the scaling chart ----

namespace {

// Matplotlib's tab10 order, which the loss chart's two colours already follow.
constexpr const char* kSeriesColors[] = {"#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr const char* kIdealColor = "#888";
constexpr double kScalingPanelGap = 18;     // between the efficiency panel's top and the speedup panel's x labels
constexpr double kScalingPlotHeight = 250;  // one panel's plot area
constexpr double kLegendRow = 22;
constexpr double kNoteLine = 17;

std::string bool_text(bool value) { return value ? "true" : "false"; }

// 2^exponent as a person writes it: 0.25, 0.5, 1, 2, 16.
std::string power_of_two_label(double exponent) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", std::exp2(exponent));
  return text;
}

// Joined without repeats, in first-seen order.
std::string distinct_joined(const std::vector<std::string>& values, const std::string& separator) {
  std::vector<std::string> seen;
  for (const std::string& value : values) {
    if (std::find(seen.begin(), seen.end(), value) == seen.end()) seen.push_back(value);
  }
  std::string text;
  for (const std::string& value : seen) text += (text.empty() ? "" : separator) + value;
  return text;
}

}  // namespace

std::string render_scaling_svg(const std::vector<ScalingSeries>& all_series) {
  std::vector<const ScalingSeries*> drawn;
  std::vector<std::string> left_out;
  for (const ScalingSeries& s : all_series) {
    if (s.scales()) {
      drawn.push_back(&s);
    } else {
      left_out.push_back(s.label);
    }
  }
  SF_CHECK(!drawn.empty(),
           "no series of the records has runs at two rank counts: nothing to draw a scaling line through",
           "run shardfit bench at several rank counts with the same mode, model, threads and batch "
           "(launch/scaling.sh does)");

  // ---- data ranges: ranks on log2; speedup on log2; efficiency linear, in percent ----
  std::set<int> rank_counts;
  double speedup_lo = INFINITY, speedup_hi = -INFINITY, efficiency_hi = 100;
  bool any_oversubscribed = false;
  int most_hosts = 1;
  std::vector<std::string> names, models, cpus;
  for (const ScalingSeries* s : drawn) {
    names.push_back(s->model);
    models.push_back(s->model + " " + s->layers);
    for (const ScalingPoint& point : s->points) {
      most_hosts = std::max(most_hosts, point.record.hosts);
      rank_counts.insert(point.record.ranks);
      speedup_lo = std::min({speedup_lo, point.speedup, point.ideal});
      speedup_hi = std::max({speedup_hi, point.speedup, point.ideal});
      efficiency_hi = std::max(efficiency_hi, 100 * point.efficiency);
      any_oversubscribed = any_oversubscribed || point.record.oversubscribed;
      cpus.push_back(point.record.cpu_model);
    }
  }
  const double x_lo = std::log2(*rank_counts.begin()) - 0.3;
  const double x_hi = std::log2(*rank_counts.rbegin()) + 0.3;
  // Powers of two for the speedup ticks, the range padded by a quarter of a doubling at both ends.
  const double sy_lo = std::log2(speedup_lo) - 0.25;
  const double sy_hi = std::log2(speedup_hi) + 0.25;
  const double ey_lo = 0;
  const double ey_hi = efficiency_hi * 1.06;
  const Ticks e_ticks = nice_ticks(ey_lo, ey_hi, 5);
  std::vector<double> s_ticks;  // log2 values
  for (double t = std::ceil(sy_lo); t <= sy_hi + 1e-9; t += 1) s_ticks.push_back(t);
  if (s_ticks.size() < 2) s_ticks = {std::floor(sy_lo), std::ceil(sy_hi)};
  // A tick under each rank count run, unless they crowd (1..16 all run): then powers of two only.
  std::vector<int> x_ticks(rank_counts.begin(), rank_counts.end());
  if (x_ticks.size() > 9) {
    x_ticks.clear();
    for (int p = 1; p <= *rank_counts.rbegin(); p *= 2) {
      if (p >= *rank_counts.begin()) x_ticks.push_back(p);
    }
  }

  // ---- layout ----
  double widest = 0;
  for (double t : s_ticks) widest = std::max(widest, text_width(power_of_two_label(t), kFontSize));
  for (int i = 0; i < e_ticks.count; ++i) {
    widest =
        std::max(widest, text_width(tick_label(e_ticks.first + i * e_ticks.step, e_ticks.decimals) + "%", kFontSize));
  }
  const double left = std::ceil(24 + kFontSize + 10 + widest);
  const double right = kWidth - kMarginRight;

  // The title names the models; a long name (a job file's path) leaves them to the subtitle, which always has the
  // layers, the CPU and the hosts, wrapped to the chart's width.
  std::string title = "Scaling of shardfit bench: " + distinct_joined(names, ", ");
  if (left + text_width(title, kTitleSize) > right) title = "Scaling of shardfit bench";
  const std::string subtitle = cat(distinct_joined(models, ", "), "; ", distinct_joined(cpus, "; "), "; ",
                                   most_hosts == 1 ? std::string("1 host") : cat("up to ", most_hosts, " hosts"));
  const std::vector<std::string> subtitle_lines =
      wrap(subtitle, static_cast<size_t>((right - left) / (kCharWidth * kFontSize)));
  // Legend entries: every drawn series, the ideal, and the hollow marker when a run was oversubscribed; wrapped into
  // rows of the chart's width.
  struct Entry {
    std::string label;
    std::string color;
    enum class Look { kSeries, kIdeal, kHollow } look;
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < drawn.size(); ++i) {
    entries.push_back({drawn[i]->label, kSeriesColors[i % std::size(kSeriesColors)], Entry::Look::kSeries});
  }
  entries.push_back({"ideal", kIdealColor, Entry::Look::kIdeal});
  if (any_oversubscribed) {
    entries.push_back({"oversubscribed (more threads than CPUs)", kMutedColor, Entry::Look::kHollow});
  }
  std::vector<std::vector<std::pair<const Entry*, double>>> legend_rows(1);  // (entry, x)
  double legend_x = left;
  for (const Entry& entry : entries) {
    const double width = 22 + 6 + text_width(entry.label, kFontSize);
    if (legend_x > left && legend_x + width > right) {
      legend_rows.emplace_back();
      legend_x = left;
    }
    legend_rows.back().emplace_back(&entry, legend_x);
    legend_x += width + 18;
  }
  const double legend_top = kHeaderRow + 10 + subtitle_lines.size() * kNoteLine;
  const double speedup_top = legend_top + legend_rows.size() * kLegendRow + 14;
  const double speedup_bottom = speedup_top + kScalingPlotHeight;
  const double efficiency_top = speedup_bottom + 44 + kScalingPanelGap;
  const double efficiency_bottom = efficiency_top + kScalingPlotHeight;
  std::vector<std::string> notes;
  notes.push_back(
      "Speedup = samples/s at P ranks / samples/s at the series' smallest rank count P0; ideal = P / P0; "
      "efficiency = speedup / ideal.");
  if (any_oversubscribed) {
    notes.push_back(
        "Hollow markers: oversubscribed runs, more threads than CPUs on a host; they measure CPUs shared, "
        "not scaling.");
  }
  if (!left_out.empty()) {
    notes.push_back("Not drawn (one rank count; in the table): " + distinct_joined(left_out, "; ") + ".");
  }
  std::vector<std::string> note_lines;
  const auto per_line = static_cast<size_t>((right - left) / (kCharWidth * kFontSize));
  for (const std::string& note : notes) {
    for (const std::string& line : wrap(note, per_line)) note_lines.push_back(line);
  }
  const double notes_top = efficiency_bottom + 64;
  const double height = std::ceil(notes_top + note_lines.size() * kNoteLine + 8);

  const auto px = [&](double ranks) { return left + (std::log2(ranks) - x_lo) / (x_hi - x_lo) * (right - left); };
  const auto py_speedup = [&](double speedup) {
    return speedup_bottom - (std::log2(speedup) - sy_lo) / (sy_hi - sy_lo) * (speedup_bottom - speedup_top);
  };
  const auto py_efficiency = [&](double fraction) {
    return efficiency_bottom - (100 * fraction - ey_lo) / (ey_hi - ey_lo) * (efficiency_bottom - efficiency_top);
  };

  std::ostringstream svg;
  open_svg(svg, height, title, left, kHeaderRow);
  svg << R"(<text class="subtitle" x=")" << left << R"(" y=")" << kHeaderRow + 20 << R"(" fill=")" << kMutedColor
      << R"(">)";
  for (size_t i = 0; i < subtitle_lines.size(); ++i) {
    svg << R"(<tspan x=")" << left << R"(" dy=")" << (i == 0 ? 0.0 : kNoteLine) << R"(">)"
        << xml_escape(subtitle_lines[i]) << "</tspan>";
  }
  svg << "</text>\n";

  // ---- legend ----
  svg << R"(<g class="legend">)"
      << "\n";
  for (size_t row = 0; row < legend_rows.size(); ++row) {
    const double y = legend_top + 12 + row * kLegendRow;
    for (const auto& [entry, x] : legend_rows[row]) {
      switch (entry->look) {
        case Entry::Look::kSeries:
          svg << R"(<line x1=")" << coord(x) << R"(" x2=")" << coord(x + 22) << R"(" y1=")" << y << R"(" y2=")" << y
              << R"(" stroke=")" << entry->color << R"(" stroke-width="2.5"/><circle cx=")" << coord(x + 11)
              << R"(" cy=")" << y << R"(" r="3.5" fill=")" << entry->color << R"("/>)";
          break;
        case Entry::Look::kIdeal:
          svg << R"(<line x1=")" << coord(x) << R"(" x2=")" << coord(x + 22) << R"(" y1=")" << y << R"(" y2=")" << y
              << R"(" stroke=")" << entry->color << R"(" stroke-width="1.5" stroke-dasharray="5 4"/>)";
          break;
        case Entry::Look::kHollow:
          svg << R"(<circle class="hollow-key" cx=")" << coord(x + 11) << R"(" cy=")" << y
              << R"(" r="4" fill="#ffffff" stroke=")" << entry->color << R"(" stroke-width="2"/>)";
          break;
      }
      svg << R"(<text x=")" << coord(x + 28) << R"(" y=")" << y << R"(" dy="0.35em" fill=")" << kTextColor << R"(">)"
          << xml_escape(entry->label) << "</text>\n";
    }
  }
  svg << "</g>\n";

  // ---- one panel: frame, grid, ticks, the ideal, the series ----
  const auto panel = [&](const char* name, const char* axis_label, double top, double bottom,
                         const std::vector<std::pair<double, std::string>>& y_ticks,  // (y in px, label)
                         const auto& value_of, const auto& py) {
    svg << R"(<g class="panel" data-panel=")" << name << R"(">)"
        << "\n";
    svg << R"(<g class="grid" stroke="#e6e6e6" stroke-width="1">)"
        << "\n";
    for (const auto& [y, label] : y_ticks) {
      svg << R"(<line x1=")" << left << R"(" x2=")" << right << R"(" y1=")" << coord(y) << R"(" y2=")" << coord(y)
          << R"("/>)"
          << "\n";
    }
    for (int p : x_ticks) {
      svg << R"(<line x1=")" << coord(px(p)) << R"(" x2=")" << coord(px(p)) << R"(" y1=")" << top << R"(" y2=")"
          << bottom << R"("/>)"
          << "\n";
    }
    svg << "</g>\n";
    svg << R"(<g class="axes" stroke="#444" stroke-width="1">)"
        << "\n"
        << R"(<line x1=")" << left << R"(" x2=")" << right << R"(" y1=")" << bottom << R"(" y2=")" << bottom << R"("/>)"
        << "\n"
        << R"(<line x1=")" << left << R"(" x2=")" << left << R"(" y1=")" << top << R"(" y2=")" << bottom << R"("/>)"
        << "\n";
    for (const auto& [y, label] : y_ticks) {
      svg << R"(<line x1=")" << left - 5 << R"(" x2=")" << left << R"(" y1=")" << coord(y) << R"(" y2=")" << coord(y)
          << R"("/>)"
          << "\n";
    }
    for (int p : x_ticks) {
      svg << R"(<line x1=")" << coord(px(p)) << R"(" x2=")" << coord(px(p)) << R"(" y1=")" << bottom << R"(" y2=")"
          << bottom + 5 << R"("/>)"
          << "\n";
    }
    svg << "</g>\n";
    svg << R"(<g class="tick-labels" fill=")" << kMutedColor << R"(">)"
        << "\n";
    for (const auto& [y, label] : y_ticks) {
      svg << R"(<text x=")" << left - 8 << R"(" y=")" << coord(y) << R"(" dy="0.35em" text-anchor="end">)" << label
          << "</text>\n";
    }
    for (int p : x_ticks) {
      svg << R"(<text x=")" << coord(px(p)) << R"(" y=")" << bottom + 20 << R"(" text-anchor="middle">)" << p
          << "</text>\n";
    }
    svg << "</g>\n";
    svg << R"(<text class="axis-label" x=")" << coord((left + right) / 2) << R"(" y=")" << bottom + 40
        << R"(" text-anchor="middle" fill=")" << kTextColor << R"(">Ranks</text>)"
        << "\n";
    const double y_mid = (top + bottom) / 2;
    svg << R"(<text class="axis-label" x="24" y=")" << y_mid << R"(" transform="rotate(-90 24 )" << y_mid
        << ")\" text-anchor=\"middle\" dy=\"0.35em\" fill=\"" << kTextColor << R"(">)" << axis_label << "</text>\n";

    // The ideal: P / P0 from each baseline's P0 to the largest rank count (speedup), or the 100% line (efficiency).
    std::set<int> bases;
    for (const ScalingSeries* s : drawn) bases.insert(s->base_ranks);
    const int last = *rank_counts.rbegin();
    for (int base : bases) {
      const bool speedup = std::string_view(name) == "speedup";
      const double y0 = py(1.0);  // speedup 1 at P0, and efficiency 100% everywhere
      const double y1 = py(speedup ? static_cast<double>(last) / base : 1.0);
      svg << R"(<path class="ideal" data-base-ranks=")" << base << R"(" d="M)" << coord(px(base)) << "," << coord(y0)
          << " L" << coord(px(last)) << "," << coord(y1) << R"(" fill="none" stroke=")" << kIdealColor
          << R"(" stroke-width="1.5" stroke-dasharray="5 4"/>)"
          << "\n";
    }

    for (size_t i = 0; i < drawn.size(); ++i) {
      const ScalingSeries& s = *drawn[i];
      const char* color = kSeriesColors[i % std::size(kSeriesColors)];
      std::string d;
      for (const ScalingPoint& point : s.points) {
        d += cat(d.empty() ? "M" : " L", coord(px(point.record.ranks)), ",", coord(py(value_of(point))));
      }
      svg << R"(<path class="series" data-series=")" << xml_escape(s.label) << R"(" data-mode=")" << s.mode
          << R"(" data-points=")" << s.points.size() << R"(" d=")" << d << R"(" fill="none" stroke=")" << color
          << R"(" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>)"
          << "\n";
      for (const ScalingPoint& point : s.points) {
        const bool hollow = point.record.oversubscribed;
        svg << R"(<circle class="point" data-series=")" << xml_escape(s.label) << R"(" data-ranks=")"
            << point.record.ranks << R"(" data-oversubscribed=")" << bool_text(hollow) << R"(" data-value=")"
            << json_number(value_of(point)) << R"(" cx=")" << coord(px(point.record.ranks)) << R"(" cy=")"
            << coord(py(value_of(point))) << R"(" r="4" fill=")" << (hollow ? "#ffffff" : color) << R"(" stroke=")"
            << color << R"(" stroke-width="2"/>)"
            << "\n";
      }
    }
    svg << "</g>\n";
  };

  std::vector<std::pair<double, std::string>> speedup_ticks;
  speedup_ticks.reserve(s_ticks.size());
  for (double t : s_ticks) speedup_ticks.emplace_back(py_speedup(std::exp2(t)), power_of_two_label(t));
  std::vector<std::pair<double, std::string>> efficiency_ticks;
  for (int i = 0; i < e_ticks.count; ++i) {
    const double percent = e_ticks.first + i * e_ticks.step;
    efficiency_ticks.emplace_back(py_efficiency(percent / 100), tick_label(percent, e_ticks.decimals) + "%");
  }
  panel(
      "speedup", "Speedup", speedup_top, speedup_bottom, speedup_ticks,
      [](const ScalingPoint& point) { return point.speedup; }, py_speedup);
  panel(
      "efficiency", "Parallel efficiency", efficiency_top, efficiency_bottom, efficiency_ticks,
      [](const ScalingPoint& point) { return point.efficiency; }, py_efficiency);

  svg << R"(<text class="notes" x=")" << left << R"(" y=")" << notes_top << R"(" fill=")" << kMutedColor << R"(">)"
      << "\n";
  for (size_t i = 0; i < note_lines.size(); ++i) {
    svg << R"(<tspan x=")" << left << R"(" dy=")" << (i == 0 ? 0.0 : kNoteLine) << R"(">)" << xml_escape(note_lines[i])
        << "</tspan>\n";
  }
  svg << "</text>\n</svg>\n";
  return svg.str();
}

void write_scaling_svg(const std::filesystem::path& path, const std::vector<ScalingSeries>& series) {
  write_file_atomically(path, render_scaling_svg(series));
}

}  // namespace shardfit
