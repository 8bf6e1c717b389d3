#include "referee/command.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::referee {
namespace {

Millis steadyMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

} // namespace

std::vector<std::string> splitCommandLine(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string w;
    while (in >> w)
        out.push_back(w);
    return out;
}

Result<CommandResult> runCommand(const std::vector<std::string>& argv, Millis timeoutMs) {
    if (argv.empty())
        return makeError("empty command");
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        return makeError("cannot create a pipe for " + argv[0] + ": " + std::strerror(errno));
    pid_t pid = ::fork();
    if (pid < 0) {
        int err = errno;
        ::close(fds[0]);
        ::close(fds[1]);
        return makeError("cannot fork for " + argv[0] + ": " + std::strerror(err));
    }
    if (pid == 0) {
        // Child: only async-signal-safe calls until exec.
        ::setpgid(0, 0);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            ::dup2(devnull, 0);
        ::dup2(fds[1], 1);
        ::dup2(fds[1], 2);
        ::execvp(args[0], args.data());
        const char msg[] = "cannot execute the command\n";
        [[maybe_unused]] auto n = ::write(2, msg, sizeof(msg) - 1);
        ::_exit(127);
    }
    ::close(fds[1]);
    CommandResult result;
    const Millis deadline = steadyMs() + timeoutMs;
    char buf[4096];
    for (;;) {
        Millis left = deadline - steadyMs();
        if (left <= 0) {
            result.timed_out = true;
            ::kill(-pid, SIGKILL);
            ::kill(pid, SIGKILL);
            break;
        }
        pollfd p{fds[0], POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t got = ::read(fds[0], buf, sizeof(buf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; // EOF: the command (and anything it forked) closed its output
        if (result.output.size() < 65536)
            result.output.append(buf, static_cast<size_t>(got));
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status))
        result.exit_status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        result.exit_status = 128 + WTERMSIG(status);
    return result;
}

} // namespace pcloud::referee
