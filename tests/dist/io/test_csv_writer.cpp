// dist/io/csv_writer: fields quoted exactly when Python's csv module (QUOTE_MINIMAL) quotes them, and the rows it
// writes read back by Python's csv.reader field for field.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "dist/io/csv_writer.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

TEST(CsvField, QuotesOnlyWhenItMust) {
  EXPECT_EQ(csv_field("val_loss", ','), "val_loss");
  EXPECT_EQ(csv_field("", ','), "");
  EXPECT_EQ(csv_field("a,b", ','), "\"a,b\"");
  EXPECT_EQ(csv_field("a,b", ';'), "a,b");  // only this file's separator counts
  EXPECT_EQ(csv_field("a;b", ';'), "\"a;b\"");
  EXPECT_EQ(csv_field("say \"hi\"", ','), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines", ','), "\"two\nlines\"");
  EXPECT_EQ(csv_field("cr\rhere", ','), "\"cr\rhere\"");
}

TEST(CsvRow, JoinsAndEndsAsAsked) {
  const std::vector<std::string> fields = {"epoch", "a,b", "q\"", "nan"};
  EXPECT_EQ(csv_row(fields, ',', "\n"), "epoch,\"a,b\",\"q\"\"\",nan\n");
  EXPECT_EQ(csv_row(fields, ',', "\r\n"), "epoch,\"a,b\",\"q\"\"\",nan\r\n");
  EXPECT_EQ(csv_row(std::vector<std::string>{"0", "", "1.5"}, '\t', "\n"), "0\t\t1.5\n");
  EXPECT_EQ(csv_row(std::vector<std::string>{}, ',', "\n"), "\n");
}

TEST(CsvRow, PythonReadsBackTheSameFields) {
  if (std::system("python3 -c 'import csv' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const shardfit::testing::TempDir dir("csv_writer");
  const std::vector<std::string> fields = {"epoch", "a,b", "say \"hi\"", "two\nlines", "cr\rhere", ""};
  std::ofstream(dir.path() / "a.csv", std::ios::binary) << csv_row(fields, ',', "\r\n");
  std::ofstream(dir.path() / "check.py") << R"(import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
assert rows == [["epoch", "a,b", 'say "hi"', "two\nlines", "cr\rhere", ""]], rows
)";
  const std::string command = "python3 " + (dir.path() / "check.py").string() + " " + (dir.path() / "a.csv").string();
  EXPECT_EQ(std::system(command.c_str()), 0);
}

}  // namespace
}  // namespace shardfit
