// Weights as .npz: save/load round trips bit for bit; NumPy reads what shardfit writes (keys, Keras shapes, values)
// and shardfit reads what np.savez writes (float32/float64, C/Fortran order, either byte order, data descriptors);
// np.savez_compressed archives load too; mismatched, truncated and corrupt archives fail with errors that name what
// is wrong.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/io/npy_writer.h"
#include "dist/io/npz.h"
#include "dist/io/weights_io.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

// Four tensors: dense_0/kernel (4, 5), dense_0/bias (5,), dense_2/kernel (5, 3), dense_2/bias (3,); the dropout
// layer in between has none, so names are not simply numbered by tensor.
std::unique_ptr<Model> small_model(uint64_t seed) {
  auto model = build_model(parse_job_text(R"(model { layers { dense { units: 5 activation: "relu" } }
                                                     layers { dropout { rate: 0.5 } }
                                                     layers { dense { units: 3 } } }
                                             loss: "mse")",
                                          "weights.pbtxt"),
                           4);
  model->initialize(seed);
  return model;
}

std::vector<float> parameters_of(const Model& model) { return {model.parameters().begin(), model.parameters().end()}; }

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

// An .npz of float32 tensors written by shardfit's own pieces, for the error cases that need no Python.
void write_npz(const fs::path& path, const std::vector<WeightTensor>& tensors) {
  ZipWriter zip(path.string());
  for (const WeightTensor& t : tensors) zip.add(t.name + ".npy", npy_bytes(t.values, t.shape));
  write_bytes(path, zip.finish());
}

// The message and hint of the Error that f throws; fails the test when it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& error) {
    return std::string(error.what()) + "\nhint: " + error.hint();
  }
  ADD_FAILURE() << "expected an Error";
  return {};
}

using testing::contains;

// The value np.arange(n) * 0.1 - 1.0 has at flat index k, computed with the same double operations NumPy uses.
double arange_value(int64_t k) { return static_cast<double>(k) * 0.1 - 1.0; }

// ---- Python ----

struct PythonRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

std::string python_binary() {
  const char* env = std::getenv("SHARDFIT_PYTHON");
  return env != nullptr ? env : "/usr/bin/python3";
}

// Runs `script` (written to dir/script.py) with `args`, after checking that NumPy imports.
PythonRun run_python(const fs::path& dir, const std::string& script, const std::vector<std::string>& args) {
  const fs::path file = dir / "script.py";
  write_bytes(file, script);
  std::string command = "'" + python_binary() + "' '" + file.string() + "'";
  for (const std::string& arg : args) command += " '" + arg + "'";
  command += " 2>&1";
  PythonRun run;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Skips when there is no Python at all; fails when Python lacks NumPy, which launch/setup.sh installs.
#define REQUIRE_NUMPY(dir)                                                                                 \
  do {                                                                                                     \
    if (::access(python_binary().c_str(), X_OK) != 0) GTEST_SKIP() << python_binary() << " not found";     \
    const PythonRun probe = run_python(dir, "import numpy\n", {});                                         \
    ASSERT_EQ(probe.exit_code, 0) << "NumPy is missing (apt-get install python3-numpy): " << probe.output; \
  } while (false)

// Prints, per array in archive order: key, dtype, shape ("4x5", "-" for 0-d) and every value as Python's repr of
// the float64 it widens to, so strtod + a cast back to float gives the exact float32. Also checks the ZIP layer with
// Python's own zipfile: CRCs (testzip) and STORED members.
constexpr const char* kDumpScript = R"(
import sys, zipfile
import numpy as np
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    print("testzip", z.testzip())
    print("methods", sorted({i.compress_type for i in z.infolist()}))
with np.load(path) as d:
    for key in d.files:
        a = d[key]
        shape = "x".join(str(n) for n in a.shape) or "-"
        print("array", key, a.dtype, shape, *[repr(float(v)) for v in a.ravel()])
)";

// Writes an .npz with np.savez from argv: path, mode, then "name=d0,d1" per tensor. Values are
// np.arange(n) * 0.1 - 1.0 in every tensor, stored in a different way per tensor; keys go in reverse order.
constexpr const char* kSavezScript = R"(
import sys
import numpy as np
path, mode = sys.argv[1], sys.argv[2]
arrays = {}
for i, spec in enumerate(sys.argv[3:]):
    name, dims = spec.split("=")
    shape = tuple(int(n) for n in dims.split(","))
    a = (np.arange(int(np.prod(shape)), dtype=np.float64) * 0.1 - 1.0).reshape(shape)
    kind = i % 4
    if kind == 0:
        a = a                                         # float64, C order
    elif kind == 1:
        a = a.astype(np.float32)                      # float32, C order
    elif kind == 2:
        a = np.asfortranarray(a.astype(np.float32))   # float32, Fortran order (a transposed array saves like this)
    else:
        a = a.astype(">f8")                           # float64, big-endian
    arrays[name] = a
arrays = dict(reversed(list(arrays.items())))

class Unseekable:
    # zipfile finds no tell()/seek() and writes data descriptors after each member (flag bit 3)
    def __init__(self, f): self.f = f
    def write(self, b): return self.f.write(b)
    def flush(self): self.f.flush()
    def read(self, n=-1): raise OSError("write only")

if mode == "savez":
    np.savez(path, **arrays)
elif mode == "compressed":
    np.savez_compressed(path, **arrays)
elif mode == "unseekable":
    with open(path, "wb") as f:
        np.savez(Unseekable(f), **arrays)
elif mode == "misc":
    c = np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 0.1 - 1.0
    np.savez(path, scalar=np.float64(2.5), f3=np.asfortranarray(c.astype(np.float32)), f3d=np.asfortranarray(c),
             empty=np.zeros((0, 3), np.float32))
elif mode == "ints":
    np.savez(path, **{"dense_0/kernel": np.arange(20).reshape(4, 5)})
print("ok")
)";

std::vector<std::string> shape_args(const Model& model) {
  std::vector<std::string> args;
  for (const WeightTensor& w : model.get_weights()) {
    std::string dims;
    for (const int64_t d : w.shape) dims += cat(dims.empty() ? "" : ",", d);
    args.push_back(w.name + "=" + dims);
  }
  return args;
}

// ---- CRC and ZIP ----

TEST(Crc32, MatchesTheStandardCheckValues) {
  EXPECT_EQ(crc32(""), 0x00000000U);
  EXPECT_EQ(crc32("123456789"), 0xCBF43926U);  // the CRC-32/ISO-HDLC check value
  EXPECT_EQ(crc32("The quick brown fox jumps over the lazy dog"), 0x414FA339U);
}

TEST(Zip, MembersRoundTripInOrder) {
  ZipWriter zip("mem.zip");
  const std::string binary("\0\x01\xff\x80PK\x05\x06", 8);  // an end-record signature inside the data
  zip.add("b.npy", "second");
  zip.add("a/empty", "");
  zip.add("caf\xc3\xa9", binary);
  const std::string archive = zip.finish();
  const auto members = read_zip(archive, "mem.zip");
  ASSERT_EQ(members.size(), 3U);
  EXPECT_EQ(members[0].name, "b.npy");
  EXPECT_EQ(members[0].bytes, "second");
  EXPECT_EQ(members[1].name, "a/empty");
  EXPECT_EQ(members[1].bytes, "");
  EXPECT_EQ(members[2].name, "caf\xc3\xa9");
  EXPECT_EQ(members[2].bytes, binary);
  EXPECT_EQ(read_zip(ZipWriter("none.zip").finish(), "none.zip").size(), 0U);
}

TEST(Zip, WriterRefusesDuplicatesAndZip64Sizes) {
  ZipWriter zip("dup.npz");
  zip.add("a.npy", "x");
  EXPECT_TRUE(contains(error_of([&] { zip.add("a.npy", "y"); }), "'a.npy' added twice"));
  EXPECT_TRUE(contains(error_of([&] { zip.add(std::string(70000, 'n'), "y"); }), "expected 1 to 65535"));

  // A member of 4 GiB: refused before a byte of it is read, so untouched reserved-only pages suffice.
  const size_t bytes = (size_t{1} << 32) + 1;
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) GTEST_SKIP() << "cannot reserve 4 GiB of address space";
  const std::string message = error_of([&] { zip.add("huge.npy", std::string_view(static_cast<char*>(p), bytes)); });
  ::munmap(p, bytes);
  EXPECT_TRUE(contains(message, "dup.npz")) << message;
  EXPECT_TRUE(contains(message, "past 4 GiB")) << message;
  EXPECT_TRUE(contains(message, "ZIP64")) << message;
}

TEST(Zip, MemberCountStopsBeforeZip64) {
  ZipWriter zip("many.npz");
  for (int i = 0; i < 0xFFFE; ++i) zip.add(cat("m", i), "");
  const std::string message = error_of([&] { zip.add("one_more", ""); });
  EXPECT_TRUE(contains(message, "ZIP64")) << message;
  const std::string archive = zip.finish();
  EXPECT_EQ(read_zip(archive, "many.npz").size(), 0xFFFEU);
}

// ---- shardfit -> shardfit ----

TEST(WeightsIo, RoundTripIsExact) {
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  const auto saved = small_model(7);
  save_weights(path, *saved);
  auto loaded = small_model(8);
  ASSERT_NE(parameters_of(*loaded), parameters_of(*saved));  // a different init, or the test proves nothing
  load_weights(path, *loaded);
  EXPECT_EQ(parameters_of(*loaded), parameters_of(*saved));
  EXPECT_FALSE(fs::exists(tmp.path() / ("w.npz.tmp." + std::to_string(::getpid()))));

  // The same weights give the same bytes (fixed timestamps), and saving again replaces the file.
  const std::string first = read_bytes(path);
  save_weights(path, *loaded);
  EXPECT_EQ(read_bytes(path), first);
}

TEST(WeightsIo, ArchiveHoldsTheWeightListInOrder) {
  const auto model = small_model(3);
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  save_weights(path, *model);
  const std::vector<NpzArray> arrays = read_npz(path);
  const std::vector<WeightTensor> weights = model->get_weights();
  ASSERT_EQ(arrays.size(), 4U);
  const std::vector<std::string> names = {"dense_0/kernel", "dense_0/bias", "dense_2/kernel", "dense_2/bias"};
  const std::vector<std::vector<int64_t>> shapes = {{4, 5}, {5}, {5, 3}, {3}};
  for (size_t i = 0; i < arrays.size(); ++i) {
    EXPECT_EQ(arrays[i].key, names[i]);
    EXPECT_EQ(arrays[i].dtype, "float32");
    EXPECT_EQ(arrays[i].shape, shapes[i]);
    EXPECT_EQ(arrays[i].values, weights[i].values);
  }
}

// A convnet's weights in Keras's layout: Conv2D kernel (kh, kw, in, filters) as it is in the flat parameters (the
// layer computes on that hwio layout, tests/kernels/test_conv2d.cpp), bias (filters); pooling and Flatten have none.
TEST(WeightsIo, ConvnetRoundTripInKerasShapes) {
  const auto convnet = [](uint64_t seed) {
    auto model = build_model(parse_job_text(R"(model { input_shape: [6, 6, 2]
                                                       layers { conv2d { filters: 4 kernel_size: [3, 2] } }
                                                       layers { max_pooling2d { } } layers { flatten { } }
                                                       layers { dense { units: 3 } } }
                                               loss: "mse")",
                                            "convnet.pbtxt"),
                             72);
    model->initialize(seed);
    return model;
  };
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  const auto saved = convnet(5);
  save_weights(path, *saved);
  const std::vector<NpzArray> arrays = read_npz(path);
  ASSERT_EQ(arrays.size(), 4U);
  EXPECT_EQ(arrays[0].key, "conv2d_0/kernel");
  EXPECT_EQ(arrays[0].shape, (std::vector<int64_t>{3, 2, 2, 4}));
  EXPECT_EQ(arrays[1].key, "conv2d_0/bias");
  EXPECT_EQ(arrays[1].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(arrays[2].key, "dense_3/kernel");
  // (6, 6, 2) -> Conv2D (4, 5, 4) -> pooling (2, 2, 4) -> Flatten (None, 16)
  EXPECT_EQ(arrays[2].shape, (std::vector<int64_t>{16, 3}));
  const std::vector<float> flat = parameters_of(*saved);
  EXPECT_EQ(arrays[0].values, std::vector<float>(flat.begin(), flat.begin() + 48));  // 3 * 2 * 2 * 4 values
  auto loaded = convnet(6);
  ASSERT_NE(parameters_of(*loaded), flat);
  load_weights(path, *loaded);
  EXPECT_EQ(parameters_of(*loaded), flat);
}

// BatchNormalization's four tensors in Keras's order (gamma, beta, moving_mean, moving_variance), the moving
// statistics (the model's state span, after every trainable parameter) included, and back bit for bit.
TEST(WeightsIo, BatchNormalizationRoundTripsInKerasOrder) {
  auto make = [](uint64_t seed) {
    auto model = build_model(parse_job_text(R"(model { layers { dense { units: 3 } }
                                                       layers { batch_normalization { } }
                                                       layers { dense { units: 2 } } }
                                               loss: "mse")",
                                            "weights.pbtxt"),
                             4);
    model->initialize(seed);
    return model;
  };
  const auto saved = make(5);
  for (size_t i = 0; i < saved->state().size(); ++i) saved->state()[i] = 0.25F * static_cast<float>(i + 1);
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  save_weights(path, *saved);
  const std::vector<NpzArray> arrays = read_npz(path);
  std::vector<std::string> keys;
  for (const NpzArray& a : arrays) keys.push_back(a.key);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"dense_0/kernel", "dense_0/bias", "batch_normalization_1/gamma",
                                      "batch_normalization_1/beta", "batch_normalization_1/moving_mean",
                                      "batch_normalization_1/moving_variance", "dense_2/kernel", "dense_2/bias"}));
  ASSERT_EQ(arrays.size(), 8U);
  EXPECT_EQ(arrays[4].values, (std::vector<float>{0.25F, 0.5F, 0.75F}));
  EXPECT_EQ(arrays[5].values, (std::vector<float>{1.0F, 1.25F, 1.5F}));
  EXPECT_EQ(arrays[5].shape, (std::vector<int64_t>{3}));

  auto loaded = make(6);
  ASSERT_NE(parameters_of(*loaded), parameters_of(*saved));
  load_weights(path, *loaded);
  EXPECT_EQ(parameters_of(*loaded), parameters_of(*saved));
}

// ---- shardfit -> NumPy ----

TEST(WeightsIo, NumpyReadsKeysShapesAndValues) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  const auto model = small_model(11);
  const fs::path path = tmp.path() / "w.npz";
  save_weights(path, *model);
  const PythonRun run = run_python(tmp.path(), kDumpScript, {path.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;

  std::vector<std::string> keys;
  std::map<std::string, std::string> dtypes, shapes;
  std::map<std::string, std::vector<float>> values;
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "testzip") {
      EXPECT_EQ(line, "testzip None");  // every CRC checks out in Python's zipfile
    } else if (kind == "methods") {
      EXPECT_EQ(line, "methods [0]");  // all STORED
    } else if (kind == "array") {
      std::string key;
      words >> key;
      keys.push_back(key);
      words >> dtypes[key] >> shapes[key];
      for (std::string word; words >> word;)
        values[key].push_back(static_cast<float>(std::strtod(word.c_str(), nullptr)));
    }
  }
  const std::vector<WeightTensor> weights = model->get_weights();
  ASSERT_EQ(keys.size(), weights.size()) << run.output;
  const std::vector<std::string> keras_shapes = {"4x5", "5", "5x3", "3"};  // Keras: kernel (in, out), bias (out,)
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string& key = keys[i];
    EXPECT_EQ(key, weights[i].name);
    EXPECT_EQ(dtypes[key], "float32") << key;
    EXPECT_EQ(shapes[key], keras_shapes[i]) << key;
    EXPECT_EQ(values[key], weights[i].values) << key;
  }
}

// ---- NumPy -> shardfit ----

// Checks that the model holds np.arange(n) * 0.1 - 1.0 (narrowed to float) in every tensor.
void expect_arange_weights(const Model& model) {
  for (const WeightTensor& w : model.get_weights()) {
    for (size_t k = 0; k < w.values.size(); ++k) {
      ASSERT_EQ(w.values[k], static_cast<float>(arange_value(static_cast<int64_t>(k)))) << w.name << "[" << k << "]";
    }
  }
}

TEST(WeightsIo, LoadsWhatNpSavezWrites) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  auto model = small_model(5);
  const fs::path path = tmp.path() / "from_numpy.npz";
  std::vector<std::string> args = {path.string(), "savez"};
  for (const std::string& a : shape_args(*model)) args.push_back(a);
  const PythonRun run = run_python(tmp.path(), kSavezScript, args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // float64 C order, float32 C order, float32 Fortran order, big-endian float64; keys in reverse order.
  const std::vector<NpzArray> arrays = read_npz(path);
  ASSERT_EQ(arrays.size(), 4U);
  EXPECT_EQ(arrays[0].key, "dense_2/bias");
  EXPECT_EQ(arrays[0].dtype, "float64");
  EXPECT_EQ(arrays[3].dtype, "float64");
  load_weights(path, *model);
  expect_arange_weights(*model);
}

TEST(WeightsIo, LoadsAnArchiveWrittenWithDataDescriptors) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  auto model = small_model(5);
  const fs::path path = tmp.path() / "streamed.npz";
  std::vector<std::string> args = {path.string(), "unseekable"};
  for (const std::string& a : shape_args(*model)) args.push_back(a);
  const PythonRun run = run_python(tmp.path(), kSavezScript, args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 8U);
  EXPECT_NE(static_cast<unsigned char>(bytes[6]) & 0x08, 0) << "expected flag bit 3 (data descriptor) in the archive";
  load_weights(path, *model);
  expect_arange_weights(*model);
}

TEST(Npz, ReadsScalarsEmptyAndFortranOrderArrays) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  const fs::path path = tmp.path() / "misc.npz";
  const PythonRun run = run_python(tmp.path(), kSavezScript, {path.string(), "misc"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::map<std::string, NpzArray> by_key;
  for (NpzArray& a : read_npz(path)) by_key[a.key] = std::move(a);
  ASSERT_EQ(by_key.size(), 4U);
  EXPECT_TRUE(by_key["scalar"].shape.empty());
  EXPECT_EQ(by_key["scalar"].values, std::vector<float>{2.5F});
  EXPECT_EQ(by_key["empty"].shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(by_key["empty"].values.empty());
  for (const std::string key : {"f3", "f3d"}) {
    const NpzArray& a = by_key[key];
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 4})) << key;
    ASSERT_EQ(a.values.size(), 24U) << key;
    for (int64_t k = 0; k < 24; ++k) {
      EXPECT_EQ(a.values[static_cast<size_t>(k)], static_cast<float>(arange_value(k))) << key << "[" << k << "]";
    }
  }
}

TEST(WeightsIo, LoadsWhatNpSavezCompressedWrites) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  auto model = small_model(5);
  const fs::path path = tmp.path() / "compressed.npz";
  std::vector<std::string> args = {path.string(), "compressed"};
  for (const std::string& a : shape_args(*model)) args.push_back(a);
  const PythonRun run = run_python(tmp.path(), kSavezScript, args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 10U);
  EXPECT_EQ(static_cast<unsigned char>(bytes[8]), 8) << "expected DEFLATE (method 8) in the first local header";
  // The same four layouts as LoadsWhatNpSavezWrites, each member inflated by zlib and checked against its CRC-32.
  load_weights(path, *model);
  expect_arange_weights(*model);
}

TEST(WeightsIo, RefusesADamagedCompressedMember) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  auto model = small_model(5);
  const std::vector<float> before = parameters_of(*model);
  const fs::path path = tmp.path() / "compressed.npz";
  std::vector<std::string> args = {path.string(), "compressed"};
  for (const std::string& a : shape_args(*model)) args.push_back(a);
  const PythonRun run = run_python(tmp.path(), kSavezScript, args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::string bytes = read_bytes(path);
  // The first member's DEFLATE data starts after its 30-byte local header, name and extra field.
  const size_t data = 30 + static_cast<unsigned char>(bytes[26]) + (static_cast<unsigned char>(bytes[27]) << 8) +
                      static_cast<unsigned char>(bytes[28]) + (static_cast<unsigned char>(bytes[29]) << 8);
  for (size_t i = data + 2; i < data + 12; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0xA5);
  const fs::path damaged = tmp.path() / "damaged.npz";
  {
    std::ofstream out(damaged, std::ios::binary);
    out << bytes;
  }
  const std::string message = error_of([&] { load_weights(damaged, *model); });
  EXPECT_TRUE(contains(message, damaged.string())) << message;
  // zlib sees the damage, or the inflated bytes fail the member's CRC-32: either way the member is named.
  EXPECT_TRUE(contains(message, "corrupt DEFLATE data") || contains(message, "fails its CRC-32 check") ||
              contains(message, "inflates to"))
      << message;
  EXPECT_TRUE(contains(message, "member '")) << message;
  EXPECT_EQ(parameters_of(*model), before);
}

TEST(WeightsIo, RefusesIntegerArrays) {
  const shardfit::testing::TempDir tmp("weights");
  REQUIRE_NUMPY(tmp.path());
  const fs::path path = tmp.path() / "ints.npz";
  const PythonRun run = run_python(tmp.path(), kSavezScript, {path.string(), "ints"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto model = small_model(5);
  const std::string message = error_of([&] { load_weights(path, *model); });
  EXPECT_TRUE(contains(message, "member 'dense_0/kernel.npy' holds int64 values: expected float32 or float64"))
      << message;
}

// ---- names and shapes ----

TEST(WeightsIo, WrongShapeNamesKeyExpectedAndFound) {
  const shardfit::testing::TempDir tmp("weights");
  auto model = small_model(5);
  const std::vector<float> before = parameters_of(*model);
  std::vector<WeightTensor> weights = model->get_weights();
  weights[0].shape = {5, 4};  // transposed, as a PyTorch nn.Linear weight would be
  weights[3].shape = {1, 3};
  const fs::path path = tmp.path() / "shapes.npz";
  write_npz(path, weights);
  const std::string message = error_of([&] { load_weights(path, *model); });
  EXPECT_TRUE(contains(message, path.string())) << message;
  EXPECT_TRUE(contains(message, "'dense_0/kernel' expected (4, 5), found (5, 4)")) << message;
  EXPECT_TRUE(contains(message, "'dense_2/bias' expected (3,), found (1, 3)")) << message;
  EXPECT_FALSE(contains(message, "'dense_0/bias' expected")) << message;
  EXPECT_TRUE(contains(message, "(in, out)")) << message;  // the transposition hint
  EXPECT_EQ(parameters_of(*model), before);
}

TEST(WeightsIo, MissingAndUnexpectedKeysAreListed) {
  const shardfit::testing::TempDir tmp("weights");
  auto model = small_model(5);
  const std::vector<float> before = parameters_of(*model);
  const std::vector<WeightTensor> weights = model->get_weights();

  std::vector<WeightTensor> missing = weights;
  missing.pop_back();
  const fs::path missing_path = tmp.path() / "missing.npz";
  write_npz(missing_path, missing);
  std::string message = error_of([&] { load_weights(missing_path, *model); });
  EXPECT_TRUE(contains(message, missing_path.string())) << message;
  EXPECT_TRUE(contains(message, "missing 'dense_2/bias'; unexpected none")) << message;

  std::vector<WeightTensor> extra = weights;
  extra.push_back({"dense_9/kernel", {2, 2}, {1, 2, 3, 4}});
  const fs::path extra_path = tmp.path() / "extra.npz";
  write_npz(extra_path, extra);
  message = error_of([&] { load_weights(extra_path, *model); });
  EXPECT_TRUE(contains(message, "missing none; unexpected 'dense_9/kernel'")) << message;

  // A renamed layer: one of each, and the hint lists what the model has.
  std::vector<WeightTensor> renamed = weights;
  renamed[0].name = "hidden/kernel";
  const fs::path renamed_path = tmp.path() / "renamed.npz";
  write_npz(renamed_path, renamed);
  message = error_of([&] { load_weights(renamed_path, *model); });
  EXPECT_TRUE(contains(message, "missing 'dense_0/kernel'; unexpected 'hidden/kernel'")) << message;
  EXPECT_TRUE(contains(message, "'dense_0/kernel' (4, 5), 'dense_0/bias' (5,)")) << message;
  EXPECT_EQ(parameters_of(*model), before);
}

TEST(WeightsIo, ArchiveOrderDoesNotMatter) {
  const shardfit::testing::TempDir tmp("weights");
  const auto source = small_model(21);
  std::vector<WeightTensor> weights = source->get_weights();
  std::swap(weights[0], weights[3]);
  std::swap(weights[1], weights[2]);
  const fs::path path = tmp.path() / "shuffled.npz";
  write_npz(path, weights);
  auto model = small_model(22);
  load_weights(path, *model);
  EXPECT_EQ(parameters_of(*model), parameters_of(*source));
}

// ---- damaged files ----

TEST(Npz, EveryTruncationFailsCleanly) {
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  save_weights(path, *small_model(1));
  const std::string bytes = read_bytes(path);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(parse_npz(std::string_view(bytes).substr(0, n), "cut.npz"), Error) << "cut at " << n;
  }
  const fs::path cut = tmp.path() / "cut.npz";
  write_bytes(cut, bytes.substr(0, bytes.size() / 2));
  auto model = small_model(2);
  const std::string message = error_of([&] { load_weights(cut, *model); });
  EXPECT_TRUE(contains(message, cut.string())) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;
}

// Every single-byte corruption is either caught (CRC, signatures, bounds) or lands in a field that does not change
// what is read (timestamps, version, attributes); never a crash or different values.
TEST(Npz, CorruptBytesFailOrReadTheSame) {
  const shardfit::testing::TempDir tmp("weights");
  const fs::path path = tmp.path() / "w.npz";
  save_weights(path, *small_model(1));
  const std::string bytes = read_bytes(path);
  const std::vector<NpzArray> good = parse_npz(bytes, "good.npz");
  int caught = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (const unsigned char mask : {0x01, 0x80, 0xFF}) {
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(static_cast<unsigned char>(damaged[i]) ^ mask);
      try {
        const std::vector<NpzArray> read = parse_npz(damaged, "damaged.npz");
        ASSERT_EQ(read.size(), good.size()) << "byte " << i;
        for (size_t a = 0; a < read.size(); ++a) {
          EXPECT_EQ(read[a].key, good[a].key) << "byte " << i;
          EXPECT_EQ(read[a].shape, good[a].shape) << "byte " << i;
          EXPECT_EQ(read[a].values, good[a].values) << "byte " << i;
        }
      } catch (const Error& error) {
        EXPECT_TRUE(contains(error.what(), "damaged.npz")) << error.what();
        ++caught;
      }
    }
  }
  EXPECT_GT(caught, static_cast<int>(bytes.size()));  // nearly every byte matters
}

TEST(Npz, OtherFilesAreNamedForWhatTheyAre) {
  const shardfit::testing::TempDir tmp("weights");
  auto model = small_model(1);

  const fs::path npy = tmp.path() / "kernel.npy";
  const std::vector<float> values = {1, 2, 3};
  write_bytes(npy, npy_bytes(values, {3}));
  EXPECT_TRUE(contains(error_of([&] { load_weights(npy, *model); }), "a .npy file, not an .npz archive"));

  const fs::path text = tmp.path() / "notes.npz";
  write_bytes(text, "just some text, long enough to look for an end record in");
  EXPECT_TRUE(contains(error_of([&] { load_weights(text, *model); }), "not a ZIP archive"));

  const fs::path absent = tmp.path() / "absent.npz";
  const std::string message = error_of([&] { load_weights(absent, *model); });
  EXPECT_TRUE(contains(message, absent.string())) << message;
  EXPECT_TRUE(contains(message, "No such file")) << message;

  EXPECT_TRUE(contains(error_of([&] { load_weights(tmp.path(), *model); }), "is a directory"));

  ZipWriter zip("odd.npz");
  zip.add("readme.txt", "hello");
  EXPECT_TRUE(contains(error_of([&] { parse_npz(zip.finish(), "odd.npz"); }), "'readme.txt' is not a .npy file"));

  // Two members renamed to one key behind the writer's back (the CRC covers data, not names).
  ZipWriter pair("pair.npz");
  pair.add("a.npy", npy_bytes(values, {3}));
  pair.add("b.npy", npy_bytes(values, {3}));
  std::string archive = pair.finish();
  for (size_t at; (at = archive.find("b.npy")) != std::string::npos;) archive[at] = 'a';
  EXPECT_TRUE(contains(error_of([&] { parse_npz(archive, "pair.npz"); }), "key 'a' appears twice"));

  // A member whose .npy header promises more data than it holds.
  ZipWriter short_member("short.npz");
  std::string npy_text = npy_bytes(values, {3});
  npy_text.resize(npy_text.size() - 4);
  short_member.add("k.npy", npy_text);
  EXPECT_TRUE(
      contains(error_of([&] { parse_npz(short_member.finish(), "short.npz"); }), "member 'k.npy' is truncated"));
}

}  // namespace
}  // namespace shardfit
