#include "support/test_tls.h"

namespace pcloud::testsupport {

std::string amqpsUrl(int port) {
    return "amqps://127.0.0.1:" + std::to_string(port);
}

TestTls::TestTls(std::string dir) : dir_(std::move(dir)) {}

Status TestTls::setUp(const std::string& cped, const std::string& op) {
    cped_ = cped;
    if (auto st = pki::initCa(dir_); !st)
        return st;
    for (const auto& id : {cpedIdentity(), pki::Identity{pki::Kind::Operator, op}})
        if (auto r = issue(id); !r)
            return r.error();
    return {};
}

pki::Identity TestTls::cpedIdentity() const {
    return {pki::Kind::Cped, cped_};
}

Result<pki::ClientFiles> TestTls::issue(const pki::Identity& id) {
    if (auto r = pki::ensureIssued(dir_, id); !r)
        return r.error();
    return pki::clientFiles(dir_, id);
}

std::string TestTls::hostConfig(const std::string& cped) const {
    return "pki_dir = " + dir_ + "\ncped_name = " + (cped.empty() ? cped_ : cped) + "\n";
}

Result<std::vector<std::string>> TestTls::busArgs(const pki::Identity& id) {
    auto f = issue(id);
    if (!f)
        return f.error();
    return std::vector<std::string>{"--bus-ca", f->ca, "--bus-cert", f->cert, "--bus-key", f->key};
}

bus::HubOptions TestTls::hubOptions() const {
    bus::HubOptions o;
    auto f = pki::clientFiles(dir_, cpedIdentity());
    o.tls = {f.ca, f.cert, f.key, pki::Paths{dir_}.revoked()};
    o.authz.ownsAssembly = [owners = owners_](const std::string& d, const std::string& a) {
        std::lock_guard lock(owners->mutex);
        auto it = owners->byDeployable.find(d);
        return it != owners->byDeployable.end() && it->second.count(a) > 0;
    };
    return o;
}

Status TestTls::startCpedHub(std::unique_ptr<bus::Hub>& hub, bus::Client& client) const {
    hub = std::make_unique<bus::Hub>(hubOptions());
    if (auto st = hub->start(amqpsUrl(0)); !st)
        return st;
    if (auto st = client.connect(clientOptions(amqpsUrl(hub->boundPort()), cpedIdentity())); !st)
        return st;
    if (!client.waitConnected(std::chrono::seconds(10)))
        return makeError("the test's client (" + cpedIdentity().text() +
                         ") did not connect to the hub on port " +
                         std::to_string(hub->boundPort()));
    return {};
}

bus::ClientOptions TestTls::clientOptions(const std::string& url, const pki::Identity& id) const {
    bus::ClientOptions o;
    o.url = url;
    auto f = pki::clientFiles(dir_, id);
    o.caFile = f.ca;
    o.certFile = f.cert;
    o.keyFile = f.key;
    return o;
}

void TestTls::setOwners(const model::Model& m) {
    std::map<std::string, std::set<std::string>> owners;
    for (const auto& [name, d] : m.deployables) {
        auto& held = owners[name];
        for (const auto& a : d.assemblies) {
            held.insert(a);
            if (const auto* as = m.findAssembly(a); as && !as->uuid.empty())
                held.insert(as->uuid);
        }
    }
    std::lock_guard lock(owners_->mutex);
    owners_->byDeployable = std::move(owners);
}

} // namespace pcloud::testsupport
