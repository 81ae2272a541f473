// save_weights / load_weights: the model's weight list to and from an .npz of Keras-layout arrays. The ZIP and .npy
// work is dist/io/npz.h's and dist/io/npy_writer.h's; this file matches names and shapes and says what differs.
#include "dist/io/weights_io.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "dist/io/checkpoint_file.h"
#include "dist/io/format.h"
#include "dist/io/history_writer.h"
#include "dist/io/npy_writer.h"
#include "dist/io/npz.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

// "'dense_0/kernel', 'dense_1/bias'", or "none".
std::string quoted_list(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string s;
  for (const std::string& name : names) s += cat(s.empty() ? "" : ", ", "'", name, "'");
  return s;
}

// "'dense_0/kernel' (64, 10), 'dense_0/bias' (10,)"
std::string weight_list(const std::vector<WeightTensor>& weights) {
  std::string s;
  for (const WeightTensor& w : weights) s += cat(s.empty() ? "" : ", ", "'", w.name, "' ", shape_text(w.shape));
  return s.empty() ? "none" : s;
}

std::string array_list(const std::vector<NpzArray>& arrays) {
  std::string s;
  for (const NpzArray& a : arrays) s += cat(s.empty() ? "" : ", ", "'", a.key, "' ", shape_text(a.shape));
  return s.empty() ? "none" : s;
}

// Up to `count` bytes from the start of the file; empty when it cannot be read.
std::string first_bytes(const std::filesystem::path& path, size_t count) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(count, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(count));
  bytes.resize(in.bad() ? 0 : static_cast<size_t>(in.gcount()));
  return bytes;
}

// The first bytes as text a terminal shows: "'{\"epochs'" or "bytes 0x89 0x48".
std::string printable(std::string_view bytes) {
  const bool text = std::all_of(bytes.begin(), bytes.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
  if (text) return cat("'", bytes, "'");
  std::ostringstream out;
  out << "bytes" << std::hex;
  for (const char c : bytes.substr(0, 4)) out << " 0x" << static_cast<int>(static_cast<unsigned char>(c));
  return out.str();
}

bool transposed(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  return a.size() == 2 && b.size() == 2 && a[0] == b[1] && a[1] == b[0];
}

}  // namespace

void save_weights(const std::filesystem::path& path, const Model& model) {
  ZipWriter zip(path.string());
  for (const WeightTensor& tensor : model.get_weights()) {
    zip.add(tensor.name + ".npy", npy_bytes(tensor.values, tensor.shape));
  }
  write_file_atomically(path, zip.finish());
}

void load_weights(const std::filesystem::path& path, Model& model) {
  const std::string shown = path.string();
  // By content, not by name: a checkpoint is often called checkpoint.pb, but nothing stops a .npz from being
  // renamed. A file that cannot be opened falls through to read_npz, which says why.
  const std::string head = first_bytes(path, 9);
  if (looks_like_checkpoint(head)) {
    load_checkpoint_weights(read_checkpoint_bytes(path), path, model);
    return;
  }
  // Neither ZIP nor .npy (whose own error read_npz gives): say both formats --weights takes.
  SF_CHECK(head.empty() || head.starts_with("PK") || head.starts_with("\x93NUMPY"),
           cat(shown, ": not a ZIP archive (.npz) nor a shardfit checkpoint (it starts with ", printable(head),
               "): expected weights written by fit (export_weights, ModelCheckpoint, checkpoint.pb) or np.savez"));
  std::vector<NpzArray> arrays = read_npz(path);
  std::vector<WeightTensor> weights = model.get_weights();

  // Names first, all differences at once: a renamed layer shows up as one missing and one unexpected pair.
  std::map<std::string, NpzArray*> by_key;
  for (NpzArray& array : arrays) by_key[array.key] = &array;
  std::set<std::string> names;
  std::vector<std::string> missing;
  for (const WeightTensor& w : weights) {
    names.insert(w.name);
    if (by_key.count(w.name) == 0) missing.push_back(w.name);
  }
  std::vector<std::string> unexpected;
  for (const NpzArray& array : arrays) {
    if (names.count(array.key) == 0) unexpected.push_back(array.key);
  }
  if (!missing.empty() || !unexpected.empty()) {
    SF_FAIL(cat(shown, ": the arrays do not match the model's weights: missing ", quoted_list(missing), "; unexpected ",
                quoted_list(unexpected), ": expected exactly the model's weight names"),
            cat("the model's weights are ", weight_list(weights), "; the file holds ", array_list(arrays)));
  }

  std::string wrong_shapes;
  bool any_transposed = false;
  for (const WeightTensor& w : weights) {
    const NpzArray& array = *by_key.at(w.name);
    if (array.shape == w.shape) continue;
    wrong_shapes += cat(wrong_shapes.empty() ? "" : "; ", "'", w.name, "' expected ", shape_text(w.shape), ", found ",
                        shape_text(array.shape));
    any_transposed = any_transposed || transposed(w.shape, array.shape);
  }
  if (!wrong_shapes.empty()) {
    SF_FAIL(cat(shown, ": wrong shapes for the model's weights: ", wrong_shapes),
            any_transposed ? "Dense kernels are (in, out) as in Keras; a PyTorch nn.Linear weight is (out, in): save "
                             "weight.T"
                           : cat("the model's weights are ", weight_list(weights)));
  }

  // Everything checked before the model is touched: a failed load leaves it as it was.
  for (WeightTensor& w : weights) w.values = std::move(by_key.at(w.name)->values);
  model.set_weights(weights);
}

}  // namespace shardfit
