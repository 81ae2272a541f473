// Tests for dist/dataset: .npy, IDX and CSV files written byte by byte into a temporary folder, read back through
// ArrayFile and Dataset, plus the bundled digits data. Every error case checks the message names what went wrong.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dist/io/dataset.h"
#include "dist/io/gzip_cache.h"
#include "dist/io/inflate.h"
#include "dist/io/mapped_file.h"
#include "kernels/error.h"
#include "proto/shardfit.pb.h"

// Counts allocations so a test can prove gather() makes none (it runs every training step).
namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// noinline: GCC otherwise sees new/free pairs through the inlined replacements and warns about a mismatch.
__attribute__((noinline)) void* operator new(size_t bytes) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace shardfit {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

// Runs fn, expects a shardfit::Error whose message contains every fragment; returns the error for more checks.
template <typename Fn>
Error expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
  } catch (const Error& e) {
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    return e;
  }
  ADD_FAILURE() << "expected an error containing '" << *fragments.begin() << "'";
  return Error("", "");
}

fs::path source_dir() {
  const char* dir = std::getenv("SHARDFIT_SOURCE_DIR");
  return dir != nullptr && *dir != '\0' ? fs::path(dir) : fs::path(".");
}

// ------------------------------------------------------------------------------------------------------------------
// Writing test files
// ------------------------------------------------------------------------------------------------------------------

// Little-endian bytes of the values as T (the test machines are little-endian; checked below).
template <typename T>
std::string le_bytes(const std::vector<double>& values) {
  static_assert(std::endian::native == std::endian::little);
  std::string out;
  for (double v : values) {
    const auto t = static_cast<T>(v);
    out.append(reinterpret_cast<const char*>(&t), sizeof(T));
  }
  return out;
}

template <typename T>
std::string be_bytes(const std::vector<double>& values) {
  std::string out;
  for (double v : values) {
    const auto t = static_cast<T>(v);
    std::string b(reinterpret_cast<const char*>(&t), sizeof(T));
    std::reverse(b.begin(), b.end());
    out += b;
  }
  return out;
}

// A .npy file as np.save writes it: magic, version, header length, the dict padded with spaces to a multiple of 64.
std::string npy(const std::string& descr, const std::string& shape, const std::string& data, int major = 1,
                bool fortran = false) {
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  const size_t preamble = major == 1 ? 10 : 12;
  while ((preamble + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const auto len = static_cast<uint32_t>(dict.size());
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) out += static_cast<char>((len >> (8 * i)) & 0xFF);
  return out + dict + data;
}

// An IDX file: 0x00 0x00 type ndims, big-endian dims, then the (already big-endian) data.
std::string idx(unsigned char type, const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((d >> shift) & 0xFF);
  }
  return out + data;
}

// bytes gzip-compressed by zlib, as the gzip tool writes them (one member, CRC-32 and length at the end).
std::string gzip_bytes(const std::string& bytes) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The regular files in a folder, by name (none when it does not exist).
std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "shardfit_test_dataset_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    // Inflated copies of .gz files go to a cache folder of this test's own (gzip_cache.h).
    ::setenv("SHARDFIT_CACHE_DIR", (dir_ / "cache").c_str(), 1);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes bytes to dir_/name (creating folders) and returns the absolute path.
  fs::path write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

  // A Dataset config with x and y paths relative to dir_.
  static proto::Dataset config(const std::string& x, const std::string& y = "") {
    proto::Dataset cfg;
    cfg.mutable_x()->set_path(x);
    if (!y.empty()) cfg.mutable_y()->set_path(y);
    return cfg;
  }

  std::vector<float> read(const ArrayFile& a, std::vector<int64_t> rows, float scale = 1.0F) {
    std::vector<float> out(rows.size() * static_cast<size_t>(a.cols()), -999.0F);
    a.read_rows(rows, out.data(), scale);
    return out;
  }

  fs::path dir_;
};

// ------------------------------------------------------------------------------------------------------------------
// .npy
// ------------------------------------------------------------------------------------------------------------------

TEST_F(DatasetTest, NpyEveryDtypeReadsAsFloat) {
  struct Case {
    std::string descr, dtype, data;
    std::vector<double> values;
    bool integer;
  };
  const std::vector<double> signed_values = {0, 1, -2, 3, 100, -7};
  const std::vector<double> float_values = {0, 1.5, -2.25, 3e5, 1e-3, -7};
  const std::vector<double> byte_values = {0, 1, 2, 128, 200, 255};
  const std::vector<Case> cases = {
      {"<f4", "float32", le_bytes<float>(float_values), float_values, false},
      {"<f8", "float64", le_bytes<double>(float_values), float_values, false},
      {"|u1", "uint8", le_bytes<uint8_t>(byte_values), byte_values, true},
      {"<i4", "int32", le_bytes<int32_t>(signed_values), signed_values, true},
      {"<i8", "int64", le_bytes<int64_t>(signed_values), signed_values, true},
      {">f4", "float32", be_bytes<float>(float_values), float_values, false},  // big-endian, swapped on read
      {">i8", "int64", be_bytes<int64_t>(signed_values), signed_values, true},
      {"<u1", "uint8", le_bytes<uint8_t>(byte_values), byte_values, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.descr);
    const ArrayFile a = ArrayFile::open(write("a.npy", npy(c.descr, "(2, 3)", c.data)));
    EXPECT_EQ(a.rows(), 2);
    EXPECT_EQ(a.cols(), 3);
    EXPECT_EQ(a.dtype(), c.dtype);
    EXPECT_EQ(a.integer_dtype(), c.integer);
    EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
    // Rows in reverse order: row 1 first.
    const std::vector<float> got = read(a, {1, 0});
    const std::vector<double> want = {c.values[3], c.values[4], c.values[5], c.values[0], c.values[1], c.values[2]};
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], static_cast<float>(want[i])) << i;
    EXPECT_EQ(a.value(1, 2), static_cast<double>(static_cast<float>(c.values[5])));
  }
}

TEST_F(DatasetTest, NpyHeaderVersions) {
  const std::string data = le_bytes<float>({1, 2, 3, 4});
  for (int major : {1, 2, 3}) {
    SCOPED_TRACE(major);
    const ArrayFile a = ArrayFile::open(write("v.npy", npy("<f4", "(2, 2)", data, major)));
    EXPECT_EQ(read(a, {0, 1}), (std::vector<float>{1, 2, 3, 4}));
  }
  std::string v4 = npy("<f4", "(2, 2)", data);
  v4[6] = 4;
  expect_error([&] { ArrayFile::open(write("v4.npy", v4)); }, {"v4.npy", "version 4.0", "expected version 1.0"});
}

TEST_F(DatasetTest, NpyShapesFlattenToRows) {
  const ArrayFile one_d = ArrayFile::open(write("1d.npy", npy("<i8", "(4,)", le_bytes<int64_t>({5, 6, 7, 8}))));
  EXPECT_EQ(one_d.rows(), 4);
  EXPECT_EQ(one_d.cols(), 1);
  EXPECT_EQ(read(one_d, {3, 0}), (std::vector<float>{8, 5}));

  std::vector<double> v(12);
  std::iota(v.begin(), v.end(), 0.0);
  const ArrayFile three_d = ArrayFile::open(write("3d.npy", npy("<f4", "(2, 2, 3)", le_bytes<float>(v))));
  EXPECT_EQ(three_d.rows(), 2);
  EXPECT_EQ(three_d.cols(), 6);
  EXPECT_EQ(three_d.shape(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(read(three_d, {1}), (std::vector<float>{6, 7, 8, 9, 10, 11}));
  EXPECT_NE(three_d.describe().find("float32, shape (2, 2, 3)"), std::string::npos) << three_d.describe();

  // No rows at all is a valid array (the Dataset refuses it, not the reader).
  const ArrayFile empty = ArrayFile::open(write("0.npy", npy("<f4", "(0, 5)", "")));
  EXPECT_EQ(empty.rows(), 0);
  EXPECT_EQ(empty.cols(), 5);
}

TEST_F(DatasetTest, NpyGatherAnyRowsInAnyOrderWithScale) {
  std::vector<double> v(5 * 4);
  std::iota(v.begin(), v.end(), 0.0);
  const ArrayFile a = ArrayFile::open(write("g.npy", npy("|u1", "(5, 4)", le_bytes<uint8_t>(v))));
  const std::vector<int64_t> rows = {4, 0, 2, 2, 1};
  const std::vector<float> got = read(a, rows, 0.5F);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(got[i * 4 + c], 0.5F * static_cast<float>(rows[i] * 4 + c));
  }
  // float32 with scale 1 takes the copy path; with a scale it converts.
  const ArrayFile f = ArrayFile::open(write("f.npy", npy("<f4", "(5, 4)", le_bytes<float>(v))));
  EXPECT_EQ(read(f, {3}), (std::vector<float>{12, 13, 14, 15}));
  EXPECT_EQ(read(f, {3}, 2.0F), (std::vector<float>{24, 26, 28, 30}));
  EXPECT_TRUE(read(f, {}).empty());
  expect_error([&] { read(f, {5}); }, {"f.npy", "row 5", "[0, 5)"});
  expect_error([&] { read(f, {-1}); }, {"row -1"});
}

TEST_F(DatasetTest, NpyRejectsFortranOrder) {
  const Error e = expect_error(
      [&] {
        ArrayFile::open(write("f.npy", npy("<f4", "(2, 2)", le_bytes<float>({1, 2, 3, 4}), 1, true)));
      },
      {"f.npy", "fortran_order is True", "expected a C-order"});
  EXPECT_NE(e.hint().find("ascontiguousarray"), std::string::npos);
}

TEST_F(DatasetTest, NpyTruncatedFileIsAnErrorNotACrash) {
  const std::string full = npy("<f4", "(4, 3)", le_bytes<float>(std::vector<double>(12, 1.0)));
  expect_error([&] { ArrayFile::open(write("t.npy", full.substr(0, full.size() - 8))); },
               {"t.npy", "truncated", "48 bytes of data", "only 40"});
  // Cut inside the header.
  expect_error([&] { ArrayFile::open(write("h.npy", full.substr(0, 30))); }, {"h.npy", "truncated"});
  expect_error([&] { ArrayFile::open(write("e.npy", "")); }, {"e.npy", "not a .npy file (too short)"});
}

TEST_F(DatasetTest, NpyBadMagicAndHeaders) {
  std::string bad = npy("<f4", "(1, 1)", le_bytes<float>({1}));
  bad[1] = 'X';
  expect_error([&] { ArrayFile::open(write("m.npy", bad)); }, {"m.npy", "not a .npy file (wrong magic bytes)"});
  // gzip magic decides, whatever the name: then the stream must be whole (gzip files are tested below).
  expect_error([&] { ArrayFile::open(write("z.npy", std::string("\x1f\x8b\x08\x00junkjunkjunk", 16))); },
               {"z.npy", "gzip"});
  expect_error([&] { ArrayFile::open(write("k.npy", std::string("PK\x03\x04junkjunkjunk"))); },
               {"k.npy", "zip archive"});
  expect_error([&] { ArrayFile::open(write("s.npy", npy("<f4", "(1, 1", le_bytes<float>({1})))); },
               {"s.npy", "malformed .npy header"});
  expect_error([&] { ArrayFile::open(write("0d.npy", npy("<f4", "()", le_bytes<float>({1})))); },
               {"0d.npy", "0-d array"});
  std::string structured = npy("<f4", "(1,)", le_bytes<float>({1}));
  const size_t at = structured.find("'<f4'");
  structured.replace(at, 5, "[('a', '<f4')]");
  expect_error([&] { ArrayFile::open(write("r.npy", structured)); }, {"r.npy", "structured dtype"});
}

TEST_F(DatasetTest, NpyUnsupportedDtypeMessage) {
  write("data/x.npy", npy("<f2", "(2,)", "abcd"));
  write("data/y.npy", npy("<i8", "(2,)", le_bytes<int64_t>({0, 1})));
  expect_error([&] { Dataset::open(config("data/x.npy", "data/y.npy"), dir_, "train"); },
               {"data/x.npy: unsupported dtype '<f2': expected float32, float64, uint8, int32 or int64"});
  expect_error([&] { ArrayFile::open(write("c.npy", npy("<c8", "(1,)", std::string(8, '\0')))); },
               {"unsupported dtype '<c8'"});
}

TEST_F(DatasetTest, MissingFileNamesPathResolutionAndHint) {
  const Error e = expect_error([&] { Dataset::open(config("nope.npy", "y.npy"), dir_, "train"); },
                               {"cannot open data file 'nope.npy' (resolved to " + (dir_ / "nope.npy").string() +
                                "): No such file or directory"});
  EXPECT_NE(e.hint().find("data.train.x.path"), std::string::npos) << e.hint();
  EXPECT_NE(e.hint().find(dir_.string()), std::string::npos) << e.hint();
  expect_error([&] { ArrayFile::open(dir_); }, {"cannot tell the format"});
  fs::create_directories(dir_ / "folder.npy");
  expect_error([&] { ArrayFile::open(dir_ / "folder.npy"); }, {"folder.npy", "is a directory"});
  // Files that exist but are of a kind not read: the message says which kind.
  expect_error([&] { ArrayFile::open(write("x.npy.gz", "\x1f\x8b")); }, {"x.npy.gz", "truncated gzip file"});
  expect_error([&] { ArrayFile::open(write("w.npz", "PK")); }, {"w.npz", ".npz"});
  expect_error([&] { ArrayFile::open(write("w.bin", "?"), "hdf5"); }, {"w.bin", "format 'hdf5'", "npy, csv or idx"});
  // A file that does not exist is missing, whatever its name says: "x.npz" is most often a typo for "x.npy".
  const Error typo = expect_error([&] { Dataset::open(config("typo.npz", "y.npy"), dir_, "train"); },
                                  {"cannot open data file 'typo.npz'", "No such file or directory"});
  EXPECT_EQ(std::string(typo.what()).find("archives are not read"), std::string::npos) << typo.what();
  expect_error([&] { ArrayFile::open(dir_ / "missing.gz"); }, {"cannot open data file", "No such file or directory"});
}

// ------------------------------------------------------------------------------------------------------------------
// The bundled digits data (examples/digits)
// ------------------------------------------------------------------------------------------------------------------

TEST_F(DatasetTest, BundledDigits) {
  const fs::path digits = source_dir() / "examples" / "digits";
  const Dataset d = Dataset::open(config("x.npy", "y.npy"), digits, "train");
  EXPECT_EQ(d.rows(), 1797);
  EXPECT_EQ(d.feature_dim(), 64);
  EXPECT_EQ(d.label_cols(), 1);
  EXPECT_TRUE(d.labels_are_ids());
  EXPECT_EQ(d.x().dtype(), "float32");
  EXPECT_EQ(d.x().shape(), (std::vector<int64_t>{1797, 64}));
  EXPECT_EQ(d.y().dtype(), "int64");
  EXPECT_EQ(d.y().shape(), (std::vector<int64_t>{1797}));
  d.check_class_ids(10);

  std::vector<int64_t> all(1797);
  std::iota(all.begin(), all.end(), 0);
  std::vector<float> x(1797 * 64), y(1797);
  d.gather(all, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_GE(*std::min_element(x.begin(), x.end()), 0.0F);
  EXPECT_LE(*std::max_element(x.begin(), x.end()), 1.0F);
  EXPECT_EQ(*std::max_element(x.begin(), x.end()), 1.0F);
  std::vector<int64_t> counts(10, 0);
  for (float label : y) {
    ASSERT_GE(label, 0.0F);
    ASSERT_LE(label, 9.0F);
    ASSERT_EQ(label, std::floor(label));
    ++counts[static_cast<size_t>(label)];
  }
  for (int64_t c : counts) {
    EXPECT_GE(c, 174);
    EXPECT_LE(c, 183);
  }

  // One-hot of a scattered batch agrees with the ids.
  const std::vector<int64_t> rows = {1796, 0, 900, 17, 17};
  std::vector<float> bx(rows.size() * 64), onehot(rows.size() * 10);
  d.gather(rows, bx.data(), onehot.data(), LabelLayout::kIdsToOneHot, 10);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(std::accumulate(onehot.begin() + i * 10, onehot.begin() + (i + 1) * 10, 0.0F), 1.0F);
    EXPECT_EQ(onehot[i * 10 + static_cast<size_t>(y[rows[i]])], 1.0F);
    for (int c = 0; c < 64; ++c) EXPECT_EQ(bx[i * 64 + c], x[rows[i] * 64 + c]);
  }
  // The training step's path allocates nothing: the same gather, counted.
  const int64_t before = g_allocations.load();
  d.gather(rows, bx.data(), onehot.data(), LabelLayout::kIdsToOneHot, 10);
  d.gather(rows, bx.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(g_allocations.load() - before, 0);

  EXPECT_NE(d.describe().find("train: x x.npy (npy, float32, shape (1797, 64)), y y.npy (npy, int64, shape (1797))"),
            std::string::npos)
      << d.describe();
}

// ------------------------------------------------------------------------------------------------------------------
// IDX
// ------------------------------------------------------------------------------------------------------------------

TEST_F(DatasetTest, IdxUbyteImagesAndLabels) {
  // Three 2x3 "images" with pixel = 10 * image + position; labels 7, 0, 9.
  std::string pixels;
  for (int img = 0; img < 3; ++img) {
    for (int p = 0; p < 6; ++p) pixels += static_cast<char>(10 * img + p);
  }
  write("train-images-idx3-ubyte", idx(0x08, {3, 2, 3}, pixels));
  write("train-labels-idx1-ubyte", idx(0x08, {3}, "\x07\x00\x09"s));
  proto::Dataset cfg = config("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  cfg.set_x_scale(0.5F);
  const Dataset d = Dataset::open(cfg, dir_, "train");
  EXPECT_EQ(d.rows(), 3);
  EXPECT_EQ(d.feature_dim(), 6);
  EXPECT_EQ(d.x().dtype(), "uint8");
  EXPECT_EQ(d.x().shape(), (std::vector<int64_t>{3, 2, 3}));
  EXPECT_TRUE(d.labels_are_ids());

  std::vector<float> x(2 * 6), y(2 * 10);
  d.gather(std::vector<int64_t>{2, 0}, x.data(), y.data(), LabelLayout::kIdsToOneHot, 10);
  EXPECT_EQ(x, (std::vector<float>{10, 10.5, 11, 11.5, 12, 12.5, 0, 0.5, 1, 1.5, 2, 2.5}));
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(y[c], c == 9 ? 1.0F : 0.0F);
    EXPECT_EQ(y[10 + c], c == 7 ? 1.0F : 0.0F);
  }
}

TEST_F(DatasetTest, IdxBigEndianTypes) {
  const std::vector<double> ints = {-1, 70000, -2147483648.0, 5};
  const ArrayFile i32 = ArrayFile::open(write("a.idx", idx(0x0C, {2, 2}, be_bytes<int32_t>(ints))));
  EXPECT_EQ(i32.dtype(), "int32");
  EXPECT_EQ(read(i32, {0, 1}), (std::vector<float>{-1, 70000, -2147483648.0F, 5}));

  const std::vector<double> shorts = {-2, 300, 7};
  const ArrayFile i16 = ArrayFile::open(write("s.idx1", idx(0x0B, {3}, be_bytes<int16_t>(shorts))));
  EXPECT_EQ(i16.dtype(), "int16");
  EXPECT_EQ(read(i16, {0, 1, 2}), (std::vector<float>{-2, 300, 7}));

  const ArrayFile i8 = ArrayFile::open(write("b.idx", idx(0x09, {2}, "\xff\x05"s)));
  EXPECT_EQ(read(i8, {0, 1}), (std::vector<float>{-1, 5}));

  const std::vector<double> reals = {1.5, -0.25, 1e10};
  const ArrayFile f32 = ArrayFile::open(write("f.idx", idx(0x0D, {3, 1}, be_bytes<float>(reals))));
  EXPECT_EQ(read(f32, {2, 1}), (std::vector<float>{1e10F, -0.25F}));
  // 8-byte elements after a 12-byte header are misaligned: must still read correctly.
  const ArrayFile f64 = ArrayFile::open(write("d.idx", idx(0x0E, {1, 3}, be_bytes<double>(reals))));
  EXPECT_EQ(f64.dtype(), "float64");
  EXPECT_EQ(read(f64, {0}), (std::vector<float>{1.5F, -0.25F, 1e10F}));
  EXPECT_EQ(f64.value(0, 2), 1e10);
}

TEST_F(DatasetTest, IdxErrors) {
  const std::string full = idx(0x08, {4, 5}, std::string(20, '\1'));
  expect_error([&] { ArrayFile::open(write("t-ubyte", full.substr(0, full.size() - 3))); },
               {"t-ubyte", "truncated", "20 bytes of data", "only 17"});
  expect_error([&] { ArrayFile::open(write("h-ubyte", full.substr(0, 7))); }, {"h-ubyte", "truncated", "IDX header"});
  expect_error([&] { ArrayFile::open(write("x.idx", idx(0x0A, {1}, "\1"))); },
               {"x.idx", "IDX type byte 0x0a", "expected 0x08"});
  expect_error([&] { ArrayFile::open(write("m.idx", "\1\2\3\4\5\6\7\10")); }, {"m.idx", "not an IDX file"});
  expect_error([&] { ArrayFile::open(write("n.idx", idx(0x08, {}, ""))); }, {"n.idx", "0 dimensions"});
  // The format can be forced when the name says nothing.
  EXPECT_EQ(ArrayFile::open(write("labels.bin", idx(0x08, {2}, "\1\2")), "idx").rows(), 2);
}

// ------------------------------------------------------------------------------------------------------------------
// CSV
// ------------------------------------------------------------------------------------------------------------------

TEST_F(DatasetTest, CsvWithHeaderLabelByName) {
  write("iris.csv", "sepal,petal,species\n1.5,2,0\n3,4.25,2\n-5,6e2,1\n");
  proto::Dataset cfg = config("iris.csv");
  cfg.mutable_x()->mutable_csv()->set_label_name("species");
  const Dataset d = Dataset::open(cfg, dir_, "train");
  EXPECT_EQ(d.rows(), 3);
  EXPECT_EQ(d.feature_dim(), 2);
  EXPECT_EQ(d.label_cols(), 1);
  EXPECT_TRUE(d.labels_are_ids());
  std::vector<float> x(6), y(3);
  d.gather(std::vector<int64_t>{2, 0, 1}, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(x, (std::vector<float>{-5, 600, 1.5, 2, 3, 4.25}));
  EXPECT_EQ(y, (std::vector<float>{1, 0, 2}));
  std::vector<float> onehot(9);
  d.gather(std::vector<int64_t>{2, 0, 1}, x.data(), onehot.data(), LabelLayout::kIdsToOneHot, 3);
  EXPECT_EQ(onehot, (std::vector<float>{0, 1, 0, 1, 0, 0, 0, 0, 1}));
  EXPECT_NE(d.describe().find("column 2 ('species')"), std::string::npos) << d.describe();
}

TEST_F(DatasetTest, CsvWithoutHeaderLabelByIndex) {
  write("plain.csv", "1,10,100\n2,20,200\n3,30,300\n");
  for (int64_t index : {0, -3}) {
    proto::Dataset cfg = config("plain.csv");
    cfg.mutable_x()->mutable_csv()->set_label_index(index);
    const Dataset d = Dataset::open(cfg, dir_, "train");
    EXPECT_EQ(d.rows(), 3);  // the first line is data: no header detected
    std::vector<float> x(4), y(2);
    d.gather(std::vector<int64_t>{1, 0}, x.data(), y.data(), LabelLayout::kAsIs, 1);
    EXPECT_EQ(x, (std::vector<float>{20, 200, 10, 100}));
    EXPECT_EQ(y, (std::vector<float>{2, 1}));
  }
  proto::Dataset last = config("plain.csv");
  last.mutable_x()->mutable_csv()->set_label_index(-1);
  const Dataset d = Dataset::open(last, dir_, "train");
  std::vector<float> x(2), y(1);
  d.gather(std::vector<int64_t>{2}, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(x, (std::vector<float>{3, 30}));
  EXPECT_EQ(y, (std::vector<float>{300}));
  EXPECT_EQ(d.x().value(2, 1), 30.0);
}

TEST_F(DatasetTest, CsvDelimiterCrlfBomBlankLinesAndForcedHeader) {
  write("semi.csv",
        "\xEF\xBB\xBF"
        "a;b\r\n\r\n1;2\r\n  3 ; \"4\" \r\n\n\n");
  proto::DataFile file;
  file.set_path((dir_ / "semi.csv").string());
  file.mutable_csv()->set_delimiter(";");
  const ArrayFile a = ArrayFile::open(file.path(), "", &file.csv());
  EXPECT_EQ(a.rows(), 2);
  EXPECT_EQ(a.cols(), 2);
  EXPECT_EQ(read(a, {1, 0}), (std::vector<float>{3, 4, 1, 2}));

  // A numeric first line is data unless the options say header.
  write("numeric_header.csv", "1,2\n3,4\n");
  proto::CsvOptions forced;
  forced.set_header(true);
  EXPECT_EQ(ArrayFile::open(dir_ / "numeric_header.csv", "", &forced).rows(), 1);
  EXPECT_EQ(ArrayFile::open(dir_ / "numeric_header.csv").rows(), 2);

  // header: false on a file whose first line is text: the text is a bad number on line 1.
  write("text.csv", "a,b\n1,2\n");
  proto::CsvOptions no_header;
  no_header.set_header(false);
  const ArrayFile t = ArrayFile::open(dir_ / "text.csv", "", &no_header);
  EXPECT_EQ(t.rows(), 2);
  expect_error([&] { read(t, {0}); }, {"text.csv: line 1, column 0: cannot read 'a' as a number"});
}

TEST_F(DatasetTest, CsvBadNumberNamesLineAndColumn) {
  // Line 4 (after a blank line 3) holds the bad cell.
  write("bad.csv", "a,b,label\n1,2,0\n\n3,x7,1\n");
  proto::Dataset cfg = config("bad.csv");
  cfg.mutable_x()->mutable_csv()->set_label_name("label");
  const Dataset d = Dataset::open(cfg, dir_, "train");
  std::vector<float> x(2), y(1);
  d.gather(std::vector<int64_t>{0}, x.data(), y.data(), LabelLayout::kAsIs, 1);  // the good row reads fine
  expect_error([&] { d.gather(std::vector<int64_t>{1}, x.data(), y.data(), LabelLayout::kAsIs, 1); },
               {"bad.csv: line 4, column 1 ('b'): cannot read 'x7' as a number"});
  write("empty_cell.csv", "1,2,3\n4,,6\n");
  expect_error([&] { read(ArrayFile::open(dir_ / "empty_cell.csv"), {1}); }, {"line 2, column 1: cannot read ''"});
}

TEST_F(DatasetTest, CsvStructureErrors) {
  write("ragged.csv", "a,b\n1,2\n3\n");
  expect_error([&] { ArrayFile::open(dir_ / "ragged.csv"); }, {"ragged.csv: line 3 has 1 cells: expected 2"});

  write("h.csv", "a,b,c\n1,2,3\n");
  proto::Dataset by_name = config("h.csv");
  by_name.mutable_x()->mutable_csv()->set_label_name("label");
  expect_error([&] { Dataset::open(by_name, dir_, "train"); },
               {"h.csv: csv.label_name = 'label' is not a column: expected one of 'a', 'b', 'c'"});
  proto::Dataset by_index = config("h.csv");
  by_index.mutable_x()->mutable_csv()->set_label_index(3);
  expect_error([&] { Dataset::open(by_index, dir_, "train"); },
               {"csv.label_index = 3 but the file has 3 columns: expected an index in [-3, 3)"});
  by_index.mutable_x()->mutable_csv()->set_label_index(-4);
  expect_error([&] { Dataset::open(by_index, dir_, "train"); }, {"csv.label_index = -4"});

  write("n.csv", "1,2,3\n");
  proto::Dataset no_header = config("n.csv");
  no_header.mutable_x()->mutable_csv()->set_label_name("c");
  expect_error([&] { Dataset::open(no_header, dir_, "train"); }, {"n.csv: csv.label_name = 'c'", "no header row"});

  // No label column and no y: nowhere to find labels.
  expect_error([&] { Dataset::open(config("h.csv"), dir_, "train"); }, {"train data has no labels"});
  // A label column and a y file: ambiguous.
  proto::Dataset both = config("h.csv", "y.npy");
  both.mutable_x()->mutable_csv()->set_label_index(-1);
  expect_error([&] { Dataset::open(both, dir_, "train"); }, {"label column", "data.train.y is set too"});

  write("d.csv", "1,2\n");
  proto::CsvOptions two_chars;
  two_chars.set_delimiter("::");
  expect_error([&] { ArrayFile::open(dir_ / "d.csv", "", &two_chars); }, {"csv.delimiter = '::'"});
}

TEST_F(DatasetTest, CsvFeaturesWithSeparateLabelFile) {
  write("x.csv", "f1,f2\n1,2\n3,4\n");
  write("y.csv", "label\n1\n0\n");
  const Dataset d = Dataset::open(config("x.csv", "y.csv"), dir_, "validation");
  EXPECT_EQ(d.feature_dim(), 2);
  EXPECT_EQ(d.label_cols(), 1);
  std::vector<float> x(4), y(2);
  d.gather(std::vector<int64_t>{1, 0}, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(x, (std::vector<float>{3, 4, 1, 2}));
  EXPECT_EQ(y, (std::vector<float>{0, 1}));
}

// ------------------------------------------------------------------------------------------------------------------
// Dataset: pairing, label layouts, configuration errors
// ------------------------------------------------------------------------------------------------------------------

TEST_F(DatasetTest, RowCountMismatch) {
  write("x.npy", npy("<f4", "(4, 2)", le_bytes<float>(std::vector<double>(8, 0.0))));
  write("y.npy", npy("<i8", "(3,)", le_bytes<int64_t>({0, 1, 2})));
  expect_error([&] { Dataset::open(config("x.npy", "y.npy"), dir_, "train"); },
               {"train x has 4 rows but y has 3: expected the same number of samples"});
}

TEST_F(DatasetTest, ClassIdsOutOfRangeOrNotIntegers) {
  write("x.npy", npy("<f4", "(3, 1)", le_bytes<float>({0, 1, 2})));
  write("y.npy", npy("<i8", "(3,)", le_bytes<int64_t>({1, 0, 12})));
  write("yf.npy", npy("<f4", "(3,)", le_bytes<float>({1, 1.5, 0})));
  write("yn.npy", npy("<i4", "(3,)", le_bytes<int32_t>({1, -1, 0})));
  const Dataset d = Dataset::open(config("x.npy", "y.npy"), dir_, "train");
  std::vector<float> x(3), y(30);
  d.gather(std::vector<int64_t>{0, 1}, x.data(), y.data(), LabelLayout::kIdsToOneHot, 10);
  expect_error(
      [&] {
        d.gather(std::vector<int64_t>{0, 2}, x.data(), y.data(), LabelLayout::kIdsToOneHot, 10);
      },
      {"y.npy: row 2 has class id 12: expected an integer in [0, 10)"});
  expect_error([&] { d.check_class_ids(10); }, {"row 2 has class id 12"});
  d.check_class_ids(13);

  const Dataset f = Dataset::open(config("x.npy", "yf.npy"), dir_, "train");
  expect_error([&] { f.check_class_ids(10); }, {"yf.npy: row 1 has class id 1.5: expected an integer in [0, 10)"});
  const Dataset n = Dataset::open(config("x.npy", "yn.npy"), dir_, "train");
  expect_error([&] { n.check_class_ids(10); }, {"yn.npy: row 1 has class id -1"});
}

TEST_F(DatasetTest, OneHotToIdsAndAsIs) {
  write("x.npy", npy("<f4", "(3, 1)", le_bytes<float>({0, 1, 2})));
  // Row 2 has a tie between columns 1 and 3: the first wins, as np.argmax.
  write("y.npy", npy("<f4", "(3, 4)", le_bytes<float>({0, 0, 1, 0, 0.9, 0.1, 0, 0, 0, 0.5, 0, 0.5})));
  const Dataset d = Dataset::open(config("x.npy", "y.npy"), dir_, "train");
  EXPECT_EQ(d.label_cols(), 4);
  EXPECT_FALSE(d.labels_are_ids());
  std::vector<float> x(3), ids(3), as_is(12);
  d.gather(std::vector<int64_t>{0, 1, 2}, x.data(), ids.data(), LabelLayout::kOneHotToIds, 1);
  EXPECT_EQ(ids, (std::vector<float>{2, 0, 1}));
  d.gather(std::vector<int64_t>{1}, x.data(), as_is.data(), LabelLayout::kAsIs, 4);
  EXPECT_EQ(std::vector<float>(as_is.begin(), as_is.begin() + 4), (std::vector<float>{0.9F, 0.1F, 0, 0}));
  expect_error([&] { d.gather(std::vector<int64_t>{0}, x.data(), as_is.data(), LabelLayout::kAsIs, 3); },
               {"has 4 values per row but the model expects 3"});
  expect_error([&] { d.gather(std::vector<int64_t>{0}, x.data(), as_is.data(), LabelLayout::kIdsToOneHot, 4); },
               {"expected one class id per row"});
  expect_error([&] { d.check_class_ids(4); }, {"expected one class id per row"});
  // A rank with no samples in a step gathers nothing and touches nothing.
  d.gather({}, nullptr, nullptr, LabelLayout::kOneHotToIds, 1);
}

// Synthetic data (shardfit bench): rows held in memory, gathered exactly as a file's rows, without allocating.
TEST(InMemoryDataset, GathersLikeAFileAndDescribesItself) {
  std::vector<float> x_values(4 * 3);
  std::iota(x_values.begin(), x_values.end(), 0.0F);
  const ArrayFile x = ArrayFile::in_memory("synthetic x", x_values, 4, 3);
  EXPECT_EQ(x.rows(), 4);
  EXPECT_EQ(x.cols(), 3);
  EXPECT_EQ(x.dtype(), "float32");
  EXPECT_EQ(x.describe(), "synthetic x (memory, float32, shape (4, 3))");
  EXPECT_EQ(x.file_bytes(), 48);
  EXPECT_EQ(x.changed_on_disk(), "");
  EXPECT_EQ(x.value(2, 1), 7.0);
  EXPECT_NE(x.sampled_fingerprint(),
            ArrayFile::in_memory("other", std::vector<float>(12, 0.0F), 4, 3).sampled_fingerprint());

  const Dataset d = Dataset::in_memory("bench", x, ArrayFile::in_memory("synthetic y", {2, 0, 1, 2}, 4, 1), true);
  EXPECT_TRUE(d.labels_are_ids());
  EXPECT_EQ(d.rows(), 4);
  EXPECT_EQ(d.feature_dim(), 3);
  std::vector<float> out(2 * 3), one_hot(2 * 3);
  const std::vector<int64_t> rows{3, 1};
  const int64_t before = g_allocations.load();
  d.gather(rows, out.data(), one_hot.data(), LabelLayout::kIdsToOneHot, 3);
  EXPECT_EQ(g_allocations.load(), before) << "gather allocated";
  EXPECT_EQ(out, (std::vector<float>{9, 10, 11, 3, 4, 5}));
  EXPECT_EQ(one_hot, (std::vector<float>{0, 0, 1, 1, 0, 0}));
  d.check_class_ids(3);
  expect_error([&] { d.check_class_ids(2); }, {"synthetic y", "row 0 has class id 2"});

  expect_error([&] { ArrayFile::in_memory("short", std::vector<float>(5), 2, 3); },
               {"short", "5 values for 2 rows of 3"});
  expect_error(
      [&] {
        Dataset::in_memory("bench", x, ArrayFile::in_memory("y", {0, 1}, 2, 1), true);
      },
      {"bench x has 4 rows but y has 2"});
  expect_error([&] { Dataset::in_memory("bench", x, ArrayFile::in_memory("y", std::vector<float>(8), 4, 2), true); },
               {"holds class ids: expected one value per row"});
  const ArrayFile bad = ArrayFile::in_memory("nan x", {0, std::nanf(""), 1, 2}, 2, 2);
  expect_error([&] { bad.check_values(); }, {"nan x", "row 0, column 1 is nan"});
  bad.check_values(1, 1);  // row 1 alone is fine
}

TEST_F(DatasetTest, LabelFormatOverridesAuto) {
  write("x.npy", npy("<f4", "(2, 1)", le_bytes<float>({0, 1})));
  write("y1.npy", npy("<f4", "(2, 1)", le_bytes<float>({0.5, 1.5})));
  write("y2.npy", npy("<f4", "(2, 2)", le_bytes<float>({1, 0, 0, 1})));
  proto::Dataset cfg = config("x.npy", "y1.npy");
  EXPECT_TRUE(Dataset::open(cfg, dir_, "train").labels_are_ids());  // AUTO, one value per row
  cfg.set_labels(proto::ONE_HOT);
  EXPECT_FALSE(Dataset::open(cfg, dir_, "train").labels_are_ids());
  proto::Dataset ids = config("x.npy", "y2.npy");
  ids.set_labels(proto::CLASS_IDS);
  expect_error([&] { Dataset::open(ids, dir_, "validation"); },
               {"data.validation.labels = CLASS_IDS but y", "has 2 values per row: expected one class id per row"});
}

TEST_F(DatasetTest, PathsResolveAgainstBaseDirUnlessAbsolute) {
  write("jobs/data/x.npy", npy("<f4", "(2, 1)", le_bytes<float>({3, 4})));
  write("jobs/data/y.npy", npy("<i8", "(2,)", le_bytes<int64_t>({0, 1})));
  const Dataset rel = Dataset::open(config("data/x.npy", "data/y.npy"), dir_ / "jobs", "train");
  EXPECT_EQ(rel.x().path(), "data/x.npy");
  const Dataset abs = Dataset::open(config((dir_ / "jobs/data/x.npy").string(), "data/y.npy"), dir_ / "jobs", "train");
  EXPECT_EQ(abs.rows(), 2);
  expect_error([&] { Dataset::open(config("data/x.npy", "data/y.npy"), dir_, "train"); },
               {"cannot open data file 'data/x.npy' (resolved to " + (dir_ / "data/x.npy").string() + ")"});
}

TEST_F(DatasetTest, ConfigErrors) {
  write("x.npy", npy("<f4", "(2, 1)", le_bytes<float>({3, 4})));
  write("y.npy", npy("<i8", "(2,)", le_bytes<int64_t>({0, 1})));
  write("e.npy", npy("<f4", "(0, 1)", ""));
  write("w.npy", npy("<f4", "(2, 0)", ""));
  expect_error([&] { Dataset::open(proto::Dataset(), dir_, "train"); },
               {"train data has no x file: expected data.train.x.path"});
  expect_error([&] { Dataset::open(config("x.npy"), dir_, "train"); }, {"train data has no labels"});
  expect_error([&] { Dataset::open(config("e.npy", "e.npy"), dir_, "validation"); }, {"validation x", "has no rows"});
  expect_error([&] { Dataset::open(config("w.npy", "y.npy"), dir_, "train"); }, {"has no features"});
  proto::Dataset nan_scale = config("x.npy", "y.npy");
  nan_scale.set_x_scale(std::nanf(""));
  expect_error([&] { Dataset::open(nan_scale, dir_, "train"); }, {"data.train.x_scale = nan"});
  proto::Dataset scaled = config("x.npy", "y.npy");
  scaled.set_x_scale(0.25F);
  const Dataset d = Dataset::open(scaled, dir_, "train");
  EXPECT_EQ(d.x_scale(), 0.25F);
  std::vector<float> x(2), y(2);
  d.gather(std::vector<int64_t>{1, 0}, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(x, (std::vector<float>{1, 0.75}));
  EXPECT_EQ(y, (std::vector<float>{1, 0}));
}

}  // namespace
}  // namespace shardfit

// ------------------------------------------------------------------------------------------------------------------
// Values, fingerprints and files changed on disk (the checks of dist/data_checks.h rest on these)
// ------------------------------------------------------------------------------------------------------------------

namespace shardfit {
namespace {

TEST_F(DatasetTest, NonFiniteValuesNameFileRowAndColumn) {
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  // float32, float64 and a big-endian float64: the bad value is in row 2 (0-based), column 1.
  write("f4.npy", npy("<f4", "(3, 2)", le_bytes<float>({1, 2, 3, 4, 5, nan})));
  write("f8.npy", npy("<f8", "(3, 2)", le_bytes<double>({1, 2, 3, 4, 5, inf})));
  write("be.npy", npy(">f8", "(3, 2)", be_bytes<double>({1, 2, 3, 4, 5, -inf})));
  expect_error([&] { ArrayFile::open(dir_ / "f4.npy").check_values(); }, {"f4.npy: row 2, column 1 is nan"});
  expect_error([&] { ArrayFile::open(dir_ / "f8.npy").check_values(); }, {"f8.npy: row 2, column 1 is inf"});
  expect_error([&] { ArrayFile::open(dir_ / "be.npy").check_values(); }, {"be.npy: row 2, column 1 is -inf"});
  // A share that stops before the bad row passes; one that starts at it fails.
  ArrayFile::open(dir_ / "f4.npy").check_values(0, 2);
  expect_error([&] { ArrayFile::open(dir_ / "f4.npy").check_values(2, 1); }, {"row 2"});
  // Integers are always finite; finite floats pass.
  write("i8.npy", npy("<i8", "(3,)", le_bytes<int64_t>({1, 2, 3})));
  ArrayFile::open(dir_ / "i8.npy").check_values();
  write("ok.npy", npy("<f4", "(2, 2)", le_bytes<float>({0, -1e30, 1e-40, 3})));
  ArrayFile::open(dir_ / "ok.npy").check_values();
}

TEST_F(DatasetTest, CsvNonFiniteCellsAreRefusedWhereverRead) {
  // from_chars reads "nan" and "inf" as numbers: they parse, and must still be refused.
  write("nan.csv", "a,b,label\n1,2,0\n3,nan,1\n4,-Infinity,1\n");
  proto::Dataset cfg = config("nan.csv");
  cfg.mutable_x()->mutable_csv()->set_label_name("label");
  const Dataset d = Dataset::open(cfg, dir_, "train");
  d.check_values(0, 1);
  expect_error([&] { d.check_values(); }, {"nan.csv: line 3, column 1 ('b'): 'nan' is not a finite number"});
  expect_error([&] { d.check_values(2, 1); }, {"line 4, column 1 ('b'): '-Infinity' is not a finite number"});
  std::vector<float> x(2), y(1);
  expect_error([&] { d.gather(std::vector<int64_t>{1}, x.data(), y.data(), LabelLayout::kAsIs, 1); },
               {"nan.csv: line 3", "'nan'"});
  // A bad cell in the label column is found by the same check.
  write("bad_label.csv", "a,label\n1,0\n2,one\n");
  proto::Dataset labels = config("bad_label.csv");
  labels.mutable_x()->mutable_csv()->set_label_name("label");
  expect_error([&] { Dataset::open(labels, dir_, "train").check_values(); },
               {"bad_label.csv: line 3, column 1 ('label'): cannot read 'one'"});
}

TEST_F(DatasetTest, SampledFingerprintTellsCopiesApart) {
  // Small files are hashed whole; a big one (1 MiB of data) at 66 places, its first 64 KiB included.
  std::vector<double> values(262144);
  std::iota(values.begin(), values.end(), 0.0);
  write("a.npy", npy("<f4", "(262144,)", le_bytes<float>(values)));
  write("same.npy", npy("<f4", "(262144,)", le_bytes<float>(values)));
  std::vector<double> first_row_changed = values;
  first_row_changed[0] = -1;
  write("first.npy", npy("<f4", "(262144,)", le_bytes<float>(first_row_changed)));
  std::vector<double> last_row_changed = values;
  last_row_changed.back() = -1;
  write("last.npy", npy("<f4", "(262144,)", le_bytes<float>(last_row_changed)));
  const uint64_t a = ArrayFile::open(dir_ / "a.npy").sampled_fingerprint();
  EXPECT_EQ(a, ArrayFile::open(dir_ / "same.npy").sampled_fingerprint());
  EXPECT_NE(a, ArrayFile::open(dir_ / "first.npy").sampled_fingerprint());
  EXPECT_NE(a, ArrayFile::open(dir_ / "last.npy").sampled_fingerprint());
  EXPECT_EQ(ArrayFile::open(dir_ / "a.npy").file_bytes(), static_cast<int64_t>(fs::file_size(dir_ / "a.npy")));
}

TEST_F(DatasetTest, ChangedOnDiskSeesInPlaceWritesNotRenames) {
  const fs::path path = write("x.npy", npy("<f4", "(2, 2)", le_bytes<float>({1, 2, 3, 4})));
  const ArrayFile x = ArrayFile::open(path);
  EXPECT_EQ(x.changed_on_disk(), "");
  // Replaced by rename: the job keeps reading the file it opened, which did not change.
  write("new.npy", npy("<f4", "(2, 2)", le_bytes<float>({5, 6, 7, 8})));
  fs::rename(dir_ / "new.npy", path);
  EXPECT_EQ(x.changed_on_disk(), "");
  EXPECT_EQ(read(x, {1}), (std::vector<float>{3, 4}));
  // Written in place with the same size: the mapping sees the new bytes, and the check sees the write.
  const ArrayFile y = ArrayFile::open(path);
  const struct timespec pause = {0, 20000000};  // past the file system's timestamp granularity
  nanosleep(&pause, nullptr);
  {
    std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(-4, std::ios::end);
    const float nine = 9.0F;
    out.write(reinterpret_cast<const char*>(&nine), sizeof nine);
  }
  EXPECT_NE(y.changed_on_disk().find("written to"), std::string::npos) << y.changed_on_disk();
  fs::resize_file(path, 10);
  EXPECT_NE(y.changed_on_disk().find("size went from"), std::string::npos) << y.changed_on_disk();
}

TEST_F(DatasetTest, TruncatedWhileMappedIsAnErrorNamingTheFile) {
  // A read past the new end of a mapped file raises SIGBUS; every ArrayFile read turns it into an Error.
  std::vector<double> values(8192, 1.0);  // 32 KiB of data: several pages
  const fs::path path = write("big.npy", npy("<f4", "(1024, 8)", le_bytes<float>(values)));
  const ArrayFile x = ArrayFile::open(path);
  std::vector<float> row(8);
  x.read_rows(std::vector<int64_t>{1000}, row.data());
  fs::resize_file(path, 100);
  expect_error([&] { x.read_rows(std::vector<int64_t>{1000}, row.data()); },
               {"data file '" + path.string() + "' changed on disk", "SIGBUS"});
  expect_error([&] { x.value(1023, 7); }, {"big.npy' changed on disk"});
  expect_error([&] { x.check_values(); }, {"big.npy' changed on disk"});
  // The page that still exists reads (zeros past the new end, as the kernel fills a partial page).
  x.read_rows(std::vector<int64_t>{0}, row.data());
}

// ------------------------------------------------------------------------------------------------------------------
// gzip-compressed files: read through an inflated copy in the cache folder (gzip_cache.h)
// ------------------------------------------------------------------------------------------------------------------

// The cached copies (not the lock files, which stay, nor temporaries, which must not).
std::vector<std::string> cached_copies(const fs::path& dir) {
  std::vector<std::string> copies;
  for (const std::string& name : files_in(dir)) {
    if (!name.starts_with(".")) copies.push_back(name);
  }
  return copies;
}

TEST_F(DatasetTest, GzipIdxAndNpyReadLikeTheUncompressedFiles) {
  std::string pixels;
  for (int i = 0; i < 4 * 28 * 28; ++i) pixels += static_cast<char>((i * 7) % 251);
  const std::string images = idx(0x08, {4, 28, 28}, pixels);
  const std::string labels = idx(0x08, {4}, "\x03\x00\x09\x01"s);
  const fs::path plain = write("plain-images-idx3-ubyte", images);
  const fs::path gz = write("train-images-idx3-ubyte.gz", gzip_bytes(images));
  write("train-labels-idx1-ubyte.gz", gzip_bytes(labels));
  const std::string gz_before = gzip_bytes(images);

  const Dataset d = Dataset::open(config("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"), dir_, "train");
  EXPECT_EQ(d.rows(), 4);
  EXPECT_EQ(d.feature_dim(), 784);
  EXPECT_EQ(d.x().shape(), (std::vector<int64_t>{4, 28, 28}));  // the stored image shape reaches the dataset
  EXPECT_EQ(d.x().dtype(), "uint8");
  EXPECT_EQ(d.x().path(), "train-images-idx3-ubyte.gz");  // messages name the file the user gave
  EXPECT_NE(d.x().describe().find("train-images-idx3-ubyte.gz (gzip idx, uint8, shape (4, 28, 28))"), std::string::npos)
      << d.x().describe();

  // The same rows and the same data description as the uncompressed file: the cached copy is byte for byte it.
  const ArrayFile reference = ArrayFile::open(plain);
  EXPECT_EQ(read(d.x(), {3, 0, 2}), read(reference, {3, 0, 2}));
  EXPECT_EQ(d.x().file_bytes(), reference.file_bytes());
  EXPECT_EQ(d.x().sampled_fingerprint(), reference.sampled_fingerprint());
  std::vector<float> x(784), y(1);
  d.gather(std::vector<int64_t>{2}, x.data(), y.data(), LabelLayout::kAsIs, 1);
  EXPECT_EQ(y[0], 9.0F);

  // The input is never written; the cache holds one copy per .gz, named after it.
  std::stringstream now;
  now << std::ifstream(gz, std::ios::binary).rdbuf();
  EXPECT_EQ(now.str(), gz_before);
  const std::vector<std::string> copies = cached_copies(dir_ / "cache");
  ASSERT_EQ(copies.size(), 2U) << ::testing::PrintToString(files_in(dir_ / "cache"));
  EXPECT_TRUE(copies[0].ends_with("-train-images-idx3-ubyte") || copies[1].ends_with("-train-images-idx3-ubyte"));
  for (const std::string& name : files_in(dir_ / "cache")) EXPECT_EQ(name.find(".tmp."), std::string::npos) << name;

  // .npy.gz, float32, and a forced format on a name that says nothing.
  const std::string array = npy("<f4", "(3, 2)", le_bytes<float>({1, 2, 3, 4, 5, 6.5}));
  const ArrayFile f = ArrayFile::open(write("x.npy.gz", gzip_bytes(array)));
  EXPECT_EQ(f.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(read(f, {2, 0}), (std::vector<float>{5, 6.5, 1, 2}));
  EXPECT_NE(f.describe().find("(gzip npy, float32"), std::string::npos) << f.describe();
  EXPECT_EQ(read(ArrayFile::open(write("blob.bin", gzip_bytes(array)), "npy"), {1}), (std::vector<float>{3, 4}));
  // CSV the same way: the cached copy is a mapped file like any other.
  const ArrayFile table = ArrayFile::open(write("t.csv.gz", gzip_bytes("a,b\n1,2\n3,4\n")));
  EXPECT_EQ(read(table, {1}), (std::vector<float>{3, 4}));
}

TEST_F(DatasetTest, GzipCacheIsReusedAndFollowsAChangedFile) {
  const fs::path gz = write("x.npy.gz", gzip_bytes(npy("<f4", "(2, 1)", le_bytes<float>({1, 2}))));
  EXPECT_EQ(read(ArrayFile::open(gz), {0, 1}), (std::vector<float>{1, 2}));
  const std::vector<std::string> first = cached_copies(dir_ / "cache");
  ASSERT_EQ(first.size(), 1U);
  const auto built = fs::last_write_time(dir_ / "cache" / first[0]);
  // Opened again: the same copy, not rebuilt.
  EXPECT_EQ(read(ArrayFile::open(gz), {1}), (std::vector<float>{2}));
  EXPECT_EQ(cached_copies(dir_ / "cache"), first);
  EXPECT_EQ(fs::last_write_time(dir_ / "cache" / first[0]), built);

  // Rewritten with other values (same size): a new copy with the new values, never the stale one.
  write("x.npy.gz", gzip_bytes(npy("<f4", "(2, 1)", le_bytes<float>({7, 8}))));
  EXPECT_EQ(read(ArrayFile::open(gz), {0, 1}), (std::vector<float>{7, 8}));
  EXPECT_EQ(cached_copies(dir_ / "cache").size(), 2U);
}

TEST_F(DatasetTest, GzipCacheIsBuiltOnceByConcurrentOpeners) {
  std::string values;
  for (int i = 0; i < 200000; ++i) values += le_bytes<float>({static_cast<double>(i % 1000)});
  const fs::path gz = write("big.npy.gz", gzip_bytes(npy("<f4", "(1000, 200)", values)));
  std::vector<std::thread> openers;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    openers.emplace_back([&] {
      const ArrayFile f = ArrayFile::open(gz);
      std::vector<float> row(200);
      f.read_rows(std::vector<int64_t>{999}, row.data());
      if (f.rows() == 1000 && row[0] == 800.0F) good.fetch_add(1);
    });
  }
  for (std::thread& t : openers) t.join();
  EXPECT_EQ(good.load(), 4);
  EXPECT_EQ(cached_copies(dir_ / "cache").size(), 1U);
}

TEST_F(DatasetTest, DamagedGzipFilesNameTheFileAndLeaveNoCache) {
  const std::string array = npy("<f4", "(64, 16)", std::string(64 * 16 * 4, '\x01'));
  const std::string whole = gzip_bytes(array);
  expect_error([&] { ArrayFile::open(write("cut.npy.gz", whole.substr(0, whole.size() / 2))); },
               {"cut.npy.gz: truncated gzip file", "expected a whole gzip file"});
  // Cut inside the 8-byte trailer: the data is all there but the checksum is not.
  expect_error([&] { ArrayFile::open(write("trailer.npy.gz", whole.substr(0, whole.size() - 3))); },
               {"trailer.npy.gz: truncated gzip file"});
  std::string flipped = whole;
  flipped[flipped.size() - 6] = static_cast<char>(flipped[flipped.size() - 6] ^ 0x55);  // the CRC-32
  expect_error([&] { ArrayFile::open(write("crc.npy.gz", flipped)); },
               {"crc.npy.gz: corrupt gzip data (zlib: incorrect data check)", "expected a valid gzip stream"});
  std::string garbled = whole;
  for (size_t i = 20; i < 40; ++i) garbled[i] = '\xff';
  const Error e = expect_error([&] { ArrayFile::open(write("bad.npy.gz", garbled)); },
                               {"bad.npy.gz: corrupt gzip data", "near compressed byte"});
  EXPECT_NE(e.hint().find("gzip -t"), std::string::npos) << e.hint();
  expect_error([&] { ArrayFile::open(write("tail.npy.gz", whole + "junk")); },
               {"tail.npy.gz: 4 bytes after the end of the gzip stream", "another gzip member"});
  expect_error([&] { ArrayFile::open(write("plain.npy.gz", npy("<f4", "(1,)", le_bytes<float>({1})))); },
               {"plain.npy.gz: the name ends in .gz but the file is not gzip-compressed"});
  expect_error([&] { ArrayFile::open(write("empty.npy.gz", "")); }, {"empty.npy.gz", "not gzip-compressed"});
  // Whole but holding a bad array: the format's own error, naming the .gz.
  expect_error([&] { ArrayFile::open(write("short.npy.gz", gzip_bytes(array.substr(0, 10)))); },
               {"short.npy.gz: truncated: the .npy header says"});
  // No cache file and no temporary is left by the failures (only the lock files).
  EXPECT_EQ(cached_copies(dir_ / "cache").size(), 1U);  // the one whole stream: short.npy.gz
  for (const std::string& name : files_in(dir_ / "cache")) EXPECT_EQ(name.find(".tmp."), std::string::npos) << name;
}

TEST_F(DatasetTest, GzipMembersConcatenatedReadAsOneFile) {
  const std::string array = npy("<f4", "(4,)", le_bytes<float>({1, 2, 3, 4}));
  const size_t half = array.size() - 8;
  const fs::path gz = write("two.npy.gz", gzip_bytes(array.substr(0, half)) + gzip_bytes(array.substr(half)));
  EXPECT_EQ(read(ArrayFile::open(gz), {0, 1, 2, 3}), (std::vector<float>{1, 2, 3, 4}));
}

TEST_F(DatasetTest, GzipCacheFolderMustBeTheUsers) {
  const fs::path shared = dir_ / "shared";
  fs::create_directories(shared);
  fs::permissions(shared, fs::perms::all);  // 0777: anyone could plant a file there
  ::setenv("SHARDFIT_CACHE_DIR", shared.c_str(), 1);
  const Error e =
      expect_error([&] { ArrayFile::open(write("x.npy.gz", gzip_bytes(npy("<f4", "(1,)", le_bytes<float>({1}))))); },
                   {"gzip cache: the folder " + shared.string(), "mode 777", "no one else may write"});
  EXPECT_NE(e.hint().find("SHARDFIT_CACHE_DIR"), std::string::npos) << e.hint();
  const fs::path file = write("not-a-folder", "x");
  ::setenv("SHARDFIT_CACHE_DIR", file.c_str(), 1);
  expect_error([&] { ArrayFile::open(dir_ / "x.npy.gz"); }, {"gzip cache", "not-a-folder"});
  ::setenv("SHARDFIT_CACHE_DIR", (dir_ / "cache").c_str(), 1);
}

TEST_F(DatasetTest, UnguardedReadOfATruncatedMappingEndsTheProcessNamingTheFile) {
  // A read outside ArrayFile (none is left in the readers but the CSV line index at open) cannot throw from the
  // signal handler: it prints the message and exits 1.
  const fs::path path = write("raw.bin", std::string(32768, 'a'));
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const MappedFile map(path, "raw.bin", "");
        fs::resize_file(path, 100);
        volatile char c = static_cast<char>(map.data()[20000]);
        (void)c;
      },
      ::testing::ExitedWithCode(1), "data file 'raw.bin' changed on disk .*SIGBUS");
}

}  // namespace
}  // namespace shardfit
