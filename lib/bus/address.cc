#include "bus/address.h"

namespace pcloud::bus {

std::vector<std::string> defaultTopicPatterns() {
    // pcloud.nodes.<host>: every pcloud-node's events (virt/node_protocol.h).
    return {std::string(kEventsTopic), std::string(kEventsTopic) + ".", "pcloud.nodes."};
}

bool matchesTopic(std::string_view address, const std::vector<std::string>& patterns) {
    for (const auto& p : patterns) {
        if (p.empty())
            continue;
        if (p.back() == '.') {
            if (address.size() > p.size() && address.substr(0, p.size()) == p)
                return true;
        } else if (address == p) {
            return true;
        }
    }
    return false;
}

std::string stripPrefix(std::string_view address, const std::vector<std::string>& prefixes) {
    for (const auto& p : prefixes) {
        if (!p.empty() && address.size() > p.size() && address.substr(0, p.size()) == p)
            return std::string(address.substr(p.size()));
    }
    return std::string(address);
}

} // namespace pcloud::bus
