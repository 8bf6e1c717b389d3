#include "etcd/history.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <sstream>

namespace pcloud::etcdtest {

namespace {

std::string describe(const Accepted& a) {
    return a.receiver + " accepted " + a.what + " from " + a.sender + " under epoch " +
           std::to_string(a.epoch) + " at " + std::to_string(a.at_ms) + " ms";
}

// The value of `key=` in a log line's fields, up to the next space ("" when absent).
std::string field(const std::string& line, const std::string& key) {
    const std::string k = " " + key + "=";
    auto at = line.find(k);
    if (at == std::string::npos)
        return {};
    at += k.size();
    return line.substr(at, line.find(' ', at) - at);
}

} // namespace

std::vector<std::string> checkHistory(const std::vector<Accepted>& history) {
    std::vector<std::string> out;
    std::map<std::string, const Accepted*> highest; // receiver -> its highest so far
    std::map<std::int64_t, const Accepted*> senderOf;
    for (const auto& a : history) {
        auto& h = highest[a.receiver];
        if (h && a.epoch < h->epoch)
            out.push_back("epoch went backwards at " + a.receiver + ": " + describe(a) + " after " +
                          describe(*h));
        if (!h || a.epoch > h->epoch)
            h = &a;
        auto [s, fresh] = senderOf.emplace(a.epoch, &a);
        if (!fresh && s->second->sender != a.sender)
            out.push_back("two senders under epoch " + std::to_string(a.epoch) + ": " +
                          describe(*s->second) + "; " + describe(a));
    }
    // Across receivers: by time, the epochs taking effect never go down.
    std::vector<const Accepted*> byTime;
    for (const auto& a : history)
        if (!a.fence)
            byTime.push_back(&a);
    std::stable_sort(byTime.begin(), byTime.end(),
                     [](const Accepted* x, const Accepted* y) { return x->at_ms < y->at_ms; });
    const Accepted* newest = nullptr; // the highest epoch that took effect so far
    for (const Accepted* a : byTime) {
        if (newest && a->epoch < newest->epoch && a->at_ms > newest->at_ms)
            out.push_back("two leaders acted at once: " + describe(*a) + ", after " +
                          describe(*newest));
        if (!newest || a->epoch > newest->epoch)
            newest = a;
    }
    return out;
}

std::int64_t parseLogTime(const std::string& stamp) {
    std::tm tm{};
    int ms = 0;
    char z = 0;
    if (stamp.size() != 24 ||
        std::sscanf(stamp.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z) != 8 ||
        z != 'Z')
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<std::int64_t>(::timegm(&tm)) * 1000 + ms;
}

std::vector<Accepted> parseAccepted(const std::string& log, const std::string& host) {
    std::vector<Accepted> out;
    std::istringstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        // 2026-12-04T04:27:25.176Z dped[web] info: Accepted a command deployable=web id=cped-7
        //   command=status sender=cped:h1 epoch=5
        auto at = line.find(" info: Accepted a command ");
        if (at == std::string::npos || line.find(" dped[") == std::string::npos)
            continue;
        Accepted a;
        a.at_ms = parseLogTime(line.substr(0, line.find(' ')));
        a.receiver = host + "/dped " + field(line, "deployable");
        a.sender = field(line, "sender");
        a.what = field(line, "command") + " " + field(line, "id");
        a.fence = field(line, "command") == "fence";
        const std::string e = field(line, "epoch");
        if (a.at_ms < 0 || a.sender.empty() || e.empty() ||
            e.find_first_not_of("0123456789") != std::string::npos)
            continue;
        a.epoch = std::stoll(e);
        out.push_back(std::move(a));
    }
    return out;
}

} // namespace pcloud::etcdtest
