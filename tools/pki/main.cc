// pcloud-pki: pcloud's small certificate authority (docs/security.md, "Certificates").
// A thin command line over lib/pki.

#include "common/exit_codes.h"
#include "pki/pki.h"

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage = R"(Usage: pcloud-pki [--dir DIR] COMMAND
pcloud's certificate authority. DIR defaults to /etc/pcloud/pki (created 0700).

Commands:
  init [--days N]                   create the CA (ca.crt, ca.key); default 3650 days
  issue KIND NAME [--role events] [--days N]
                                    issue KIND.NAME.crt/.key (default 365 days), KIND one of
                                    --operator, --dped, --agent, --node, --cped
                                    e.g. issue --operator alice, issue --agent node01
  list                              every issued certificate: identity serial expiry status
  revoke SERIAL|KIND:NAME           add the serial to DIR/revoked (the hub reloads it on
                                    SIGHUP)
Nothing is ever overwritten: a command that would replace a file fails naming it.
)";

int usage(const std::string& why) {
    std::cerr << "pcloud-pki: " << why << "\n" << kUsage;
    return pcloud::toInt(pcloud::ExitCode::Usage);
}

int fail(const pcloud::Error& e) {
    std::cerr << "pcloud-pki: " << e.describe() << "\n";
    return pcloud::toInt(pcloud::ExitCode::Error);
}

bool parseDays(const std::string& s, int& out) {
    char* end = nullptr;
    long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v <= 0 || v > 36500)
        return false;
    out = static_cast<int>(v);
    return true;
}

} // namespace

int main(int argc, char** argv) {
    using namespace pcloud;
    std::vector<std::string> args(argv + 1, argv + argc);
    std::string dir = pki::kDefaultDir;
    std::size_t i = 0;
    while (i < args.size() && args[i].rfind("--", 0) == 0) {
        if (args[i] == "--help" || args[i] == "-h") {
            std::cout << kUsage;
            return 0;
        }
        if (args[i] == "--dir" && i + 1 < args.size()) {
            dir = args[i + 1];
            i += 2;
        } else if (args[i].rfind("--dir=", 0) == 0) {
            dir = args[i].substr(6);
            ++i;
        } else {
            return usage("unknown option " + args[i]);
        }
    }
    if (i >= args.size())
        return usage("no command");
    std::string cmd = args[i++];
    std::vector<std::string> rest(args.begin() + static_cast<long>(i), args.end());

    if (cmd == "init") {
        int days = 3650;
        for (std::size_t j = 0; j < rest.size(); ++j) {
            if (rest[j] == "--days" && j + 1 < rest.size() && parseDays(rest[j + 1], days))
                ++j;
            else
                return usage("init: unexpected '" + rest[j] + "'");
        }
        if (auto st = pki::initCa(dir, days); !st)
            return fail(st.error());
        std::cout << "created CA " << dir << "/ca.crt (key " << dir << "/ca.key, mode 0600)\n";
        return 0;
    }
    if (cmd == "issue") {
        std::string kind, name;
        int days = 365;
        bool events = false;
        for (std::size_t j = 0; j < rest.size(); ++j) {
            const std::string& a = rest[j];
            if (a == "--days" && j + 1 < rest.size()) {
                if (!parseDays(rest[++j], days))
                    return usage("issue: --days needs a number of days (1..36500)");
            } else if (a == "--role" && j + 1 < rest.size()) {
                if (rest[++j] != pki::kEventsRole)
                    return usage("issue: the only role is 'events', not '" + rest[j] + "'");
                events = true;
            } else if (a.rfind("--", 0) == 0 && j + 1 < rest.size() && kind.empty()) {
                kind = a.substr(2);
                name = rest[++j];
            } else {
                return usage("issue: unexpected '" + a + "'");
            }
        }
        if (kind.empty())
            return usage("issue: which identity? e.g. issue --operator alice");
        auto id = pki::parseIdentity(kind + ":" + name);
        if (!id)
            return usage("issue: " + id.error().message);
        id->events = events;
        auto issued = pki::issue(dir, *id, days);
        if (!issued)
            return fail(issued.error());
        std::cout << "issued " << id->text() << (events ? " (role events)" : "") << " serial "
                  << issued->serial << ": " << issued->certPath << " " << issued->keyPath << "\n";
        return 0;
    }
    if (cmd == "list") {
        if (!rest.empty())
            return usage("list takes no arguments");
        auto certs = pki::list(dir);
        if (!certs)
            return fail(certs.error());
        std::cout << "IDENTITY\tROLE\tSERIAL\tNOT-AFTER\tSTATUS\n";
        for (const auto& c : *certs)
            std::cout << c.identity.text() << "\t" << (c.identity.events ? "events" : "-") << "\t"
                      << c.serial << "\t" << c.notAfter << "\t" << (c.revoked ? "revoked" : "valid")
                      << "\n";
        return 0;
    }
    if (cmd == "revoke") {
        if (rest.size() != 1)
            return usage("revoke needs one SERIAL or KIND:NAME");
        auto serial = pki::revoke(dir, rest[0]);
        if (!serial)
            return fail(serial.error());
        std::cout << "revoked serial " << *serial << " (in " << dir
                  << "/revoked; send SIGHUP to cped to apply it now)\n";
        return 0;
    }
    return usage("unknown command '" + cmd + "'");
}
