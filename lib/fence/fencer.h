#pragma once
// Runs fence agents with the standard fence-agents interface (ClusterLabs fence-agents,
// Debian's `fence-agents` package: fence_virsh, fence_ipmilan, ...): the agent is started
// with no arguments, reads `key=value` lines on stdin (`action=off|on|reboot|status|monitor`
// plus the host's parameters) and answers with its exit status: 0 = success (for status:
// 0 = on, 2 = off, anything else = error). See docs/hosts.md.
//
// Promise 2: an agent name comes from the model (which came from the bus), so it is only a
// name. resolveAgent() checks it ("fence_" + [A-Za-z0-9_-]), checks the host configuration's
// allow list (fence_agent lines), and runs FENCE_AGENTS_DIR/NAME; nothing else is executed.
//
// The retry and backoff logic is plain code over an injected Clock and sleep function, so
// tests drive it without waiting; the process part (fork, exec, stdin, timeout, kill) is
// real and is tested with a real agent script.

#include "common/clock.h"
#include "common/host_config.h"
#include "common/result.h"
#include "model/model.h"

#include <functional>
#include <string>
#include <vector>

namespace pcloud::fence {

enum class Action { Off, On, Reboot, Status, Monitor };
const char* toString(Action a);

// FENCE_AGENTS_DIR/NAME when NAME is a valid agent name that the host allows and that
// exists there as an executable; the error names the agent, the directory and the setting.
Result<std::string> resolveAgent(const std::string& agent, const hostconfig::HostConfig& host);

// The agent's stdin: "action=ACTION" then the host's parameters, one "key=value" per line,
// sorted by key. Keys and values are re-checked (no line breaks, no "action" key).
Result<std::string> agentInput(const model::Host& host, Action action);

struct RunResult {
    int exit_status = -1; // exit code, or 128+signal
    bool timed_out = false;
    std::string output; // stdout+stderr, at most 16 KiB (kept for the error message)
    Millis duration_ms = 0;
};

// Runs one agent process. The interface exists so the Fencer's retry logic can be tested
// on its own; ProcessRunner is the real one.
class AgentRunner {
public:
    virtual ~AgentRunner() = default;
    virtual Result<RunResult> run(const std::string& path, const std::string& input,
                                  Millis timeout) = 0;
};

// fork + exec with no arguments and a clean environment (PATH only), stdin from a memfd
// holding `input`, stdout and stderr collected; the process group is killed with SIGKILL
// at the timeout. An Error only when the process could not be started.
class ProcessRunner final : public AgentRunner {
public:
    Result<RunResult> run(const std::string& path, const std::string& input,
                          Millis timeout) override;
};

struct RetryPolicy {
    int attempts = 3;        // tries per fence() call (the host layer retries again later)
    Millis base = 1'000;     // wait before the 2nd try
    double factor = 2.0;     // then base*factor, ...
    Millis cap = 30'000;     // at most this
    Millis timeout = 60'000; // per run of the agent
    bool operator==(const RetryPolicy&) const = default;
};

// The wait before attempt `n` (2-based: the first attempt has none).
Millis backoffBefore(const RetryPolicy& p, int attempt);

struct FenceOutcome {
    bool ok = false;
    Action action = Action::Off;
    int attempts = 0;
    bool powered_off = false;       // status only: the agent said off (exit 2)
    std::string error;              // the last failure, for the alert
    std::vector<std::string> tries; // one line per attempt, for the log
    Millis finished_at = 0;         // clock time of the last attempt's end
};

class Fencer {
public:
    // `sleep(ms)` waits that long; tests pass one that advances a ManualClock.
    Fencer(hostconfig::HostConfig host, AgentRunner& runner, const Clock& clock,
           std::function<void(Millis)> sleep, RetryPolicy policy = {});

    // Runs the host's agent with `action` until it succeeds or the attempts are used up.
    // off/on/reboot/monitor succeed on exit 0; status succeeds on 0 (on) or 2 (off).
    // A host without an agent, an agent the host does not allow, or a bad parameter is
    // one failed outcome, not retried (retrying cannot help).
    FenceOutcome run(const model::Host& host, Action action = Action::Off);

private:
    hostconfig::HostConfig host_;
    AgentRunner& runner_;
    const Clock& clock_;
    std::function<void(Millis)> sleep_;
    RetryPolicy policy_;
};

} // namespace pcloud::fence
