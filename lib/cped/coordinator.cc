#include "cped/coordinator.h"
#include "common/utf8.h"
#include "etcd/errors.h"

#include "common/fs.h"
#include "common/log.h"

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

namespace pcloud::cped {

Result<std::string> coordinatorKey(const std::string& key) {
    if (key.empty())
        return makeError("empty coordinator key");
    if (key.size() > 512)
        return makeError("coordinator key longer than 512 bytes");
    for (unsigned char c : key)
        if (c < 0x21 || c > 0x7e)
            return makeError("coordinator key '" + key + "' has a space or control character");
    if (key.front() == '/' || key.find("..") != std::string::npos)
        return makeError("coordinator key '" + key + "' must be relative and without '..'");
    if (key.rfind("leader/", 0) == 0 || key == "leader")
        return makeError("coordinator key '" + key + "' is in the election's prefix");
    return "/pcloud/" + key;
}

namespace {

class LocalCoordinator final : public Coordinator {
public:
    LocalCoordinator(std::string dir, std::string node, std::int64_t epoch,
                     std::map<std::string, std::string> kv)
        : dir_(std::move(dir)), node_(std::move(node)), epoch_(epoch), kv_(std::move(kv)) {}

    Status campaign() override {
        std::function<void(const LeadershipInfo&)> cb;
        {
            std::lock_guard lock(mutex_);
            campaigning_ = true;
            cb = cb_;
        }
        PCLOUD_LOG(Notice, "Leadership acquired (single node)",
                   {{"node", node_}, {"epoch", std::to_string(epoch_)}});
        if (cb)
            cb(leadership());
        return Status::success();
    }
    void resign() override {
        std::lock_guard lock(mutex_);
        campaigning_ = false;
    }
    LeadershipInfo leadership() override {
        std::lock_guard lock(mutex_);
        LeadershipInfo i;
        i.node = node_;
        i.leader = campaigning_;
        i.epoch = campaigning_ ? epoch_ : 0;
        i.leader_name = campaigning_ ? node_ : "";
        i.reason = campaigning_ ? "" : "not campaigning";
        return i;
    }
    Status put(const std::string& key, const std::string& value) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        std::lock_guard lock(mutex_);
        if (!campaigning_)
            return makeError("not-leader: " + node_ + " is not campaigning");
        auto next = kv_;
        next[*full] = value;
        if (auto st = save(next); !st)
            return st;
        kv_ = std::move(next);
        return Status::success();
    }
    Status erase(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        std::lock_guard lock(mutex_);
        if (!campaigning_)
            return makeError("not-leader: " + node_ + " is not campaigning");
        auto next = kv_;
        next.erase(*full);
        if (auto st = save(next); !st)
            return st;
        kv_ = std::move(next);
        return Status::success();
    }
    Result<std::optional<std::string>> get(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        std::lock_guard lock(mutex_);
        auto it = kv_.find(*full);
        if (it == kv_.end())
            return std::optional<std::string>{};
        return std::optional<std::string>{it->second};
    }
    void onLeadershipChange(std::function<void(const LeadershipInfo&)> cb) override {
        std::lock_guard lock(mutex_);
        cb_ = std::move(cb);
    }
    std::string describe() const override { return "local " + dir_; }

private:
    Status save(const std::map<std::string, std::string>& kv) {
        nlohmann::json j = nlohmann::json::object();
        for (const auto& [k, v] : kv)
            j[k] = v;
        return fs::writeAtomic(dir_ + "/coordinator.json", j.dump(2) + "\n");
    }

    std::string dir_;
    std::string node_;
    std::int64_t epoch_;
    std::mutex mutex_;
    std::map<std::string, std::string> kv_;
    bool campaigning_ = false;
    std::function<void(const LeadershipInfo&)> cb_;
};

} // namespace

bool isUnansweredWrite(const Error& e) {
    const std::string& m = e.message;
    if (m.rfind("not-leader", 0) == 0 || m.rfind("stale-epoch", 0) == 0)
        return false;
    return m.find("DEADLINE_EXCEEDED") != std::string::npos ||
           m.find("UNAVAILABLE") != std::string::npos || etcd::memberCouldNotServe(m);
}

Status retryUnansweredWrite(const std::function<Status()>& attempt,
                            const std::function<bool()>& termLasts, const Clock& clock,
                            const std::function<void(Millis)>& pause, WriteRetry retry) {
    const Millis start = clock.monotonicMs();
    for (int n = 1;; ++n) {
        Status st = attempt();
        if (st || !isUnansweredWrite(st.error()))
            return st;
        const Millis spent = clock.monotonicMs() - start;
        std::string why;
        if (spent + retry.pause_ms > retry.budget_ms)
            why = "gave up after " + std::to_string(spent) + " ms";
        else if (!termLasts())
            why = "this cped's term ended meanwhile";
        if (!why.empty())
            return makeError(st.error().message + " (sent " + std::to_string(n) +
                             (n == 1 ? " time; " : " times; ") + why + ")");
        PCLOUD_LOG(Info, "etcd did not answer a write; sending it again",
                   {{"attempt", std::to_string(n)}, {"error", st.error().message}});
        pause(retry.pause_ms);
    }
}

Result<std::int64_t> readEpochFile(const std::string& path, const std::string& fix) {
    if (!fs::exists(path))
        return std::int64_t{0};
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    std::string t = *text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
        t.pop_back();
    std::size_t used = 0;
    std::int64_t n = 0;
    try {
        n = std::stoll(t, &used);
    } catch (...) {
        used = 0;
    }
    if (used == 0 || used != t.size() || n < 0)
        return makeError(
            "not a non-negative epoch number: '" + utf8Excerpt(t, 40) + "' (" + fix + ")", path, 1);
    return n;
}

Result<std::unique_ptr<Coordinator>> makeLocalCoordinator(const std::string& state_dir,
                                                          const std::string& node_name) {
    const std::string epochFile = state_dir + "/epoch";
    auto last = readEpochFile(epochFile, "fix or remove the file; the next start raises it by one");
    if (!last)
        return last.error();
    std::int64_t epoch = *last + 1;
    if (auto st = fs::writeAtomic(epochFile, std::to_string(epoch) + "\n"); !st)
        return st.error();
    std::map<std::string, std::string> kv;
    const std::string keysFile = state_dir + "/coordinator.json";
    if (fs::exists(keysFile)) {
        auto text = fs::readFile(keysFile);
        if (!text)
            return text.error();
        auto j = nlohmann::json::parse(*text, nullptr, false);
        if (j.is_discarded() || !j.is_object())
            return makeError("not a JSON object of keys (the file was not changed)", keysFile);
        for (const auto& [k, v] : j.items()) {
            if (!v.is_string())
                return makeError("key '" + k + "' does not have a string value", keysFile);
            kv[k] = v.get<std::string>();
        }
    }
    return std::unique_ptr<Coordinator>(
        std::make_unique<LocalCoordinator>(state_dir, node_name, epoch, std::move(kv)));
}

} // namespace pcloud::cped
