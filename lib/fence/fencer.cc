#include "fence/fencer.h"

#include "common/log.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::fence {

const char* toString(Action a) {
    switch (a) {
    case Action::Off:
        return "off";
    case Action::On:
        return "on";
    case Action::Reboot:
        return "reboot";
    case Action::Status:
        return "status";
    case Action::Monitor:
        return "monitor";
    }
    return "?";
}

Result<std::string> resolveAgent(const std::string& agent, const hostconfig::HostConfig& host) {
    const std::string conf = host.source.empty() ? hostconfig::kDefaultPath : host.source;
    if (agent.empty())
        return makeError("no fence agent is configured for this host (host_add --fence AGENT)");
    if (!model::isValidFenceAgentName(agent))
        return makeError("'" + agent +
                         "' is not a fence agent name (fence_ followed by letters, digits, '_' "
                         "or '-'); agents are named, never given as a path");
    if (!host.fence_agents.empty() && std::find(host.fence_agents.begin(), host.fence_agents.end(),
                                                agent) == host.fence_agents.end())
        return makeError("fence agent '" + agent +
                         "' is not allowed on this host; add "
                         "'fence_agent = " +
                         agent + "' to " + conf);
    const std::string path = host.fence_agents_dir + "/" + agent;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0)
        return makeError("fence agent " + path +
                         " is not an executable file (install fence-agents, or set "
                         "fence_agents_dir in " +
                         conf + ")");
    return path;
}

Result<std::string> agentInput(const model::Host& host, Action action) {
    std::string in = std::string("action=") + toString(action) + "\n";
    for (const auto& [k, v] : host.fence.params) {
        if (!model::isValidFenceParamName(k))
            return makeError("fence parameter '" + k + "' of host " + host.name +
                             " is not valid (letters, digits, '_' and '-'; not action)");
        if (v.find_first_of("\r\n") != std::string::npos || v.find('\0') != std::string::npos)
            return makeError("fence parameter '" + k + "' of host " + host.name +
                             " holds a line break");
        in += k + "=" + v + "\n";
    }
    return in;
}

namespace {

Millis monoNow() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

} // namespace

Result<RunResult> ProcessRunner::run(const std::string& path, const std::string& input,
                                     Millis timeout) {
    // stdin from a memfd: no pipe to keep writing (an agent that exits without reading
    // cannot block or SIGPIPE us).
    int in = ::memfd_create("pcloud-fence-input", MFD_CLOEXEC);
    if (in < 0)
        return makeError(std::string("memfd_create: ") + std::strerror(errno));
    size_t off = 0;
    while (off < input.size()) {
        ssize_t n = ::write(in, input.data() + off, input.size() - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ::close(in);
            return makeError(std::string("writing the agent's input: ") + std::strerror(errno));
        }
        off += static_cast<size_t>(n);
    }
    ::lseek(in, 0, SEEK_SET);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
        ::close(in);
        return makeError(std::string("pipe: ") + std::strerror(errno));
    }
    const Millis start = monoNow();
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(in);
        ::close(out[0]);
        ::close(out[1]);
        return makeError(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        ::dup2(in, 0);
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        const char* argv[] = {path.c_str(), nullptr};
        const char* envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", nullptr};
        ::execve(path.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp));
        ::_exit(127);
    }
    ::setpgid(pid, pid); // also from here: no race with the child's own call
    ::close(in);
    ::close(out[1]);
    RunResult r;
    const Millis deadline = start + timeout;
    bool eof = false;
    int status = 0;
    bool reaped = false;
    while (!eof) {
        const Millis left = deadline - monoNow();
        if (left <= 0) {
            r.timed_out = true;
            break;
        }
        pollfd p{out[0], POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(std::min<Millis>(left, 100)));
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            // The agent may have exited while something it started keeps the pipe open:
            // its exit status is the answer, not the end of the pipe.
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                reaped = true;
                break;
            }
            continue;
        }
        if (n < 0)
            continue;
        char buf[4096];
        ssize_t got = ::read(out[0], buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            eof = true;
            break;
        }
        if (r.output.size() < 16 * 1024)
            r.output.append(buf, static_cast<size_t>(
                                     std::min<ssize_t>(got, ssize_t(16 * 1024 - r.output.size()))));
    }
    ::close(out[0]);
    if (r.timed_out || reaped)
        ::kill(-pid, SIGKILL); // the group: nothing the agent started outlives the run
    // After EOF the agent exits at once. Wait without a deadline only after the kill.
    while (!reaped) {
        pid_t w = ::waitpid(pid, &status, r.timed_out ? 0 : WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            break;
        if (w == 0) {
            if (monoNow() > deadline) {
                r.timed_out = true;
                ::kill(-pid, SIGKILL);
                continue;
            }
            ::usleep(5'000); // the agent closed its output and is exiting
        }
    }
    if (WIFEXITED(status))
        r.exit_status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        r.exit_status = 128 + WTERMSIG(status);
    r.duration_ms = monoNow() - start;
    return r;
}

Millis backoffBefore(const RetryPolicy& p, int attempt) {
    if (attempt <= 1)
        return 0;
    const double d = double(p.base) * std::pow(p.factor, double(attempt - 2));
    return std::min<Millis>(p.cap, Millis(d));
}

Fencer::Fencer(hostconfig::HostConfig host, AgentRunner& runner, const Clock& clock,
               std::function<void(Millis)> sleep, RetryPolicy policy)
    : host_(std::move(host)), runner_(runner), clock_(clock), sleep_(std::move(sleep)),
      policy_(policy) {}

FenceOutcome Fencer::run(const model::Host& host, Action action) {
    FenceOutcome out;
    out.action = action;
    auto path = resolveAgent(host.fence.agent, host_);
    auto input = path ? agentInput(host, action) : Result<std::string>(path.error());
    if (!path || !input) {
        out.error = (!path ? path.error() : input.error()).message;
        out.finished_at = clock_.nowMs();
        PCLOUD_LOG(Error, "Cannot fence the host",
                   {{"host", host.name}, {"action", toString(action)}, {"error", out.error}});
        return out;
    }
    for (int attempt = 1; attempt <= std::max(1, policy_.attempts); ++attempt) {
        if (const Millis wait = backoffBefore(policy_, attempt); wait > 0)
            sleep_(wait);
        out.attempts = attempt;
        auto r = runner_.run(*path, *input, policy_.timeout);
        out.finished_at = clock_.nowMs();
        std::string line;
        bool ok = false;
        if (!r) {
            line = "could not run " + *path + ": " + r.error().message;
        } else if (r->timed_out) {
            line = host.fence.agent + " timed out after " + std::to_string(policy_.timeout) +
                   "ms (killed)";
        } else if (r->exit_status == 0 || (action == Action::Status && r->exit_status == 2)) {
            ok = true;
            out.powered_off = action == Action::Status && r->exit_status == 2;
            line = host.fence.agent + " " + toString(action) + " succeeded";
        } else {
            std::string tail = r->output;
            while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r'))
                tail.pop_back();
            if (auto nl = tail.rfind('\n'); nl != std::string::npos)
                tail = tail.substr(nl + 1);
            if (tail.size() > 200)
                tail = tail.substr(tail.size() - 200);
            line = host.fence.agent + " exited with status " + std::to_string(r->exit_status) +
                   (tail.empty() ? "" : ": " + tail);
        }
        out.tries.push_back("attempt " + std::to_string(attempt) + ": " + line);
        if (ok) {
            out.ok = true;
            out.error.clear();
            PCLOUD_LOG(Notice, "Fence agent succeeded",
                       {{"host", host.name},
                        {"agent", host.fence.agent},
                        {"action", toString(action)},
                        {"attempt", std::to_string(attempt)}});
            return out;
        }
        out.error = line;
        PCLOUD_LOG(Warning, "Fence agent failed",
                   {{"host", host.name},
                    {"agent", host.fence.agent},
                    {"action", toString(action)},
                    {"attempt", std::to_string(attempt)},
                    {"error", line}});
    }
    PCLOUD_LOG(Error, "Fencing failed; the host's assemblies stay down",
               {{"host", host.name},
                {"agent", host.fence.agent},
                {"attempts", std::to_string(out.attempts)},
                {"error", out.error}});
    return out;
}

} // namespace pcloud::fence
