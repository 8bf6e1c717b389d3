#include "agent/process_backend.h"

#include "agent/config.h"
#include "common/fs.h"
#include "common/log.h"

#include <chrono>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
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

// A pidfd is readable once its process has exited (child or not).
bool pidfdReadable(int fd, int timeoutMs = 0) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeoutMs) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

} // namespace

ProcessBackend::ProcessBackend(const Clock& clock, std::map<std::string, std::string> commands,
                               std::string runDir, std::string bootId)
    : clock_(clock), commands_(std::move(commands)), run_dir_(std::move(runDir)),
      boot_id_(std::move(bootId)) {}

ProcessBackend::~ProcessBackend() {
    shutdown();
    if (lock_fd_ >= 0)
        ::close(lock_fd_);
}

std::string ProcessBackend::stateFile() const {
    return run_dir_.empty() ? std::string() : run_dir_ + "/processes.json";
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

// To the process group, never to group 0 or 1 (kill(0) is our own group, kill(-1) everyone).
static void signalGroup(pid_t pgid, pid_t pid, int sig) {
    if (pgid > 1)
        ::kill(-pgid, sig);
    else if (pid > 1)
        ::kill(pid, sig);
}

bool ProcessBackend::gone(Proc& p, int& status) {
    if (p.adopted)
        return p.pidfd < 0 || pidfdReadable(p.pidfd);
    return ::waitpid(p.pid, &status, WNOHANG) == p.pid;
}

void ProcessBackend::killNow(Proc& p) {
    signalGroup(p.pgid, p.pid, SIGKILL);
    if (!p.adopted)
        ::waitpid(p.pid, nullptr, 0);
    else if (p.pidfd >= 0)
        pidfdReadable(p.pidfd, 2'000);
}

void ProcessBackend::setWatch(const std::vector<std::string>& units,
                              const std::map<std::string, std::string>& commands) {
    for (const auto& [u, c] : commands)
        commands_[u] = c;
    // Units no longer watched are stopped: the agent owns their processes.
    bool removed = false;
    for (auto it = procs_.begin(); it != procs_.end();) {
        bool still = false;
        for (const auto& u : units)
            still = still || u == it->first;
        if (!still) {
            if (it->second.pid > 0) {
                killNow(it->second);
                removed = true;
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
    if (removed)
        saveState();
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

bool ProcessBackend::adopted(const std::string& unit) const {
    auto it = procs_.find(unit);
    return it != procs_.end() && it->second.pid > 0 && it->second.adopted;
}

bool ProcessBackend::spawn(const std::string& unit, Proc& p, std::string& why) {
    p.died_unwatched = false;
    auto words = splitWords(p.command);
    if (words.empty()) {
        why = "no command configured for '" + unit + "'";
        return false;
    }
    std::vector<char*> argv;
    for (auto& w : words)
        argv.push_back(w.data());
    argv.push_back(nullptr);
    // The child waits on `release` until the agent has recorded it, so a service never runs
    // unrecorded: an agent killed between the fork and the record would otherwise leave a
    // process the next agent cannot adopt, holding the service's port while that agent starts
    // a second copy. If the agent dies first, the child reads EOF and exits without exec.
    int release[2];
    if (::pipe2(release, O_CLOEXEC) != 0) {
        why = std::string("pipe failed: ") + std::strerror(errno);
        return false;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        why = std::string("fork failed: ") + std::strerror(errno);
        ::close(release[0]);
        ::close(release[1]);
        return false;
    }
    if (pid == 0) {
        // Child: own process group (so stop reaches grandchildren), default signals.
        ::setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::close(release[1]);
        char go = 0;
        ssize_t n;
        while ((n = ::read(release[0], &go, 1)) < 0 && errno == EINTR) {
        }
        if (n != 1)
            _exit(kUnreleasedExit); // the agent died before it recorded this process
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            ::dup2(devnull, 0);
        ::execvp(argv[0], argv.data());
        _exit(127);
    }
    ::close(release[0]);
    if (spawn_observer_)
        spawn_observer_(pid);
    ::setpgid(pid, pid); // also from the parent, so the group exists before any kill
    p.pid = pid;
    p.pgid = pid;
    p.adopted = false;
    // The start time is fixed at fork, so reading it now is exact; it tells this process
    // from a later one with the same pid when a new agent reads the record.
    auto stat = readProcStat(pid);
    p.start_time = stat ? stat->start_time : 0;
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
    saveState();
    // Recorded (or not recordable: no run directory): let it exec.
    [[maybe_unused]] auto w = ::write(release[1], "1", 1);
    ::close(release[1]);
    PCLOUD_LOG(Notice, "Started process", {{"unit", unit}, {"pid", std::to_string(pid)}});
    emit(p);
    return true;
}

bool ProcessBackend::openRunDir() {
    auto parent = run_dir_.substr(0, run_dir_.find_last_of('/'));
    if (!parent.empty() && !fs::exists(parent))
        (void)fs::makeDirs(parent);
    if (::mkdir(run_dir_.c_str(), 0700) != 0 && errno != EEXIST) {
        PCLOUD_LOG(Warning,
                   "Cannot create the run directory; processes will not be adopted after an "
                   "agent restart",
                   {{"run_dir", run_dir_}, {"error", std::strerror(errno)}});
        return false;
    }
    struct stat st {};
    if (::lstat(run_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
        PCLOUD_LOG(Warning,
                   "The run directory is not a directory of this user; processes will not be "
                   "adopted after an agent restart",
                   {{"run_dir", run_dir_}});
        return false;
    }
    if ((st.st_mode & 077) != 0)
        ::chmod(run_dir_.c_str(), 0700);
    std::string lock = run_dir_ + "/lock";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    // The previous agent was just killed, but a child it forked a moment before may not have
    // exec'd yet and still holds the lock through the inherited descriptor (closed at its
    // exec). Giving up at once would start second copies of every service, so wait a little
    // (at most kRunDirLockWaitMs) for a dying holder to let go.
    bool locked = lock_fd_ >= 0 && ::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0;
    for (int i = 0; !locked && lock_fd_ >= 0 && errno == EWOULDBLOCK &&
                    i < kRunDirLockWaitMs / kRunDirLockPollMs;
         ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kRunDirLockPollMs));
        locked = ::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0;
    }
    if (!locked) {
        PCLOUD_LOG(Warning,
                   "Another agent holds the run directory; processes will not be recorded or "
                   "adopted",
                   {{"run_dir", run_dir_}, {"error", std::strerror(errno)}});
        if (lock_fd_ >= 0)
            ::close(lock_fd_);
        lock_fd_ = -1;
        return false;
    }
    return true;
}

ProcessBackend::Adoption ProcessBackend::adopt(const std::string& unit, Proc& p,
                                               const RecordedProcess& r, std::string& why) {
    if (r.command != p.command) {
        why = "the configured command changed";
        return Adoption::NotAdopted;
    }
    // Open the pidfd first: if the checks below pass, it refers to the process they read
    // (a pid reused after the open would fail them, and the old one's exit shows as readable).
    int fd = pidfdOpen(r.pid);
    if (fd < 0) {
        if (errno == ESRCH) {
            why = "the process is gone";
            return Adoption::Died;
        }
        why = std::string("pidfd_open failed: ") + std::strerror(errno);
        return Adoption::NotAdopted;
    }
    auto stat = readProcStat(r.pid);
    auto cmdline = readCmdline(r.pid);
    if (!stat || stat->state == 'Z' || stat->state == 'X' || pidfdReadable(fd))
        why = "the process is gone";
    else if (stat->start_time != r.start_time)
        why = "the pid now belongs to another process (start time " +
              std::to_string(stat->start_time) + ", recorded " + std::to_string(r.start_time) + ")";
    else if (!cmdline || *cmdline != splitWords(p.command))
        why = "the pid runs another command line";
    if (!why.empty()) { // each of these means the recorded process no longer exists
        ::close(fd);
        return Adoption::Died;
    }
    p.pid = r.pid;
    p.pgid = stat->pgid > 1 ? stat->pgid : r.pid;
    p.start_time = r.start_time;
    p.pidfd = fd;
    p.adopted = true;
    p.stopping = false;
    p.st.load_state = "loaded";
    p.st.main_pid = r.pid;
    p.st.exit_code = 0;
    p.st.result = "success";
    setState(p, "active", "running");
    PCLOUD_LOG(Notice, "Adopted the process a previous agent started",
               {{"unit", unit}, {"pid", std::to_string(r.pid)}, {"pgid", std::to_string(p.pgid)}});
    emit(p);
    return Adoption::Adopted;
}

void ProcessBackend::adoptAll() {
    std::string file = stateFile();
    if (!fs::exists(file))
        return; // the first agent of this boot
    auto text = fs::readFile(file);
    if (!text) {
        PCLOUD_LOG(Warning, "Ignoring the process state file: cannot read it",
                   {{"file", file}, {"error", text.error().message}});
        return;
    }
    auto recorded = decodeProcessState(*text, file);
    if (!recorded) {
        PCLOUD_LOG(Warning, "Ignoring a corrupt process state file; starting every process anew",
                   {{"file", file}, {"error", recorded.error().message}});
        return;
    }
    if (recorded->boot_id != boot_id_) {
        PCLOUD_LOG(Info, "Ignoring the process state file of another boot",
                   {{"file", file}, {"boot_id", recorded->boot_id}});
        return;
    }
    for (const auto& u : order_) {
        auto r = recorded->units.find(u);
        if (r == recorded->units.end())
            continue;
        Proc& p = procs_[u];
        if (p.pid > 0 || p.command.empty())
            continue;
        std::string why;
        switch (adopt(u, p, r->second, why)) {
        case Adoption::Adopted:
            break;
        case Adoption::Died:
            // It died while no agent watched it: a service failure like any other, which
            // dped must see (and count) rather than a unit that looks as if it never stopped.
            p.died_unwatched = true;
            p.st.load_state = "loaded";
            p.st.main_pid = 0;
            p.st.exit_code = 0;
            p.st.result = "unknown";
            setState(p, "failed", "failed");
            PCLOUD_LOG(Warning,
                       "The recorded process died while no agent watched it; reporting the unit "
                       "failed",
                       {{"unit", u}, {"pid", std::to_string(r->second.pid)}, {"reason", why}});
            emit(p);
            break;
        case Adoption::NotAdopted:
            PCLOUD_LOG(Notice, "Not adopting the recorded process; starting the unit anew",
                       {{"unit", u}, {"pid", std::to_string(r->second.pid)}, {"reason", why}});
            break;
        }
    }
}

void ProcessBackend::saveState() {
    if (!persist_)
        return;
    ProcessState s;
    s.boot_id = boot_id_;
    for (const auto& [unit, p] : procs_)
        if (p.pid > 0)
            s.units[unit] = RecordedProcess{p.pid, p.pgid, p.start_time, p.command};
    if (auto st = fs::writeAtomic(stateFile(), encodeProcessState(s)); !st)
        PCLOUD_LOG(Warning,
                   "Cannot write the process state file; a restarted agent may start a second "
                   "copy",
                   {{"file", stateFile()}, {"error", st.error().describe()}});
}

void ProcessBackend::startAll() {
    if (!run_dir_.empty() && lock_fd_ < 0) {
        persist_ = openRunDir();
        if (persist_)
            adoptAll();
    }
    for (const auto& u : order_) {
        Proc& p = procs_[u];
        if (p.pid == 0 && !p.command.empty() && !p.died_unwatched) {
            std::string why;
            if (!spawn(u, p, why)) {
                p.st.result = "resources";
                setState(p, "failed", "failed");
                emit(p);
                PCLOUD_LOG(Error, "Could not start process", {{"unit", u}, {"reason", why}});
            }
        }
    }
    saveState(); // also drops the records of units that are not adopted or not watched
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
    signalGroup(p.pgid, p.pid, SIGTERM);
}

void ProcessBackend::reaped(const std::string& unit, Proc& p, std::optional<int> status) {
    if (p.pidfd >= 0)
        ::close(p.pidfd);
    p.pidfd = -1;
    p.pid = 0;
    p.pgid = 0;
    p.adopted = false;
    p.st.main_pid = 0;
    if (!status) {
        // Not our child: the kernel gave its exit status to its parent (init), not to us.
        p.st.exit_code = 0;
        p.st.result = "unknown";
    } else if (WIFEXITED(*status)) {
        p.st.exit_code = WEXITSTATUS(*status);
        p.st.result = p.st.exit_code == 0 ? "success" : "exit-code";
    } else if (WIFSIGNALED(*status)) {
        p.st.exit_code = 128 + WTERMSIG(*status);
        p.st.result = WCOREDUMP(*status) ? "core-dump" : "signal";
    }
    saveState();
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
            if (gone(p, status)) {
                reaped(unit, p, p.adopted ? std::nullopt : std::optional<int>(status));
                continue;
            }
        }
        if (p.stopping && now >= p.kill_at) {
            PCLOUD_LOG(Warning, "Process ignored SIGTERM; killing it", {{"unit", unit}});
            signalGroup(p.pgid, p.pid, SIGKILL);
            p.kill_at = now + kStopTimeout;
        }
    }
}

void ProcessBackend::shutdown() {
    bool any = false;
    for (auto& [unit, p] : procs_) {
        if (p.pid > 0) {
            any = true;
            signalGroup(p.pgid, p.pid, SIGTERM);
            // Give it a moment, then make sure: the agent must not leave orphans behind.
            bool done = false;
            int status = 0;
            for (int i = 0; i < 50 && !done; ++i) {
                done = gone(p, status);
                if (!done)
                    ::usleep(20'000);
            }
            if (!done)
                killNow(p);
            p.pid = 0;
            p.pgid = 0;
            p.adopted = false;
        }
        if (p.pidfd >= 0)
            ::close(p.pidfd);
        p.pidfd = -1;
    }
    if (any)
        saveState(); // nothing left to adopt
}

} // namespace pcloud::agent
