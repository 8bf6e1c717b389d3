#pragma once
// Runs a helper program (apachectl) with a deadline and collects what it printed.

#include "common/clock.h"
#include "common/result.h"

#include <string>
#include <vector>

namespace pcloud::referee {

struct CommandResult {
    int exit_status = -1; // exit code, or 128+signal when killed
    bool timed_out = false;
    std::string output; // stdout and stderr, interleaved, at most 64 KiB
};

// Runs argv (argv[0] found on PATH) with stdin from /dev/null; kills it (and its process
// group) when it runs past timeoutMs. An Error only when it could not be started at all.
Result<CommandResult> runCommand(const std::vector<std::string>& argv, Millis timeoutMs);

// "apache2 -f /x/httpd.conf -d /x" -> {"apache2", "-f", ...}: split on blanks, no shell.
std::vector<std::string> splitCommandLine(const std::string& text);

} // namespace pcloud::referee
