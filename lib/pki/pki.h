#pragma once
// pcloud's small certificate authority (docs/security.md, "Certificates"), on OpenSSL 3.
// Layout of a PKI directory (default /etc/pcloud/pki, mode 0700):
//   ca.crt, ca.key (0600)            the CA: Ed25519, self-signed, CN "pcloud CA"
//   <kind>.<name>.crt/.key (0600)    one leaf per identity, e.g. agent.node01.crt
//   revoked                          the deny list: one serial in hex per line
// Leaves are Ed25519, CN "kind:name", O "pcloud", OU "events" for the events role, and
// the serial repeated in the subject's serialNumber (see identity.h). Nothing here
// overwrites a file: every writer fails with the file's name when it exists.

#include "common/result.h"
#include "pki/identity.h"

#include <set>
#include <string>
#include <vector>

namespace pcloud::pki {

inline constexpr const char* kDefaultDir = "/etc/pcloud/pki";

struct Paths {
    std::string dir;
    std::string caCert() const { return dir + "/ca.crt"; }
    std::string caKey() const { return dir + "/ca.key"; }
    std::string revoked() const { return dir + "/revoked"; }
    std::string cert(const Identity& id) const { return dir + "/" + id.fileStem() + ".crt"; }
    std::string key(const Identity& id) const { return dir + "/" + id.fileStem() + ".key"; }
};

// Creates `dir` (0700) and a fresh CA in it. Fails if ca.crt or ca.key exists.
Status initCa(const std::string& dir, int days = 3650);

struct Issued {
    std::string certPath;
    std::string keyPath;
    std::string serial;
};
// Issues a leaf for `id`, valid `days` from now, signed by the CA in `dir`.
Result<Issued> issue(const std::string& dir, const Identity& id, int days = 365);

struct CertInfo {
    std::string path;
    Identity identity;
    std::string serial;
    std::string notAfter; // "2027-12-01T21:00:00Z"
    bool revoked = false;
};
// Every <kind>.<name>.crt in `dir`, sorted by file name, with its deny-list status.
Result<std::vector<CertInfo>> list(const std::string& dir);

// Adds a serial to `dir`/revoked: `what` is a serial in hex or an identity (kind:name),
// whose certificate file gives the serial. Returns the serial; revoking one twice is fine.
Result<std::string> revoke(const std::string& dir, const std::string& what);

// Loads `certPath`, verifies it against the CA certificate `caPath` (signature, validity
// period), reads its identity and checks its serial against `denied`. The error says which
// of these failed.
Result<CertInfo> verify(const std::string& caPath, const std::string& certPath,
                        const std::set<std::string>& denied = {});

// The subject of `certPath` in the RFC 2253 one-line form (what Proton reports for a peer).
Result<std::string> subjectLine(const std::string& certPath);
// The CN of `certPath`'s subject: the user RabbitMQ logs a SASL EXTERNAL peer in as
// (ssl_cert_login_from = common_name), so the AMQP user-id a client must set.
Result<std::string> commonName(const std::string& certPath);

// What a bus client of identity `id` presents from PKI directory `dir`.
struct ClientFiles {
    std::string ca;
    std::string cert;
    std::string key;
};
ClientFiles clientFiles(const std::string& dir, const Identity& id);
// The one operator.NAME.crt in `dir` (pcloudsh's default); an error when there is none or
// more than one, saying how to choose (operator = NAME in pcloud.conf, or --bus-cert).
Result<Identity> onlyOperator(const std::string& dir);
// cped's default name: the short host name, or "local" when it is not a valid name.
std::string defaultCpedName();
// Issues `id` in `dir` unless its certificate exists already (cped, which holds the CA key on
// a single host, does this for every dped it starts). Returns whether it issued one.
Result<bool> ensureIssued(const std::string& dir, const Identity& id, int days = 365);

} // namespace pcloud::pki
