// Epoch fencing from cped to its dpeds (docs/ha.md "Epoch fencing"), with real processes and
// no QEMU: the real cped (amqps:// hub, certificates from lib/pki, the single-node
// coordinator) starts the real dped on libvirt's test driver; pcloudsh drives cped.
//   1. cped starts the dped with --epoch = its leadership epoch (STATE/epoch), and the dped
//      runs with it (its status says so);
//   2. cped stops, the dped keeps running; the next cped (epoch + 1) adopts it and raises
//      its epoch with the "epoch" request, without restarting it;
//   3. a lower epoch is refused by the dped naming both numbers; an operator cannot send to
//      the dped's queue at all (the hub refuses the link).
// Every wait polls up to a deadline.
#include "bus/client.h"
#include "common/fs.h"
#include "common/lock_file.h"
#include "pki/pki.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <optional>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;
using nlohmann::json;
using testsupport::runCommand;
using testsupport::waitFor;

namespace {

std::string text(const std::string& path) {
    auto t = fs::readFile(path);
    return t ? *t : std::string();
}

bool alive(pid_t pid) {
    return pid > 0 && ::kill(pid, 0) == 0;
}

class CpedEpoch : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-cped-epoch-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        pki_ = dir_ + "/pki";
        state_ = dir_ + "/state";
        conf_ = dir_ + "/pcloud.conf";
        log_ = dir_ + "/cped.log";
        port_ = testsupport::freePort();
        ASSERT_TRUE(pki::initCa(pki_).ok());
        for (const char* id : {"cped:test", "operator:alice"})
            ASSERT_TRUE(pki::issue(pki_, *pki::parseIdentity(id)).ok()) << id;
        ASSERT_TRUE(
            fs::writeAtomic(conf_, "pki_dir = " + pki_ + "\ncped_name = test\n", {}, 0644).ok());
        ASSERT_TRUE(fs::writeAtomic(dir_ + "/n1.xml",
                                    "<domain type='test'><name>n1</name><memory "
                                    "unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n",
                                    {}, 0644)
                        .ok());
    }
    void TearDown() override {
        stopCped();
        if (pid_t d = dpedPid(); alive(d)) {
            ::kill(d, SIGCONT); // a failed test may have left it stopped
            ::kill(d, SIGTERM);
            waitFor([&] { return !alive(d); }, 10s);
        }
        if (!HasFailure())
            std::filesystem::remove_all(dir_);
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(port_); }
    void startCped(const std::vector<std::string>& extra = {}) {
        std::vector<std::string> args = {"cped",   "--state-dir", state_, "--listen",
                                         url(),    "--config",    conf_,  "--dped-path",
                                         DPED_BIN, "--log-level", "info"};
        args.insert(args.end(), extra.begin(), extra.end());
        cped_ = testsupport::spawnLogged(CPED_BIN, args, log_ + "." + std::to_string(++runs_));
        ASSERT_GT(cped_, 0);
        ASSERT_TRUE(waitFor([&] { return sh("deployable_list").rc == 0; }, 20s)) << log();
    }
    int stopCped() {
        if (cped_ <= 0)
            return -1;
        ::kill(cped_, SIGTERM);
        int ws = 0;
        ::waitpid(cped_, &ws, 0);
        cped_ = -1;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    }
    testsupport::CommandResult sh(const std::string& args) {
        return runCommand(std::string(PCLOUDSH_BIN) + " --broker " + url() + " --config " + conf_ +
                          " --timeout 3 " + args + " 2>&1");
    }
    // Every cped run's log (its dpeds write to the log of the cped that started them).
    std::string log() const {
        std::string all;
        for (int i = 1; i <= runs_; ++i)
            all += text(log_ + "." + std::to_string(i));
        return all;
    }
    // The dped holding the deployable's lock now; 0 when none does. Never the pid text alone:
    // pids wrap quickly (pid_max 32768 here), and a dead dped's pid may be anyone's by now.
    pid_t dpedPid() const { return LockFile::holder(state_ + "/dped-web.lock").value_or(0); }
    std::uint64_t coordinatorEpoch() const {
        return std::strtoull(text(state_ + "/epoch").c_str(), nullptr, 10);
    }
    std::string dpedArgs(pid_t pid) const {
        auto a = text("/proc/" + std::to_string(pid) + "/cmdline");
        for (auto& c : a)
            if (c == '\0')
                c = ' ';
        return a;
    }
    // A client of the current hub as `who` (a file name stem in the PKI dir).
    std::unique_ptr<bus::Client> client(const std::string& who) {
        auto c = std::make_unique<bus::Client>();
        bus::ClientOptions o;
        o.url = url();
        o.caFile = pki_ + "/ca.crt";
        o.certFile = pki_ + "/" + who + ".crt";
        o.keyFile = pki_ + "/" + who + ".key";
        EXPECT_TRUE(c->connect(o).ok());
        EXPECT_TRUE(c->waitConnected(10s));
        return c;
    }
    // A request to the dped signed as cped:test at `signEpoch` (default: the epoch the current
    // cped leads with), as cped sends it on a TLS bus.
    Result<json> ask(bus::Client& c, const std::string& command, const json& args = {},
                     std::optional<std::uint64_t> signEpoch = std::nullopt) {
        json body{{"v", 1},
                  {"type", "command"},
                  {"id", "t-" + command},
                  {"command", command},
                  {"args", args.is_null() ? json::object() : args}};
        auto signedBody =
            testsupport::signForDped(pki::clientFiles(pki_, {pki::Kind::Cped, "test"}), "web",
                                     body.dump(), signEpoch.value_or(coordinatorEpoch()));
        if (!signedBody)
            return signedBody.error();
        auto r = c.request("pcloud.dped.web", *signedBody, 3s);
        if (!r)
            return r.error();
        return json::parse(r->body);
    }
    // The dped's own epoch, from its status (0 when it does not answer).
    std::uint64_t dpedEpoch(bus::Client& c) {
        auto r = ask(c, "status");
        if (!r || !(*r)["ok"].get<bool>())
            return 0;
        return (*r)["result"].value("epoch", std::uint64_t{0});
    }

    // cped creates and starts deployable web (one test-driver domain): its dped runs.
    void startWeb() {
        for (const std::string& cmd :
             std::vector<std::string>{"deployable_create web --uri test:///default",
                                      "assembly_create n1 --domain-xml " + dir_ + "/n1.xml",
                                      "deployable_assembly_add web n1", "deployable_start web"}) {
            auto r = sh(cmd);
            ASSERT_EQ(r.rc, 0) << cmd << ": " << r.out << log();
        }
        ASSERT_TRUE(waitFor([&] { return alive(dpedPid()); }, 20s)) << log();
    }
    static std::size_t count(const std::string& haystack, const std::string& needle) {
        std::size_t n = 0;
        for (auto at = haystack.find(needle); at != std::string::npos;
             at = haystack.find(needle, at + 1))
            ++n;
        return n;
    }

    std::string dir_, pki_, state_, conf_, log_;
    int port_ = 0, runs_ = 0;
    pid_t cped_ = -1;
};

TEST_F(CpedEpoch, TheDpedStartsWithTheLeadersEpochAndIsRaisedWhenANewLeaderAdoptsIt) {
    startCped();
    const std::uint64_t first = coordinatorEpoch();
    ASSERT_GE(first, 1u) << text(state_ + "/epoch");
    ASSERT_NO_FATAL_FAILURE(startWeb());
    const pid_t dped = dpedPid();
    EXPECT_NE(dpedArgs(dped).find("--epoch " + std::to_string(first) + " "), std::string::npos)
        << dpedArgs(dped);
    auto asCped = client("cped.test");
    ASSERT_TRUE(waitFor([&] { return dpedEpoch(*asCped) == first; }, 20s)) << log();
    EXPECT_NE(log().find("Started dped deployable=web pid=" + std::to_string(dped)),
              std::string::npos)
        << log();

    // cped goes away; the dped stays. The next cped leads with a higher epoch and adopts it.
    asCped.reset();
    EXPECT_EQ(stopCped(), 0);
    ASSERT_TRUE(alive(dped));
    startCped();
    const std::uint64_t second = coordinatorEpoch();
    ASSERT_EQ(second, first + 1);
    asCped = client("cped.test");
    ASSERT_TRUE(waitFor([&] { return dpedEpoch(*asCped) == second; }, 20s)) << log();
    EXPECT_EQ(dpedPid(), dped); // the same process: adopted and raised, not restarted
    const std::string raised = "Leadership epoch raised; the next commands carry it "
                               "deployable=web from=" +
                               std::to_string(first) + " to=" + std::to_string(second);
    EXPECT_NE(log().find(raised), std::string::npos) << log();
    EXPECT_NE(log().find("dped runs with this leader's epoch deployable=web pid=" +
                         std::to_string(dped) + " epoch=" + std::to_string(second)),
              std::string::npos)
        << log();
    EXPECT_NE(log().find("Adopted a running dped deployable=web pid=" + std::to_string(dped)),
              std::string::npos)
        << log();

    // An older leader's raise (signed at its epoch) is refused with both numbers; the epoch
    // stays. So is any other request of that leader.
    for (const char* command : {"epoch", "stop"}) {
        auto lower = ask(*asCped, command, {{"epoch", first}}, first);
        ASSERT_TRUE(lower) << lower.error().describe();
        EXPECT_FALSE((*lower)["ok"].get<bool>()) << *lower;
        EXPECT_EQ((*lower)["error"]["code"], "stale-epoch");
        // Both numbers named (by the envelope check: the new cped is also cped:test).
        const std::string why = (*lower)["error"].value("message", "");
        EXPECT_EQ(why.rfind("stale epoch " + std::to_string(first) + ": ", 0), 0u) << why;
        EXPECT_NE(why.find("accepted epoch " + std::to_string(second)), std::string::npos) << why;
    }
    EXPECT_EQ(dpedEpoch(*asCped), second);

    // Nobody but cped may send to the dped's queue: an operator's request gets no link.
    auto asOperator = client("operator.alice");
    auto forged = ask(*asOperator, "epoch", {{"epoch", second + 100}});
    EXPECT_FALSE(forged.ok());
    EXPECT_EQ(dpedEpoch(*asCped), second);
    EXPECT_TRUE(alive(dped));
}

// The new cped's first requests go unanswered (the adopted dped is SIGSTOPped): it keeps
// asking, says so once, and the dped takes the epoch as soon as it runs again.
TEST_F(CpedEpoch, AnAdoptedDpedThatDoesNotAnswerYetIsAskedAgainUntilItTakesTheEpoch) {
    startCped();
    ASSERT_NO_FATAL_FAILURE(startWeb());
    const pid_t dped = dpedPid();
    EXPECT_EQ(stopCped(), 0);
    ASSERT_EQ(::kill(dped, SIGSTOP), 0);
    startCped({"--dped-timeout", "500ms"});
    const std::uint64_t second = coordinatorEpoch();
    const std::string waiting = "dped did not confirm this leader's epoch yet; asking again "
                                "deployable=web epoch=" +
                                std::to_string(second);
    bool warned = waitFor([&] { return log().find(waiting) != std::string::npos; }, 20s);
    ::kill(dped, SIGCONT);
    ASSERT_TRUE(warned) << log();
    const std::string confirmed =
        "dped runs with this leader's epoch deployable=web pid=" + std::to_string(dped) +
        " epoch=" + std::to_string(second);
    ASSERT_TRUE(waitFor([&] { return log().find(confirmed) != std::string::npos; }, 20s)) << log();
    auto asCped = client("cped.test");
    EXPECT_EQ(dpedEpoch(*asCped), second);
    EXPECT_EQ(dpedPid(), dped);
    EXPECT_EQ(count(log(), "dped did not confirm this leader's epoch yet"), 1u) << log();
}

// An event dped sent while cped was stopped, and that the hub took before cped was killed,
// is journaled by the next cped (dped keeps it until cped answers), and once only: a copy
// sent again because cped was too slow to answer is recognised (found by pcloud-cts, seed
// 20261202: an event was lost with the embedded hub's queue at a cped kill).
TEST_F(CpedEpoch, AnEventTheHubTookBeforeCpedDiedIsJournaledOnceByTheNextCped) {
    startCped();
    ASSERT_NO_FATAL_FAILURE(startWeb());
    const pid_t dped = dpedPid();
    const std::string journal = state_ + "/events.jsonl";
    auto reloads = [&] { return count(text(journal), "\"state\":\"reloaded\""); };
    ASSERT_TRUE(
        waitFor([&] { return text(journal).find("dped-started") != std::string::npos; }, 20s))
        << log();
    ASSERT_EQ(reloads(), 0u);

    // cped (and its hub) stop; dped reloads and sends its "reloaded" event into the hub's
    // socket; cped is killed before it ever reads it.
    ASSERT_EQ(::kill(cped_, SIGSTOP), 0);
    ASSERT_EQ(::kill(dped, SIGHUP), 0);
    ASSERT_TRUE(waitFor([&] { return log().find("Model reloaded") != std::string::npos; }, 20s))
        << log();
    ASSERT_EQ(::kill(cped_, SIGKILL), 0);
    ::waitpid(cped_, nullptr, 0);
    cped_ = -1;
    startCped();
    ASSERT_TRUE(waitFor([&] { return reloads() == 1; }, 30s)) << log();
    EXPECT_EQ(dpedPid(), dped);
    auto line = text(journal);
    EXPECT_NE(line.find("\"source\":\"dped-web-" + std::to_string(dped) + "-"), std::string::npos)
        << line;

    // cped stops long enough for dped's request to time out: dped sends the event again, and
    // the resumed cped journals the first copy and answers the second without journaling it.
    // (Counted, not searched after an offset: the adopted dped still writes to the first
    // cped's log, which log() puts before the second's.)
    const std::string resentLine = "No answer from cped to an event; sending it again";
    const std::string resubmitLine = "Submitting the events cped has not journaled yet";
    const std::string dupLine = "A journal submission came again; answered, not journaled again";
    const std::size_t resentBefore = count(log(), resentLine) + count(log(), resubmitLine);
    const std::size_t dupBefore = count(log(), dupLine);
    ASSERT_EQ(::kill(cped_, SIGSTOP), 0);
    ASSERT_EQ(::kill(dped, SIGHUP), 0);
    bool resent = waitFor(
        [&] { return count(log(), resentLine) + count(log(), resubmitLine) > resentBefore; }, 30s);
    ::kill(cped_, SIGCONT);
    ASSERT_TRUE(resent) << log();
    ASSERT_TRUE(waitFor([&] { return count(log(), dupLine) > dupBefore; }, 30s)) << log();
    EXPECT_EQ(reloads(), 2u) << text(journal);
}

// Bad journal submissions, sent as the deployable's dped would: a body that is not an event
// gets a refusal naming what is wrong; an event for another deployable gets no answer (the
// sender may not submit it). Neither reaches the journal.
TEST_F(CpedEpoch, ABadJournalSubmissionIsRefusedWithAReasonAndJournalsNothing) {
    startCped();
    ASSERT_NO_FATAL_FAILURE(startWeb());
    const std::string journal = state_ + "/events.jsonl";
    ASSERT_TRUE(
        waitFor([&] { return text(journal).find("dped-started") != std::string::npos; }, 20s));
    auto asDped = client("dped.web"); // cped issued it for the dped it started
    const std::string before = text(journal);

    auto garbage = asDped->request("pcloud.journal", "{not json", 3s);
    ASSERT_TRUE(garbage) << garbage.error().describe();
    auto g = json::parse(garbage->body);
    EXPECT_FALSE(g["ok"].get<bool>()) << g;
    EXPECT_EQ(g["error"]["code"], "bad-event");
    EXPECT_NE(g["error"]["message"].get<std::string>().find("JSON event"), std::string::npos) << g;

    auto noState = asDped->request(
        "pcloud.journal",
        R"({"v":1,"type":"event","deployable":"web","source":"t","source_seq":1})", 3s);
    ASSERT_TRUE(noState) << noState.error().describe();
    auto n = json::parse(noState->body);
    EXPECT_FALSE(n["ok"].get<bool>()) << n;
    EXPECT_NE(n["error"]["message"].get<std::string>().find("\"state\""), std::string::npos) << n;

    auto otherDeployable = asDped->request(
        "pcloud.journal",
        R"({"v":1,"type":"event","deployable":"db","state":"failed","source":"t","source_seq":2})",
        2s);
    EXPECT_FALSE(otherDeployable.ok()) << "dped:web may not journal for db";

    // A good one from the same sender is journaled, so the refusals above were not silence.
    auto good = asDped->request(
        "pcloud.journal",
        R"({"v":1,"type":"event","deployable":"web","state":"probe-ok","source":"t","source_seq":3})",
        3s);
    ASSERT_TRUE(good) << good.error().describe();
    EXPECT_TRUE(json::parse(good->body)["ok"].get<bool>()) << good->body;
    auto after = text(journal);
    ASSERT_EQ(after.compare(0, before.size(), before), 0) << "the journal was rewritten";
    auto added = after.substr(before.size());
    // (Only this test's source: the dped may journal its own events meanwhile.)
    EXPECT_EQ(count(added, "\"source\":\"t\""), 1u) << added;
    EXPECT_NE(added.find("probe-ok"), std::string::npos) << added;
}

} // namespace
