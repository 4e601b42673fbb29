// The texts of placement/profiles/*.json, compiled in by CMake so the binary
// needs no data files at run time (see placement/CMakeLists.txt).
#pragma once

#include <vector>

namespace tessera::placement::internal {

// One JSON document per shipped device profile.
const std::vector<const char*>& BuiltinProfileTexts();

}  // namespace tessera::placement::internal
