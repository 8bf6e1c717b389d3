#pragma once
// Fakes of the hypervisor, the bus and the host watchers for the dped reactor tests.
#include "dped/ports.h"
#include "virt/guest_xml.h"
#include "virt/hypervisor.h"

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace pcloud::dped::testfakes {

using nlohmann::json;

class FakeHv : public virt::Hypervisor {
public:
    std::map<std::string, virt::DomainState> domains;
    std::vector<std::string> calls;
    std::string reject; // defineAndStart fails with this message when set
    pid_t next_pid = 1000;
    std::map<std::string, pid_t> pids;

    Result<virt::DomainInfo> lookup(const std::string& name) override {
        virt::DomainInfo i;
        i.name = name;
        auto it = domains.find(name);
        i.state = it == domains.end() ? virt::DomainState::Missing : it->second;
        return i;
    }
    Result<virt::DomainInfo> defineAndStart(const std::string& xml) override {
        auto n = virt::domainNameOf(xml).value_or("?");
        calls.push_back("start " + n);
        if (!reject.empty())
            return makeError(reject);
        domains[n] = virt::DomainState::Running;
        pids[n] = next_pid++;
        last_xml = xml;
        return lookup(n);
    }
    Result<virt::DomainInfo> createTransient(const std::string& xml) override {
        return defineAndStart(xml);
    }
    Status start(const std::string& name) override { return Status::success(); }
    Status destroy(const std::string& name) override {
        calls.push_back("destroy " + name);
        if (domains.count(name))
            domains[name] = virt::DomainState::Shutoff;
        return Status::success();
    }
    // A cooperative guest shuts off at once; with `ignore_shutdown` it keeps running.
    bool ignore_shutdown = false;
    Status shutdown(const std::string& name) override {
        calls.push_back("shutdown " + name);
        if (domains.count(name) && !ignore_shutdown)
            domains[name] = virt::DomainState::Shutoff;
        return Status::success();
    }
    Status undefine(const std::string& name) override { return Status::success(); }
    Result<pid_t> qemuPid(const std::string& name) override {
        auto it = pids.find(name);
        if (it == pids.end())
            return makeError("no pid");
        return it->second;
    }
    void setListener(virt::HypervisorListener*) override {}
    std::string last_xml;
};

class FakeBus : public dped::Messenger {
public:
    std::vector<std::pair<std::string, std::string>> sent;
    std::map<std::string, std::function<void(const bus::Message&)>> subs;
    Status send(const std::string& a, const std::string& b, const bus::Properties&) override {
        sent.emplace_back(a, b);
        return Status::success();
    }
    void subscribe(const std::string& a, std::function<void(const bus::Message&)> cb) override {
        subs[a] = std::move(cb);
    }
    struct Reply {
        std::string reply_to, correlation_id;
        json body;
    };
    std::vector<Reply> replies;
    Status reply(const std::string& to, const std::string& cid, const std::string& b) override {
        replies.push_back({to, cid, json::parse(b)});
        return Status::success();
    }
    std::vector<json> events() const {
        std::vector<json> out;
        for (const auto& [a, b] : sent)
            if (a == "pcloud.journal")
                out.push_back(json::parse(b));
        return out;
    }
    std::vector<json> to(const std::string& addr) const {
        std::vector<json> out;
        for (const auto& [a, b] : sent)
            if (a == addr)
                out.push_back(json::parse(b));
        return out;
    }
};

class FakeWatch : public dped::HostWatch {
public:
    std::map<std::string, pid_t> pids;
    std::map<std::string, std::string> channels;
    void watchPid(const std::string& a, pid_t p) override { pids[a] = p; }
    void unwatchPid(const std::string& a) override { pids.erase(a); }
    std::map<std::string, std::vector<std::string>> channel_keys;
    void ensureChannel(const std::string& a, const std::string& s,
                       const std::vector<std::string>& keys) override {
        channels[a] = s;
        channel_keys[a] = keys;
    }
    std::set<pid_t> stopped; // qemu pids that are SIGSTOPped
    int stop_checks = 0;
    std::optional<bool> processStopped(pid_t p) override {
        ++stop_checks;
        return stopped.count(p) > 0;
    }
    // Run-queue wait per qemu pid, ns, for its one thread (tid = pid); absent: unknown.
    std::map<pid_t, std::uint64_t> run_queue_wait_ns;
    std::optional<std::map<pid_t, std::uint64_t>> runQueueWaits(pid_t p) override {
        auto it = run_queue_wait_ns.find(p);
        if (it == run_queue_wait_ns.end())
            return std::nullopt;
        return std::map<pid_t, std::uint64_t>{{p, it->second}};
    }
};

} // namespace pcloud::dped::testfakes
