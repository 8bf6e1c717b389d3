#pragma once
// Small helpers shared by tests/e2e, tests/shell and bench/ (one copy instead of one per
// file). Loopback only; nothing here asserts, callers do.
#include <chrono>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace pcloud::testsupport {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
int freePort();

// A TCP socket connected to 127.0.0.1:port, or -1 with errno set. `localAddress`, when
// given, gets this end's "127.0.0.1:PORT" (how a server's log names the peer).
int connectLoopback(int port, std::string* localAddress = nullptr);

struct HttpReply {
    bool connected = false; // false: connect() failed, `error` holds its errno
    int error = 0;
    std::string text; // the whole response as read until the peer closed (or timed out)
};

// One HTTP/1.0 GET of `path` on 127.0.0.1:port, reading with a `timeout` receive timeout.
HttpReply httpRequest(int port, const std::string& path, std::chrono::seconds timeout);

// GET / on loopback with a 3 s read timeout; the response text ("" on failure).
std::string httpGet(int port);

struct CommandResult {
    int rc = -1; // exit status, 128 + signal if killed, -1 if it could not be started
    std::string out;
};

// Runs `cmd` through /bin/sh (popen) and captures its stdout.
CommandResult runCommand(const std::string& cmd);

// Stdout of `cmd`, for callers that do not care about its exit status.
std::string runCapture(const std::string& cmd);

// The tiny guest with the real agent (scripts/build-guest.sh AGENT, cached): its directory,
// or the error with the end of the script's output.
struct GuestDirResult {
    std::string dir;
    std::string error;
};
GuestDirResult buildTinyGuest(const std::string& srcDir, const std::string& agentBinary);

// Domains of earlier test runs that died without their TearDown (a ctest timeout):
// PREFIX<PID>... with PID no longer alive are destroyed and undefined, so they cost no CPU.
void sweepStaleDomains(const std::string& prefix);

// The pid libvirt recorded for a running qemu:///system domain, 0 if none.
pid_t qemuPidOf(const std::string& domain);

// Forks and execs `path` with `args` (args[0] is the program name), stdout and stderr
// truncating `logPath`; the child gets SIGKILL when its parent dies (a ctest timeout must
// not leave it behind). Returns the child's pid (-1 if fork failed).
pid_t spawnLogged(const std::string& path, std::vector<std::string> args,
                  const std::string& logPath);

// Forks and execs the dped binary at `dpedPath` for `deployable` on `stateDir`, talking to
// the hub on 127.0.0.1:brokerPort at log level info, stdout and stderr truncating `logPath`.
// The child gets SIGKILL when its parent dies (a ctest timeout must not leave it behind).
// `configPath`, when given, is passed as --config (the host configuration).
// Returns the child's pid (-1 if fork failed).
pid_t spawnDped(const std::string& dpedPath, const std::string& deployable,
                const std::string& stateDir, int brokerPort, const std::string& logPath,
                const std::vector<std::string>& extraArgs = {});
// The same for the hub at `brokerUrl`: amqps://..., with the dped's --bus-ca, --bus-cert and
// --bus-key in `extraArgs` (TestTls::busArgs), as cped starts it.
pid_t spawnDped(const std::string& dpedPath, const std::string& deployable,
                const std::string& stateDir, const std::string& brokerUrl,
                const std::string& logPath, const std::vector<std::string>& extraArgs = {});

// Host configuration the tiny guest needs (docs/security.md): its <qemu:commandline>
// user-mode netdev, allowed explicitly, plus `extra` lines. Written to DIR/pcloud.conf
// (0644); returns the path. Pass it to dped as {"--config", path}.
std::string writeTinyGuestHostConfig(const std::string& dir, const std::string& extra = {});

// Polls `pred` every `poll` until it holds or `timeout` passes; then one last try.
template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(100)) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (pred())
            return true;
        std::this_thread::sleep_for(poll);
    }
    return pred();
}

} // namespace pcloud::testsupport
