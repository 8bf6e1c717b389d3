#include "virt/guest_xml.h"

#include "virt/guest_template.h" // generated from guest/domain.xml.in

#include <pugixml.hpp>

#include <cstdio>
#include <random>
#include <sstream>

namespace pcloud::virt {

namespace {

std::string label(const std::string& what) {
    return what.empty() ? "domain XML" : what;
}

bool parse(pugi::xml_document& doc, const std::string& xml) {
    return static_cast<bool>(
        doc.load_string(xml.c_str(), pugi::parse_default | pugi::parse_comments));
}

// Escapes text for an XML attribute or element body.
std::string escape(const std::string& in) {
    std::string out;
    for (char c : in) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '\'':
            out += "&apos;";
            break;
        case '"':
            out += "&quot;";
            break;
        default:
            out += c;
        }
    }
    return out;
}

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
        s.replace(pos, from.size(), to);
    }
}

pugi::xml_node findAgentChannel(pugi::xml_node devices) {
    for (pugi::xml_node ch : devices.children("channel")) {
        if (std::string(ch.child("target").attribute("name").value()) == kAgentChannelName)
            return ch;
    }
    return {};
}

} // namespace

std::optional<std::string> domainNameOf(const std::string& xml) {
    pugi::xml_document doc;
    if (!parse(doc, xml))
        return std::nullopt;
    pugi::xml_node n = doc.child("domain").child("name");
    if (!n || std::string(n.text().get()).empty())
        return std::nullopt;
    return std::string(n.text().get());
}

std::optional<std::string> domainUuidOf(const std::string& xml) {
    pugi::xml_document doc;
    if (!parse(doc, xml))
        return std::nullopt;
    pugi::xml_node n = doc.child("domain").child("uuid");
    if (!n || std::string(n.text().get()).empty())
        return std::nullopt;
    return std::string(n.text().get());
}

std::string agentChannelPath(const std::string& xml) {
    pugi::xml_document doc;
    if (!parse(doc, xml))
        return {};
    pugi::xml_node ch = findAgentChannel(doc.child("domain").child("devices"));
    return ch ? ch.child("source").attribute("path").value() : "";
}

Result<std::string> injectAgentChannel(const std::string& xml, const std::string& socketPath,
                                       const std::string& uuid, const std::string& what) {
    pugi::xml_document doc;
    pugi::xml_parse_result pr =
        doc.load_string(xml.c_str(), pugi::parse_default | pugi::parse_comments);
    if (!pr) {
        // Report the line of the offset pugixml gives, so the operator can find it.
        int line = 1;
        for (ptrdiff_t i = 0; i < pr.offset && i < static_cast<ptrdiff_t>(xml.size()); ++i) {
            if (xml[i] == '\n')
                ++line;
        }
        return makeError(label(what) + " is not well-formed XML: " + pr.description() + " (line " +
                         std::to_string(line) + ")");
    }
    pugi::xml_node domain = doc.child("domain");
    if (!domain)
        return makeError(label(what) + " has no <domain> root element");
    if (!domain.child("name") || std::string(domain.child("name").text().get()).empty()) {
        return makeError(label(what) + " has no <name>: libvirt needs one");
    }
    if (!uuid.empty() && !domain.child("uuid")) {
        pugi::xml_node u = domain.insert_child_after("uuid", domain.child("name"));
        u.text().set(uuid.c_str());
    }
    pugi::xml_node devices = domain.child("devices");
    if (!devices)
        devices = domain.append_child("devices");
    if (!findAgentChannel(devices)) {
        if (socketPath.empty())
            return makeError(label(what) + ": no channel socket path given");
        pugi::xml_node ch = devices.append_child("channel");
        ch.append_attribute("type") = "unix";
        pugi::xml_node src = ch.append_child("source");
        src.append_attribute("mode") = "bind";
        src.append_attribute("path") = socketPath.c_str();
        pugi::xml_node tgt = ch.append_child("target");
        tgt.append_attribute("type") = "virtio";
        tgt.append_attribute("name") = kAgentChannelName;
    }
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
    return out.str();
}

TinyGuest tinyGuestIn(const std::string& name, const std::string& guestDir,
                      const std::string& stateDir, int httpPort) {
    TinyGuest g;
    g.name = name;
    g.uuid = randomUuid();
    g.kernel = guestDir + "/vmlinuz";
    g.initrd = guestDir + "/initrd.img";
    g.consoleLog = stateDir + "/" + name + ".console.log";
    g.channelSocket = stateDir + "/channels/" + name + ".sock";
    g.httpPort = httpPort;
    return g;
}

Result<std::string> renderTinyGuestXml(const TinyGuest& g) {
    if (g.name.empty())
        return makeError("tiny guest: name is empty");
    if (g.kernel.empty() || g.initrd.empty()) {
        return makeError("tiny guest " + g.name +
                         ": kernel/initrd not set; build them with scripts/build-guest.sh");
    }
    if (g.httpPort <= 0 || g.httpPort > 65535) {
        return makeError("tiny guest " + g.name + ": http port " + std::to_string(g.httpPort) +
                         " is out of range");
    }
    std::string xml = kGuestDomainTemplate;
    replaceAll(xml, "@NAME@", escape(g.name));
    replaceAll(xml, "@UUID@", escape(g.uuid.empty() ? randomUuid() : g.uuid));
    replaceAll(xml, "@MEMORY_MIB@", std::to_string(g.memoryMib));
    replaceAll(xml, "@KERNEL@", escape(g.kernel));
    replaceAll(xml, "@INITRD@", escape(g.initrd));
    replaceAll(xml, "@CONSOLE_LOG@", escape(g.consoleLog));
    replaceAll(xml, "@CHANNEL_SOCKET@", escape(g.channelSocket));
    replaceAll(xml, "@HTTP_PORT@", std::to_string(g.httpPort));
    return xml;
}

std::string randomUuid() {
    std::random_device rd;
    std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
    std::uint64_t hi = gen(), lo = gen();
    hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL; // version 4
    lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; // variant 10
    char buf[37];
    std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                  static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                  static_cast<unsigned>(lo >> 48),
                  static_cast<unsigned long long>(lo & 0xffffffffffffULL));
    return buf;
}

} // namespace pcloud::virt
