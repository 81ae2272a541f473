// Job files: protobuf text format with errors as "FILE:LINE:COLUMN: message".
#include "kernels/job_file.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace shardfit {

namespace {

class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (!has_error_) {
      has_error_ = true;
      line_ = line + 1;  // the parser counts from 0
      column_ = column + 1;
      message_ = message;
    }
  }
  bool has_error_ = false;
  int line_ = 0;
  int column_ = 0;
  std::string message_;
};

}  // namespace

proto::Job parse_job_text(const std::string& text, const std::string& source) {
  proto::Job job;
  parse_text_message(text, source, job);
  return job;
}

void parse_text_message(const std::string& text, const std::string& source, google::protobuf::Message& message) {
  FirstErrorCollector errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &message)) {
    SF_FAIL(cat(source, ":", errors.line_, ":", errors.column_, ": ", errors.message_),
            "the job file is protobuf text format; the fields are documented in proto/shardfit.proto");
  }
}

std::string read_text_file(const std::filesystem::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    SF_FAIL(cat("cannot open ", what, " '", path.string(), "': ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

proto::Job read_job_file(const std::filesystem::path& path) {
  return parse_job_text(read_text_file(path, "job file"), path.string());
}

}  // namespace shardfit
