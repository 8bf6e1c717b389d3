// A candidate process for the election tests: campaigns, and while it believes it leads
// (as told by the election's change callback) makes one guarded write every
// --write-every-ms. Every line goes out with one write(2) at once, with the monotonic
// time, so a test reading the file knows what happened before and after a SIGSTOP:
//
//   state t=MS leader=1 epoch=E leader_name=N
//   attempt t=MS seq=S
//   write t=MS seq=S epoch=E result=ok|not-leader|stale-epoch|error detail=...
//   zombie t=MS epoch=E result=...     (--try-old-epoch: the old leadership's guard, once)
//
// Exits on SIGTERM (resigning) or SIGINT.
#include "common/clock.h"
#include "common/log.h"
#include "etcd/client.h"
#include "etcd/election.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

using namespace pcloud;

namespace {

std::atomic<bool> g_stop{false};
SystemClock g_clock;

void out(const std::string& line) {
    std::string l = line + "\n";
    (void)!::write(1, l.data(), l.size());
}

std::string t() {
    return "t=" + std::to_string(g_clock.monotonicMs());
}

std::string resultOf(const Error& e) {
    const std::string& m = e.message;
    if (m.rfind(etcd::kNotLeader, 0) == 0)
        return "not-leader";
    if (m.rfind(etcd::kStaleEpoch, 0) == 0)
        return "stale-epoch";
    return "error";
}

} // namespace

int main(int argc, char** argv) {
    std::string endpoints, name, prefix = "/pcloud/test/w/";
    long every = 100;
    std::int64_t ttl = 2;
    bool tryOld = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
        if (a == "--endpoints")
            endpoints = next();
        else if (a == "--name")
            name = next();
        else if (a == "--write-prefix")
            prefix = next();
        else if (a == "--write-every-ms")
            every = std::stol(next());
        else if (a == "--ttl")
            ttl = std::stol(next());
        else if (a == "--try-old-epoch")
            tryOld = true;
        else {
            out("usage error: unknown option " + a);
            return 2;
        }
    }
    log::setIdent("candidate[" + name + "]");
    auto eps = etcd::parseEndpoints(endpoints);
    if (!eps) {
        out("usage error: " + eps.error().message);
        return 2;
    }
    auto client = etcd::Client::create(etcd::ClientOptions{eps->addresses, 1000, 500});
    if (!client) {
        out("error: " + client.error().message);
        return 1;
    }
    etcd::ElectionOptions eo;
    eo.node_name = name;
    eo.ttl_s = ttl;
    etcd::Election election(**client, eo, g_clock);

    std::mutex m;
    bool believed = false;
    std::string lastKey;
    std::int64_t lastEpoch = 0;
    bool oldTried = true;
    election.onChange([&](const etcd::LeaderState& s) {
        std::lock_guard lock(m);
        believed = s.leader;
        if (s.leader) {
            lastKey = s.own_key;
            lastEpoch = s.epoch;
            oldTried = false;
        }
        out("state " + t() + " leader=" + (s.leader ? "1" : "0") +
            " epoch=" + std::to_string(s.epoch) +
            " leader_name=" + (s.leader_name.empty() ? "-" : s.leader_name));
    });
    std::signal(SIGTERM, [](int) { g_stop = true; });
    std::signal(SIGINT, [](int) { g_stop = true; });
    election.start();

    std::uint64_t seq = 0;
    while (!g_stop) {
        std::this_thread::sleep_for(std::chrono::milliseconds(every));
        bool act;
        std::string key;
        std::int64_t epoch;
        bool tryNow = false;
        {
            std::lock_guard lock(m);
            act = believed;
            key = lastKey;
            epoch = lastEpoch;
        }
        if (!act) {
            std::lock_guard lock(m);
            tryNow = tryOld && !oldTried && !key.empty();
            if (tryNow)
                oldTried = true;
        }
        if (tryNow) {
            // What a leader that skipped the local check would send: etcd must refuse it.
            etcd::Txn z;
            z.success.push_back(etcd::Op::put(prefix + name + "-zombie", name + " " + t()));
            auto zr = election.guardedTxnAs(key, epoch, z);
            out("zombie " + t() + " epoch=" + std::to_string(epoch) + " result=" +
                (zr ? "ok" : resultOf(zr.error())) + (zr ? "" : " detail=" + zr.error().message));
        }
        if (!act)
            continue;
        ++seq;
        out("attempt " + t() + " seq=" + std::to_string(seq));
        etcd::Txn txn;
        std::int64_t used = 0;
        txn.success.push_back(
            etcd::Op::put(prefix + name + "-" + std::to_string(seq), name + " " + t()));
        auto r = election.guardedTxn(txn, &used);
        std::string result = r ? "ok" : resultOf(r.error());
        out("write " + t() + " seq=" + std::to_string(seq) + " epoch=" + std::to_string(used) +
            " result=" + result + (r ? "" : " detail=" + r.error().message));
    }
    election.stop(true);
    out("exit " + t());
    return 0;
}
