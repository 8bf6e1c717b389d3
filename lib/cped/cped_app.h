#pragma once
// cped, the control daemon, as a library function so main.cc stays a few lines: options,
// start-up checks (a corrupt db file stops it with exit Config and the file untouched), the
// embedded hub (or an external broker), the command API on pcloud.cped, the event journal
// fed from pcloud.journal and published on pcloud.events, dped supervision, signals.

#include <string>
#include <vector>

namespace pcloud::cped {

// Returns the process exit status (ExitCode).
int runCped(int argc, char** argv);

} // namespace pcloud::cped
