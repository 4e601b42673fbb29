#include "comm/backends.h"

#include "base/build_config.h"

namespace tessera::comm {

std::vector<std::string> CompiledBackends() {
  std::vector<std::string> names;
  if (TESSERA_HAVE_MPI) names.push_back("mpi");
  if (TESSERA_HAVE_GLOO) names.push_back("gloo");
  if (TESSERA_HAVE_UCX) names.push_back("ucx");
  if (TESSERA_HAVE_NCCL) names.push_back("nccl");
  return names;
}

}  // namespace tessera::comm
