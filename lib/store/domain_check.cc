#include "store/domain_check.h"

#include <pugixml.hpp>

#include <regex>
#include <vector>

namespace pcloud::store {

namespace {

constexpr const char* kQemuNs = "http://libvirt.org/schemas/domain/qemu/1.0";

// The namespace URI of an element, resolved the way libvirt's parser does (xmlns:PREFIX or
// xmlns on the element or an ancestor); "" for no namespace.
std::string namespaceOf(pugi::xml_node n) {
    std::string name = n.name();
    auto colon = name.find(':');
    std::string attr = colon == std::string::npos ? "xmlns" : "xmlns:" + name.substr(0, colon);
    for (pugi::xml_node p = n; p; p = p.parent())
        if (pugi::xml_attribute a = p.attribute(attr.c_str()))
            return a.value();
    return colon == std::string::npos ? "" : "undeclared prefix " + name.substr(0, colon);
}

std::string localName(pugi::xml_node n) {
    std::string name = n.name();
    auto colon = name.find(':');
    return colon == std::string::npos ? name : name.substr(colon + 1);
}

std::string where(const std::string& q) {
    return q.empty() ? std::string(hostconfig::kDefaultPath) : q;
}

// "key=value,key,..." of a QEMU option string; every key must be in `allowed`.
Status checkOptions(const std::string& what, const std::string& value,
                    const std::vector<std::string>& allowed) {
    if (value.find(",,") != std::string::npos)
        return makeError("domain XML: " + what + " '" + value +
                         "' uses ',,' (an escaped comma), which is not allowed");
    std::size_t start = value.find(',');
    while (start != std::string::npos) {
        std::size_t next = value.find(',', start + 1);
        std::string opt = value.substr(start + 1, next == std::string::npos ? std::string::npos
                                                                            : next - start - 1);
        std::string key = opt.substr(0, opt.find('='));
        bool ok = false;
        for (const auto& a : allowed)
            ok = ok || key == a;
        if (!ok)
            return makeError("domain XML: " + what + " option '" + key +
                             "' is not allowed (allowed: " +
                             [&] {
                                 std::string s;
                                 for (const auto& a : allowed)
                                     s += (s.empty() ? "" : " ") + a;
                                 return s;
                             }() +
                             ")");
        start = next;
    }
    return {};
}

Status checkCommandline(pugi::xml_node cl, const hostconfig::HostConfig& host) {
    if (host.qemu_commandline == hostconfig::QemuCommandline::None)
        return makeError("domain XML has <qemu:commandline>, which passes arguments straight to "
                         "QEMU (running as root); this host allows none (set "
                         "qemu_commandline = netdev-user in " +
                         where(host.source) + " to allow user-mode networking)");
    std::vector<std::string> args;
    for (pugi::xml_node c : cl.children()) {
        if (c.type() != pugi::node_element)
            continue;
        if (namespaceOf(c) != kQemuNs || localName(c) != "arg")
            return makeError("domain XML: <qemu:commandline> may hold only <qemu:arg> "
                             "elements, not <" +
                             std::string(c.name()) + ">");
        args.push_back(c.attribute("value").value());
    }
    static const std::vector<std::string> netdevUser = {
        "id",       "restrict", "hostfwd", "net",      "host",      "dhcpstart", "dns",
        "hostname", "ipv4",     "ipv6",    "ipv6-net", "ipv6-host", "ipv6-dns",  "domainname"};
    static const std::vector<std::string> virtioNet = {"netdev", "bus", "addr", "mac", "id"};
    if (args.size() % 2 != 0)
        return makeError("domain XML: <qemu:commandline> arguments must come in pairs "
                         "(-netdev user,... / -device virtio-net-pci,...)");
    for (std::size_t i = 0; i < args.size(); i += 2) {
        const std::string& flag = args[i];
        const std::string& value = args[i + 1];
        Status st;
        if (flag == "-netdev" && value.rfind("user,", 0) == 0)
            st = checkOptions("-netdev user", value, netdevUser);
        else if (flag == "-device" && value.rfind("virtio-net-pci,", 0) == 0)
            st = checkOptions("-device virtio-net-pci", value, virtioNet);
        else
            st = makeError("domain XML: QEMU argument '" + flag + " " + value +
                           "' is not allowed (qemu_commandline = netdev-user allows only "
                           "'-netdev user,...' and '-device virtio-net-pci,...')");
        if (!st)
            return st;
    }
    return {};
}

Status hostDevice(const std::string& what, const hostconfig::HostConfig& host) {
    if (host.allow_host_devices)
        return {};
    return makeError("domain XML has " + what +
                     ", which hands a host resource to the guest; this host does not allow "
                     "it (set allow_host_devices = yes in " +
                     where(host.source) + ")");
}

Status checkNode(pugi::xml_node n, const hostconfig::HostConfig& host) {
    std::string ns = namespaceOf(n);
    std::string local = localName(n);
    if (ns == kQemuNs) {
        if (local != "commandline")
            return makeError("domain XML: <" + std::string(n.name()) +
                             "> (QEMU namespace) is not allowed; only <qemu:commandline> "
                             "with the arguments qemu_commandline allows");
        return checkCommandline(n, host);
    }
    if (!ns.empty())
        return makeError("domain XML: <" + std::string(n.name()) + "> is in namespace '" + ns +
                         "', which pcloud does not allow");
    if (local == "hostdev" || local == "filesystem" || local == "redirdev")
        if (auto st = hostDevice("<" + local + ">", host); !st)
            return st;
    if (local == "interface" && std::string(n.attribute("type").value()) == "hostdev")
        if (auto st = hostDevice("<interface type='hostdev'>", host); !st)
            return st;
    if (local == "smartcard" && std::string(n.attribute("mode").value()) == "passthrough")
        if (auto st = hostDevice("<smartcard mode='passthrough'>", host); !st)
            return st;
    if ((local == "script" || local == "downscript") && n.parent() &&
        localName(n.parent()) == "interface")
        return makeError("domain XML: <interface> <" + local +
                         "> names a host program libvirt would run as root; not allowed");
    if (local == "emulator") {
        static const std::regex ok("/usr/bin/(qemu-system-[a-z0-9_]+|kvm)");
        std::string path = n.text().get();
        if (!std::regex_match(path, ok))
            return makeError("domain XML: <emulator>" + path +
                             "</emulator> is not allowed (use /usr/bin/qemu-system-ARCH, or "
                             "leave <emulator> out)");
    }
    for (pugi::xml_node c : n.children())
        if (c.type() == pugi::node_element)
            if (auto st = checkNode(c, host); !st)
                return st;
    return {};
}

} // namespace

Status checkDomainXml(const std::string& xml, const hostconfig::HostConfig& host) {
    pugi::xml_document doc;
    auto parsed = doc.load_buffer(xml.data(), xml.size());
    if (!parsed)
        return makeError(std::string("domain XML is not well-formed: ") + parsed.description() +
                         " at byte " + std::to_string(parsed.offset));
    pugi::xml_node root = doc.document_element();
    if (localName(root) != "domain" || !namespaceOf(root).empty())
        return makeError("domain XML must be a libvirt <domain> element, not <" +
                         std::string(root.name()) + ">");
    return checkNode(root, host);
}

} // namespace pcloud::store
