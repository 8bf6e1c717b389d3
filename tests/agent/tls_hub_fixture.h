#pragma once
// A TLS + authz hub standing in for cped's, for the agent tests that run a real agent over
// amqps (agent_tls_test, agent_forgery_test): a fresh PKI in a temp dir with the hub's
// cped:hub, dped:web and the agents' certificates, deployable "web" owning `assemblies`,
// and the test's own bus client presenting dped:web, subscribed to one assembly's reports.
#include "bus/client.h"
#include "bus/hub.h"
#include "pki/identity.h"
#include "pki/pki.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pcloud::agenttest {

class TlsHubFixture : public ::testing::Test {
protected:
    // Call from SetUp(): `tmpl` names the temp dir ("/tmp/pcloud-agent-x-XXXXXX"), every
    // assembly gets an agent:NAME certificate, `reportsOf`'s reports are collected.
    void startHub(std::string tmpl, const std::vector<std::string>& assemblies,
                  const std::string& reportsOf) {
        using namespace std::chrono_literals;
        dir_ = ::mkdtemp(tmpl.data());
        pki_ = dir_ + "/pki";
        ASSERT_TRUE(pki::initCa(pki_));
        std::vector<std::string> ids = {"cped:hub", "dped:web"};
        for (const auto& a : assemblies)
            ids.push_back("agent:" + a);
        for (const auto& id : ids)
            ASSERT_TRUE(pki::issue(pki_, *pki::parseIdentity(id))) << id;
        bus::HubOptions o;
        o.tls = {pki_ + "/ca.crt", pki_ + "/cped.hub.crt", pki_ + "/cped.hub.key", ""};
        std::set<std::string> owned(assemblies.begin(), assemblies.end());
        o.authz.ownsAssembly = [owned](const std::string& d, const std::string& a) {
            return d == "web" && owned.count(a) > 0;
        };
        hub_ = std::make_unique<bus::Hub>(o);
        ASSERT_TRUE(hub_->start("amqps://127.0.0.1:0"));
        url_ = "amqps://127.0.0.1:" + std::to_string(hub_->boundPort());
        bus::ClientOptions co;
        co.url = url_;
        co.caFile = pki_ + "/ca.crt";
        co.certFile = pki_ + "/dped.web.crt";
        co.keyFile = pki_ + "/dped.web.key";
        ASSERT_TRUE(dped_.connect(co));
        ASSERT_TRUE(dped_.waitConnected(10s));
        auto sub = dped_.subscribe("pcloud.reports." + reportsOf, [this](const bus::Message& m) {
            std::lock_guard lock(mu_);
            reports_.push_back(m.body);
        });
        ASSERT_TRUE(dped_.waitSubscribed(sub, 10s));
    }
    void stopHub() {
        dped_.close();
        if (hub_)
            hub_->stop();
        if (!dir_.empty())
            std::system(("rm -rf " + dir_).c_str());
    }
    std::vector<std::string> reports() {
        std::lock_guard lock(mu_);
        return reports_;
    }

    std::string dir_, pki_, url_;
    std::unique_ptr<bus::Hub> hub_;
    bus::Client dped_;
    std::mutex mu_;
    std::vector<std::string> reports_;
};

} // namespace pcloud::agenttest
