// Test helpers: run ranks as child processes on localhost.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tessera::comm::testing {

// A TCP port that was free a moment ago (bind to port 0, read, close).
int FreePort();

// Starts `argv` with the current environment plus `env`; returns the pid.
pid_t SpawnProgram(const std::vector<std::string>& argv,
                   const std::map<std::string, std::string>& env);

// Forks a child that runs `fn` and exits with its return value.
pid_t ForkChild(const std::function<int()>& fn);

// Waits for `pid` up to `timeout`; kills it (SIGKILL) past that. Returns the
// exit code, 128+signal when killed by a signal, -1 on timeout.
int WaitChild(pid_t pid, std::chrono::milliseconds timeout);

}  // namespace tessera::comm::testing
