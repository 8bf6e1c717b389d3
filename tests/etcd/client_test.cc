// The etcd client (lib/etcd/client.h) against a real etcd 3.4 started by the test.
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <chrono>

using namespace pcloud;
using namespace pcloud::etcd;
using pcloud::etcdtest::EtcdCluster;

namespace {

class EtcdClient : public ::testing::Test {
protected:
    void SetUp() override {
        auto err = cluster_.start();
        ASSERT_EQ(err, "") << err;
        auto c = Client::create(ClientOptions{cluster_.endpoints(), 2000, 1000});
        ASSERT_TRUE(c.ok()) << c.error().message;
        client_ = std::move(*c);
    }
    EtcdCluster cluster_{1};
    std::unique_ptr<Client> client_;
};

TEST(EtcdEndpoints, Parse) {
    auto e = parseEndpoints("etcd://h1:2379,http://h2:2380/");
    ASSERT_TRUE(e.ok()) << e.error().message;
    EXPECT_EQ(e->addresses, (std::vector<std::string>{"h1:2379", "h2:2380"}));
    EXPECT_FALSE(e->tls);
    auto bad = parseEndpoints("etcd://h1:2379,h2");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("'h2'"), std::string::npos) << bad.error().message;
    EXPECT_FALSE(parseEndpoints("etcd://").ok());
    EXPECT_FALSE(parseEndpoints("etcd://h1:23x9").ok());
    EXPECT_FALSE(parseEndpoints("etcd://ftp://h1:2379").ok());
}

// etcds:// (or https:// on each element) asks for TLS; a spec that mixes the two is refused,
// naming it, rather than sending some members plain text.
TEST(EtcdEndpoints, TlsSchemesAndMixing) {
    for (const char* spec : {"etcds://h1:2379,h2:2379", "https://h1:2379,https://h2:2379",
                             "etcds://h1:2379,https://h2:2379/"}) {
        auto e = parseEndpoints(spec);
        ASSERT_TRUE(e.ok()) << spec << ": " << e.error().message;
        EXPECT_TRUE(e->tls) << spec;
        EXPECT_EQ(e->addresses, (std::vector<std::string>{"h1:2379", "h2:2379"})) << spec;
    }
    for (const char* spec : {"etcds://h1:2379,http://h2:2379", "etcd://h1:2379,https://h2:2379",
                             "https://h1:2379,http://h2:2379"}) {
        auto e = parseEndpoints(spec);
        ASSERT_FALSE(e.ok()) << spec;
        EXPECT_NE(e.error().message.find("mix TLS (etcds://, https://) and plain"),
                  std::string::npos)
            << e.error().message;
        EXPECT_NE(e.error().message.find(spec), std::string::npos) << e.error().message;
    }
}

TEST_F(EtcdClient, PutGetDeletePrefix) {
    auto r1 = client_->put("/pcloud/t/a", "1");
    ASSERT_TRUE(r1.ok()) << r1.error().message;
    ASSERT_TRUE(client_->put("/pcloud/t/b", "2").ok());
    ASSERT_TRUE(client_->put("/pcloud/u", "3").ok());
    auto g = client_->range("/pcloud/t/a");
    ASSERT_TRUE(g.ok()) << g.error().message;
    ASSERT_EQ(g->kvs.size(), 1u);
    EXPECT_EQ(g->kvs[0].value, "1");
    EXPECT_EQ(g->kvs[0].create_revision, *r1);
    auto p = client_->range("/pcloud/t/", true);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p->kvs.size(), 2u);
    EXPECT_EQ(p->kvs[1].key, "/pcloud/t/b");
    auto d = client_->del("/pcloud/t/", true);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, 2);
    EXPECT_TRUE(client_->range("/pcloud/t/", true)->kvs.empty());
    EXPECT_EQ(client_->range("/pcloud/u")->kvs.size(), 1u);
}

TEST_F(EtcdClient, RangeBetweenKeysWithALimitSaysWhetherThereIsMore) {
    for (const char* k : {"/pcloud/r/1", "/pcloud/r/2", "/pcloud/r/3", "/pcloud/r/4"})
        ASSERT_TRUE(client_->put(k, k).ok());
    auto two = client_->rangeBetween("/pcloud/r/2", "/pcloud/r/4", 0);
    ASSERT_TRUE(two.ok()) << two.error().message;
    ASSERT_EQ(two->kvs.size(), 2u) << "the end is not included";
    EXPECT_EQ(two->kvs[0].key, "/pcloud/r/2");
    EXPECT_EQ(two->kvs[1].key, "/pcloud/r/3");
    EXPECT_FALSE(two->more);
    auto one = client_->rangeBetween("/pcloud/r/", "/pcloud/r0", 1);
    ASSERT_TRUE(one.ok());
    ASSERT_EQ(one->kvs.size(), 1u);
    EXPECT_EQ(one->kvs[0].value, "/pcloud/r/1");
    EXPECT_TRUE(one->more);
}

TEST_F(EtcdClient, TxnComparesCreateRevision) {
    Txn create;
    create.compare.push_back(Compare::createRevision("/pcloud/k", 0));
    create.success.push_back(Op::put("/pcloud/k", "first"));
    create.failure.push_back(Op::get("/pcloud/k"));
    auto t1 = client_->txn(create);
    ASSERT_TRUE(t1.ok()) << t1.error().message;
    EXPECT_TRUE(t1->succeeded);
    auto t2 = client_->txn(create);
    ASSERT_TRUE(t2.ok());
    EXPECT_FALSE(t2->succeeded);
    ASSERT_EQ(t2->gets.size(), 1u);
    ASSERT_EQ(t2->gets[0].kvs.size(), 1u);
    EXPECT_EQ(t2->gets[0].kvs[0].value, "first");
    EXPECT_EQ(t2->gets[0].kvs[0].create_revision, t1->revision);
}

TEST_F(EtcdClient, LeaseGrantKeepAliveRevoke) {
    auto l = client_->leaseGrant(2);
    ASSERT_TRUE(l.ok()) << l.error().message;
    EXPECT_EQ(l->ttl_s, 2);
    ASSERT_TRUE(client_->put("/pcloud/leased", "x", l->id).ok());
    auto ka = client_->keepAlive();
    ASSERT_TRUE(ka.ok()) << ka.error().message;
    ASSERT_TRUE((*ka)->send(l->id));
    auto rep = (*ka)->next(2000);
    ASSERT_TRUE(rep.has_value()) << (*ka)->error();
    EXPECT_EQ(rep->id, l->id);
    EXPECT_EQ(rep->ttl_s, 2);
    auto ttl = client_->leaseTimeToLive(l->id);
    ASSERT_TRUE(ttl.ok()) << ttl.error().message;
    EXPECT_GE(*ttl, 1);
    ASSERT_TRUE(client_->leaseRevoke(l->id).ok());
    EXPECT_TRUE(client_->range("/pcloud/leased")->kvs.empty()) << "revoke deletes the key";
    EXPECT_EQ(*client_->leaseTimeToLive(l->id), -1);
    ASSERT_TRUE((*ka)->send(l->id));
    auto gone = (*ka)->next(2000);
    ASSERT_TRUE(gone.has_value());
    EXPECT_LE(gone->ttl_s, 0) << "a keep-alive of a revoked lease answers TTL 0";
}

TEST_F(EtcdClient, LeaseExpiresWithoutKeepAlive) {
    auto l = client_->leaseGrant(1); // etcd raises it to its minimum (2 s with defaults)
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->ttl_s, 2);
    ASSERT_TRUE(client_->put("/pcloud/leased", "x", l->id).ok());
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(testsupport::waitFor([&] { return client_->range("/pcloud/leased")->kvs.empty(); },
                                     std::chrono::seconds(6), std::chrono::milliseconds(50)));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    EXPECT_GE(ms, 1500) << "the key must outlive most of the TTL";
}

TEST_F(EtcdClient, WatchSeesPutsAndDeletes) {
    auto w = client_->watch("/pcloud/w/", true, 0);
    ASSERT_TRUE(w.ok()) << w.error().message;
    ASSERT_TRUE(client_->put("/pcloud/w/a", "1").ok());
    ASSERT_TRUE(client_->put("/pcloud/other", "1").ok());
    ASSERT_TRUE(client_->del("/pcloud/w/a").ok());
    std::vector<WatchEvent> seen;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (seen.size() < 2 && std::chrono::steady_clock::now() < end) {
        if (auto b = (*w)->next(500))
            for (auto& e : b->events)
                seen.push_back(e);
    }
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].type, WatchEvent::Type::Put);
    EXPECT_EQ(seen[0].kv.key, "/pcloud/w/a");
    EXPECT_EQ(seen[1].type, WatchEvent::Type::Delete);
    EXPECT_FALSE((*w)->broken());
    // Watching from an old revision replays history.
    auto rev = client_->range("/pcloud/w/a")->revision;
    auto replay = client_->watch("/pcloud/w/", true, rev - 1);
    ASSERT_TRUE(replay.ok());
    auto b = (*replay)->next(2000);
    ASSERT_TRUE(b.has_value());
    EXPECT_FALSE(b->events.empty());
}

TEST_F(EtcdClient, StreamBreaksWhenEtcdDies) {
    auto w = client_->watch("/pcloud/", true, 0);
    ASSERT_TRUE(w.ok());
    cluster_.kill(0);
    ASSERT_TRUE(testsupport::waitFor([&] { return (*w)->broken(); }, std::chrono::seconds(5)));
    EXPECT_NE((*w)->error().find(cluster_.member(0).endpoint()), std::string::npos)
        << (*w)->error();
}

TEST(EtcdClientErrors, UnreachableNamesEndpointAndCall) {
    int port = testsupport::freePort(); // nothing listens there
    auto c = Client::create(ClientOptions{{"127.0.0.1:" + std::to_string(port)}, 1000, 500});
    ASSERT_TRUE(c.ok());
    auto start = std::chrono::steady_clock::now();
    auto r = (*c)->put("/pcloud/x", "1");
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("etcd 127.0.0.1:" + std::to_string(port) + ": Put: "),
              std::string::npos)
        << r.error().message;
    EXPECT_LE(ms, 1500) << "bounded by the call timeout";
}

TEST(EtcdClientFailover, SecondEndpointAnswersWhenFirstIsDown) {
    EtcdCluster one{1};
    auto err = one.start();
    ASSERT_EQ(err, "") << err;
    int dead = testsupport::freePort();
    auto c = Client::create(
        ClientOptions{{"127.0.0.1:" + std::to_string(dead), one.member(0).endpoint()}, 2000, 500});
    ASSERT_TRUE(c.ok());
    auto r = (*c)->put("/pcloud/f", "1");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ((*c)->currentEndpoint(), one.member(0).endpoint());
    one.kill(0);
    auto r2 = (*c)->range("/pcloud/f");
    ASSERT_FALSE(r2.ok());
    EXPECT_NE(r2.error().message.find("no etcd endpoint answered"), std::string::npos)
        << r2.error().message;
}

// A stream does not fail over by itself; once its user reports it broken, the next one
// opens on the endpoint after it (the election reopens its keep-alive this way).
TEST(EtcdClientFailover, AStreamReportedBrokenReopensOnTheNextEndpoint) {
    EtcdCluster one{1};
    auto err = one.start();
    ASSERT_EQ(err, "") << err;
    std::string dead = "127.0.0.1:" + std::to_string(testsupport::freePort());
    auto c = Client::create(ClientOptions{{dead, one.member(0).endpoint()}, 2000, 500});
    ASSERT_TRUE(c.ok());
    auto first = (*c)->keepAlive();
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ((*first)->endpoint(), dead);
    ASSERT_TRUE(testsupport::waitFor([&] { return (*first)->broken(); }, std::chrono::seconds(5)));

    (*c)->streamBroke((*first)->endpoint());
    EXPECT_EQ((*c)->currentEndpoint(), one.member(0).endpoint());
    // The lease from another client: a call of this one would fail over by itself.
    auto other = Client::create(ClientOptions{{one.member(0).endpoint()}, 2000, 500});
    ASSERT_TRUE(other.ok());
    auto lease = (*other)->leaseGrant(5);
    ASSERT_TRUE(lease.ok()) << lease.error().message;
    auto second = (*c)->keepAlive();
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ((*second)->endpoint(), one.member(0).endpoint());
    ASSERT_TRUE((*second)->send(lease->id));
    auto reply = (*second)->next(3000);
    ASSERT_TRUE(reply.has_value()) << (*second)->error();
    EXPECT_EQ(reply->id, lease->id);
    EXPECT_GT(reply->ttl_s, 0);

    // Reported again once another call has moved on: it stays where it is.
    (*c)->streamBroke(dead);
    EXPECT_EQ((*c)->currentEndpoint(), one.member(0).endpoint());
}

} // namespace
