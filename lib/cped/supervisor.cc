#include "cped/supervisor.h"

#include "common/exit_codes.h"
#include "common/lock_file.h"
#include "common/log.h"

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::cped {
namespace {

int pidfdOpen(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

std::string describeStatus(int status) {
    if (status == -1)
        return "exit status unknown (adopted process)";
    if (status >= 128 + 1 && status < 128 + 65)
        return "killed by signal " + std::to_string(status - 128);
    return "exit status " + std::to_string(status);
}

} // namespace

Millis restartDelay(int consecutive, const model::Backoff& b) {
    if (consecutive <= 1)
        return 0;
    double d = static_cast<double>(b.base) * std::pow(b.factor, consecutive - 2);
    if (d > static_cast<double>(b.cap))
        return b.cap;
    return static_cast<Millis>(d);
}

Supervisor::Supervisor(SupervisorOptions options, const Clock& clock, EventSink sink)
    : options_(std::move(options)), clock_(clock), sink_(std::move(sink)) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

Supervisor::~Supervisor() {
    // Deliberately no kill: dpeds outlive cped and are adopted by the next one.
    for (auto& [_, e] : entries_)
        if (e.pidfd >= 0)
            ::close(e.pidfd);
    if (wake_fd_ >= 0)
        ::close(wake_fd_);
}

events::Event Supervisor::event(const std::string& dep, std::string state,
                                std::string reason) const {
    events::Event ev;
    ev.time = clock_.nowMs();
    ev.deployable = dep;
    ev.state = std::move(state);
    ev.reason = std::move(reason);
    return ev;
}

void Supervisor::want(const std::string& deployable) {
    {
        std::lock_guard lock(mutex_);
        auto& e = entries_[deployable];
        e.wanted = true;
        if (e.failed || (e.pid == 0 && !e.next_start_mono)) {
            e.failed = false;
            e.consecutive = 0;
            e.next_start_mono = clock_.monotonicMs();
        }
    }
    wake();
}

void Supervisor::unwant(const std::string& deployable) {
    {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(deployable);
        if (it == entries_.end())
            return;
        it->second.wanted = false;
        it->second.held = false;
        it->second.next_start_mono.reset();
    }
    wake();
}

bool Supervisor::wanted(const std::string& deployable) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(deployable);
    return it != entries_.end() && it->second.wanted;
}

void Supervisor::wake() {
    std::uint64_t one = 1;
    if (wake_fd_ >= 0) [[maybe_unused]]
        auto n = ::write(wake_fd_, &one, sizeof one);
}

bool Supervisor::adopt(const std::string& name, Entry& e, pid_t pid) {
    int fd = pidfdOpen(pid);
    if (fd < 0)
        return false;
    e.pid = pid;
    e.pidfd = fd;
    e.adopted = true;
    e.epoch = 0; // started by another cped: unknown until it confirms a raise
    e.started_mono = clock_.monotonicMs();
    e.next_start_mono.reset();
    PCLOUD_LOG(Notice, "Adopted a running dped",
               {{"deployable", name}, {"pid", std::to_string(pid)}});
    return true;
}

void Supervisor::startOrAdopt(const std::string& name, Entry& e, std::vector<events::Event>& out) {
    const std::string lockPath = dpedLockPath(options_.state_dir, name);
    if (auto holder = LockFile::holder(lockPath)) {
        // The holder we just saw exit may still show for a moment (its children inherit
        // the lock fd until they exec or exit): look again soon rather than adopt a corpse.
        if (*holder > 0 && *holder != e.last_pid && ::kill(*holder, 0) == 0 &&
            adopt(name, e, *holder)) {
            e.held = false;
            out.push_back(
                event(name, "adopted", "dped pid " + std::to_string(*holder) + " already running"));
            return;
        }
        // Held, but the pid is not written yet (a dped is starting) or unusable: look again soon.
        e.next_start_mono = clock_.monotonicMs() + 100;
        return;
    }
    // A running dped is adopted above whatever may_start says (so a follower can fence
    // it); a new one waits, still due, until it may.
    if (options_.may_start && !options_.may_start()) {
        if (!e.held)
            PCLOUD_LOG(Notice, "dped not started: this cped does not lead the zone",
                       {{"deployable", name}});
        e.held = true;
        return;
    }
    e.held = false;
    std::vector<std::string> args = {options_.dped_path, "--deployable", name, "--state-dir",
                                     options_.state_dir};
    if (!options_.broker_url.empty()) {
        args.push_back("--broker");
        args.push_back(options_.broker_url);
    }
    if (!options_.address_prefix.empty()) {
        args.push_back("--address-prefix");
        args.push_back(options_.address_prefix);
    }
    for (const auto& a : options_.extra_args)
        args.push_back(a);
    if (options_.dped_args)
        for (auto& a : options_.dped_args(name))
            args.push_back(std::move(a));
    const std::uint64_t epoch = options_.epoch ? options_.epoch() : 0;
    if (epoch > 0) {
        args.push_back("--epoch");
        args.push_back(std::to_string(epoch));
    }
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = ::fork();
    if (pid < 0) {
        PCLOUD_LOG(Error, "Cannot fork a dped",
                   {{"deployable", name}, {"error", std::strerror(errno)}});
        e.consecutive++;
        e.next_start_mono =
            clock_.monotonicMs() + restartDelay(e.consecutive + 1, options_.backoff);
        return;
    }
    if (pid == 0) {
        // Child: only async-signal-safe calls until exec.
        ::setsid();
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            ::dup2(devnull, 0);
            if (devnull > 2)
                ::close(devnull);
        }
        ::close_range(3, ~0U, 0);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    e.pid = pid;
    e.pidfd = pidfdOpen(pid);
    e.adopted = false;
    e.epoch = epoch;
    e.started_mono = clock_.monotonicMs();
    e.next_start_mono.reset();
    PCLOUD_LOG(Notice, "Started dped",
               {{"deployable", name},
                {"pid", std::to_string(pid)},
                {"path", options_.dped_path},
                {"epoch", std::to_string(epoch)}});
    out.push_back(event(name, "dped-started", "dped pid " + std::to_string(pid)));
}

void Supervisor::reap(const std::string& name, Entry& e, std::vector<events::Event>& out) {
    int status = -1;
    if (!e.adopted) {
        int ws = 0;
        pid_t r = ::waitpid(e.pid, &ws, WNOHANG);
        if (r == 0)
            return; // still running
        if (r == e.pid) {
            if (WIFEXITED(ws))
                status = WEXITSTATUS(ws);
            else if (WIFSIGNALED(ws))
                status = 128 + WTERMSIG(ws);
        }
    } else {
        pollfd p{e.pidfd, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0)
            return; // still running
    }
    const pid_t pid = e.pid;
    e.last_pid = pid;
    if (e.pidfd >= 0)
        ::close(e.pidfd);
    e.pidfd = -1;
    e.pid = 0;
    e.last_exit = status;
    e.exits++;
    const Millis now = clock_.monotonicMs();
    const std::string what = "dped pid " + std::to_string(pid) + " " + describeStatus(status);
    if (!e.wanted) {
        PCLOUD_LOG(Notice, "dped exited",
                   {{"deployable", name}, {"status", std::to_string(status)}});
        out.push_back(event(name, "dped-exited", what));
        return;
    }
    if (status == toInt(ExitCode::Locked)) {
        if (auto holder = LockFile::holder(dpedLockPath(options_.state_dir, name));
            holder && *holder > 0 && *holder != pid && ::kill(*holder, 0) == 0 &&
            adopt(name, e, *holder)) {
            e.held = false;
            out.push_back(
                event(name, "adopted",
                      "another dped (pid " + std::to_string(*holder) + ") holds the lock"));
            return;
        }
    }
    if (status != -1 && !shouldRespawn(status)) {
        e.failed = true;
        e.next_start_mono.reset();
        PCLOUD_LOG(Error,
                   "dped exited with a status that forbids a restart; fix the cause and start "
                   "the deployable again",
                   {{"deployable", name}, {"status", std::to_string(status)}});
        out.push_back(event(name, "dped-failed", what + "; not restarted"));
        return;
    }
    if (now - e.started_mono >= options_.backoff.reset_after)
        e.consecutive = 0;
    e.consecutive++;
    Millis delay = restartDelay(e.consecutive, options_.backoff);
    e.next_start_mono = now + delay;
    e.restarts++;
    PCLOUD_LOG(Warning, "dped crashed; restarting",
               {{"deployable", name},
                {"status", std::to_string(status)},
                {"delay_ms", std::to_string(delay)}});
    out.push_back(
        event(name, "dped-crashed", what + "; restart in " + std::to_string(delay) + " ms"));
}

Millis Supervisor::tick() {
    std::vector<events::Event> out;
    Millis next = -1;
    {
        std::lock_guard lock(mutex_);
        const Millis now = clock_.monotonicMs();
        for (auto it = entries_.begin(); it != entries_.end();) {
            auto& [name, e] = *it;
            if (e.pid > 0)
                reap(name, e, out);
            if (e.pid == 0 && e.wanted && !e.failed && e.next_start_mono &&
                *e.next_start_mono <= now)
                startOrAdopt(name, e, out);
            // A held start waits for a wake-up (leading again), not for a timer.
            if (e.pid == 0 && e.wanted && !e.failed && e.next_start_mono && !e.held) {
                Millis in = std::max<Millis>(0, *e.next_start_mono - clock_.monotonicMs());
                next = next < 0 ? in : std::min(next, in);
            }
            ++it;
        }
    }
    for (auto& ev : out)
        if (sink_)
            sink_(std::move(ev));
    return next;
}

void Supervisor::waitActivity(Millis timeoutMs) {
    std::vector<pollfd> fds;
    {
        std::lock_guard lock(mutex_);
        fds.push_back({wake_fd_, POLLIN, 0});
        for (const auto& [_, e] : entries_)
            if (e.pidfd >= 0)
                fds.push_back({e.pidfd, POLLIN, 0});
    }
    int n = ::poll(fds.data(), fds.size(), timeoutMs < 0 ? -1 : static_cast<int>(timeoutMs));
    if (n > 0 && (fds[0].revents & POLLIN)) {
        std::uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
}

std::optional<int> Supervisor::waitExit(const std::string& deployable, Millis timeoutMs) {
    int fd = -1;
    std::uint64_t exits = 0;
    {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(deployable);
        if (it == entries_.end())
            return 0;
        if (it->second.pid == 0)
            return it->second.last_exit.value_or(0);
        fd = ::dup(it->second.pidfd);
        exits = it->second.exits;
    }
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(timeoutMs));
    ::close(fd);
    if (n <= 0)
        return std::nullopt;
    tick(); // reap it (the supervisor thread may have done so already)
    std::lock_guard lock(mutex_);
    auto& e = entries_[deployable];
    if (e.exits == exits)
        return std::nullopt;
    return e.last_exit.value_or(-1);
}

bool Supervisor::signal(const std::string& deployable, int sig) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(deployable);
    if (it == entries_.end() || it->second.pidfd < 0)
        return false;
    return ::syscall(SYS_pidfd_send_signal, it->second.pidfd, sig, nullptr, 0) == 0;
}

std::optional<pid_t> Supervisor::pid(const std::string& deployable) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(deployable);
    if (it == entries_.end() || it->second.pid == 0)
        return std::nullopt;
    return it->second.pid;
}

std::vector<std::string> Supervisor::belowEpoch(std::uint64_t epoch) const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, e] : entries_)
        if (e.pid > 0 && e.epoch < epoch)
            out.push_back(name);
    return out;
}

void Supervisor::noteEpoch(const std::string& deployable, pid_t pid, std::uint64_t epoch) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(deployable);
    // A reply from a dped that has since been replaced says nothing about the new one.
    if (it != entries_.end() && it->second.pid == pid && epoch > it->second.epoch)
        it->second.epoch = epoch;
}

nlohmann::json Supervisor::info(const std::string& deployable) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(deployable);
    if (it == entries_.end())
        return {{"state", "stopped"}, {"running", false}};
    const Entry& e = it->second;
    std::string state = e.pid > 0  ? "running"
                        : e.failed ? "failed"
                        : e.held   ? "held"
                                   : (e.wanted ? "backoff" : "stopped");
    nlohmann::json j = {{"state", state}, {"running", e.pid > 0}, {"restarts", e.restarts}};
    if (e.pid > 0) {
        j["pid"] = e.pid;
        j["adopted"] = e.adopted;
        if (e.epoch > 0)
            j["epoch"] = e.epoch;
    }
    if (e.last_exit)
        j["last_exit"] = *e.last_exit;
    if (e.pid == 0 && e.next_start_mono)
        j["restart_in_ms"] = std::max<Millis>(0, *e.next_start_mono - clock_.monotonicMs());
    return j;
}

} // namespace pcloud::cped
