#include "agent/process_backend.h"

#include "agent/config.h"
#include "common/log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace pcloud::agent {
namespace {

int pidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
    errno = ENOSYS;
    return -1;
#endif
}

} // namespace

ProcessBackend::ProcessBackend(const Clock& clock, std::map<std::string, std::string> commands)
    : clock_(clock), commands_(std::move(commands)) {}

ProcessBackend::~ProcessBackend() {
    shutdown();
}

void ProcessBackend::setState(Proc& p, const char* active, const char* sub) {
    p.st.active_state = active;
    p.st.sub_state = sub;
    p.st.changed_at = clock_.nowMs();
}

void ProcessBackend::emit(const Proc& p) {
    if (listener_)
        listener_->onUnitState(p.st);
}

void ProcessBackend::setWatch(const std::vector<std::string>& units,
                              const std::map<std::string, std::string>& commands) {
    for (const auto& [u, c] : commands)
        commands_[u] = c;
    // Units no longer watched are stopped: the agent owns their processes.
    for (auto it = procs_.begin(); it != procs_.end();) {
        bool still = false;
        for (const auto& u : units)
            still = still || u == it->first;
        if (!still) {
            if (it->second.pid > 0) {
                ::kill(-it->second.pid, SIGKILL);
                ::waitpid(it->second.pid, nullptr, 0);
            }
            if (it->second.pidfd >= 0)
                ::close(it->second.pidfd);
            for (auto& cb : it->second.waiting)
                cb(JobResult{false, proto::kErrNotFound, "unit is no longer watched", "canceled"});
            it = procs_.erase(it);
        } else {
            ++it;
        }
    }
    order_.clear();
    for (const auto& u : units) {
        if (std::find(order_.begin(), order_.end(), u) != order_.end())
            continue;
        order_.push_back(u);
        auto [it, inserted] = procs_.try_emplace(u);
        Proc& p = it->second;
        auto cmd = commands_.find(u);
        p.command = cmd == commands_.end() ? std::string() : cmd->second;
        if (inserted) {
            p.st.unit = u;
            p.st.changed_at = clock_.nowMs();
            if (p.command.empty()) {
                p.st.load_state = "not-found";
                p.st.active_state = "not-found";
                p.st.sub_state = "dead";
            }
            emit(p);
        } else if (!p.command.empty() && p.st.load_state == "not-found") {
            p.st.load_state = "loaded";
            setState(p, "inactive", "dead");
            emit(p);
        }
    }
}

std::optional<proto::UnitState> ProcessBackend::state(const std::string& unit) const {
    auto it = procs_.find(unit);
    if (it == procs_.end())
        return std::nullopt;
    return it->second.st;
}

bool ProcessBackend::spawn(const std::string& unit, Proc& p, std::string& why) {
    auto words = splitWords(p.command);
    if (words.empty()) {
        why = "no command configured for '" + unit + "'";
        return false;
    }
    std::vector<char*> argv;
    for (auto& w : words)
        argv.push_back(w.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
        why = std::string("fork failed: ") + std::strerror(errno);
        return false;
    }
    if (pid == 0) {
        // Child: own process group (so stop reaches grandchildren), default signals.
        ::setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            ::dup2(devnull, 0);
        ::execvp(argv[0], argv.data());
        _exit(127);
    }
    ::setpgid(pid, pid); // also from the parent, so the group exists before any kill
    p.pid = pid;
    p.pidfd = pidfdOpen(pid);
    if (p.pidfd < 0)
        PCLOUD_LOG(Warning, "pidfd_open failed; exit will be noticed late",
                   {{"unit", unit}, {"error", std::strerror(errno)}});
    p.stopping = false;
    p.st.load_state = "loaded";
    p.st.main_pid = pid;
    p.st.exit_code = 0;
    p.st.result = "success";
    setState(p, "active", "running");
    PCLOUD_LOG(Notice, "Started process", {{"unit", unit}, {"pid", std::to_string(pid)}});
    emit(p);
    return true;
}

void ProcessBackend::startAll() {
    for (const auto& u : order_) {
        Proc& p = procs_[u];
        if (p.pid == 0 && !p.command.empty()) {
            std::string why;
            if (!spawn(u, p, why)) {
                p.st.result = "resources";
                setState(p, "failed", "failed");
                emit(p);
                PCLOUD_LOG(Error, "Could not start process", {{"unit", u}, {"reason", why}});
            }
        }
    }
}

void ProcessBackend::runJob(JobKind kind, const std::string& unit, JobCallback done) {
    auto it = procs_.find(unit);
    if (it == procs_.end() || it->second.command.empty()) {
        done(JobResult{false, proto::kErrNotFound, "no command configured for '" + unit + "'",
                       "failed"});
        return;
    }
    Proc& p = it->second;
    if (p.stopping) {
        // A stop is already under way; chain onto it.
        if (kind != JobKind::Stop)
            p.restart_after_stop = true;
        p.waiting.push_back(std::move(done));
        return;
    }
    if (kind == JobKind::Start) {
        if (p.pid > 0) {
            done(JobResult{true, {}, {}, "done"}); // already running: like systemd
            return;
        }
        std::string why;
        if (spawn(unit, p, why))
            done(JobResult{true, {}, {}, "done"});
        else
            done(JobResult{false, proto::kErrBackend, why, "failed"});
        return;
    }
    if (p.pid == 0) { // nothing running
        if (kind == JobKind::Stop) {
            if (p.st.active_state != "inactive") {
                setState(p, "inactive", "dead");
                emit(p);
            }
            done(JobResult{true, {}, {}, "done"});
            return;
        }
        std::string why;
        if (spawn(unit, p, why))
            done(JobResult{true, {}, {}, "done"});
        else
            done(JobResult{false, proto::kErrBackend, why, "failed"});
        return;
    }
    p.stopping = true;
    p.restart_after_stop = kind == JobKind::Restart;
    p.kill_at = clock_.monotonicMs() + kStopTimeout;
    p.waiting.push_back(std::move(done));
    setState(p, "deactivating", "stop-sigterm");
    emit(p);
    ::kill(-p.pid, SIGTERM);
}

void ProcessBackend::reaped(const std::string& unit, Proc& p, int status) {
    if (p.pidfd >= 0)
        ::close(p.pidfd);
    p.pidfd = -1;
    p.pid = 0;
    p.st.main_pid = 0;
    if (WIFEXITED(status)) {
        p.st.exit_code = WEXITSTATUS(status);
        p.st.result = p.st.exit_code == 0 ? "success" : "exit-code";
    } else if (WIFSIGNALED(status)) {
        p.st.exit_code = 128 + WTERMSIG(status);
        p.st.result = WCOREDUMP(status) ? "core-dump" : "signal";
    }
    if (p.stopping) {
        p.stopping = false;
        p.st.result = "success";
        setState(p, "inactive", "dead");
        emit(p);
        auto waiting = std::move(p.waiting);
        p.waiting.clear();
        if (p.restart_after_stop) {
            p.restart_after_stop = false;
            std::string why;
            bool ok = spawn(unit, p, why);
            for (auto& cb : waiting)
                cb(ok ? JobResult{true, {}, {}, "done"}
                      : JobResult{false, proto::kErrBackend, why, "failed"});
        } else {
            for (auto& cb : waiting)
                cb(JobResult{true, {}, {}, "done"});
        }
        return;
    }
    // An exit nobody asked for is a failure, whatever the status (the resource should run).
    if (p.st.result == "success")
        p.st.result = "exit-code";
    setState(p, "failed", "failed");
    PCLOUD_LOG(
        Notice, "Process exited",
        {{"unit", unit}, {"exit_code", std::to_string(p.st.exit_code)}, {"result", p.st.result}});
    emit(p);
}

void ProcessBackend::prepare(PollSet& ps, Millis now) {
    for (auto& [unit, p] : procs_) {
        p.polled = false;
        if (p.pid > 0 && p.pidfd >= 0) {
            p.poll_index = ps.add(p.pidfd, POLLIN);
            p.polled = true;
        }
        if (p.pid > 0 && p.pidfd < 0)
            ps.wakeAt(now + 200); // no pidfd: fall back to waitpid
        if (p.stopping)
            ps.wakeAt(p.kill_at);
    }
}

void ProcessBackend::dispatch(const PollSet& ps, Millis now) {
    for (auto& [unit, p] : procs_) {
        if (p.pid <= 0)
            continue;
        bool check = !p.polled || (ps.revents(p.poll_index) & (POLLIN | POLLHUP | POLLERR));
        if (check) {
            int status = 0;
            pid_t r = ::waitpid(p.pid, &status, WNOHANG);
            if (r == p.pid) {
                reaped(unit, p, status);
                continue;
            }
        }
        if (p.stopping && now >= p.kill_at) {
            PCLOUD_LOG(Warning, "Process ignored SIGTERM; killing it", {{"unit", unit}});
            ::kill(-p.pid, SIGKILL);
            p.kill_at = now + kStopTimeout;
        }
    }
}

void ProcessBackend::shutdown() {
    for (auto& [unit, p] : procs_) {
        if (p.pid > 0) {
            ::kill(-p.pid, SIGTERM);
            // Give it a moment, then make sure: the agent must not leave orphans behind.
            for (int i = 0; i < 50; ++i) {
                if (::waitpid(p.pid, nullptr, WNOHANG) == p.pid) {
                    p.pid = 0;
                    break;
                }
                ::usleep(20'000);
            }
            if (p.pid > 0) {
                ::kill(-p.pid, SIGKILL);
                ::waitpid(p.pid, nullptr, 0);
            }
            p.pid = 0;
        }
        if (p.pidfd >= 0)
            ::close(p.pidfd);
        p.pidfd = -1;
    }
}

} // namespace pcloud::agent
