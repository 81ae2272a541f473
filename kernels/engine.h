// The process-wide oneDNN CPU engine and stream. One stream, used from the thread that runs the step.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace shardfit {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

}  // namespace shardfit
