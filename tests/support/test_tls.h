#pragma once
// TLS on the bus for the integration tests, the way an operator runs pcloud
// (docs/security.md, "Operator setup on one host, three commands"): a real PKI made with
// lib/pki in a temp dir, cped.NAME and operator.NAME issued, and the files each process
// presents. Tests that run a real cped point it (and pcloudsh) at the PKI with hostConfig();
// tests that stand in for cped with an in-process hub use startCpedHub() (hubOptions() and
// a client presenting cped:NAME), and pass busArgs() to the dped they start, as cped does.
// Authorization is never weakened: every client presents the identity authz requires.
// No GTest here (benches may link it); callers assert on the Status and Result values.
#include "bus/client.h"
#include "bus/hub.h"
#include "common/result.h"
#include "model/model.h"
#include "pki/identity.h"
#include "pki/pki.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pcloud::testsupport {

// "amqps://127.0.0.1:PORT"
std::string amqpsUrl(int port);

// A request to dped `deployable` as cped sends it on a TLS bus: `body` (a command object with
// "id" and "command") inside an envelope signed with `signer`'s key, carrying `epoch`.
Result<std::string> signForDped(const pki::ClientFiles& signer, const std::string& deployable,
                                const std::string& body, std::uint64_t epoch = 0);

class TestTls {
public:
    // The PKI lives in `dir` (made 0700 by setUp); the destructor leaves it to the caller's
    // temp dir clean-up.
    explicit TestTls(std::string dir);

    // The three commands: a fresh CA, cped.CPED and operator.OPERATOR. cped issues the
    // dped certificates itself when it can read ca.key (it can here).
    Status setUp(const std::string& cped = "test", const std::string& op = "alice");

    const std::string& dir() const { return dir_; }

    // Issues `id` unless its certificate exists; its CA, certificate and key.
    Result<pki::ClientFiles> issue(const pki::Identity& id);

    // pcloud.conf lines for a cped named `cped` (default: the one of setUp) and for pcloudsh:
    // "pki_dir = DIR\ncped_name = NAME\n". pcloudsh then presents the only operator.*.
    std::string hostConfig(const std::string& cped = {}) const;

    // "--bus-ca CA --bus-cert CERT --bus-key KEY" of `id` (issued first), what cped passes
    // to the dped it starts and what pcloud-node takes.
    Result<std::vector<std::string>> busArgs(const pki::Identity& id);

    // A hub standing in for cped's: amqps:// with cped.CPED, the deny list of the PKI dir,
    // and authorization with the assemblies of setOwners() (cped answers from its model).
    bus::HubOptions hubOptions() const;
    // Makes `hub` with hubOptions(), starts it on a free loopback port and connects `client`
    // to it as cpedIdentity() (the test standing in for cped), waiting until it is connected.
    Status startCpedHub(std::unique_ptr<bus::Hub>& hub, bus::Client& client) const;
    // A client of the hub at `url` presenting `id` (issue it first).
    bus::ClientOptions clientOptions(const std::string& url, const pki::Identity& id) const;
    // The cped identity of setUp (the hub's certificate, and the test's own client when it
    // stands in for cped: it consumes pcloud.journal and commands every dped).
    pki::Identity cpedIdentity() const;
    // signForDped() with the key of cpedIdentity().
    Result<std::string> signForDped(const std::string& deployable, const std::string& body,
                                    std::uint64_t epoch = 0) const;
    // `body` sent to dped `deployable` through `client` as cped sends it (signForDped); the
    // reply.
    Result<bus::Message> askDped(bus::Client& client, const std::string& deployable,
                                 const std::string& body, std::chrono::milliseconds timeout) const;

    // Which assemblies (names and uuids) each deployable holds, as cped's copy of its model;
    // call it whenever the model the dped reads changes. Thread-safe (the hub reads it).
    void setOwners(const model::Model& m);

private:
    struct Owners {
        std::mutex mutex;
        std::map<std::string, std::set<std::string>> byDeployable;
    };
    std::string dir_, cped_;
    std::shared_ptr<Owners> owners_ = std::make_shared<Owners>();
};

} // namespace pcloud::testsupport
