#pragma once
// pcloudsh: one-shot commands and the interactive shell (readline, history, completion of
// command names and of live object names), and the resumable event follower.

namespace pcloud::shell {

// Returns the exit status: 0 success, 1 an error reported by cped (or cped unreachable),
// 2 a usage error.
int runShell(int argc, char** argv);

} // namespace pcloud::shell
