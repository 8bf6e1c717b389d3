// The etcd Coordinator (lib/cped/etcd_coordinator.h) on a real etcd: guarded put/erase/get
// under /pcloud/, refused when not leading, and a higher epoch after a handover.
#include "common/clock.h"
#include "cped/etcd_coordinator.h"
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

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

} // namespace
