// Training and validation data read from memory-mapped files: NumPy .npy, MNIST IDX and CSV, each optionally
// gzip-compressed (read through an inflated copy, dist/io/gzip_cache.h). A rank touches only
// the rows it gathers. This file knows nothing of ranks, batches or shuffling (dist/sharding.h decides the rows).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shardfit {

namespace proto {
class CsvOptions;
class Dataset;
}  // namespace proto

// One array of rows x cols, read as float: cols is the product of the non-leading dimensions (1 for a 1-D array),
// so images (N, 28, 28) read as rows of 784. Any supported element type; the file stays mapped while any copy of
// the ArrayFile lives (copies share the mapping and are cheap).
class ArrayFile {
 public:
  // format: "npy" | "idx" | "csv", or "" to decide from the extension (a trailing ".gz" looked through). A file
  // that starts with the gzip magic is read through its inflated copy (gzip_cache.h); path(), describe() ("x.npy.gz
  // (gzip npy, ...)") and errors still name the .gz. `csv` options apply to CSV files only (header, delimiter); a CSV
  // file opened here yields all its columns.
  static ArrayFile open(const std::filesystem::path& path, std::string_view format = "",
                        const proto::CsvOptions* csv = nullptr);
  // rows x cols float32 values held in memory (row-major), not a file: synthetic data for benchmarks. `name`
  // stands where a path would in messages; describe() says "memory", file_bytes() counts the values' bytes, and the
  // data never changes on disk.
  static ArrayFile in_memory(std::string name, std::vector<float> values, int64_t rows, int64_t cols);

  int64_t rows() const;
  int64_t cols() const;
  // The stored shape: (rows, ...) for npy/idx, (rows, cols) for CSV.
  const std::vector<int64_t>& shape() const;
  // "float32", "float64", "uint8", "int8", "int16", "int32", "int64", or "text" for CSV.
  const std::string& dtype() const;
  // True for integer element types (and CSV, whose cells are decided per value).
  bool integer_dtype() const;
  // The path as the user wrote it: the name every error message uses.
  const std::string& path() const;
  // "data/x.npy (npy, float32, shape (1797, 64))"
  std::string describe() const;

  // Copies the given rows, in the given order, into out (rows.size() x cols()), each value times scale.
  // Allocates nothing for npy and idx files: this runs every training step.
  void read_rows(std::span<const int64_t> rows, float* out, float scale = 1.0F) const;
  // One element as double (exact for every integer a class id can be).
  double value(int64_t row, int64_t col) const;

  // Reads rows [first_row, first_row + row_count) once (default: every row) and fails on the first value that is
  // NaN or infinite, or, in a CSV file, on the first cell that is no number, naming the file, row and column.
  // Integer arrays hold nothing to check. Lets a job refuse bad data at setup, each rank checking its share.
  void check_values(int64_t first_row = 0, int64_t row_count = -1) const;
  // The size of the file on disk, header included.
  int64_t file_bytes() const;
  // See MappedFile::sampled_fingerprint: a cheap hash that tells most differing copies of a file apart.
  uint64_t sampled_fingerprint() const;
  // Empty while the file has the size and modification time it had when opened; else what changed.
  std::string changed_on_disk() const;

  class Impl;  // the format-specific reader, defined in dataset.cpp

 private:
  friend class Dataset;
  explicit ArrayFile(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// What a .npy header says, for .npy bytes that are not a file of their own (the members of an .npz).
struct NpyHeader {
  std::string dtype;           // as ArrayFile::dtype(): "float32", "float64", "uint8", "int32", "int64"
  bool swap_bytes = false;     // the data's byte order is not this host's
  bool fortran_order = false;  // column-major data
  std::vector<int64_t> shape;  // () for a 0-d array
  int64_t data_offset = 0;     // where the data starts in the bytes
};

// Reads the magic, version and header dict at the start of `bytes`; `name` names them in errors, which are those of
// ArrayFile::open (unsupported dtype, malformed or truncated header). Does not check that the data is all there.
NpyHeader parse_npy_header(std::string_view bytes, const std::string& name);

// How gather() writes labels for the model.
enum class LabelLayout {
  kAsIs,         // label_cols() values per row, as stored
  kIdsToOneHot,  // one class id per row -> a one-hot row of label_dim (the class count)
  kOneHotToIds,  // a row of scores / one-hot -> the id of its largest entry (label_dim 1)
};

// Features x and labels y for one role ("train" or "validation"): either two array files (x and y, .npy or IDX, the
// same number of rows) or one CSV file whose label column becomes y.
class Dataset {
 public:
  // Paths in cfg resolve against base_dir (the job file's folder) unless absolute. role names the data set in
  // error messages ("train x has 1797 rows but y has 1796").
  static Dataset open(const proto::Dataset& cfg, const std::filesystem::path& base_dir, std::string_view role);
  // Features and labels already in memory (ArrayFile::in_memory), with the same row count; x_scale 1. Labels are
  // class ids when labels_are_ids (y then has one column), else as stored.
  static Dataset in_memory(std::string_view role, ArrayFile x, ArrayFile y, bool labels_are_ids);

  int64_t rows() const { return x_.rows(); }
  int64_t feature_dim() const { return x_.cols(); }
  // Label values per row as stored: 1 for class ids, the class count for one-hot rows.
  int64_t label_cols() const { return y_.cols(); }
  // Labels are class ids: the config says CLASS_IDS, or it says AUTO and there is one label value per row
  // (a 1-D y, an (N, 1) y or one CSV label column). Whether such a column is ids or regression targets is for the
  // loss to decide (sparse_categorical_crossentropy reads ids).
  bool labels_are_ids() const { return labels_are_ids_; }
  float x_scale() const { return x_scale_; }
  const ArrayFile& x() const { return x_; }
  const ArrayFile& y() const { return y_; }
  // "train: x data/x.npy (npy, float32, shape (1797, 64)), y data/y.npy (npy, int64, shape (1797))"
  std::string describe() const;

  // Gathers the given global rows into x (rows.size() x feature_dim(), times x_scale()) and y (rows.size() x
  // label_dim, per layout). A class id that is not an integer in [0, label_dim) fails naming file, row and value.
  // Allocates nothing for npy and idx files.
  void gather(std::span<const int64_t> rows, float* x, float* y, LabelLayout layout, int64_t label_dim) const;

  // Reads the labels of rows [first_row, first_row + row_count) once and fails on the first that is not a class id
  // in [0, num_classes): lets the trainer reject bad labels before the first step rather than mid-epoch. Each rank
  // checks its own share, so together they read (and for CSV parse) the label column once. Default: every row.
  void check_class_ids(int64_t num_classes, int64_t first_row = 0, int64_t row_count = -1) const;

  // ArrayFile::check_values on x and y (for a CSV with a label column: every cell of those rows).
  void check_values(int64_t first_row = 0, int64_t row_count = -1) const;

 private:
  Dataset(std::string role, ArrayFile x, ArrayFile y, float x_scale, bool labels_are_ids)
      : role_(std::move(role)),
        x_(std::move(x)),
        y_(std::move(y)),
        x_scale_(x_scale),
        labels_are_ids_(labels_are_ids) {}

  int64_t class_id(int64_t row, int64_t num_classes) const;

  std::string role_;
  ArrayFile x_;
  ArrayFile y_;
  float x_scale_;
  bool labels_are_ids_;
};

}  // namespace shardfit
