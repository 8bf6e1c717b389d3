#pragma once
// The whole pcloud-agent program behind main(): parse settings, build the backend, the
// probes, the core and the AMQP link, and run the poll loop until SIGTERM/SIGINT.

namespace pcloud::agent {

// Returns the process exit status (pcloud::ExitCode values).
int runAgent(int argc, char** argv);

} // namespace pcloud::agent
