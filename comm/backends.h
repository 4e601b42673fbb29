// Which communication backends this build of tessera::comm was compiled with.
#pragma once

#include <string>
#include <vector>

namespace tessera::comm {

// Names of the compiled backends, e.g. {"mpi", "gloo", "ucx", "nccl"}.
std::vector<std::string> CompiledBackends();

}  // namespace tessera::comm
