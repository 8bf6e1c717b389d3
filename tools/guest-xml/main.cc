// pcloud-guest-xml NAME --http-port P [--kernel K --initrd I] [--console-log F] [--uuid U]
// Prints the tiny test guest's domain XML WITHOUT the agent channel: dped injects it when
// it starts the domain (STATE_DIR/channels/NAME.sock). For tests and the demo.
#include "virt/guest_xml.h"

#include <cstdio>
#include <iostream>
#include <string>

namespace {

int usage() {
    std::fprintf(stderr,
                 "usage: pcloud-guest-xml NAME --http-port PORT [--kernel FILE --initrd FILE]\n"
                 "                        [--console-log FILE] [--uuid UUID] [--memory MIB]\n"
                 "defaults: kernel/initrd from /var/cache/pcloud/guest/agent\n");
    return 2;
}

// Removes the <channel>...</channel> element that names org.pcloud.agent.0.
std::string dropAgentChannel(std::string xml) {
    auto target = xml.find(pcloud::virt::kAgentChannelName);
    if (target == std::string::npos)
        return xml;
    auto open = xml.rfind("<channel", target);
    auto close = xml.find("</channel>", target);
    if (open == std::string::npos || close == std::string::npos)
        return xml;
    auto end = close + std::string("</channel>").size();
    auto lineStart = xml.rfind('\n', open);
    if (lineStart != std::string::npos && xml.find_first_not_of(" \t", lineStart + 1) == open)
        open = lineStart;
    xml.erase(open, end - open);
    return xml;
}

} // namespace

int main(int argc, char** argv) {
    pcloud::virt::TinyGuest g;
    g.kernel = "/var/cache/pcloud/guest/agent/vmlinuz";
    g.initrd = "/var/cache/pcloud/guest/agent/initrd.img";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        const char* v = nullptr;
        if (a == "--http-port" && (v = next()))
            g.httpPort = std::atoi(v);
        else if (a == "--kernel" && (v = next()))
            g.kernel = v;
        else if (a == "--initrd" && (v = next()))
            g.initrd = v;
        else if (a == "--console-log" && (v = next()))
            g.consoleLog = v;
        else if (a == "--uuid" && (v = next()))
            g.uuid = v;
        else if (a == "--memory" && (v = next()))
            g.memoryMib = std::atoi(v);
        else if (a == "--help" || a == "-h")
            return usage(), 0;
        else if (!a.empty() && a[0] != '-' && g.name.empty())
            g.name = a;
        else {
            std::fprintf(stderr, "pcloud-guest-xml: bad argument '%s'\n", a.c_str());
            return usage();
        }
    }
    if (g.name.empty() || g.httpPort <= 0 || g.httpPort > 65535)
        return usage();
    if (g.consoleLog.empty())
        g.consoleLog = "/tmp/pcloud-guest-" + g.name + ".log";
    g.channelSocket = "/nonexistent/" + g.name + ".sock"; // removed below
    auto xml = pcloud::virt::renderTinyGuestXml(g);
    if (!xml) {
        std::fprintf(stderr, "pcloud-guest-xml: %s\n", xml.error().describe().c_str());
        return 1;
    }
    std::cout << dropAgentChannel(*xml);
    return 0;
}
