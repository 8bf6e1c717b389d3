#pragma once
// Identities on the bus (docs/security.md, "Identities"): `kind:name` in a certificate's CN,
// the optional `events` role in an OU, and the certificate's serial number repeated in the
// subject's serialNumber attribute so the hub, which sees only the verified subject of a
// TLS peer, can check the deny list. Pure functions, no OpenSSL.

#include "common/result.h"

#include <set>
#include <string>

namespace pcloud::pki {

enum class Kind { Operator, Dped, Agent, Node, Cped };

struct Identity {
    Kind kind = Kind::Operator;
    std::string name;
    bool events = false; // the `events` role: may subscribe to pcloud.events*

    std::string text() const;     // "agent:node01"
    std::string fileStem() const; // "agent.node01" (files <stem>.crt and <stem>.key)
    bool operator==(const Identity& o) const {
        return kind == o.kind && name == o.name && events == o.events;
    }
};

const char* toString(Kind k);
// "operator", "dped", "agent", "node", "cped".
Result<Kind> parseKind(const std::string& s);
// "kind:name"; the name follows the model's name grammar (model::isValidName).
Result<Identity> parseIdentity(const std::string& s);

inline constexpr const char* kEventsRole = "events";
inline constexpr const char* kOrganization = "pcloud";

// A TLS peer as the hub sees it: the subject of its verified certificate, in the RFC 2253
// one-line form Proton's ssl::remote_subject() returns ("serialNumber=AB..,OU=events,
// CN=agent:node01,O=pcloud"). Anything pcloud-pki does not issue (an escaped or multi-valued
// attribute, no serialNumber, a CN that is no identity) is an error saying so.
struct PeerSubject {
    Identity identity;
    std::string serial; // normalized (see normalizeSerial)
};
Result<PeerSubject> parseSubject(const std::string& subject);

// Upper-case hex without a "0x" prefix or leading zeros; "" when `s` is not hex.
std::string normalizeSerial(const std::string& s);

// The deny list `revoked`: one serial in hex per line, '#' comments and blank lines
// ignored. A missing file is an empty list; a line that is not hex is an error naming
// path:line.
Result<std::set<std::string>> parseDenyList(const std::string& text, const std::string& path);
Result<std::set<std::string>> loadDenyList(const std::string& path);

} // namespace pcloud::pki
