// What this tessera binary is: version, commit, backends, detected CPU
// features.
#pragma once

#include <string>

namespace tessera {

// Multi-line human-readable report printed by `tessera version`.
std::string BuildInfoReport();

}  // namespace tessera
