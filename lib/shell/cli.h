#pragma once
// pcloudsh's command table: the words an operator types, turned into a command API request
// (usage errors found here, before anything is sent), and the reply turned into text.
// Pure: no I/O, so the table, the parsing and the formatting are unit-tested.

#include "common/result.h"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pcloud::shell::cli {

// What kind of object a positional argument names, for completion.
enum class ArgKind { None, Deployable, Assembly, Resource, Template, Number, Period, Other };

struct CommandSpec {
    std::string name;
    std::string usage;   // e.g. "deployable_create NAME [--uri URI] [--monitor active|passive]"
    std::string summary; // one line for `help`
    std::vector<ArgKind> args; // positional kinds, for completion
};

const std::vector<CommandSpec>& commands();
const CommandSpec* findCommand(const std::string& name);

// A parsed command line: the request to send (command + args), plus client-side flags.
struct Invocation {
    std::string command;
    nlohmann::json args = nlohmann::json::object();
    // events only
    bool follow = false;
};

// Usage errors come back as an Error whose message is ready to print.
Result<Invocation> parse(const std::vector<std::string>& words);

// Splits a line into words: whitespace separated, '...' and "..." quote.
Result<std::vector<std::string>> splitLine(const std::string& line);

// Human output for a successful reply's result.
std::string format(const std::string& command, const nlohmann::json& result, bool colour);
// The deployable_status table (readable at 100 columns).
std::string formatStatusTable(const nlohmann::json& result, bool colour);
// cluster_status: the zone's members (health, role, raft index/term, lag), leaders, quorum.
std::string formatClusterStatus(const nlohmann::json& result, bool colour);
// mco-ping style lines plus the min/avg/max summary.
std::string formatPing(const nlohmann::json& result);

std::string helpText();
std::string helpText(const std::string& command); // usage of one command, or "" if unknown

} // namespace pcloud::shell::cli
