// pcloudsh against a real cped: one-shot commands (success, errors, exit status, db files
// untouched by rejected commands), a corrupt db at start-up, the event follower (every seq
// once and in order, across a cped restart, --since then live) and the interactive shell
// through a real pty (completion, history, Ctrl-C). Waits poll with deadlines. The bus is
// amqps:// as an operator runs it: a PKI made per test (test_tls.h), cped.test and
// operator.alice, pcloudsh finding its certificate through pcloud.conf.
#include "common/fs.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mutex>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <pty.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using nlohmann::json;
using testsupport::freePort;
using testsupport::TestTls;
using namespace std::chrono_literals;

namespace {

std::string tempDir(const char* what) {
    std::string tmpl = std::string("/tmp/pcloud-") + what + "-XXXXXX";
    return ::mkdtemp(tmpl.data());
}

std::string readAll(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(n));
    return out;
}

struct RunResult {
    int status = -1;
    std::string out, err;
};

// Runs a program to completion (deadline 60 s), capturing stdout and stderr.
RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
    int o[2], e[2];
    EXPECT_EQ(::pipe(o), 0);
    EXPECT_EQ(::pipe(e), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(o[1], 1);
        ::dup2(e[1], 2);
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        for (const auto& kv : env)
            ::putenv(::strdup(kv.c_str()));
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(o[1]);
    ::close(e[1]);
    RunResult r;
    std::thread errReader([&] { r.err = readAll(e[0]); });
    r.out = readAll(o[0]);
    errReader.join();
    ::close(o[0]);
    ::close(e[0]);
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return r;
}

// The operator's setup in state dir `dir`: a PKI in DIR/pki and DIR/pcloud.conf naming it.
// Returns the configuration's path (cped --config, pcloudsh --config).
std::string setUpPki(TestTls& tls, const std::string& dir) {
    auto st = tls.setUp();
    EXPECT_TRUE(st.ok()) << st.error().describe();
    const std::string conf = dir + "/pcloud.conf";
    EXPECT_TRUE(fs::writeAtomic(conf, tls.hostConfig(), {}, 0644).ok());
    return conf;
}

class Cped {
public:
    Cped(std::string dir, int port, std::vector<std::string> extra = {})
        : dir_(std::move(dir)), port_(port), extra_(std::move(extra)), tls_(dir_ + "/pki"),
          conf_(setUpPki(tls_, dir_)) {}
    ~Cped() { stop(); }
    std::string url() const { return testsupport::amqpsUrl(port_); }
    const std::string& config() const { return conf_; }
    // What pcloudsh needs to reach this cped as operator:alice.
    std::vector<std::string> shellArgs() const { return {"--broker", url(), "--config", conf_}; }

    void start() {
        log_ = dir_ + "/cped.log";
        pid_ = ::fork();
        if (pid_ == 0) {
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<std::string> argv = {CPED_BIN,  "--state-dir",    dir_,  "--listen",
                                             url(),     "--config",       conf_, "--dped-path",
                                             FAKE_DPED, "--dped-timeout", "1s"};
            argv.insert(argv.end(), extra_.begin(), extra_.end());
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(CPED_BIN, args.data());
            ::_exit(127);
        }
    }
    // Waits until cped answers a command.
    bool waitReady() {
        for (int i = 0; i < 200; ++i) {
            auto r = run(shell({"--timeout", "2", "deployable_list"}));
            if (r.status == 0)
                return true;
            int ws;
            if (::waitpid(pid_, &ws, WNOHANG) == pid_) {
                pid_ = 0;
                return false;
            }
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }
    int stop(int sig = SIGTERM) {
        if (pid_ <= 0)
            return -1;
        ::kill(pid_, sig);
        int ws = 0;
        ::waitpid(pid_, &ws, 0);
        pid_ = 0;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    }
    std::string log() const { return fs::readFile(log_).value(); }
    // pcloudsh with shellArgs() and `args`.
    std::vector<std::string> shell(const std::vector<std::string>& args) const {
        std::vector<std::string> argv = {PCLOUDSH_BIN};
        for (const auto& v : {shellArgs(), args})
            argv.insert(argv.end(), v.begin(), v.end());
        return argv;
    }

private:
    std::string dir_;
    int port_;
    std::vector<std::string> extra_;
    TestTls tls_;
    std::string conf_;
    pid_t pid_ = 0;
    std::string log_;
};

class ShellTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = tempDir("shell");
        home_ = tempDir("home");
        cped_ = std::make_unique<Cped>(dir_, freePort());
        cped_->start();
        ASSERT_TRUE(cped_->waitReady()) << cped_->log();
    }
    void TearDown() override {
        // Stop fake dpeds this test started, then cped.
        sh({"deployable_stop", "web"});
        cped_->stop();
    }
    RunResult sh(std::vector<std::string> args) {
        return run(cped_->shell(args), {"HOME=" + home_});
    }
    std::string dbFiles() {
        std::string s;
        for (auto f : {"db_deployable.xml", "db_assemblies.xml", "desired.json"}) {
            auto t = fs::readFile(dir_ + "/" + f);
            s += std::string(f) + ":" + (t ? *t : "<none>") + "\n";
        }
        return s;
    }
    // Expects `args` to fail with `status`, a message containing `says`, and no change on disk.
    void rejects(std::vector<std::string> args, int status, const std::string& says) {
        auto before = dbFiles();
        auto r = sh(args);
        EXPECT_EQ(r.status, status) << args[0] << "\nstdout: " << r.out << "\nstderr: " << r.err;
        EXPECT_NE(r.err.find(says), std::string::npos) << args[0] << " stderr: " << r.err;
        EXPECT_EQ(dbFiles(), before) << args[0];
    }
    void ok(std::vector<std::string> args) {
        auto r = sh(args);
        EXPECT_EQ(r.status, 0) << args[0] << "\nstdout: " << r.out << "\nstderr: " << r.err;
    }
    std::string domainXml() {
        std::string p = dir_ + "/n1.xml";
        EXPECT_TRUE(
            fs::writeAtomic(p, "<domain type='qemu'><name>n1</name><memory>65536</memory></domain>")
                .ok());
        return p;
    }

    std::string dir_, home_;
    std::unique_ptr<Cped> cped_;
};

// A background `pcloudsh events --follow --json` collecting the seqs it prints.
class Follower {
public:
    // `broker`: Cped::shellArgs().
    Follower(const std::vector<std::string>& broker, std::vector<std::string> extra) {
        int o[2];
        EXPECT_EQ(::pipe(o), 0);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(o[1], 1);
            ::close(o[0]);
            std::vector<std::string> argv = {PCLOUDSH_BIN};
            argv.insert(argv.end(), broker.begin(), broker.end());
            argv.insert(argv.end(), {"--json", "events", "--follow"});
            argv.insert(argv.end(), extra.begin(), extra.end());
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(args[0], args.data());
            ::_exit(127);
        }
        ::close(o[1]);
        fd_ = o[0];
        reader_ = std::thread([this] {
            std::string buf;
            char tmp[4096];
            ssize_t n;
            while ((n = ::read(fd_, tmp, sizeof tmp)) > 0) {
                buf.append(tmp, static_cast<size_t>(n));
                size_t nl;
                while ((nl = buf.find('\n')) != std::string::npos) {
                    std::string line = buf.substr(0, nl);
                    auto j = json::parse(line, nullptr, false);
                    buf.erase(0, nl + 1);
                    std::lock_guard lock(mutex_);
                    lines_ += line + "\n";
                    if (j.is_object())
                        seqs_.push_back(j.value("seq", 0ULL));
                }
            }
        });
    }
    ~Follower() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        reader_.join();
        ::close(fd_);
    }
    bool waitSeq(std::uint64_t seq, int deadlineMs = 20000) {
        for (int i = 0; i < deadlineMs / 20; ++i) {
            {
                std::lock_guard lock(mutex_);
                if (!seqs_.empty() && seqs_.back() >= seq)
                    return true;
            }
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }
    std::vector<std::uint64_t> seqs() {
        std::lock_guard lock(mutex_);
        return seqs_;
    }
    // Everything it printed, for failure messages.
    std::string lines() {
        std::lock_guard lock(mutex_);
        return lines_;
    }

private:
    pid_t pid_;
    int fd_;
    std::thread reader_;
    std::mutex mutex_;
    std::vector<std::uint64_t> seqs_;
    std::string lines_;
};

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
    std::vector<std::uint64_t> v;
    for (auto s = from; s <= to; ++s)
        v.push_back(s);
    return v;
}

} // namespace

TEST_F(ShellTest, EveryOneShotCommand) {
    ok({"deployable_create", "web", "--uri", "test:///default"});
    ok({"deployable_create", "db", "--monitor", "passive"});
    auto l = sh({"deployable_list"});
    EXPECT_NE(l.out.find("test:///default"), std::string::npos) << l.out;
    ok({"assembly_create", "n1", "--domain-xml", domainXml(), "--address", "127.0.0.1:18080"});
    ok({"assembly_create", "n2", "--image", "/var/lib/pcloud/n2.img"});
    ok({"assembly_clone", "n1", "n3"});
    ok({"deployable_assembly_add", "web", "n1"});
    ok({"deployable_assembly_add", "web", "n3"});
    auto al = sh({"deployable_assembly_list", "web"});
    EXPECT_NE(al.out.find("n3"), std::string::npos);
    ok({"deployable_assembly_remove", "web", "n3"});
    ok({"assembly_delete", "n3"});
    auto tl = sh({"template_list"});
    EXPECT_NE(tl.out.find("nginx"), std::string::npos) << tl.out;
    ok({"assembly_resource_add", "www", "nginx", "n1"});
    auto rl = sh({"assembly_resource_list", "n1"});
    EXPECT_NE(rl.out.find("www"), std::string::npos) << rl.out;
    ok({"escalation_resource_set", "www", "n1", "5", "1m"});
    ok({"escalation_assembly_set", "n1", "INFINITY", "10m"});
    ok({"escalation_deployable_set", "web", "2", "1h", "--outcome", "stop-deployable"});
    ok({"referee_set", "web", "log"});
    ok({"assembly_resource_remove", "www", "n1"});
    auto asl = sh({"--json", "assembly_list"});
    ASSERT_EQ(asl.status, 0);
    auto j = json::parse(asl.out);
    EXPECT_EQ(j["assemblies"].size(), 2u);

    // Start runs a (fake) dped; status shows it, and says so when dped does not answer.
    ok({"deployable_start", "web"});
    auto st = sh({"deployable_status", "web"});
    EXPECT_EQ(st.status, 0) << st.err;
    EXPECT_NE(st.out.find("desired started"), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("dped not answering"), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("n1"), std::string::npos) << st.out;
    auto status = sh({"status"});
    EXPECT_EQ(status.status, 0);
    EXPECT_NE(status.out.find("web"), std::string::npos);
    ok({"assembly_park", "n1"});
    ok({"assembly_unpark", "n1"});
    ok({"deployable_reload", "web"});
    // No agent runs here: the statistics still print, and the exit status says nobody
    // answered (like ping(8)).
    auto ping = sh({"ping", "n2"});
    EXPECT_EQ(ping.status, 1);
    EXPECT_NE(ping.out.find("ping statistics"), std::string::npos) << ping.out;
    EXPECT_NE(ping.out.find("No responses received"), std::string::npos) << ping.out;
    ok({"deployable_stop", "web"});
    auto ev = sh({"events", "--deployable", "web", "--limit", "100"});
    EXPECT_NE(ev.out.find(" web created: deployable created"), std::string::npos) << ev.out;
    EXPECT_NE(ev.out.find(" web stopped: stopped by operator"), std::string::npos) << ev.out;
    EXPECT_NE(ev.out.find(" web/n1 parked"), std::string::npos) << ev.out;
    ok({"deployable_delete", "db"});
    auto help = sh({"help"});
    EXPECT_NE(help.out.find("deployable_status"), std::string::npos);
    auto h1 = sh({"help", "escalation_assembly_set"});
    EXPECT_NE(h1.out.find("usage: escalation_assembly_set ASSEMBLY FAILURES PERIOD"),
              std::string::npos);
}

TEST_F(ShellTest, BadInputIsRejectedAndChangesNothing) {
    ok({"deployable_create", "web"});
    ok({"assembly_create", "n1", "--image", "/var/lib/pcloud/x.img"});
    rejects({"frobnicate"}, 2, "unknown command 'frobnicate'");
    rejects({"deployable_create"}, 2, "wrong number of arguments");
    rejects({"deployable_assembly_add", "web"}, 2, "wrong number of arguments");
    rejects({"deployable_start", "nope"}, 1, "no deployable named 'nope'");
    rejects({"deployable_status", "nope"}, 1, "not-found");
    rejects({"escalation_assembly_set", "n1", "3x", "10m"}, 2, "not a number of failures");
    rejects({"escalation_assembly_set", "n1", "3", "10 min"}, 2, "not a period");
    rejects({"escalation_assembly_set", "n1", "3", "10q"}, 2, "not a period");
    rejects({"escalation_assembly_set", "nope", "3", "10m"}, 1, "no assembly named 'nope'");
    rejects({"deployable_create", "web"}, 1, "exists already");
    rejects({"deployable_create", "bad/name"}, 1, "not a valid name");
    rejects({"deployable_list", "--bogus"}, 2, "unknown option");
    rejects({"assembly_resource_add", "x", "no-such-template", "n1"}, 1, "no-such-template");
    rejects({"help", "nope"}, 2, "unknown command");
    auto json = sh({"--json", "deployable_start", "nope"});
    EXPECT_EQ(json.status, 1);
    EXPECT_NE(json.out.find("\"code\":\"not-found\""), std::string::npos) << json.out;
    // cped unreachable is an error (1), not a hang.
    auto r = run({PCLOUDSH_BIN, "--broker", testsupport::amqpsUrl(freePort()), "--config",
                  cped_->config(), "--timeout", "1", "status"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("cannot reach cped"), std::string::npos) << r.err;
}

// A one-shot pcloudsh ends its connection with an AMQP close, so cped, even at info level, logs
// nothing about it; a peer that really vanishes (a follower killed with SIGKILL: no AMQP and no
// TLS close) is still logged, as a disconnect, not as a refused connection or a protocol error.
// (pcloudsh used to _exit() with the connection open: one "framing-error" line per command.)
TEST(ShellExit, OneShotClosesItsConnectionSoCpedLogsNothing) {
    int port = freePort();
    Cped cped(tempDir("shell-exit"), port, {"--log-level", "info"});
    cped.start();
    ASSERT_TRUE(cped.waitReady()) << cped.log();
    for (int i = 0; i < 5; ++i) {
        auto r = run(cped.shell({"deployable_list"}));
        EXPECT_EQ(r.status, 0) << r.err;
    }
    auto refused = run(cped.shell({"deployable_start", "nope"}));
    EXPECT_EQ(refused.status, 1) << refused.err; // an error reply ends with a close as well
    auto created = run(cped.shell({"deployable_create", "web"}));
    ASSERT_EQ(created.status, 0) << created.err;
    std::string peer; // the follower's address, from the hub's line when it authenticated
    {
        Follower f(cped.shellArgs(), {"--since", "0"});
        ASSERT_TRUE(f.waitSeq(1)) << cped.log();
        const std::string log = cped.log();
        auto at = log.rfind("Hub peer authenticated peer=");
        ASSERT_NE(at, std::string::npos) << log;
        auto from = log.find("peer=", at);
        peer = log.substr(from, log.find(' ', from) - from + 1); // "peer=127.0.0.1:PORT "
        EXPECT_NE(log.find("identity=operator:alice", from), std::string::npos) << log;
    } // SIGKILL

    // The vanished peer's line, once there, shows that cped has handled every close before it.
    const std::string what = "Hub peer disconnected without closing its connection";
    std::string log;
    for (int i = 0; i < 500 && log.find(what) == std::string::npos; ++i) {
        std::this_thread::sleep_for(20ms);
        log = cped.log();
    }
    ASSERT_NE(log.find(what), std::string::npos) << log;
    std::string line = log.substr(log.rfind('\n', log.find(what)) + 1);
    line = line.substr(0, line.find('\n'));
    EXPECT_NE(line.find(" info: " + what), std::string::npos) << line;
    EXPECT_NE(line.find(peer), std::string::npos) << peer << " in " << line;
    EXPECT_NE(line.find("reason=\"the connection ended without a TLS or AMQP close\""),
              std::string::npos)
        << line;
    size_t disconnects = 0;
    for (size_t p = log.find("Hub peer disconnected"); p != std::string::npos;
         p = log.find("Hub peer disconnected", p + 1))
        ++disconnects;
    EXPECT_EQ(disconnects, 1u) << log;
    EXPECT_EQ(log.find("framing"), std::string::npos) << log;
    EXPECT_EQ(log.find("Hub dropped"), std::string::npos) << log;
    EXPECT_EQ(log.find("Hub refused"), std::string::npos) << log;
    EXPECT_NE(log.find("Command handled command=deployable_start"), std::string::npos) << log;
    cped.stop();
}

TEST(CpedStart, CorruptDbRefusesToStartAndLeavesFileAlone) {
    auto dir = tempDir("corrupt");
    const std::string bad =
        "<?xml version=\"1.0\"?>\n<deployables>\n  <deployable name=\"web\"\n</deployables>\n";
    ASSERT_TRUE(fs::writeAtomic(dir + "/db_deployable.xml", bad).ok());
    TestTls tls(dir + "/pki"); // so that nothing but the db can make it fail
    const std::string conf = setUpPki(tls, dir);
    auto r = run({CPED_BIN, "--state-dir", dir, "--listen", testsupport::amqpsUrl(freePort()),
                  "--config", conf, "--dped-path", FAKE_DPED});
    EXPECT_EQ(r.status, 78) << r.err;
    EXPECT_NE(r.err.find(dir + "/db_deployable.xml:"), std::string::npos) << r.err;
    EXPECT_EQ(fs::readFile(dir + "/db_deployable.xml").value(), bad);
    // Bad options are usage errors.
    EXPECT_EQ(run({CPED_BIN, "--journal-max-size", "lots"}).status, 2);
}

TEST_F(ShellTest, FollowerSeesEverySeqOnceInOrderAcrossCpedRestart) {
    Follower f(cped_->shellArgs(), {"--since", "0"});
    for (int i = 0; i < 5; ++i)
        ok({"deployable_create", "d" + std::to_string(i)});
    ASSERT_TRUE(f.waitSeq(5)) << ::testing::PrintToString(f.seqs());
    EXPECT_EQ(f.seqs(), range(1, 5));

    // cped goes away and comes back on the same address; the follower resumes.
    EXPECT_EQ(cped_->stop(), 0);
    cped_->start();
    ASSERT_TRUE(cped_->waitReady()) << cped_->log();
    for (int i = 5; i < 8; ++i)
        ok({"deployable_create", "d" + std::to_string(i)});
    ASSERT_TRUE(f.waitSeq(8)) << ::testing::PrintToString(f.seqs());
    for (int i = 8; i < 10; ++i)
        ok({"deployable_delete", "d" + std::to_string(i - 8)});
    ASSERT_TRUE(f.waitSeq(10)) << ::testing::PrintToString(f.seqs());
    EXPECT_EQ(f.seqs(), range(1, 10)) << f.lines();
}

TEST_F(ShellTest, SinceReplaysThenFollowsLive) {
    for (int i = 0; i < 6; ++i)
        ok({"deployable_create", "d" + std::to_string(i)});
    Follower f(cped_->shellArgs(), {"--since", "3"});
    ASSERT_TRUE(f.waitSeq(6));
    for (int i = 6; i < 9; ++i)
        ok({"deployable_create", "d" + std::to_string(i)});
    ASSERT_TRUE(f.waitSeq(9)) << ::testing::PrintToString(f.seqs());
    EXPECT_EQ(f.seqs(), range(4, 9));
    // --since TIME and --deployable on a one-shot replay.
    auto r = sh({"--json", "events", "--since", "2000-01-01T00:00:00Z", "--deployable", "d2"});
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

// ---- interactive mode through a real pty ----

class Pty {
public:
    // `argv`: Cped::shell({}).
    Pty(std::vector<std::string> argv, const std::string& home) {
        pid_ = ::forkpty(&master_, nullptr, nullptr, nullptr);
        if (pid_ == 0) {
            ::setenv("HOME", home.c_str(), 1);
            ::setenv("TERM", "xterm", 1);
            ::unsetenv("INPUTRC");
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(args[0], args.data());
            ::_exit(127);
        }
    }
    ~Pty() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::close(master_);
    }
    void send(const std::string& s) {
        ASSERT_EQ(::write(master_, s.data(), s.size()), (ssize_t)s.size());
    }
    // Reads until `what` appears after the current mark (deadline), then moves the mark past it.
    bool expect(const std::string& what, int deadlineMs = 10000) {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadlineMs);
        for (;;) {
            auto pos = screen_.find(what, mark_);
            if (pos != std::string::npos) {
                mark_ = pos + what.size();
                return true;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            end - std::chrono::steady_clock::now())
                            .count();
            if (left <= 0)
                return false;
            pollfd p{master_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left)) <= 0)
                continue;
            char buf[4096];
            ssize_t n = ::read(master_, buf, sizeof buf);
            if (n <= 0)
                return false;
            screen_.append(buf, static_cast<size_t>(n));
        }
    }
    int wait() {
        int ws = 0;
        ::waitpid(pid_, &ws, 0);
        pid_ = 0;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    }
    const std::string& screen() const { return screen_; }

private:
    int master_ = -1;
    pid_t pid_ = 0;
    std::string screen_;
    size_t mark_ = 0;
};

TEST_F(ShellTest, InteractiveCompletionHistoryAndCtrlC) {
    {
        Pty p(cped_->shell({}), home_);
        ASSERT_TRUE(p.expect("pcloudsh> ")) << p.screen();
        // Completing a command name: "deployable_cr<Tab>" becomes "deployable_create ".
        p.send("deployable_cr\t");
        ASSERT_TRUE(p.expect("deployable_create ")) << p.screen();
        p.send("webby\r");
        ASSERT_TRUE(p.expect("ok name=webby")) << p.screen();
        ASSERT_TRUE(p.expect("pcloudsh> "));
        // Completing a live deployable name fetched from cped.
        p.send("deployable_status we\t");
        ASSERT_TRUE(p.expect("webby ")) << p.screen();
        p.send("\r");
        ASSERT_TRUE(p.expect("deployable webby: desired ")) << p.screen();
        ASSERT_TRUE(p.expect("stopped")) << p.screen(); // colour codes around it on a tty
        ASSERT_TRUE(p.expect("pcloudsh> "));
        // Ctrl-C drops the typed line; nothing runs.
        p.send("deployable_delete webby");
        ASSERT_TRUE(p.expect("deployable_delete webby"));
        p.send("\x03");
        ASSERT_TRUE(p.expect("^C")) << p.screen();
        ASSERT_TRUE(p.expect("pcloudsh> ")) << p.screen();
        p.send("deployable_list\r");
        ASSERT_TRUE(p.expect("webby")) << p.screen();
        ASSERT_TRUE(p.expect("pcloudsh> "));
        p.send("\x04"); // Ctrl-D
        EXPECT_EQ(p.wait(), 0);
    }
    EXPECT_EQ(sh({"deployable_status", "webby"}).status, 0); // not deleted
    auto hist = fs::readFile(home_ + "/.pcloudsh_history");
    ASSERT_TRUE(hist.ok());
    EXPECT_NE(hist->find("deployable_create webby"), std::string::npos) << *hist;
    EXPECT_EQ(hist->find("deployable_delete"), std::string::npos) << *hist;
    {
        // History persisted: Up arrow recalls the last command of the previous run.
        Pty p(cped_->shell({}), home_);
        ASSERT_TRUE(p.expect("pcloudsh> "));
        p.send("\x1b[A");
        ASSERT_TRUE(p.expect("deployable_list")) << p.screen();
        p.send("\r");
        ASSERT_TRUE(p.expect("webby")) << p.screen();
        p.send("quit\r");
        EXPECT_EQ(p.wait(), 0);
    }
}
