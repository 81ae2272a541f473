// render_history_svg: the output is well-formed XML (a strict little parser here, and Python's ElementTree), and the
// chart says what the history says: the curves' points, gaps at NaN / inf, epochs matched under validation_freq,
// the best epoch, legend, axis labels, round ticks, the escaped caption.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dist/io/plot_svg.h"
#include "kernels/error.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- a strict XML reader: enough of XML 1.0 for what an SVG writer emits, and it throws on anything malformed ----
struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::vector<std::unique_ptr<Element>> children;
  std::string text;  // all character data inside, descendants included, entities decoded

  std::string attribute(const std::string& key) const {
    const auto found = attributes.find(key);
    return found == attributes.end() ? std::string() : found->second;
  }
};

class XmlReader {
 public:
  explicit XmlReader(std::string text) : text_(std::move(text)) {}

  std::unique_ptr<Element> document() {
    skip_space();
    if (text_.compare(at_, 5, "<?xml") == 0) {
      const std::size_t end = text_.find("?>", at_);
      if (end == std::string::npos) fail("unterminated XML declaration");
      at_ = end + 2;
    }
    skip_space();
    auto root = element();
    skip_space();
    if (at_ != text_.size()) fail("content after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("XML error at offset " + std::to_string(at_) + ": " + why);
  }
  void skip_space() {
    while (at_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[at_]))) ++at_;
  }
  void expect(char c) {
    if (at_ >= text_.size() || text_[at_] != c) fail(std::string("expected '") + c + "'");
    ++at_;
  }
  std::string name() {
    const std::size_t begin = at_;
    while (at_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[at_])) || text_[at_] == '-' ||
                                  text_[at_] == '_' || text_[at_] == ':' || text_[at_] == '.')) {
      ++at_;
    }
    if (at_ == begin || std::isdigit(static_cast<unsigned char>(text_[begin])) || text_[begin] == '-') {
      fail("expected a name");
    }
    return text_.substr(begin, at_ - begin);
  }
  // Character data up to `stop`, entities decoded; a bare '<' or '&' is an error.
  std::string characters(char stop) {
    std::string out;
    while (at_ < text_.size() && text_[at_] != stop) {
      const char c = text_[at_];
      if (c == '<') fail("'<' in character data");
      if (c == '&') {
        const std::size_t end = text_.find(';', at_);
        if (end == std::string::npos) fail("unterminated entity");
        const std::string entity = text_.substr(at_ + 1, end - at_ - 1);
        static const std::map<std::string, std::string> known = {
            {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}};
        if (known.count(entity) > 0) {
          out += known.at(entity);
        } else if (entity.size() > 1 && entity[0] == '#') {
          out += "?";  // a character reference; its value does not matter to these tests
        } else {
          fail("unknown entity &" + entity + ";");
        }
        at_ = end + 1;
        continue;
      }
      if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') fail("control character");
      out += c;
      ++at_;
    }
    return out;
  }
  std::unique_ptr<Element> element() {
    expect('<');
    auto node = std::make_unique<Element>();
    node->name = name();
    while (true) {
      const std::size_t before = at_;
      skip_space();
      if (at_ >= text_.size()) fail("unterminated start tag");
      if (text_[at_] == '/') {
        ++at_;
        expect('>');
        return node;
      }
      if (text_[at_] == '>') {
        ++at_;
        break;
      }
      if (at_ == before) fail("attributes must be separated by white space");
      const std::string key = name();
      skip_space();
      expect('=');
      skip_space();
      if (at_ >= text_.size() || (text_[at_] != '"' && text_[at_] != '\'')) fail("unquoted attribute value");
      const char quote = text_[at_++];
      std::string value = characters(quote);
      expect(quote);
      if (!node->attributes.emplace(key, value).second) fail("duplicate attribute " + key);
    }
    while (true) {
      node->text += characters('<');
      if (at_ >= text_.size()) fail("unterminated element <" + node->name + ">");
      if (text_.compare(at_, 2, "</") == 0) {
        at_ += 2;
        if (name() != node->name) fail("mismatched end tag for <" + node->name + ">");
        skip_space();
        expect('>');
        return node;
      }
      node->children.push_back(element());
      node->text += node->children.back()->text;
    }
  }

  std::string text_;
  std::size_t at_ = 0;
};

std::unique_ptr<Element> parse(const std::string& svg) { return XmlReader(svg).document(); }

void find_all(const Element& node, const std::string& name, std::vector<const Element*>& out) {
  if (node.name == name) out.push_back(&node);
  for (const auto& child : node.children) find_all(*child, name, out);
}
std::vector<const Element*> find_all(const Element& root, const std::string& name) {
  std::vector<const Element*> out;
  find_all(root, name, out);
  return out;
}
const Element* find_class(const Element& root, const std::string& name, const std::string& css_class) {
  for (const Element* element : find_all(root, name)) {
    if (element->attribute("class") == css_class) return element;
  }
  return nullptr;
}
const Element* curve(const Element& root, const std::string& series) {
  for (const Element* path : find_all(root, "path")) {
    if (path->attribute("class") == "curve" && path->attribute("data-series") == series) return path;
  }
  return nullptr;
}
std::vector<std::string> texts(const Element& root) {
  std::vector<std::string> out;
  for (const Element* text : find_all(root, "text")) out.push_back(text->text);
  return out;
}
bool has_text(const Element& root, const std::string& wanted) {
  for (const std::string& text : texts(root)) {
    if (text == wanted) return true;
  }
  return false;
}

// The path's commands: ('M' or 'L', x, y) each.
struct Command {
  char op;
  double x;
  double y;
};
std::vector<Command> commands(const Element& path) {
  std::vector<Command> out;
  std::istringstream in(path.attribute("d"));
  char op;
  while (in >> op) {
    Command command{op, 0, 0};
    char comma;
    if (!(in >> command.x >> comma >> command.y) || comma != ',' || (op != 'M' && op != 'L')) {
      ADD_FAILURE() << "bad path data: " << path.attribute("d");
      break;
    }
    out.push_back(command);
  }
  return out;
}

proto::History make_history(const std::map<std::string, std::vector<double>>& series, int epochs) {
  proto::History history;
  for (int e = 0; e < epochs; ++e) {
    proto::EpochRecord& record = *history.add_epochs();
    record.set_epoch(e);
    for (const auto& [key, values] : series) {
      if (e < static_cast<int>(values.size())) (*record.mutable_values())[key] = values[e];
    }
  }
  return history;
}

proto::History loss_history(int epochs) {
  std::vector<double> loss;
  std::vector<double> val;
  for (int e = 0; e < epochs; ++e) {
    loss.push_back(2.0 * std::exp(-0.3 * e));
    val.push_back(0.3 + 1.5 * std::exp(-0.4 * e) + 0.01 * e);  // U-shaped: minimum near the middle
  }
  return make_history({{"loss", loss}, {"val_loss", val}}, epochs);
}

std::size_t argmin(const std::vector<double>& values) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (values[i] < values[best]) best = i;
  }
  return best;
}

// ---- the tests ----

TEST(PlotSvg, RootIsAStandaloneSvg) {
  const std::string svg = render_history_svg(loss_history(12));
  const auto root = parse(svg);
  EXPECT_EQ(root->name, "svg");
  EXPECT_EQ(root->attribute("xmlns"), "http://www.w3.org/2000/svg");
  EXPECT_FALSE(root->attribute("viewBox").empty());
  // Nothing that needs another file or a script.
  EXPECT_TRUE(find_all(*root, "script").empty());
  EXPECT_TRUE(find_all(*root, "image").empty());
  EXPECT_EQ(svg.find("href"), std::string::npos);
  EXPECT_EQ(svg.find("@import"), std::string::npos);
}

TEST(PlotSvg, TwoCurvesWithOnePointPerEpochLeftToRight) {
  const auto root = parse(render_history_svg(loss_history(12)));
  for (const char* series : {"loss", "val_loss"}) {
    SCOPED_TRACE(series);
    const Element* path = curve(*root, series);
    ASSERT_NE(path, nullptr);
    EXPECT_EQ(path->attribute("data-points"), "12");
    const auto points = commands(*path);
    ASSERT_EQ(points.size(), 12u);
    EXPECT_EQ(points[0].op, 'M');
    for (std::size_t i = 1; i < points.size(); ++i) {
      EXPECT_EQ(points[i].op, 'L');
      EXPECT_GT(points[i].x, points[i - 1].x);
    }
  }
  // A loss that falls is drawn going up the page's y (SVG y grows downwards).
  const auto loss = commands(*curve(*root, "loss"));
  EXPECT_LT(loss.front().y, loss.back().y);
}

TEST(PlotSvg, TitleLegendAndAxisLabels) {
  const auto root = parse(render_history_svg(loss_history(8)));
  const Element* legend = find_class(*root, "g", "legend");
  ASSERT_NE(legend, nullptr);
  EXPECT_TRUE(has_text(*legend, "loss"));
  EXPECT_TRUE(has_text(*legend, "val_loss"));
  EXPECT_TRUE(has_text(*root, "Training and validation loss"));
  EXPECT_TRUE(has_text(*root, "Epoch"));
  const Element* title = find_class(*root, "text", "title");
  ASSERT_NE(title, nullptr);
  int axis_labels = 0;
  for (const Element* text : find_all(*root, "text")) {
    if (text->attribute("class") == "axis-label") {
      ++axis_labels;
      EXPECT_TRUE(text->text == "Epoch" || text->text == "loss") << text->text;
    }
  }
  EXPECT_EQ(axis_labels, 2);
}

TEST(PlotSvg, TicksAreRoundAndCoverTheData) {
  const auto root = parse(render_history_svg(loss_history(30)));
  const Element* labels = find_class(*root, "g", "tick-labels");
  ASSERT_NE(labels, nullptr);
  std::vector<double> y_ticks;
  std::vector<double> x_ticks;
  for (const auto& text : labels->children) {
    (text->attribute("text-anchor") == "end" ? y_ticks : x_ticks).push_back(std::stod(text->text));
  }
  ASSERT_GE(y_ticks.size(), 3u);
  ASSERT_GE(x_ticks.size(), 3u);
  // Equal steps of 1, 2 or 5 times a power of ten.
  const double step = y_ticks[1] - y_ticks[0];
  const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 || std::fabs(mantissa - 5) < 1e-6)
      << step;
  for (std::size_t i = 1; i < y_ticks.size(); ++i) EXPECT_NEAR(y_ticks[i] - y_ticks[i - 1], step, 1e-9);
  // The ticks span the data (within a quarter of its range at each end) and stay near it (the frame is the data
  // range plus a small margin, not snapped out to the next round value).
  double lo = INFINITY;
  double hi = -INFINITY;
  const proto::History history = loss_history(30);
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& [key, value] : record.values()) {
      lo = std::min(lo, value);
      hi = std::max(hi, value);
    }
  }
  EXPECT_LE(y_ticks.front(), lo + 0.25 * (hi - lo));
  EXPECT_GE(y_ticks.back(), hi - 0.25 * (hi - lo));
  EXPECT_GE(y_ticks.front(), lo - 0.05 * (hi - lo));
  EXPECT_LE(y_ticks.back(), hi + 0.05 * (hi - lo));
  // Epoch ticks are whole, 1-based epochs inside 1..30.
  for (double tick : x_ticks) {
    EXPECT_EQ(tick, std::round(tick));
    EXPECT_GE(tick, 1);
    EXPECT_LE(tick, 30);
  }
}

TEST(PlotSvg, AccuracyAxisStopsAtOne) {
  const proto::History history =
      make_history({{"accuracy", {0.48, 0.88, 0.95, 0.99, 0.996}}, {"val_accuracy", {0.79, 0.85, 0.87, 0.9, 0.91}}}, 5);
  const auto root = parse(render_history_svg(history, "accuracy"));
  for (const auto& text : find_class(*root, "g", "tick-labels")->children) {
    if (text->attribute("text-anchor") == "end") {
      EXPECT_LE(std::stod(text->text), 1.0) << text->text;
    }
  }
  // The highest point is inside the frame, not on it.
  const auto points = commands(*curve(*root, "accuracy"));
  const Element* axes = find_class(*root, "g", "axes");
  const double top = std::stod(axes->children[1]->attribute("y1"));  // the y axis runs from the top to the bottom
  EXPECT_GT(points.back().y, top + 1);
}

TEST(PlotSvg, BestEpochMarkerSitsOnTheLowestValLoss) {
  const proto::History history = loss_history(20);
  std::vector<double> val;
  for (const auto& record : history.epochs()) val.push_back(record.values().at("val_loss"));
  const std::size_t best = argmin(val);
  ASSERT_GT(best, 0u);
  ASSERT_LT(best, 19u);  // the construction puts it inside, where an off-by-one would show

  const auto root = parse(render_history_svg(history));
  const Element* marker = find_class(*root, "g", "best-marker");
  ASSERT_NE(marker, nullptr);
  EXPECT_EQ(marker->attribute("data-epoch"), std::to_string(best + 1));
  const auto points = commands(*curve(*root, "val_loss"));
  const auto lines = find_all(*marker, "line");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NEAR(std::stod(lines[0]->attribute("x1")), points[best].x, 0.011);
  const auto rings = find_all(*marker, "circle");
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_NEAR(std::stod(rings[0]->attribute("cy")), points[best].y, 0.011);
  EXPECT_NE(marker->text.find("epoch " + std::to_string(best + 1)), std::string::npos) << marker->text;
}

TEST(PlotSvg, AccuracyMarksTheHighestValue) {
  const proto::History history =
      make_history({{"accuracy", {0.5, 0.7, 0.8, 0.9, 0.95}}, {"val_accuracy", {0.5, 0.8, 0.85, 0.83, 0.84}}}, 5);
  const auto root = parse(render_history_svg(history, "accuracy"));
  const Element* marker = find_class(*root, "g", "best-marker");
  ASSERT_NE(marker, nullptr);
  EXPECT_EQ(marker->attribute("data-epoch"), "3");
  EXPECT_TRUE(has_text(*root, "Training and validation accuracy"));
  EXPECT_TRUE(has_text(*find_class(*root, "g", "legend"), "val_accuracy"));
}

TEST(PlotSvg, NanAndInfLeaveGaps) {
  const proto::History history = make_history({{"loss", {1.0, 0.8, kNaN, 0.6, 0.5, kInf, 0.4, -kInf, 0.3}},
                                               {"val_loss", {1.1, 0.9, 0.8, kNaN, 0.7, 0.7, 0.6, 0.6, 0.6}}},
                                              9);
  const std::string svg = render_history_svg(history);
  const auto root = parse(svg);
  for (const char* bad : {"nan", "inf", "NaN", "Inf"}) EXPECT_EQ(svg.find(bad), std::string::npos) << bad;

  const Element* loss = curve(*root, "loss");
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->attribute("data-points"), "6");
  std::string ops;
  for (const Command& command : commands(*loss)) ops += command.op;
  // 1.0 0.8 | 0.6 0.5 | 0.4 | 0.3: four runs, two of them a single point.
  EXPECT_EQ(ops, "MLMLMM");
  // A lone point has no line to show it, so it gets a dot.
  const auto points = commands(*loss);
  int dots_on_lone_points = 0;
  for (const Element* circle : find_all(*root, "circle")) {
    for (std::size_t i : {4u, 5u}) {
      if (std::fabs(std::stod(circle->attribute("cx")) - points[i].x) < 0.011 &&
          std::fabs(std::stod(circle->attribute("cy")) - points[i].y) < 0.011) {
        ++dots_on_lone_points;
      }
    }
  }
  EXPECT_GE(dots_on_lone_points, 2);

  const Element* val = curve(*root, "val_loss");
  EXPECT_EQ(val->attribute("data-points"), "8");
  // The best val_loss ignores the NaN: 0.6 first reached at epoch 7 (1-based).
  EXPECT_EQ(find_class(*root, "g", "best-marker")->attribute("data-epoch"), "7");
}

TEST(PlotSvg, AllValuesNonFiniteStillRenders) {
  const auto root = parse(render_history_svg(make_history({{"loss", {kNaN, kNaN}}}, 2)));
  EXPECT_EQ(curve(*root, "loss")->attribute("data-points"), "0");
  EXPECT_TRUE(has_text(*root, "no finite values"));
}

TEST(PlotSvg, SingleEpoch) {
  const std::string svg = render_history_svg(make_history({{"loss", {0.7}}, {"val_loss", {0.8}}}, 1));
  const auto root = parse(svg);
  for (const char* series : {"loss", "val_loss"}) {
    const Element* path = curve(*root, series);
    ASSERT_NE(path, nullptr);
    EXPECT_EQ(commands(*path).size(), 1u);
  }
  EXPECT_GE(find_all(*root, "circle").size(), 2u);  // the dots are what shows
  EXPECT_EQ(find_class(*root, "g", "best-marker")->attribute("data-epoch"), "1");
  EXPECT_EQ(svg.find("nan"), std::string::npos);
}

TEST(PlotSvg, ValidationFreqMatchesByEpoch) {
  // validation_freq=3: val_loss at epochs 2, 5, 8 (0-based) only.
  proto::History history = make_history({{"loss", {1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35}}}, 9);
  const std::map<int, double> val = {{2, 0.85}, {5, 0.6}, {8, 0.62}};
  for (const auto& [epoch, value] : val) (*history.mutable_epochs(epoch)->mutable_values())["val_loss"] = value;
  const auto root = parse(render_history_svg(history));
  const auto train_points = commands(*curve(*root, "loss"));
  const auto val_points = commands(*curve(*root, "val_loss"));
  ASSERT_EQ(train_points.size(), 9u);
  ASSERT_EQ(val_points.size(), 3u);
  EXPECT_EQ(val_points[1].op, 'L');  // epochs without validation are not gaps
  int i = 0;
  for (const auto& [epoch, value] : val) EXPECT_NEAR(val_points[i++].x, train_points[epoch].x, 0.011);
  EXPECT_EQ(find_class(*root, "g", "best-marker")->attribute("data-epoch"), "6");
}

TEST(PlotSvg, TrainingOnly) {
  const auto root = parse(render_history_svg(make_history({{"loss", {1, 0.5, 0.25}}}, 3)));
  EXPECT_NE(curve(*root, "loss"), nullptr);
  EXPECT_EQ(curve(*root, "val_loss"), nullptr);
  EXPECT_EQ(find_class(*root, "g", "best-marker"), nullptr);
  EXPECT_TRUE(has_text(*root, "Training loss"));
  const Element* legend = find_class(*root, "g", "legend");
  EXPECT_TRUE(has_text(*legend, "loss"));
  EXPECT_FALSE(has_text(*legend, "val_loss"));
}

TEST(PlotSvg, CaptionIsTheEscapedSummaryAndOverfittingIsShaded) {
  proto::Diagnosis diagnosis;
  diagnosis.set_verdict("overfitting");
  diagnosis.set_best_epoch(5);
  diagnosis.set_overfitting_from_epoch(6);
  diagnosis.set_summary("overfitting from epoch 7: loss <fell> & \"val_loss\" 'rose' (0.5 -> 0.7)");
  const std::string svg = render_history_svg(loss_history(20), "loss", &diagnosis);
  const auto root = parse(svg);
  const Element* caption = find_class(*root, "text", "caption");
  ASSERT_NE(caption, nullptr);
  std::string words;
  for (const auto& line : caption->children) words += (words.empty() ? "" : " ") + line->text;
  EXPECT_EQ(words, diagnosis.summary());

  const Element* band = find_class(*root, "rect", "overfitting");
  ASSERT_NE(band, nullptr);
  // The band starts between epoch 6 (the best, 1-based) and epoch 7 (the first overfitting epoch).
  const auto points = commands(*curve(*root, "loss"));
  const double band_x = std::stod(band->attribute("x"));
  EXPECT_GT(band_x, points[5].x);
  EXPECT_LT(band_x, points[6].x);

  // Another metric's plot keeps the caption but not the band.
  proto::History history = loss_history(20);
  for (auto& record : *history.mutable_epochs()) (*record.mutable_values())["accuracy"] = 0.5;
  const auto accuracy = parse(render_history_svg(history, "accuracy", &diagnosis));
  EXPECT_NE(find_class(*accuracy, "text", "caption"), nullptr);
  EXPECT_EQ(find_class(*accuracy, "rect", "overfitting"), nullptr);
}

TEST(PlotSvg, LongCaptionWrapsWithinTheWidth) {
  proto::Diagnosis diagnosis;
  diagnosis.set_verdict("good_fit");
  std::string summary = "good fit:";
  for (int i = 0; i < 40; ++i) summary += " word" + std::to_string(i);
  diagnosis.set_summary(summary);
  const auto root = parse(render_history_svg(loss_history(5), "loss", &diagnosis));
  const Element* caption = find_class(*root, "text", "caption");
  ASSERT_NE(caption, nullptr);
  EXPECT_GE(caption->children.size(), 2u);
  for (const auto& line : caption->children) EXPECT_LE(line->text.size(), 100u);
  // The picture grows to hold the caption.
  std::istringstream view_box(root->attribute("viewBox"));
  double x, y, width, height;
  view_box >> x >> y >> width >> height;
  const double last_line_y = std::stod(caption->attribute("y")) +
                             std::stod(caption->children.back()->attribute("dy")) * (caption->children.size() - 1);
  EXPECT_LT(last_line_y, height);
}

// The title a person would give the figure, whether the metric is asked for by its name or by its val_ twin.
TEST(PlotSvg, TitlesReadAsWords) {
  const proto::History history = make_history({{"accuracy", {0.5, 0.7}},
                                               {"val_accuracy", {0.4, 0.6}},
                                               {"val_top_k", {0.7, 0.8}},
                                               {"learning_rate", {0.01, 0.005}},
                                               {"mean_absolute_error", {2, 1}}},
                                              2);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"accuracy", "Training and validation accuracy"},
      {"val_accuracy", "Training and validation accuracy"},
      {"top_k", "Validation top k"},
      {"val_top_k", "Validation top k"},
      {"learning_rate", "Learning rate"},
      {"mean_absolute_error", "Training mean absolute error"},
  };
  for (const auto& [metric, title] : cases) {
    SCOPED_TRACE(metric);
    const auto root = parse(render_history_svg(history, metric));
    const Element* text = find_class(*root, "text", "title");
    ASSERT_NE(text, nullptr);
    EXPECT_EQ(text->text, title);
    ASSERT_EQ(find_all(*root, "title").size(), 1u);
    EXPECT_EQ(find_all(*root, "title")[0]->text, title);
  }
  // val_accuracy draws both curves, as accuracy does.
  const auto val = parse(render_history_svg(history, "val_accuracy"));
  EXPECT_NE(curve(*val, "accuracy"), nullptr);
  EXPECT_NE(curve(*val, "val_accuracy"), nullptr);
}

// Several metrics in one file: one panel each, stacked in the order asked, the verdict under the loss panel only.
TEST(PlotSvg, PanelsStackOnePlotPerMetric) {
  proto::History history = loss_history(6);
  for (int e = 0; e < 6; ++e) {
    (*history.mutable_epochs(e)->mutable_values())["accuracy"] = 0.5 + 0.05 * e;
    (*history.mutable_epochs(e)->mutable_values())["val_accuracy"] = 0.45 + 0.05 * e;
  }
  proto::Diagnosis diagnosis;
  diagnosis.set_verdict("good_fit");
  diagnosis.set_summary("good fit: the verdict line");
  const std::string svg = render_history_panels_svg(history, {"accuracy", "loss"}, &diagnosis);
  const auto root = parse(svg);
  EXPECT_EQ(root->name, "svg");
  EXPECT_EQ(root->attribute("xmlns"), "http://www.w3.org/2000/svg");
  std::vector<const Element*> panels;
  for (const Element* element : find_all(*root, "svg")) {
    if (element->attribute("class") == "panel") panels.push_back(element);
  }
  ASSERT_EQ(panels.size(), 2u);
  EXPECT_EQ(panels[0]->attribute("data-metric"), "accuracy");
  EXPECT_EQ(panels[1]->attribute("data-metric"), "loss");
  const double first_height = std::stod(panels[0]->attribute("height"));
  EXPECT_EQ(std::stod(panels[0]->attribute("y")), 0.0);
  EXPECT_EQ(std::stod(panels[1]->attribute("y")), first_height) << "the loss panel sits right below the first";
  EXPECT_EQ(std::stod(root->attribute("height")), first_height + std::stod(panels[1]->attribute("height")));
  EXPECT_TRUE(has_text(*panels[0], "Training and validation accuracy"));
  EXPECT_TRUE(has_text(*panels[1], "Training and validation loss"));
  EXPECT_EQ(svg.find("the verdict line"), svg.rfind("the verdict line")) << "one caption";
  EXPECT_NE(svg.find("the verdict line", svg.find("data-metric=\"loss\"")), std::string::npos)
      << "the caption sits in the loss panel";
  // One metric: the single plot, unchanged.
  EXPECT_EQ(render_history_panels_svg(history, {"loss"}, &diagnosis), render_history_svg(history, "loss", &diagnosis));
  // A metric the history lacks fails the whole figure, naming it.
  EXPECT_THROW(render_history_panels_svg(history, {"loss", "auc"}), Error);
}

TEST(PlotSvg, UnknownMetricNamesThePlottableOnes) {
  try {
    render_history_svg(loss_history(3), "accuracy");
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("accuracy"), std::string::npos);
    EXPECT_NE(error.hint().find("loss"), std::string::npos) << error.hint();
  }
}

TEST(PlotSvg, PlottableMetrics) {
  const proto::History history = make_history({{"accuracy", {0.5}},
                                               {"val_accuracy", {0.5}},
                                               {"val_loss", {1}},
                                               {"loss", {1}},
                                               {"learning_rate", {0.01}},
                                               {"val_auc", {0.7}}},
                                              1);
  EXPECT_EQ(plottable_metrics(history), (std::vector<std::string>{"loss", "accuracy", "auc", "learning_rate"}));
  EXPECT_TRUE(plottable_metrics(proto::History()).empty());
}

TEST(PlotSvg, WriteIsTheRenderedText) {
  const fs::path dir = fs::temp_directory_path() / ("shardfit_plot_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const proto::History history = loss_history(7);
  write_history_svg(dir / "loss.svg", history);
  std::ifstream in(dir / "loss.svg", std::ios::binary);
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, render_history_svg(history));
  fs::remove_all(dir);
}

// Python's ElementTree is a second, independent strict parser; it also checks the SVG namespace it resolves.
TEST(PlotSvg, PythonElementTreeParsesIt) {
  const char* python_env = std::getenv("SHARDFIT_PYTHON");
  const std::string python = python_env != nullptr ? python_env : "/usr/bin/python3";
  if (::access(python.c_str(), X_OK) != 0) GTEST_SKIP() << python << " not found";
  const fs::path dir = fs::temp_directory_path() / ("shardfit_plot_py_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  proto::Diagnosis diagnosis;
  diagnosis.set_verdict("overfitting");
  diagnosis.set_overfitting_from_epoch(3);
  diagnosis.set_summary("overfitting from epoch 4: a <b> & c -> d");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"plain.svg", render_history_svg(loss_history(25))},
      {"caption.svg", render_history_svg(loss_history(25), "loss", &diagnosis)},
      {"nan.svg", render_history_svg(make_history({{"loss", {1, kNaN, kInf}}, {"val_loss", {kNaN, 1, 2}}}, 3))},
      {"single.svg", render_history_svg(make_history({{"loss", {1}}}, 1))},
      {"panels.svg", render_history_panels_svg(loss_history(25), {"loss", "val_loss"}, &diagnosis)},
  };
  std::string files;
  for (const auto& [name, svg] : cases) {
    std::ofstream(dir / name, std::ios::binary) << svg;
    files += " '" + (dir / name).string() + "'";
  }
  const std::string script =
      "import sys, xml.etree.ElementTree as ET\n"
      "for f in sys.argv[1:]:\n"
      "    root = ET.parse(f).getroot()\n"
      "    assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag\n"
      "print('ok')\n";
  std::ofstream(dir / "check.py") << script;
  const std::string command = "'" + python + "' '" + (dir / "check.py").string() + "'" + files + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "ok\n");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace shardfit
