// cped --cluster: two real cpeds (each with its own embedded hub and state dir) campaign in
// a real etcd; only the leader serves the command API, the other answers not-leader naming
// it; when the leader stops (SIGTERM: it resigns) or dies (kill -9: its lease expires),
// the other serves. Driven by the real pcloudsh; dped is the fake script of tests/cped. The
// bus is amqps://: one PKI (test_tls.h) with cped.a, cped.b and operator.alice. One test
// runs the real dped (on libvirt's test driver) to see a step-down fence it.
#include "common/fs.h"
#include "common/lock_file.h"
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using pcloud::etcdtest::EtcdCluster;
using namespace std::chrono_literals;

namespace {

struct CpedProc {
    std::string name;
    std::string dir;
    int port = 0;
    pid_t pid = -1;
    std::string dped = FAKE_DPED; // --dped-path
    std::string url() const { return amqpsUrl(port); }
    std::string config() const { return dir + "/pcloud.conf"; } // pki_dir, cped_name = name
};

void startCped(CpedProc& c, const std::vector<std::string>& extra) {
    if (c.port == 0) // a restart keeps the address its dpeds know
        c.port = freePort();
    c.pid = ::fork();
    if (c.pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open((c.dir + "/cped.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        std::vector<std::string> argv = {CPED_BIN, "--state-dir", c.dir,      "--listen",
                                         c.url(),  "--config",    c.config(), "--dped-path",
                                         c.dped,   "--node-name", c.name,     "--log-level",
                                         "info"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        std::vector<char*> args;
        for (auto& a : argv)
            args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(CPED_BIN, args.data());
        ::_exit(127);
    }
}

int stopCped(CpedProc& c, int sig) {
    if (c.pid <= 0)
        return -1;
    ::kill(c.pid, sig);
    int ws = 0;
    ::waitpid(c.pid, &ws, 0);
    c.pid = -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

CommandResult shell(const CpedProc& c, const std::string& words) {
    return runCommand(std::string(PCLOUDSH_BIN) + " --broker " + c.url() + " --config " +
                      c.config() + " --timeout 2 " + words + " 2>&1");
}

class CpedCluster : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(etcd_.start(), "");
        char tmpl[] = "/tmp/pcloud-cpedz-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        tls_ = std::make_unique<TestTls>(root_ + "/pki");
        auto st = tls_->setUp("a");
        ASSERT_TRUE(st.ok()) << st.error().describe();
        for (const char* n : {"a", "b"}) {
            CpedProc c;
            c.name = n;
            c.dir = root_ + "/" + n;
            ASSERT_EQ(::mkdir(c.dir.c_str(), 0700), 0);
            auto cert = tls_->issue({pki::Kind::Cped, n});
            ASSERT_TRUE(cert.ok()) << cert.error().describe();
            ASSERT_TRUE(fs::writeAtomic(c.config(), tls_->hostConfig(n), {}, 0644).ok());
            cpeds_.push_back(c);
        }
    }
    void TearDown() override {
        for (auto& c : cpeds_) {
            stopCped(c, SIGKILL);
            // A dped outlives its cped (the fake one too): stop it, if one still holds the
            // lock (a dead dped's pid in the file may belong to anyone by now).
            if (auto d = LockFile::holder(c.dir + "/dped-web.lock"); d && *d > 0)
                ::kill(*d, SIGTERM);
        }
        if (HasFailure())
            for (auto& c : cpeds_)
                std::printf("---- cped %s ----\n%s\n", c.name.c_str(),
                            etcdtest::tail(c.dir + "/cped.log", 3000).c_str());
        runCommand("rm -rf '" + root_ + "'");
    }
    // The index of the cped that serves deployable_list, -1 if none; both answering fails.
    int serving() {
        int who = -1;
        for (size_t i = 0; i < cpeds_.size(); ++i) {
            if (cpeds_[i].pid <= 0)
                continue;
            auto r = shell(cpeds_[i], "deployable_list");
            if (r.rc == 0) {
                EXPECT_EQ(who, -1) << "two cpeds serve commands at once";
                who = static_cast<int>(i);
            }
        }
        return who;
    }
    // The epoch of c's latest term, from its log ("Leadership acquired node=N epoch=E"); 0
    // when it has not led.
    static std::uint64_t lastEpoch(const CpedProc& c) {
        const std::string text = etcdtest::tail(c.dir + "/cped.log", 1'000'000);
        const std::string acquired = "Leadership acquired node=" + c.name + " epoch=";
        auto at = text.rfind(acquired);
        if (at == std::string::npos)
            return 0;
        return std::strtoull(text.c_str() + at + acquired.size(), nullptr, 10);
    }
    // Domain n1 on libvirt's test driver, as assembly_create --domain-xml reads it.
    static bool writeTestDomain(const std::string& path) {
        return fs::writeAtomic(path,
                               "<domain type='test'><name>n1</name><memory "
                               "unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n",
                               {}, 0644)
            .ok();
    }
    // c leads the zone (alone) and runs deployable web with one assembly on libvirt's test
    // driver, driven by the real dped; `epoch` is c's epoch, `dped` the dped's pid.
    void leadWithTheRealDped(CpedProc& c, std::uint64_t& epoch, pid_t& dped) {
        c.dped = DPED_BIN;
        ASSERT_TRUE(writeTestDomain(c.dir + "/n1.xml"));
        startCped(c, {"--cluster", etcd_.url()});
        ASSERT_TRUE(waitFor([&] { return shell(c, "deployable_list").rc == 0; }, 15s, 100ms))
            << shell(c, "deployable_list").out;
        epoch = lastEpoch(c);
        ASSERT_GT(epoch, 0u);
        for (const std::string& cmd :
             {std::string("deployable_create web --uri test:///default"),
              "assembly_create n1 --domain-xml " + c.dir + "/n1.xml",
              std::string("deployable_assembly_add web n1"), std::string("deployable_start web")}) {
            auto r = shell(c, cmd);
            ASSERT_EQ(r.rc, 0) << cmd << ": " << r.out;
        }
        ASSERT_TRUE(waitFor(
            [&] {
                dped = LockFile::holder(c.dir + "/dped-web.lock").value_or(0);
                auto st = shell(c, "deployable_status web");
                return dped > 0 && st.rc == 0 && st.out.find("not answering") == std::string::npos;
            },
            20s))
            << shell(c, "deployable_status web").out << etcdtest::tail(c.dir + "/cped.log", 3000);
    }
    // c leads the zone alone (the fake dped) and creates `deployable`, journaling events.
    void leadAndCreate(CpedProc& c, const std::string& deployable) {
        startCped(c, {"--cluster", etcd_.url()});
        ASSERT_TRUE(waitFor([&] { return shell(c, "deployable_list").rc == 0; }, 15s, 100ms))
            << shell(c, "deployable_list").out;
        auto r = shell(c, "deployable_create " + deployable + " --uri test:///default");
        ASSERT_EQ(r.rc, 0) << r.out;
    }
    // Starts c in the zone and waits until it follows `leader`, naming it.
    void startFollowerOf(CpedProc& c, const std::string& leader) {
        startCped(c, {"--cluster", etcd_.url()});
        ASSERT_TRUE(waitFor(
            [&] {
                return shell(c, "deployable_list").out.find("the leader is " + leader) !=
                       std::string::npos;
            },
            15s, 100ms));
    }
    // The fence c's dped of web saved with its escalation state (0: none).
    static std::uint64_t fencedBy(const CpedProc& c) {
        auto saved = nlohmann::json::parse(etcdtest::tail(c.dir + "/escalation-web.json", 100000),
                                           nullptr, false); // dped::escalationPath
        return saved.is_object() ? saved["deployable"].value("fenced_by", 0ull) : 0ull;
    }
    static bool logHas(const CpedProc& c, const std::string& text) {
        return etcdtest::tail(c.dir + "/cped.log", 1'000'000).find(text) != std::string::npos;
    }
    EtcdCluster etcd_{1};
    std::string root_;
    std::unique_ptr<TestTls> tls_;
    std::vector<CpedProc> cpeds_;
};

TEST_F(CpedCluster, OnlyTheLeaderServesAndTheOtherNamesIt) {
    startCped(cpeds_[0], {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(cpeds_[0], "deployable_list").rc == 0; }, 15s, 100ms))
        << shell(cpeds_[0], "deployable_list").out;
    startCped(cpeds_[1], {"--cluster", etcd_.url()});
    CommandResult r;
    ASSERT_TRUE(waitFor(
        [&] {
            r = shell(cpeds_[1], "deployable_list");
            return r.out.find("not-leader") != std::string::npos &&
                   r.out.find("the leader is a") != std::string::npos;
        },
        15s, 100ms))
        << r.out;
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("cped b is not the leader"), std::string::npos) << r.out;
    EXPECT_EQ(serving(), 0);

    // SIGTERM: the leader resigns, the other serves without waiting for the lease TTL.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(stopCped(cpeds_[0], SIGTERM), 0);
    ASSERT_TRUE(waitFor([&] { return shell(cpeds_[1], "deployable_list").rc == 0; }, 5s, 50ms));
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    std::printf("[ measured ] cped SIGTERM (resign) -> the other cped serves: %lld ms\n",
                static_cast<long long>(ms));
    EXPECT_LT(ms, 1500);
}

// Epoch fencing (docs/ha.md): the leader starts its dpeds with --epoch = its etcd epoch,
// the create_revision of its leader key.
TEST_F(CpedCluster, TheLeaderStartsItsDpedsWithItsEtcdEpoch) {
    startCped(cpeds_[0], {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(cpeds_[0], "deployable_list").rc == 0; }, 15s, 100ms))
        << shell(cpeds_[0], "deployable_list").out;
    const std::string log = cpeds_[0].dir + "/cped.log";
    const std::string epoch = std::to_string(lastEpoch(cpeds_[0]));
    ASSERT_NE(epoch, "0") << etcdtest::tail(log, 3000);
    for (const char* cmd : {"deployable_create web --uri test:///default",
                            "assembly_create n1 --image /var/lib/pcloud/n1.img",
                            "deployable_assembly_add web n1", "deployable_start web"}) {
        auto r = shell(cpeds_[0], cmd);
        ASSERT_EQ(r.rc, 0) << cmd << ": " << r.out;
    }
    std::string args;
    ASSERT_TRUE(waitFor(
        [&] {
            args = etcdtest::tail(cpeds_[0].dir + "/fake-dped-web.args", 10000);
            return args.find('\n') != std::string::npos;
        },
        10s))
        << etcdtest::tail(log, 3000);
    EXPECT_NE(args.find("--epoch " + epoch), std::string::npos) << args << " epoch " << epoch;
}

// A leader that loses its lease (revoked under it; it keeps running) fences its running
// dpeds at once (docs/ha.md "Epoch fencing"): the real dped journals `fenced`, naming the
// old epoch + 1, and saves the fence, rather than acting beside the new leader until a node
// refuses it. When a leads again (b resigns on SIGTERM) its new epoch is above the fence: it
// raises its dped, the same process throughout, and the fence lifts. a's own SIGTERM (it
// resigns) fences it again.
TEST_F(CpedCluster, ALeaderThatStepsDownFencesItsDpedsUntilItLeadsAgain) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    std::uint64_t first = 0;
    pid_t dped = 0;
    ASSERT_NO_FATAL_FAILURE(leadWithTheRealDped(a, first, dped));
    const std::string lock = a.dir + "/dped-web.lock";

    ASSERT_NO_FATAL_FAILURE(startFollowerOf(b, "a"));
    ASSERT_EQ(etcd_.revokeLeaseOf("a"), "");
    ASSERT_TRUE(waitFor([&] { return shell(b, "deployable_list").rc == 0; }, 10s, 50ms));

    const std::string fence = std::to_string(first + 1);
    const std::string escalation = a.dir + "/escalation-web.json";
    ASSERT_TRUE(waitFor([&] { return fencedBy(a) == first + 1; }, 10s))
        << etcdtest::tail(escalation, 3000) << etcdtest::tail(a.dir + "/cped.log", 4000);
    std::string log = etcdtest::tail(a.dir + "/cped.log", 1'000'000);
    EXPECT_NE(log.find("This cped no longer leads; fencing off its dpeds epoch=" +
                       std::to_string(first) + " fence=" + fence + " dpeds=1"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("dped fenced off until this cped leads again deployable=web fence=" + fence),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("epoch " + fence + " is above this dped's epoch " + std::to_string(first)),
              std::string::npos)
        << log;

    // b resigns; a leads again with a newer epoch and raises its dped: the fence lifts.
    EXPECT_EQ(stopCped(b, SIGTERM), 0);
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 10s, 50ms));
    const std::uint64_t second = lastEpoch(a);
    EXPECT_GT(second, first + 1);
    ASSERT_TRUE(waitFor(
        [&] {
            return etcdtest::tail(a.dir + "/cped.log", 1'000'000).find("state=fence-lifted") !=
                   std::string::npos;
        },
        10s))
        << etcdtest::tail(a.dir + "/cped.log", 4000);
    auto st = shell(a, "deployable_status web");
    EXPECT_EQ(st.rc, 0) << st.out;
    EXPECT_EQ(st.out.find("fenced"), std::string::npos) << st.out;
    EXPECT_EQ(LockFile::holder(lock).value_or(0), dped); // raised, not restarted

    // A leader that resigns on SIGTERM fences its dpeds too: the next leader may be another.
    EXPECT_EQ(stopCped(a, SIGTERM), 0);
    const std::uint64_t again = second + 1;
    ASSERT_TRUE(waitFor([&] { return fencedBy(a) == again; }, 10s))
        << etcdtest::tail(escalation, 3000) << etcdtest::tail(a.dir + "/cped.log", 4000);
    EXPECT_NE(etcdtest::tail(a.dir + "/cped.log", 1'000'000)
                  .find("This cped resigned; fencing off its dpeds epoch=" +
                        std::to_string(second) + " fence=" + std::to_string(again) + " dpeds=1"),
              std::string::npos);
}

// A follower starts no dped (docs/ha.md "Epoch fencing"): one would act beside the
// leader's. a's dped, fenced when a lost its lease, dies (kill -9) while a follows: a leaves
// it down ("held") until it leads again, then starts it with its new epoch.
TEST_F(CpedCluster, AFollowerDoesNotRestartItsDpedUntilItLeadsAgain) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    std::uint64_t first = 0;
    pid_t dped = 0;
    ASSERT_NO_FATAL_FAILURE(leadWithTheRealDped(a, first, dped));
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(b, "a"));
    ASSERT_EQ(etcd_.revokeLeaseOf("a"), "");
    ASSERT_TRUE(waitFor([&] { return fencedBy(a) == first + 1; }, 10s))
        << etcdtest::tail(a.dir + "/cped.log", 4000);

    ASSERT_EQ(::kill(dped, SIGKILL), 0);
    ASSERT_TRUE(waitFor(
        [&] {
            return logHas(a, "dped not started: this cped does not lead the zone deployable=web");
        },
        10s))
        << etcdtest::tail(a.dir + "/cped.log", 4000);
    const std::string lock = a.dir + "/dped-web.lock";
    auto holder = LockFile::holder(lock);
    EXPECT_TRUE(!holder || *holder <= 0 || ::kill(*holder, 0) != 0)
        << "a follower started dped pid " << holder.value_or(0);

    // b resigns: a leads with a newer epoch and starts its dped with it.
    EXPECT_EQ(stopCped(b, SIGTERM), 0);
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 10s, 50ms));
    const std::uint64_t second = lastEpoch(a);
    EXPECT_GT(second, first + 1);
    pid_t next = 0;
    ASSERT_TRUE(waitFor(
        [&] {
            next = LockFile::holder(lock).value_or(0);
            return next > 0 && next != dped && ::kill(next, 0) == 0;
        },
        10s))
        << etcdtest::tail(a.dir + "/cped.log", 4000);
    std::string cmdline = etcdtest::tail("/proc/" + std::to_string(next) + "/cmdline", 10000);
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    EXPECT_NE(cmdline.find("--epoch " + std::to_string(second)), std::string::npos) << cmdline;
}

// A cped that dies while leading sends no fence. Restarted while another leads, it adopts
// the dped its last run started and fences it with the epoch it saved (STATE_DIR/led-epoch),
// though this process never led. A led-epoch file that is not a number stops cped, naming it.
TEST_F(CpedCluster, ARestartedFollowerFencesTheDpedsOfItsLastTerm) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    std::uint64_t first = 0;
    pid_t dped = 0;
    ASSERT_NO_FATAL_FAILURE(leadWithTheRealDped(a, first, dped));
    stopCped(a, SIGKILL);
    EXPECT_EQ(fencedBy(a), 0u);
    startCped(b, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(b, "deployable_list").rc == 0; }, 10s, 50ms));

    startCped(a, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return fencedBy(a) == first + 1; }, 15s))
        << etcdtest::tail(a.dir + "/cped.log", 4000);
    EXPECT_EQ(LockFile::holder(a.dir + "/dped-web.lock").value_or(0), dped); // adopted
    EXPECT_TRUE(logHas(a, "This cped no longer leads; fencing off its dpeds epoch=" +
                              std::to_string(first) + " fence=" + std::to_string(first + 1)));
    EXPECT_NE(shell(a, "deployable_list").rc, 0); // b still leads

    stopCped(a, SIGKILL);
    ASSERT_TRUE(fs::writeAtomic(a.dir + "/led-epoch", "seven\n", {}, 0644).ok());
    auto bad =
        runCommand(std::string(CPED_BIN) + " --state-dir " + a.dir + " --listen " + a.url() +
                   " --config " + a.config() + " --cluster " + etcd_.url() + " --node-name a 2>&1");
    EXPECT_EQ(bad.rc, 78) << bad.out; // ExitCode::Config
    EXPECT_NE(bad.out.find(a.dir + "/led-epoch"), std::string::npos) << bad.out;
    EXPECT_NE(bad.out.find("not a non-negative epoch number: 'seven'"), std::string::npos)
        << bad.out;
    EXPECT_EQ(etcdtest::tail(a.dir + "/led-epoch"), "seven\n"); // left as it was
}

TEST_F(CpedCluster, KillMinusNineOfTheLeadingCpedHandsOverWithinTheTtl) {
    startCped(cpeds_[0], {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(cpeds_[0], "deployable_list").rc == 0; }, 15s, 100ms));
    startCped(cpeds_[1], {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor(
        [&] {
            return shell(cpeds_[1], "deployable_list").out.find("the leader is a") !=
                   std::string::npos;
        },
        15s, 100ms));
    auto t0 = std::chrono::steady_clock::now();
    stopCped(cpeds_[0], SIGKILL);
    ASSERT_TRUE(waitFor([&] { return shell(cpeds_[1], "deployable_list").rc == 0; }, 6s, 50ms));
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    std::printf("[ measured ] cped kill -9 -> the other cped serves (TTL 2 s): %lld ms\n",
                static_cast<long long>(ms));
    EXPECT_LT(ms, 3500);
}

TEST_F(CpedCluster, BadClusterUrlAndMissingEtcdAreClearErrors) {
    auto bad = runCommand(std::string(CPED_BIN) + " --state-dir " + cpeds_[0].dir +
                          " --cluster etcd://h1 --node-name a 2>&1");
    EXPECT_EQ(bad.rc, 2) << bad.out;
    EXPECT_NE(bad.out.find("bad etcd endpoint 'h1'"), std::string::npos) << bad.out;
    for (const char* ttl : {"0", "61", "1.5", "2s"}) {
        auto r =
            runCommand(std::string(CPED_BIN) + " --state-dir " + cpeds_[0].dir + " --cluster " +
                       etcd_.url() + " --node-name a --lease-ttl " + ttl + " 2>&1");
        EXPECT_EQ(r.rc, 2) << ttl << ": " << r.out;
        EXPECT_NE(r.out.find("bad --lease-ttl '" + std::string(ttl) +
                             "': a whole number of seconds, 1 to 60"),
                  std::string::npos)
            << r.out;
    }
    // An etcd that does not answer: cped starts, serves nothing, and says why.
    int dead = freePort();
    startCped(cpeds_[0], {"--cluster", "etcd://127.0.0.1:" + std::to_string(dead)});
    CommandResult r;
    ASSERT_TRUE(waitFor(
        [&] {
            r = shell(cpeds_[0], "deployable_list");
            return r.out.find("not-leader") != std::string::npos;
        },
        15s, 100ms))
        << r.out;
    EXPECT_NE(r.out.find("no leader known"), std::string::npos) << r.out;
}

// The shared model (docs/ha.md "The shared model"): b never led and has empty files, yet once
// a resigns, b serves the deployable a created; b's change is then what a serves when it
// leads again, its own files being older. The snapshot in etcd says who wrote it last.
TEST_F(CpedCluster, EachNewLeaderServesTheModelTheLastOneWrote) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    startCped(a, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 15s, 100ms))
        << shell(a, "deployable_list").out;
    auto r = shell(a, "deployable_create web2 --uri test:///default");
    ASSERT_EQ(r.rc, 0) << r.out;
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(b, "a"));
    EXPECT_FALSE(fs::exists(b.dir + "/db_deployable.xml")); // b has not led: no files yet

    stopCped(a, SIGTERM);
    ASSERT_TRUE(waitFor([&] { return shell(b, "deployable_list").rc == 0; }, 10s, 50ms));
    EXPECT_NE(shell(b, "deployable_list").out.find("web2"), std::string::npos)
        << shell(b, "deployable_list").out;
    EXPECT_NE(etcdtest::tail(b.dir + "/db_deployable.xml", 100000).find("\"web2\""),
              std::string::npos)
        << "b keeps the zone's model in its own files too";
    EXPECT_TRUE(logHas(b, "Took the zone's model from etcd"));

    r = shell(b, "deployable_create web3 --uri test:///default");
    ASSERT_EQ(r.rc, 0) << r.out;
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(a, "b"));
    EXPECT_EQ(etcdtest::tail(a.dir + "/db_deployable.xml", 100000).find("web3"),
              std::string::npos); // a's files are older
    stopCped(b, SIGTERM);
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 10s, 50ms));
    auto list = shell(a, "deployable_list").out;
    EXPECT_NE(list.find("web2"), std::string::npos) << list;
    EXPECT_NE(list.find("web3"), std::string::npos) << list;

    // a seeded generation 1 (empty), wrote web2 as 2; b took 2 and wrote web3 as 3.
    auto got = runCommand(etcd_.etcdctl() + " get --print-value-only /pcloud/model/snapshot");
    ASSERT_EQ(got.rc, 0) << got.out;
    auto snap = nlohmann::json::parse(got.out, nullptr, false);
    ASSERT_TRUE(snap.is_object()) << got.out;
    EXPECT_EQ(snap.value("generation", 0), 3) << got.out;
    EXPECT_EQ(snap.value("writer", ""), "b") << got.out;
}

// A snapshot in etcd that does not read is never overwritten: the leader serves nothing and
// says why, naming the key, and its own files stay as they were. Once the operator deletes
// the key, the leader's own model becomes the zone's.
TEST_F(CpedCluster, AnUnreadableSnapshotIsRefusedNamingItAndOverwritesNothing) {
    auto& a = cpeds_[0];
    startCped(a, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 15s, 100ms));
    ASSERT_EQ(shell(a, "deployable_create web --uri test:///default").rc, 0);
    stopCped(a, SIGTERM);
    const std::string before = etcdtest::tail(a.dir + "/db_deployable.xml", 100000);
    ASSERT_EQ(
        runCommand(etcd_.etcdctl() + " put /pcloud/model/snapshot '{\"v\":1,\"files\":3}'").rc, 0);
    startCped(a, {"--cluster", etcd_.url()});
    CommandResult r;
    ASSERT_TRUE(waitFor(
        [&] {
            r = shell(a, "deployable_list");
            return r.out.find("has not read the zone's model") != std::string::npos;
        },
        15s, 100ms))
        << r.out;
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.out.find("it is unreadable: etcd /pcloud/model/snapshot: \"generation\" is "
                         "missing"),
              std::string::npos)
        << r.out;
    EXPECT_EQ(etcdtest::tail(a.dir + "/db_deployable.xml", 100000), before);

    ASSERT_EQ(runCommand(etcd_.etcdctl() + " del /pcloud/model/snapshot").rc, 0);
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 10s, 100ms))
        << shell(a, "deployable_list").out;
    EXPECT_NE(shell(a, "deployable_list").out.find("web"), std::string::npos);
    EXPECT_TRUE(logHas(a, "The zone had no model in etcd; wrote this cped's"));
}

// In a zone, qemu:///system means whichever host leads: a deployable on it is refused at
// deployable_start, naming the URI and what to give instead, and nothing is started.
TEST_F(CpedCluster, AZoneRefusesToStartADeployableOnAHostLocalUri) {
    auto& a = cpeds_[0];
    ASSERT_TRUE(writeTestDomain(a.dir + "/n1.xml"));
    startCped(a, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 15s, 100ms));
    for (const std::string& cmd : {std::string("deployable_create web --uri qemu:///system"),
                                   "assembly_create n1 --domain-xml " + a.dir + "/n1.xml",
                                   std::string("deployable_assembly_add web n1")}) {
        auto r = shell(a, cmd);
        ASSERT_EQ(r.rc, 0) << cmd << ": " << r.out;
    }
    auto r = shell(a, "deployable_start web");
    EXPECT_NE(r.rc, 0) << r.out;
    EXPECT_NE(r.out.find("deployable 'web' cannot start in a zone: its libvirt URI "
                         "'qemu:///system' names no host"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("qemu+tls://HOST/system"), std::string::npos) << r.out;
    EXPECT_FALSE(LockFile::holder(a.dir + "/dped-web.lock").value_or(0) > 0);
    EXPECT_EQ(etcdtest::tail(a.dir + "/desired.json", 10000).find("web"), std::string::npos);
}

// Every event a cped serves with `events`, oldest first.
std::vector<nlohmann::json> servedEvents(const CpedProc& c) {
    auto r = shell(c, "--json events --since 0 --limit 100000");
    EXPECT_EQ(r.rc, 0) << r.out;
    std::vector<nlohmann::json> out;
    std::size_t at = 0;
    while (at < r.out.size()) {
        auto end = r.out.find('\n', at);
        if (end == std::string::npos)
            end = r.out.size();
        auto j = nlohmann::json::parse(r.out.substr(at, end - at), nullptr, false);
        if (j.is_object())
            out.push_back(j);
        at = end + 1;
    }
    return out;
}

// The events of the events.jsonl in `dir`, in file order.
std::vector<nlohmann::json> servedEventsOf(const std::string& dir) {
    std::vector<nlohmann::json> out;
    std::ifstream in(dir + "/events.jsonl");
    for (std::string line; std::getline(in, line);)
        if (auto j = nlohmann::json::parse(line, nullptr, false); j.is_object())
            out.push_back(j);
    return out;
}

// The seqs of c's own events.jsonl, in file order.
std::vector<std::uint64_t> fileSeqs(const CpedProc& c) {
    std::vector<std::uint64_t> out;
    for (const auto& e : servedEventsOf(c.dir))
        out.push_back(e.value("seq", std::uint64_t(0)));
    return out;
}

// The shared journal (docs/ha.md "The shared journal"): each leader numbers its events after
// the zone's last one, whoever journaled it, and has every earlier event in its own file.
// Three terms on two nodes (a, b, a again): seqs 1, 2, 3 ... with no gap and no event twice,
// the same in both files, and etcd's last seq is the last one served.
TEST_F(CpedCluster, TheJournalGoesOnByOneAcrossLeaders) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    ASSERT_NO_FATAL_FAILURE(leadAndCreate(a, "web2"));
    const auto byA = servedEvents(a);
    ASSERT_FALSE(byA.empty());
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(b, "a"));
    stopCped(a, SIGTERM);
    ASSERT_TRUE(waitFor([&] { return shell(b, "deployable_list").rc == 0; }, 10s, 50ms));
    ASSERT_EQ(shell(b, "deployable_create web3 --uri test:///default").rc, 0);
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(a, "b"));
    stopCped(b, SIGTERM);
    ASSERT_TRUE(waitFor([&] { return shell(a, "deployable_list").rc == 0; }, 10s, 50ms));
    ASSERT_EQ(shell(a, "deployable_create web4 --uri test:///default").rc, 0);

    const auto all = servedEvents(a);
    ASSERT_GT(all.size(), byA.size());
    std::vector<std::string> created;
    for (std::size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(all[i].value("seq", std::uint64_t(0)), i + 1) << all[i].dump();
        if (all[i].value("state", "") == "created")
            created.push_back(all[i].value("deployable", ""));
    }
    EXPECT_EQ(created, (std::vector<std::string>{"web2", "web3", "web4"}));
    for (std::size_t i = 0; i < byA.size(); ++i)
        EXPECT_EQ(all[i], byA[i]) << "the first term's events, unchanged";
    // b's file holds the zone's events up to its term's last; a's all of them, in order.
    const auto seqsA = fileSeqs(a);
    const auto seqsB = fileSeqs(b);
    ASSERT_EQ(seqsA.size(), all.size());
    for (std::size_t i = 0; i < seqsA.size(); ++i)
        EXPECT_EQ(seqsA[i], i + 1);
    ASSERT_GT(seqsB.size(), byA.size());
    for (std::size_t i = 0; i < seqsB.size(); ++i)
        EXPECT_EQ(seqsB[i], i + 1);
    auto last = runCommand(etcd_.etcdctl() + " get --print-value-only /pcloud/journal/last");
    ASSERT_EQ(last.rc, 0) << last.out;
    EXPECT_EQ(std::stoull(last.out), all.size()) << last.out;
}

// Escalation states (docs/ha.md "Escalation states"): the file a's dped saves for web goes to
// etcd, and b, which never ran web, puts the zone's copy in its own state dir before it starts
// its dped, which loads it: a failover keeps the failure history and the budgets spent.
TEST_F(CpedCluster, TheNextLeadersDpedStartsWithTheZonesEscalationState) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    std::uint64_t epoch = 0;
    pid_t dped = 0;
    ASSERT_NO_FATAL_FAILURE(leadWithTheRealDped(a, epoch, dped));
    const std::string file = a.dir + "/escalation-web.json"; // dped::escalationPath
    std::string saved, shared;
    ASSERT_TRUE(waitFor(
        [&] {
            saved = etcdtest::tail(file, 1'000'000);
            auto r = runCommand(etcd_.etcdctl() + " get --print-value-only /pcloud/escalation/web");
            shared = r.out;
            if (!shared.empty() && shared.back() == '\n')
                shared.pop_back(); // etcdctl ends the value with a newline
            return !saved.empty() && r.rc == 0 && shared == saved;
        },
        20s, 100ms))
        << "file: " << saved << "\netcd: " << shared;
    b.dped = DPED_BIN;
    ASSERT_NO_FATAL_FAILURE(startFollowerOf(b, "a"));
    EXPECT_FALSE(fs::exists(b.dir + "/escalation-web.json"));
    stopCped(a, SIGTERM);
    ASSERT_TRUE(waitFor([&] { return logHas(b, "Loaded escalation state"); }, 20s, 100ms))
        << etcdtest::tail(b.dir + "/cped.log", 3000);
    const std::string log = etcdtest::tail(b.dir + "/cped.log", 1'000'000);
    const auto took = log.find("Took the zone's escalation state from etcd");
    ASSERT_NE(took, std::string::npos) << log;
    EXPECT_LT(took, log.find("Loaded escalation state")) << "taken before b's dped started";
    auto nlohmannSaved = nlohmann::json::parse(shared, nullptr, false);
    auto nlohmannTaken = nlohmann::json::parse(
        etcdtest::tail(b.dir + "/escalation-web.json", 1'000'000), nullptr, false);
    ASSERT_TRUE(nlohmannSaved.is_object());
    ASSERT_TRUE(nlohmannTaken.is_object());
    EXPECT_EQ(nlohmannTaken["deployable"], nlohmannSaved["deployable"]);
}

// The zone's journal in etcd holds an event that does not read and lacks its last one (an
// operator's edit, say): the next leader copies the rest, puts a stand-in under each of
// those seqs naming the key and what is wrong, and journals on after the zone's last seq
// instead of being refused as behind for ever.
TEST_F(CpedCluster, AnUnreadableOrMissingZoneEventGetsAStandInAndTheJournalGoesOn) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    ASSERT_NO_FATAL_FAILURE(leadAndCreate(a, "web2"));
    stopCped(a, SIGTERM);
    const std::uint64_t last = servedEventsOf(a.dir).size();
    ASSERT_GT(last, 0u);
    char key[64];
    std::snprintf(key, sizeof key, "/pcloud/journal/e/%020llu",
                  static_cast<unsigned long long>(last + 1));
    ASSERT_EQ(runCommand(etcd_.etcdctl() + " put " + key + " 'not an event'").rc, 0);
    ASSERT_EQ(
        runCommand(etcd_.etcdctl() + " put /pcloud/journal/last " + std::to_string(last + 2)).rc,
        0);

    startCped(b, {"--cluster", etcd_.url()});
    ASSERT_TRUE(waitFor([&] { return shell(b, "deployable_list").rc == 0; }, 15s, 100ms))
        << shell(b, "deployable_list").out;
    auto r = shell(b, "deployable_create web3 --uri test:///default");
    ASSERT_EQ(r.rc, 0) << r.out;
    const auto all = servedEvents(b);
    ASSERT_GE(all.size(), last + 3);
    for (std::size_t i = 0; i < all.size(); ++i)
        EXPECT_EQ(all[i].value("seq", std::uint64_t(0)), i + 1) << all[i].dump();
    const auto& bad = all[last];
    EXPECT_EQ(bad.value("deployable", ""), "zone") << bad.dump();
    EXPECT_EQ(bad.value("state", ""), "unreadable") << bad.dump();
    EXPECT_NE(bad.value("reason", "").find(std::string("etcd ") + key + " does not read as event"),
              std::string::npos)
        << bad.dump();
    const auto& missing = all[last + 1];
    EXPECT_EQ(missing.value("state", ""), "unreadable") << missing.dump();
    EXPECT_NE(missing.value("reason", "").find("etcd holds no event after seq"), std::string::npos)
        << missing.dump();
    bool web3 = false;
    for (std::size_t i = last + 2; i < all.size(); ++i)
        web3 = web3 ||
               (all[i].value("state", "") == "created" && all[i].value("deployable", "") == "web3");
    EXPECT_TRUE(web3) << "b journals on after the zone's last seq";
}

} // namespace
