#include "cped/etcd_coordinator.h"

#include "etcd/client.h"
#include "etcd/election.h"

#include <mutex>

namespace pcloud::cped {
namespace {

LeadershipInfo toInfo(const etcd::LeaderState& s, const std::string& node) {
    LeadershipInfo i;
    i.leader = s.leader;
    i.epoch = s.epoch;
    i.node = node;
    i.leader_name = s.leader_name;
    i.reason = s.reason;
    return i;
}

class EtcdCoordinator final : public Coordinator {
public:
    EtcdCoordinator(std::string url, std::string node, std::unique_ptr<etcd::Client> client,
                    const Clock& clock, std::int64_t ttl_s)
        : url_(std::move(url)), node_(std::move(node)), client_(std::move(client)) {
        etcd::ElectionOptions o;
        o.node_name = node_;
        o.ttl_s = ttl_s;
        election_ = std::make_unique<etcd::Election>(*client_, o, clock);
    }
    ~EtcdCoordinator() override { election_->stop(true); }

    Status campaign() override {
        election_->start();
        return Status::success();
    }
    void resign() override { election_->stop(true); }
    LeadershipInfo leadership() override { return toInfo(election_->state(), node_); }

    Status put(const std::string& key, const std::string& value) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        etcd::Txn t;
        t.success.push_back(etcd::Op::put(*full, value));
        auto r = election_->guardedTxn(std::move(t));
        if (!r)
            return r.error();
        return Status::success();
    }
    Status erase(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        etcd::Txn t;
        t.success.push_back(etcd::Op::del(*full));
        auto r = election_->guardedTxn(std::move(t));
        if (!r)
            return r.error();
        return Status::success();
    }
    Result<std::optional<std::string>> get(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        auto r = client_->range(*full);
        if (!r)
            return r.error();
        if (r->kvs.empty())
            return std::optional<std::string>{};
        return std::optional<std::string>{r->kvs[0].value};
    }
    void onLeadershipChange(std::function<void(const LeadershipInfo&)> cb) override {
        std::string node = node_;
        election_->onChange([cb = std::move(cb), node](const etcd::LeaderState& s) {
            if (cb)
                cb(toInfo(s, node));
        });
    }
    std::string describe() const override { return url_; }

private:
    std::string url_;
    std::string node_;
    std::unique_ptr<etcd::Client> client_;
    std::unique_ptr<etcd::Election> election_;
};

} // namespace

Result<std::unique_ptr<Coordinator>> makeEtcdCoordinator(const std::string& url,
                                                         const std::string& node_name,
                                                         const Clock& clock, std::int64_t ttl_s) {
    if (node_name.empty())
        return makeError("--cluster needs --node-name NAME (this node's name in the zone)");
    auto eps = etcd::parseEndpoints(url);
    if (!eps)
        return eps.error();
    auto client = etcd::Client::create(etcd::ClientOptions{*eps, 1000, 1000});
    if (!client)
        return client.error();
    return std::unique_ptr<Coordinator>(
        std::make_unique<EtcdCoordinator>(url, node_name, std::move(*client), clock, ttl_s));
}

} // namespace pcloud::cped
