#include "bus/sender.h"

#include "common/log.h"

#include <algorithm>
#include <cctype>

namespace pcloud::bus {

bool sameIdentity(const std::string& userId, const std::string& identity) {
    return !userId.empty() && userId.size() == identity.size() &&
           std::equal(userId.begin(), userId.end(), identity.begin(), [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) ==
                      std::tolower(static_cast<unsigned char>(b));
           });
}

std::string serverOf(const std::string& address) {
    auto after = [&](const std::string& prefix) {
        return address.size() > prefix.size() && address.compare(0, prefix.size(), prefix) == 0
                   ? address.substr(prefix.size())
                   : std::string();
    };
    if (address == "pcloud.cped" || address == "pcloud.journal")
        return "cped:*";
    if (auto d = after("pcloud.dped."); !d.empty())
        return "dped:" + d;
    if (auto h = after("pcloud.node."); !h.empty())
        return "node:" + h;
    return {};
}

bool senderMatches(const std::string& pattern, const std::string& userId) {
    if (pattern.size() > 2 && pattern.compare(pattern.size() - 2, 2, ":*") == 0)
        return userId.size() > pattern.size() - 1 &&
               userId.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
    return sameIdentity(userId, pattern);
}

SenderGate::SenderGate(bool enforce, std::string what)
    : enforce_(enforce), what_(std::move(what)) {}

bool SenderGate::admit(const Message& m, bool allowed, const std::string& expected) {
    if (!enforce_ || allowed)
        return true;
    // A user-id is at most what the broker accepted as a login; cut it all the same.
    const std::string sender = m.userId.empty() ? "-" : m.userId.substr(0, 200);
    bool log = false;
    std::uint64_t total = 0;
    {
        std::lock_guard lock(mutex_);
        total = ++refused_;
        if (!logged_.count(sender) && logged_.size() < kLoggedSenders) {
            logged_.insert(sender);
            log = true;
        } else {
            log = total % kLogEvery == 0;
        }
    }
    if (log)
        PCLOUD_LOG(Warning,
                   "Dropped a message from a sender that may not send it (logged once per sender)",
                   {{"what", what_},
                    {"address", m.address.empty() ? "-" : m.address},
                    {"user_id", sender},
                    {"expected", expected},
                    {"refused_total", std::to_string(total)}});
    return false;
}

std::uint64_t SenderGate::refused() const {
    std::lock_guard lock(mutex_);
    return refused_;
}

} // namespace pcloud::bus
