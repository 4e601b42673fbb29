#include "runtime/build_info.h"

#include "base/build_config.h"
#include "comm/backends.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "kernels/cpu_features.h"

namespace tessera {

std::string BuildInfoReport() {
  std::vector<std::string> backends = {"cpu"};
  if (TESSERA_HAVE_CUDA) backends.push_back("cuda");
  for (const std::string& b : comm::CompiledBackends()) backends.push_back(b);
  return fmt::format("tessera {}\ncommit: {}\nbackends: {}\ncpu features: {}\n",
                     TESSERA_VERSION, TESSERA_GIT_COMMIT,
                     fmt::join(backends, " "),
                     kernels::GetCpuFeatures().ToString());
}

}  // namespace tessera
