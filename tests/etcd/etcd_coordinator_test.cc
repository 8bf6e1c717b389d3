// The etcd Coordinator (lib/cped/etcd_coordinator.h) on a real etcd: guarded put/erase/get
// under /pcloud/, refused when not leading, and a higher epoch after a handover; and a write
// made while etcd elects a new raft leader, which is applied once etcd has one.
#include "common/clock.h"
#include "cped/etcd_coordinator.h"
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <csignal>

using namespace pcloud;
using namespace pcloud::cped;
using namespace std::chrono_literals;

namespace {

TEST(EtcdCoordinator, GuardedWritesUnderPcloudAndHandover) {
    etcdtest::EtcdCluster etcd{1};
    ASSERT_EQ(etcd.start(), "");
    SystemClock clock;
    auto a = makeEtcdCoordinator({etcd.url(), "a"}, clock);
    auto b = makeEtcdCoordinator({etcd.url(), "b"}, clock);
    ASSERT_TRUE(a.ok()) << a.error().message;
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*a)->campaign().ok());
    ASSERT_TRUE(testsupport::waitFor([&] { return (*a)->isLeader(); }, 5s, 20ms));
    ASSERT_TRUE((*b)->campaign().ok());
    ASSERT_TRUE(
        testsupport::waitFor([&] { return (*b)->leadership().leader_name == "a"; }, 5s, 20ms));
    ASSERT_TRUE((*a)->put("model/web", "v1").ok());
    EXPECT_EQ(*(*b)->get("model/web").value(), "v1") << "any node reads";
    auto refused = (*b)->put("model/web", "v2");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().message.rfind("not-leader", 0), 0u) << refused.error().message;
    EXPECT_FALSE((*a)->put("leader/x", "1").ok()) << "the election prefix is not writable";
    auto raw = etcd::Client::create(etcd::ClientOptions{etcd.endpoints(), 1000, 500});
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ((*raw)->range("/pcloud/model/web")->kvs.at(0).value, "v1");

    auto epochA = (*a)->epoch();
    (*a)->resign();
    ASSERT_TRUE(testsupport::waitFor([&] { return (*b)->isLeader(); }, 3s, 10ms));
    EXPECT_GT((*b)->epoch(), epochA);
    EXPECT_FALSE((*a)->put("model/web", "late").ok());
    ASSERT_TRUE((*b)->put("model/web", "v2").ok());
    ASSERT_TRUE((*b)->erase("model/web").ok());
    EXPECT_FALSE((*a)->get("model/web").value().has_value());
}

// etcd's raft leader stops (SIGSTOP) under cped's first endpoint: the write's first call
// times out there, the two others have no leader for one to two election timeouts (1 s
// default), and the write is sent again within the same term until it is applied once.
// The lease's TTL (10 s) outlasts the election, so the term does.
TEST(EtcdCoordinator, AWriteDuringAnEtcdLeaderElectionIsAppliedOnceEtcdHasALeader) {
    etcdtest::EtcdCluster etcd{3};
    ASSERT_EQ(etcd.start(), "");
    int lead = -1;
    ASSERT_TRUE(testsupport::waitFor([&] { return (lead = etcd.leaderIndex()) >= 0; }, 10s, 100ms));
    std::string url = "etcd://" + etcd.member(lead).endpoint();
    for (int i = 0; i < etcd.size(); ++i)
        if (i != lead)
            url += "," + etcd.member(i).endpoint();
    SystemClock clock;
    auto a = makeEtcdCoordinator({url, "a"}, clock, 10);
    ASSERT_TRUE(a.ok()) << a.error().message;
    ASSERT_TRUE((*a)->campaign().ok());
    ASSERT_TRUE(testsupport::waitFor([&] { return (*a)->isLeader(); }, 5s, 20ms));
    const auto epoch = (*a)->epoch();
    ASSERT_TRUE((*a)->put("model/web", "v1").ok());

    etcd.signal(lead, SIGSTOP);
    auto st = (*a)->put("model/web", "v2");
    etcd.signal(lead, SIGCONT);
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_EQ((*a)->epoch(), epoch) << "the same term";
    auto raw = etcd::Client::create(etcd::ClientOptions{etcd.endpoints(), 2000, 500});
    ASSERT_TRUE(raw.ok());
    auto got = (*raw)->range("/pcloud/model/web");
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(got->kvs.at(0).value, "v2");
    (*a)->resign();
}

} // namespace
