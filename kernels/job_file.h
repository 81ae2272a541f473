// Reading a job file (protobuf text format). Syntax errors name the file, line and column.
#pragma once

#include <filesystem>

#include "proto/shardfit.pb.h"

namespace shardfit {

proto::Job read_job_file(const std::filesystem::path& path);
// A whole file as text; `what` names it in the error ("cannot open job file 'x': No such file or directory").
std::string read_text_file(const std::filesystem::path& path, const std::string& what);
// Parses job text; `source` names it in errors.
proto::Job parse_job_text(const std::string& text, const std::string& source);
// Any message in protobuf text format; errors read "SOURCE:LINE:COLUMN: what the parser said".
void parse_text_message(const std::string& text, const std::string& source, google::protobuf::Message& message);

}  // namespace shardfit
