// dist/io/json_writer: strings escaped as JSON requires (quotes, backslashes, control characters; odd bytes as
// U+FFFD), numbers spelt as Python's json module writes and reads them (NaN, Infinity), keys sorted, and the two
// layouts the files use. Python's json module, when present, reads back what is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "dist/io/json_writer.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(JsonString, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(json_string("plain"), "\"plain\"");
  EXPECT_EQ(json_string("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(json_string("C:\\runs\\a"), "\"C:\\\\runs\\\\a\"");
  EXPECT_EQ(json_string("a\nb\rc\td\be\ff"), "\"a\\nb\\rc\\td\\be\\ff\"");
  EXPECT_EQ(json_string(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(json_string(std::string("nul\0here", 8)), "\"nul\\u0000here\"");
  EXPECT_EQ(json_string(""), "\"\"");
}

TEST(JsonString, KeepsUtf8AndReplacesOddBytes) {
  EXPECT_EQ(json_string("caf\xc3\xa9 \xe2\x94\x81"), "\"caf\xc3\xa9 \xe2\x94\x81\"");
  EXPECT_EQ(json_string("caf\xe9"), "\"caf\\ufffd\"");                  // Latin-1 é
  EXPECT_EQ(json_string("\xc0\xaf"), "\"\\ufffd\\ufffd\"");             // overlong '/'
  EXPECT_EQ(json_string("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
  EXPECT_TRUE(is_utf8("caf\xc3\xa9"));
  EXPECT_FALSE(is_utf8("caf\xe9"));
  EXPECT_EQ(to_utf8("caf\xe9"), "caf\xef\xbf\xbd");
}

TEST(JsonArray, NumbersAsPythonWritesThem) {
  EXPECT_EQ(json_array(std::vector<double>{1.0, 0.1, 1e-5, kNaN, kInf, -kInf, -0.0}),
            "[1.0, 0.1, 1e-05, NaN, Infinity, -Infinity, -0.0]");
  EXPECT_EQ(json_array(std::vector<double>{}), "[]");
  EXPECT_EQ(json_array(std::vector<int64_t>{0, 1, -2}), "[0, 1, -2]");
}

TEST(JsonObject, KeysSortedWhateverTheOrderAdded) {
  JsonObject inner;
  inner.number("b", 2.0).number("a", -kNaN);
  JsonObject o;
  o.string("z", "x\"y").integer("m", 3).object("inner", inner).numbers("list", std::vector<double>{0.5});
  EXPECT_EQ(o.inline_text(), "{\"inner\": {\"a\": NaN, \"b\": 2.0}, \"list\": [0.5], \"m\": 3, \"z\": \"x\\\"y\"}");
  EXPECT_EQ(o.document(),
            "{\n  \"inner\": {\"a\": NaN, \"b\": 2.0},\n  \"list\": [0.5],\n  \"m\": 3,\n  \"z\": \"x\\\"y\"\n}\n");
  EXPECT_EQ(JsonObject().inline_text(), "{}");
  o.integer("m", 4);  // the last value wins
  EXPECT_NE(o.inline_text().find("\"m\": 4"), std::string::npos);
}

TEST(JsonObject, BooleansAsJsonLiterals) {
  JsonObject o;
  o.boolean("yes", true).boolean("no", false);
  EXPECT_EQ(o.inline_text(), "{\"no\": false, \"yes\": true}");
}

TEST(JsonObject, KeysAreEscapedToo) {
  JsonObject o;
  o.number("a\"b\\c\n", 1.0);
  EXPECT_EQ(o.inline_text(), "{\"a\\\"b\\\\c\\n\": 1.0}");
}

// Python's json module is the reader the files are written for: it must read back the same strings and numbers.
TEST(JsonObject, PythonReadsBackWhatIsWritten) {
  if (std::system("python3 -c 'import json' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const shardfit::testing::TempDir dir("json_writer");
  JsonObject o;
  o.string("s", std::string("q\"b\\n\n\x01", 7)).numbers("v", std::vector<double>{kNaN, kInf, -kInf, 0.1});
  std::ofstream(dir.path() / "a.json") << o.document();
  std::ofstream(dir.path() / "check.py") << R"(import json, math, sys
d = json.load(open(sys.argv[1]))
assert d["s"] == 'q"b\\n\n\x01', repr(d["s"])
v = d["v"]
assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf and v[3] == 0.1, v
)";
  const std::string command = "python3 " + (dir.path() / "check.py").string() + " " + (dir.path() / "a.json").string();
  EXPECT_EQ(std::system(command.c_str()), 0) << o.document();
}

}  // namespace
}  // namespace shardfit
