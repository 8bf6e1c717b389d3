// Supervision logic against real processes (a fake dped script) and an injected clock:
// waits are for real process exits, with deadlines; backoff time only moves when the test
// advances the ManualClock.
#include "common/fs.h"
#include "common/lock_file.h"
#include "cped/supervisor.h"

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::cped;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-sup-XXXXXX";
    return ::mkdtemp(tmpl);
}

int startsOf(const std::string& dir, const std::string& dep) {
    std::ifstream in(dir + "/fake-dped-" + dep + ".starts");
    int n = 0;
    std::string line;
    while (std::getline(in, line))
        ++n;
    return n;
}

// Waits (deadline) until the fake dped recorded `n` starts.
bool waitStarts(const std::string& dir, const std::string& dep, int n) {
    for (int i = 0; i < 500; ++i) {
        if (startsOf(dir, dep) >= n)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// The fake dped's recorded command line(s), once written (deadline).
std::string argsOf(const std::string& dir, const std::string& dep) {
    for (int i = 0; i < 500; ++i) {
        auto a = fs::readFile(dir + "/fake-dped-" + dep + ".args");
        if (a && a->find('\n') != std::string::npos)
            return *a;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

void setMode(const std::string& dir, const std::string& dep, const std::string& mode) {
    ASSERT_TRUE(fs::writeAtomic(dir + "/fake-dped-" + dep + ".mode", mode + "\n").ok());
}

struct Fixture {
    std::string dir = tempDir();
    ManualClock clock;
    std::vector<events::Event> events;
    std::mutex mutex;
    std::unique_ptr<Supervisor> sup;
    std::function<std::uint64_t()> epoch; // SupervisorOptions::epoch of the next make()
    std::function<bool()> mayStart;       // SupervisorOptions::may_start of the next make()
    // SupervisorOptions::backoff of the next make(); unset = short steps for the tests.
    std::optional<model::Backoff> backoff;

    Fixture() { sup = make(); }
    ~Fixture() {
        // A failed test must not leave a fake dped running.
        if (sup && sup->pid("web"))
            sup->signal("web", SIGKILL);
    }
    std::unique_ptr<Supervisor> make() {
        SupervisorOptions o;
        o.dped_path = FAKE_DPED;
        o.state_dir = dir;
        o.broker_url = "amqp://127.0.0.1:1";
        o.backoff = backoff.value_or(model::Backoff{1000, 2.0, 4000, 60'000});
        o.epoch = epoch;
        o.may_start = mayStart;
        return std::make_unique<Supervisor>(o, clock, [this](events::Event e) {
            std::lock_guard lock(mutex);
            events.push_back(std::move(e));
        });
    }
    bool sawEvent(const std::string& state) {
        std::lock_guard lock(mutex);
        for (const auto& e : events)
            if (e.state == state)
                return true;
        return false;
    }
    // Waits (deadline) until the lock shows a holder: the fake dped is up.
    bool waitLocked(const std::string& dep, int deadlineMs = 5000) {
        for (int i = 0; i < deadlineMs / 10; ++i) {
            auto h = LockFile::holder(dpedLockPath(dir, dep));
            if (h && *h > 0)
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
};

} // namespace

TEST(RestartDelay, ExponentialWithCap) {
    model::Backoff b{1000, 2.0, 5000, 60'000};
    EXPECT_EQ(restartDelay(1, b), 0);
    EXPECT_EQ(restartDelay(2, b), 1000);
    EXPECT_EQ(restartDelay(3, b), 2000);
    EXPECT_EQ(restartDelay(4, b), 4000);
    EXPECT_EQ(restartDelay(5, b), 5000);
    EXPECT_EQ(restartDelay(50, b), 5000);
}

TEST(LockFile, SecondAcquireFailsAndNamesHolder) {
    auto dir = tempDir();
    auto path = dir + "/x.lock";
    EXPECT_FALSE(LockFile::holder(path).has_value());
    auto a = LockFile::acquire(path);
    ASSERT_TRUE(a.ok()) << a.error().describe();
    // flock locks belong to the open file description, so a second open in the same
    // process conflicts just like another process would.
    pid_t holder = 0;
    auto b = LockFile::acquire(path, &holder);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(holder, ::getpid());
    EXPECT_NE(b.error().describe().find("already locked by pid"), std::string::npos);
    EXPECT_EQ(LockFile::holder(path), std::optional<pid_t>(::getpid()));
    { auto released = std::move(a.value()); }
    EXPECT_FALSE(LockFile::holder(path).has_value());
    EXPECT_TRUE(LockFile::acquire(path).ok());
}

// A new holder writes its pid only after it has the lock, so the file can still name the
// previous holder, whose pid may belong to any process by now: cped adopting (and later
// signalling) that process as "the dped" would hit a stranger. Only a pid that has the lock
// file open is returned; a stale one reads as "held, pid not written yet" (0).
TEST(LockFile, AStalePidInTheFileIsNotTakenForTheHolder) {
    auto dir = tempDir();
    auto path = dir + "/x.lock";
    auto a = LockFile::acquire(path);
    ASSERT_TRUE(a.ok()) << a.error().describe();
    pid_t stranger = ::fork(); // alive, but without the lock file open (exec closes it)
    if (stranger == 0) {
        ::execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
        _exit(127);
    }
    ASSERT_GT(stranger, 0);
    auto execed = [&] {
        std::ifstream in("/proc/" + std::to_string(stranger) + "/cmdline");
        std::string argv0;
        std::getline(in, argv0, '\0');
        return argv0 == "sleep";
    };
    for (int i = 0; i < 500 && !execed(); ++i) // until the exec closed its copy of the fd
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(execed());
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        std::string text = std::to_string(stranger) + "\n";
        ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
        ::close(fd);
    }
    EXPECT_EQ(LockFile::holder(path), std::optional<pid_t>(0));
    pid_t named = -1;
    auto b = LockFile::acquire(path, &named);
    EXPECT_FALSE(b.ok());
    EXPECT_EQ(named, -1) << "a stale pid was reported as the holder";
    ::kill(stranger, SIGKILL);
    ::waitpid(stranger, nullptr, 0);
}

TEST(Supervisor, StartsOneDpedAndStopsOnTerm) {
    Fixture f;
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(f.waitLocked("web"));
    auto pid = f.sup->pid("web");
    ASSERT_TRUE(pid.has_value());
    EXPECT_EQ(LockFile::holder(dpedLockPath(f.dir, "web")), std::optional<pid_t>(*pid));
    EXPECT_EQ(f.sup->info("web")["state"], "running");
    f.sup->tick(); // nothing to do: still one
    // The fake writes the lock before it records its start: wait for the record too.
    EXPECT_TRUE(waitStarts(f.dir, "web", 1));
    EXPECT_EQ(startsOf(f.dir, "web"), 1);

    f.sup->unwant("web");
    ASSERT_TRUE(f.sup->signal("web", SIGTERM));
    auto st = f.sup->waitExit("web", 5000);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(*st, 0);
    f.sup->tick();
    EXPECT_EQ(startsOf(f.dir, "web"), 1); // not restarted
    EXPECT_EQ(f.sup->info("web")["state"], "stopped");
    EXPECT_TRUE(f.sawEvent("dped-exited"));
}

TEST(Supervisor, CrashRestartsWithBackoffOnInjectedClock) {
    Fixture f;
    setMode(f.dir, "web", "exit 1");
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 1));
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    // The first restart is immediate (inside waitExit's reaping tick or this one).
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 2));
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    Millis next = f.sup->tick();
    EXPECT_EQ(next, 1000);
    EXPECT_FALSE(f.sup->pid("web").has_value());
    EXPECT_EQ(f.sup->info("web")["state"], "backoff");
    f.clock.advance(999);
    f.sup->tick();
    EXPECT_FALSE(f.sup->pid("web").has_value());
    EXPECT_EQ(startsOf(f.dir, "web"), 2);
    f.clock.advance(1);
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 3));
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    EXPECT_EQ(f.sup->tick(), 2000); // doubled
    EXPECT_TRUE(f.sawEvent("dped-crashed"));
    EXPECT_EQ(f.sup->info("web")["restarts"].get<int>(), 3);
    f.sup->unwant("web");
}

// cped's own backoff: a dped that dies within 10 s of its start waits longer each time
// (against one that crashes at start), but one that ran 10 s is no crash loop and is
// restarted at once, however often it was restarted before (docs/cts.md: dped kills a
// minute apart waited up to 60 s when this was 60 s).
TEST(Supervisor, ADpedThatRanTenSecondsIsRestartedAtOnceAgain) {
    Fixture f;
    f.backoff = SupervisorOptions{}.backoff;
    f.sup = f.make();
    setMode(f.dir, "web", "exit 1");
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 1));
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    f.sup->tick(); // the first restart is immediate
    ASSERT_TRUE(waitStarts(f.dir, "web", 2));
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    EXPECT_EQ(f.sup->tick(), 1000);
    f.clock.advance(1000);
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 3));
    f.clock.advance(9'999); // ran just under 10 s: still a loop
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    EXPECT_EQ(f.sup->tick(), 2000);
    f.clock.advance(2000);
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 4));
    f.clock.advance(10'000); // ran 10 s
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 5)) << "restarted without a delay";
    EXPECT_EQ(f.sup->info("web")["restarts"].get<int>(), 4);
    f.sup->unwant("web");
    f.sup->waitExit("web", 5000);
}

// A zone's follower starts no dped (docs/ha.md "Epoch fencing"): one that crashes while this
// cped does not lead stays down, shown as "held", and starts on the first tick that may.
TEST(Supervisor, ADpedThatMayNotStartIsHeldUntilItMay) {
    Fixture f;
    bool may = true;
    f.mayStart = [&] { return may; };
    f.sup = f.make();
    setMode(f.dir, "web", "exit 1");
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 1));
    may = false; // this cped stopped leading while its dped ran
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(1));
    f.clock.advance(60'000);
    EXPECT_EQ(f.sup->tick(), -1); // nothing to wake up for: leading again wakes it
    EXPECT_FALSE(f.sup->pid("web").has_value());
    EXPECT_EQ(f.sup->info("web")["state"], "held");
    EXPECT_EQ(startsOf(f.dir, "web"), 1);
    may = true;
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 2));
    EXPECT_NE(f.sup->info("web")["state"], "held");
    f.sup->unwant("web");
    f.sup->waitExit("web", 5000);
}

TEST(Supervisor, ConfigErrorIsNotRespawned) {
    Fixture f;
    setMode(f.dir, "web", "exit 78");
    f.sup->want("web");
    f.sup->tick();
    ASSERT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(78));
    f.sup->tick();
    f.clock.advance(3'600'000);
    f.sup->tick();
    EXPECT_FALSE(f.sup->pid("web").has_value());
    EXPECT_EQ(startsOf(f.dir, "web"), 1);
    EXPECT_EQ(f.sup->info("web")["state"], "failed");
    EXPECT_TRUE(f.sawEvent("dped-failed"));
    // The operator fixes the cause and starts it again.
    setMode(f.dir, "web", "run");
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(waitStarts(f.dir, "web", 2));
    ASSERT_TRUE(f.waitLocked("web"));
    f.sup->unwant("web");
    f.sup->signal("web", SIGTERM);
    EXPECT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(0));
}

TEST(Supervisor, NewSupervisorAdoptsRunningDpedAndRestartsItWhenItDies) {
    Fixture f;
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(f.waitLocked("web"));
    pid_t first = *f.sup->pid("web");
    f.sup.reset(); // cped exits: the dped keeps running
    ASSERT_EQ(::kill(first, 0), 0);

    auto second = f.make();
    second->want("web");
    second->tick();
    ASSERT_EQ(second->pid("web"), std::optional<pid_t>(first));
    EXPECT_EQ(second->info("web")["adopted"], true);
    EXPECT_EQ(startsOf(f.dir, "web"), 1); // adopted, not started twice
    EXPECT_TRUE(f.sawEvent("adopted"));

    // The adopted dped dies: not our child, so the status is unknown: treated as a crash.
    ::kill(first, SIGKILL);
    auto st = second->waitExit("web", 5000);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(*st, -1);
    // The dead holder's lock may linger for an instant (a child of the script holds the
    // fd until it exits); the supervisor then looks again 100 ms later (injected clock).
    for (int i = 0; i < 500 && !second->pid("web"); ++i) {
        second->tick();
        if (second->pid("web"))
            break;
        f.clock.advance(100);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(waitStarts(f.dir, "web", 2));
    EXPECT_NE(*second->pid("web"), first);
    ASSERT_TRUE(f.waitLocked("web"));
    second->unwant("web");
    second->signal("web", SIGTERM);
    EXPECT_EQ(second->waitExit("web", 5000), std::optional<int>(0));
    ::waitpid(first, nullptr, WNOHANG);
}

// Epoch fencing (docs/ha.md): a dped starts with --epoch of the leader; one adopted from an
// earlier cped counts as below the new epoch until cped's raise is confirmed for that pid.
TEST(Supervisor, StartsTheDpedWithTheEpochAndAnAdoptedOneIsBelowItUntilConfirmed) {
    Fixture f;
    f.epoch = [] { return std::uint64_t{3}; };
    f.sup = f.make();
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(f.waitLocked("web"));
    pid_t first = *f.sup->pid("web");
    std::string args = argsOf(f.dir, "web");
    EXPECT_NE(args.find("--epoch 3"), std::string::npos) << args;
    EXPECT_EQ(f.sup->info("web")["epoch"], 3);
    EXPECT_TRUE(f.sup->belowEpoch(3).empty());
    EXPECT_EQ(f.sup->belowEpoch(4), std::vector<std::string>{"web"});
    f.sup.reset(); // cped exits; the dped keeps running

    f.epoch = [] { return std::uint64_t{4}; };
    auto second = f.make();
    second->want("web");
    second->tick();
    ASSERT_EQ(second->pid("web"), std::optional<pid_t>(first));
    EXPECT_FALSE(second->info("web").contains("epoch")); // unknown: another cped started it
    EXPECT_EQ(second->belowEpoch(4), std::vector<std::string>{"web"});
    second->noteEpoch("web", first + 100000, 4); // a reply from another process
    EXPECT_EQ(second->belowEpoch(4), std::vector<std::string>{"web"});
    second->noteEpoch("web", first, 4);
    EXPECT_TRUE(second->belowEpoch(4).empty());
    EXPECT_EQ(second->info("web")["epoch"], 4);
    second->noteEpoch("web", first, 2); // never lowered
    EXPECT_EQ(second->info("web")["epoch"], 4);
    second->unwant("web");
    second->signal("web", SIGTERM);
    EXPECT_TRUE(second->waitExit("web", 5000).has_value());
    ::waitpid(first, nullptr, WNOHANG);
    // Without an epoch (unset or 0) no --epoch is passed.
    f.epoch = [] { return std::uint64_t{0}; };
    auto third = f.make();
    third->want("db");
    third->tick();
    ASSERT_TRUE(f.waitLocked("db"));
    std::string dbArgs = argsOf(f.dir, "db");
    EXPECT_NE(dbArgs.find("--deployable db"), std::string::npos) << dbArgs;
    EXPECT_EQ(dbArgs.find("--epoch"), std::string::npos) << dbArgs;
    third->unwant("db");
    third->signal("db", SIGTERM);
    EXPECT_TRUE(third->waitExit("db", 5000).has_value());
}

TEST(Supervisor, SecondDpedForSameDeployableRefusesWithLocked) {
    Fixture f;
    f.sup->want("web");
    f.sup->tick();
    ASSERT_TRUE(f.waitLocked("web"));
    // Someone starts another dped by hand: it must not run.
    std::string cmd = std::string(FAKE_DPED) + " --deployable web --state-dir " + f.dir;
    int rc = std::system(cmd.c_str());
    EXPECT_EQ(WEXITSTATUS(rc), 75);
    EXPECT_EQ(startsOf(f.dir, "web"), 1);
    f.sup->unwant("web");
    f.sup->signal("web", SIGTERM);
    EXPECT_EQ(f.sup->waitExit("web", 5000), std::optional<int>(0));
}
