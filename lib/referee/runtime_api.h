#pragma once
// A client for HAProxy's runtime API (the "stats socket"): one connection per exchange,
// the whole exchange bounded by a deadline so a wedged or missing HAProxy can never
// block the caller for longer than that.

#include "common/clock.h"
#include "common/result.h"

#include <string>
#include <vector>

namespace pcloud::referee {

// Connects to the unix socket at `socketPath`, writes `payload` (one line, commands
// separated by ';', ending in '\n'), and reads until HAProxy closes the connection.
Result<std::string> runtimeApiExchange(const std::string& socketPath, const std::string& payload,
                                       Millis timeoutMs);

// In non-interactive mode HAProxy ends each command's answer with an empty line, except
// `del server`, whose answer (2.6: "Server deleted.", or its error) is one line with no
// empty line after it. Splits the output of a ';'-separated batch of `commands` into one
// answer per command (terminator removed, lines joined with '\n').
std::vector<std::string> splitRuntimeResponses(const std::string& output,
                                               const std::vector<std::string>& commands);

} // namespace pcloud::referee
