#include "pki/identity.h"

#include "common/fs.h"
#include "model/model.h"

#include <cctype>
#include <sstream>

namespace pcloud::pki {

const char* toString(Kind k) {
    switch (k) {
    case Kind::Operator:
        return "operator";
    case Kind::Dped:
        return "dped";
    case Kind::Agent:
        return "agent";
    case Kind::Node:
        return "node";
    case Kind::Cped:
        return "cped";
    }
    return "?";
}

Result<Kind> parseKind(const std::string& s) {
    for (Kind k : {Kind::Operator, Kind::Dped, Kind::Agent, Kind::Node, Kind::Cped})
        if (s == toString(k))
            return k;
    return makeError("unknown identity kind '" + s +
                     "' (expected operator, dped, agent, node or cped)");
}

std::string Identity::text() const {
    return std::string(toString(kind)) + ":" + name;
}

std::string Identity::fileStem() const {
    return std::string(toString(kind)) + "." + name;
}

Result<Identity> parseIdentity(const std::string& s) {
    auto colon = s.find(':');
    if (colon == std::string::npos)
        return makeError("'" + s + "' is not an identity (expected kind:name, e.g. agent:node01)");
    auto kind = parseKind(s.substr(0, colon));
    if (!kind)
        return kind.error();
    Identity id;
    id.kind = *kind;
    id.name = s.substr(colon + 1);
    if (!model::isValidName(id.name))
        return makeError("identity '" + s + "' has an invalid name '" + id.name +
                         "' (letters, digits, '-', '_', '.'; at most 64; not starting with "
                         "'-' or '.')");
    return id;
}

std::string normalizeSerial(const std::string& in) {
    std::string s = in;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s = s.substr(2);
    std::string out;
    for (char c : s) {
        if (c == ':')
            continue; // "AB:CD" as openssl x509 -serial prints it in some forms
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            return "";
        if (out.empty() && c == '0')
            continue;
        out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    if (out.empty() && !s.empty())
        return "0";
    return out;
}

Result<PeerSubject> parseSubject(const std::string& subject) {
    auto bad = [&](const std::string& why) {
        return makeError("certificate subject '" + subject + "' " + why);
    };
    std::string cn, serial;
    bool events = false;
    std::stringstream in(subject);
    std::string part;
    while (std::getline(in, part, ',')) {
        while (!part.empty() && part.front() == ' ')
            part.erase(part.begin());
        auto eq = part.find('=');
        if (eq == std::string::npos)
            return bad("has an attribute without '=': '" + part + "'");
        std::string key = part.substr(0, eq), value = part.substr(eq + 1);
        if (value.find_first_of("\\\"+<>;#=") != std::string::npos)
            return bad("has an escaped or multi-valued attribute (not issued by pcloud-pki)");
        if (key == "CN") {
            if (!cn.empty())
                return bad("has two CNs");
            cn = value;
        } else if (key == "serialNumber") {
            serial = normalizeSerial(value);
            if (serial.empty())
                return bad("has a serialNumber that is not hex");
        } else if (key == "OU") {
            if (value == kEventsRole)
                events = true;
        }
    }
    if (cn.empty())
        return bad("has no CN");
    auto id = parseIdentity(cn);
    if (!id)
        return bad("CN is no pcloud identity: " + id.error().message);
    if (serial.empty())
        return bad("has no serialNumber attribute, so its revocation cannot be checked "
                   "(issue certificates with pcloud-pki)");
    id->events = events;
    return PeerSubject{*id, serial};
}

Result<std::set<std::string>> parseDenyList(const std::string& text, const std::string& path) {
    std::set<std::string> out;
    std::stringstream in(text);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        auto first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos || line[first] == '#')
            continue;
        auto last = line.find_last_not_of(" \t\r");
        std::string word = line.substr(first, last - first + 1);
        std::string serial = normalizeSerial(word);
        if (serial.empty())
            return makeError("'" + word + "' is not a serial number in hex", path, n);
        out.insert(serial);
    }
    return out;
}

Result<std::set<std::string>> loadDenyList(const std::string& path) {
    if (!fs::exists(path))
        return std::set<std::string>{};
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    return parseDenyList(*text, path);
}

} // namespace pcloud::pki
