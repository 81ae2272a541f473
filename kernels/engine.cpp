// The process-wide oneDNN CPU engine and stream, created on first use.
#include "kernels/engine.h"

namespace shardfit {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

}  // namespace shardfit
