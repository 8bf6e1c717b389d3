#include "support/test_tls.h"

#include "envelope/envelope.h"

#include <nlohmann/json.hpp>

namespace pcloud::testsupport {

std::string amqpsUrl(int port) {
    return "amqps://127.0.0.1:" + std::to_string(port);
}

Result<std::string> signForDped(const pki::ClientFiles& signer, const std::string& deployable,
                                const std::string& body, std::uint64_t epoch) {
    auto s = envelope::Signer::load(signer.key, signer.cert);
    if (!s)
        return s.error();
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("command") || !j["command"].is_string())
        return makeError("signForDped: the body is not a command object: " + body);
    envelope::Fields f;
    f.target = "dped:" + deployable;
    f.action = j["command"].get<std::string>();
    f.msgtime = SystemClock().nowMs();
    f.epoch = epoch;
    return s->sign(std::move(f), body);
}

Result<std::string> TestTls::signForDped(const std::string& deployable, const std::string& body,
                                         std::uint64_t epoch) const {
    return testsupport::signForDped(pki::clientFiles(dir_, cpedIdentity()), deployable, body,
                                    epoch);
}

Result<bus::Message> TestTls::askDped(bus::Client& client, const std::string& deployable,
                                      const std::string& body,
                                      std::chrono::milliseconds timeout) const {
    auto signedBody = signForDped(deployable, body);
    if (!signedBody)
        return signedBody.error();
    return client.request("pcloud.dped." + deployable, *signedBody, timeout);
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
