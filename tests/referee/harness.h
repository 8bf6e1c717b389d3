#pragma once
// Real daemons for the referee tests: tiny HTTP backends on loopback, a child-process
// runner for haproxy/apache2, a raw HTTP client, and deadline-bounded waits.

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace pcloud::referee::test {

// A loopback TCP port nobody listens on right now.
int freeLoopbackPort();
std::string makeTempDir(const std::string& tag);
void removeTree(const std::string& dir);
// Whether an executable is on PATH (or at an absolute path).
bool haveProgram(const std::string& name);

// An HTTP server on 127.0.0.1 that answers every request with its own name.
class HttpBackend {
public:
    explicit HttpBackend(std::string name);
    ~HttpBackend();
    int port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    int served() const { return served_.load(); }

private:
    void loop();
    std::string name_;
    int listen_fd_ = -1;
    int port_ = 0;
    int stop_pipe_[2] = {-1, -1};
    std::atomic<int> served_{0};
    std::thread thread_;
};

// GET http://127.0.0.1:port/path; the body on a 200, else "" (and status set). On a failure
// `why` (if given) says what went wrong and after how long: the connect errno, a receive
// timeout or error, an empty answer, or the status line.
std::string httpGet(int port, const std::string& path = "/", int* status = nullptr,
                    int timeoutMs = 2000, std::string* why = nullptr);
// Sends n requests; how many each body (backend name) got. Failures count under "".
std::map<std::string, int> spread(int port, int n, const std::string& path = "/");

// A child process with stdout/stderr to a log file.
class Child {
public:
    Child() = default;
    ~Child() { stop(); }
    bool start(const std::vector<std::string>& argv, const std::string& logFile);
    void stop(); // SIGTERM, then SIGKILL after a deadline; always reaped
    bool running();
    int pid() const { return pid_; }

private:
    int pid_ = -1;
};

// Polls cond every 20 ms until it holds or timeoutMs passes.
bool waitUntil(const std::function<bool()>& cond, int timeoutMs);

// Raw write to a unix socket (what an operator does with socat); returns the answer.
std::string rawSocket(const std::string& path, const std::string& payload);

} // namespace pcloud::referee::test
