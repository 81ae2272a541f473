// Weights in Keras layout as NumPy files: one .npz archive holding one array per tensor, named
// "<layer>/kernel" (in, out) and "<layer>/bias" (out), in model order — what np.load reads.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "kernels/model.h"

namespace shardfit {

// Writes model.get_weights() as an uncompressed .npz (the format np.savez writes), atomically.
void save_weights(const std::filesystem::path& path, const Model& model);
// Loads an .npz written by save_weights or by np.savez(path, **{name: array}) into the model. Names and shapes
// must match the model's weight list (errors list what was expected and what was found). float32 and float64
// arrays are accepted, stored or compressed (np.savez_compressed). A checkpoint.pb written
// by fit (told by its content, whatever its name) is accepted too: its weights, checksum verified.
void load_weights(const std::filesystem::path& path, Model& model);

}  // namespace shardfit
