#pragma once
// What the process backend remembers across its own restart: for each unit it started, the
// process (pid, process group, start time) and the command line it ran. A new agent reads
// this to adopt the processes a killed agent left running instead of starting a second copy
// (docs/agent.md, "Adoption"). Parsing is pure and returns Result; /proc readers are here too.

#include "common/result.h"

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pcloud::agent {

struct RecordedProcess {
    pid_t pid = 0;
    pid_t pgid = 0;
    std::uint64_t start_time = 0; // /proc/PID/stat field 22 (clock ticks since boot)
    std::string command;          // the configured command line, as run
};

struct ProcessState {
    std::string boot_id; // a file from another boot describes no live process
    std::map<std::string, RecordedProcess> units;
};

std::string encodeProcessState(const ProcessState& s);
// `file` names the source in errors.
Result<ProcessState> decodeProcessState(std::string_view text, const std::string& file);

// The fields of /proc/PID/stat the backend needs.
struct ProcStat {
    char state = '?'; // R, S, D, Z, ...
    pid_t pgid = 0;
    std::uint64_t start_time = 0;
};
// Parses the text of /proc/PID/stat ("pid (comm) state ppid pgrp ... starttime ...").
// comm may hold spaces and ')' itself, so fields are counted from the last ')'.
Result<ProcStat> parseProcStat(std::string_view text);
// /proc/PID/stat of a live process; nullopt when it is gone or unreadable.
std::optional<ProcStat> readProcStat(pid_t pid);
// /proc/PID/cmdline as argv words; nullopt when it is gone or unreadable.
std::optional<std::vector<std::string>> readCmdline(pid_t pid);

} // namespace pcloud::agent
