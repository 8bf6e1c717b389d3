#include "policy/zone.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace pcloud::policy {

std::string memberIdHex(std::uint64_t id) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
    return buf;
}

std::string ZoneMember::label() const {
    return name.empty() ? "(unstarted " + memberIdHex(id) + ")" : name;
}

std::string ZoneMember::unhealthyReason() const {
    if (!started())
        return "added but not started yet";
    if (!answered)
        return error.empty() ? "does not answer" : error;
    if (!errors.empty()) {
        std::string s = "reports";
        for (const auto& e : errors)
            s += " " + e;
        return s;
    }
    if (leader == 0)
        return "knows no raft leader";
    return "";
}

ZoneHealth zoneHealth(const ZoneView& view) {
    ZoneHealth h;
    std::map<std::uint64_t, int> votes;
    for (const auto& m : view.members) {
        if (m.learner)
            continue;
        ++h.voters;
        if (m.healthy()) {
            ++h.healthy_voters;
            ++votes[m.leader];
        }
    }
    h.quorum = quorumOf(h.voters);
    h.has_quorum = h.voters > 0 && h.healthy_voters >= h.quorum;
    int best = 0;
    for (const auto& [id, n] : votes)
        if (n > best) {
            best = n;
            h.leader = id;
        }
    for (const auto& m : view.members) {
        if (h.leader == 0 || m.id != h.leader)
            continue;
        h.leader_answered = m.answered;
        h.leader_applied = m.raft_applied_index;
        h.leader_gone = !m.answered;
    }
    return h;
}

std::optional<std::uint64_t> lagOf(const ZoneView& view, const ZoneMember& member) {
    auto h = zoneHealth(view);
    if (!h.leader_answered || !member.answered)
        return std::nullopt;
    return member.raft_applied_index >= h.leader_applied
               ? 0
               : h.leader_applied - member.raft_applied_index;
}

Status checkMemberName(const std::string& name) {
    auto bad = [&](const std::string& why) {
        return makeError("argument NAME: '" + name + "' is not a member name: " + why +
                         " (1-64 printable ASCII characters without spaces, '=' or ',')");
    };
    if (name.empty())
        return bad("it is empty");
    if (name.size() > 64)
        return bad("it is longer than 64 characters");
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u == ' ')
            return bad("it holds a space");
        if (u < 0x21 || u > 0x7e)
            return bad("it holds a character that is not printable ASCII");
        if (c == '=' || c == ',')
            return bad(std::string("it holds '") + c + "', which --initial-cluster uses");
    }
    return {};
}

Status checkPeerUrl(const std::string& url) {
    auto bad = [&](const std::string& why) {
        return makeError("argument PEER_URL: '" + url + "' is not a peer URL: " + why +
                         " (want http://HOST:PORT or https://HOST:PORT, e.g. "
                         "http://10.0.0.4:2380)");
    };
    std::string rest;
    if (url.rfind("http://", 0) == 0)
        rest = url.substr(7);
    else if (url.rfind("https://", 0) == 0)
        rest = url.substr(8);
    else
        return bad("it does not start with http:// or https://");
    if (rest.find('/') != std::string::npos)
        return bad("it has a path");
    auto colon = rest.rfind(':');
    if (colon == std::string::npos)
        return bad("it has no port");
    std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
    if (host.empty())
        return bad("it has no host");
    if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string::npos)
        return bad("an IPv6 host must be in brackets");
    for (char c : host) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x21 || u > 0x7e || c == '@' || c == ',' || c == '=')
            return bad("its host '" + host + "' holds a character a host name cannot have");
    }
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
        return bad("its port '" + port + "' is not a number from 1 to 65535");
    return {};
}

namespace {

// "m1: <why>, m2: <why>" for the voting members that are not healthy (but `skip`).
std::string notHealthy(const ZoneView& view, int skip = -1) {
    std::string s;
    for (size_t i = 0; i < view.members.size(); ++i) {
        const auto& m = view.members[i];
        if (static_cast<int>(i) == skip || m.learner || m.healthy())
            continue;
        s += (s.empty() ? "" : "; ") + m.label() + ": " + m.unhealthyReason();
    }
    return s;
}

std::string healthyNames(const ZoneView& view, int skip = -1) {
    std::string s;
    for (size_t i = 0; i < view.members.size(); ++i) {
        const auto& m = view.members[i];
        if (static_cast<int>(i) == skip || m.learner || !m.healthy())
            continue;
        s += (s.empty() ? "" : ", ") + m.label();
    }
    return s.empty() ? "none" : s;
}

std::string leaderGone(const ZoneView& view, const ZoneHealth& h) {
    std::string name = memberIdHex(h.leader);
    for (const auto& m : view.members)
        if (m.id == h.leader)
            name = m.label() + " (" + m.unhealthyReason() + ")";
    return "the members still name " + name +
           " as their raft leader, which does not answer: they elect another within an "
           "election timeout; retry in a moment";
}

std::string noQuorumNow(const ZoneView& view, const ZoneHealth& h) {
    return "the zone has no quorum now: " + std::to_string(h.healthy_voters) + " of " +
           std::to_string(h.voters) + " voting members are healthy, a quorum is " +
           std::to_string(h.quorum) + " (not healthy: " + notHealthy(view) +
           "); etcd cannot commit a membership change until enough of them are back";
}

void warnEven(ZoneVerdict& v, int voters) {
    if (voters > 0 && voters % 2 == 0)
        v.warnings.push_back(
            "the zone will have " + std::to_string(voters) +
            " voting members, an even count: it tolerates " + std::to_string((voters - 1) / 2) +
            " failure(s), as " + std::to_string(voters - 1) + " would (quorum " +
            std::to_string(quorumOf(voters)) + " of " + std::to_string(voters) + ")");
}

} // namespace

ZoneVerdict checkAdd(const ZoneView& view, const std::string& name, const std::string& peer_url,
                     bool learner) {
    ZoneVerdict v;
    if (auto st = checkMemberName(name); !st) {
        v.refusal = st.error().message;
        return v;
    }
    if (auto st = checkPeerUrl(peer_url); !st) {
        v.refusal = st.error().message;
        return v;
    }
    for (const auto& m : view.members) {
        if (m.name == name) {
            v.refusal = "a member named '" + name + "' is in the zone already (id " +
                        memberIdHex(m.id) + "); choose another name or cluster_remove it first";
            return v;
        }
        if (std::find(m.peer_urls.begin(), m.peer_urls.end(), peer_url) != m.peer_urls.end()) {
            v.refusal = "member " + m.label() + " already uses peer URL " + peer_url;
            return v;
        }
    }
    for (const auto& m : view.members)
        if (!m.started()) {
            std::string urls;
            for (const auto& u : m.peer_urls)
                urls += (urls.empty() ? "" : ",") + u;
            v.refusal = "member " + memberIdHex(m.id) + " (peer URL " + urls +
                        ") was added but has not started yet; etcd takes one unstarted member "
                        "at a time: start etcd there with --initial-cluster-state existing, or "
                        "cluster_remove " +
                        memberIdHex(m.id) + ", then add '" + name + "'";
            return v;
        }
    const auto h = zoneHealth(view);
    if (!h.has_quorum) {
        v.refusal = noQuorumNow(view, h);
        return v;
    }
    if (h.leader_gone) {
        v.refusal = leaderGone(view, h);
        return v;
    }
    if (learner) {
        // A learner does not vote: the quorum stays the voters' (etcd allows one learner).
        for (const auto& m : view.members)
            if (m.learner) {
                v.refusal = "member " + m.label() +
                            " is a learner already; etcd 3.4 allows one: cluster_promote or "
                            "cluster_remove it first";
                return v;
            }
        v.allowed = true;
        return v;
    }
    const int grown = h.voters + 1;
    if (h.voters == 1 && h.healthy_voters == 1) {
        v.warnings.push_back("a zone of one member grows to two: it has no quorum until '" + name +
                             "' starts, so start etcd there now");
    } else if (h.healthy_voters < quorumOf(grown)) {
        v.refusal = "adding '" + name + "' makes " + std::to_string(grown) +
                    " voting members, whose quorum is " + std::to_string(quorumOf(grown)) +
                    ", but only " + std::to_string(h.healthy_voters) + " are healthy (" +
                    healthyNames(view) + "; not healthy: " + notHealthy(view) +
                    "): the zone would lose its quorum until '" + name +
                    "' starts. Bring the members that are down back first";
        return v;
    }
    warnEven(v, grown);
    v.allowed = true;
    return v;
}

namespace {

// Why no change to member `m` (`verb` it) can be made now: no quorum, or a raft leader that
// is gone; "" when one can.
std::string noChangeNow(const ZoneView& view, const ZoneHealth& h, const char* verb,
                        const ZoneMember& m) {
    if (!h.has_quorum)
        return std::string("refusing to ") + verb + " '" + m.label() + "': " + noQuorumNow(view, h);
    if (h.leader_gone)
        return std::string("refusing to ") + verb + " '" + m.label() +
               "' now: " + leaderGone(view, h);
    return "";
}

// The index of the member `who` names (checkRemove's rules), or -1 with the refusal set.
int findMember(const ZoneView& view, const std::string& who, ZoneVerdict& v) {
    int target = -1;
    for (size_t i = 0; i < view.members.size() && target < 0; ++i)
        if (!who.empty() && view.members[i].name == who)
            target = static_cast<int>(i);
    for (size_t i = 0; i < view.members.size() && target < 0; ++i) {
        const auto& m = view.members[i];
        if (memberIdHex(m.id) == who ||
            (!m.started() &&
             std::find(m.peer_urls.begin(), m.peer_urls.end(), who) != m.peer_urls.end()))
            target = static_cast<int>(i);
    }
    if (target < 0) {
        if (auto st = checkMemberName(who); !st) {
            v.refusal = st.error().message;
            return -1;
        }
        std::vector<std::string> labels;
        for (const auto& m : view.members)
            labels.push_back(m.label());
        std::sort(labels.begin(), labels.end());
        std::string names;
        for (const auto& l : labels)
            names += (names.empty() ? "" : ", ") + l;
        v.refusal = "no member named '" + who +
                    "' in the zone (members: " + (names.empty() ? "none" : names) +
                    "); a member that has not started yet has no name: give its id or peer URL";
        return -1;
    }
    return target;
}

// The member `who` names, noted in v.target; null with the refusal set when there is none.
const ZoneMember* targetOf(const ZoneView& view, const std::string& who, ZoneVerdict& v) {
    v.target = findMember(view, who, v);
    return v.target < 0 ? nullptr : &view.members[static_cast<size_t>(v.target)];
}

} // namespace

ZoneVerdict checkRemove(const ZoneView& view, const std::string& who) {
    ZoneVerdict v;
    const ZoneMember* target = targetOf(view, who, v);
    if (!target)
        return v;
    const auto& m = *target;
    const auto h = zoneHealth(view);
    if (v.refusal = noChangeNow(view, h, "remove", m); !v.refusal.empty())
        return v;
    if (m.learner) {
        v.allowed = true;
        return v;
    }
    if (h.voters == 1) {
        v.refusal =
            "'" + m.label() + "' is the zone's only voting member; removing it would end the zone";
        return v;
    }
    const int left = h.voters - 1;
    const int healthyLeft = h.healthy_voters - (m.healthy() ? 1 : 0);
    if (healthyLeft < quorumOf(left)) {
        v.refusal = "refusing to remove '" + m.label() + "': the " + std::to_string(left) +
                    " voting members left would have " + std::to_string(healthyLeft) +
                    " healthy (" + healthyNames(view, v.target) + "), fewer than their quorum of " +
                    std::to_string(quorumOf(left)) +
                    " (not healthy: " + notHealthy(view, v.target) +
                    "); bring the members that are down back, or remove one of them first";
        return v;
    }
    warnEven(v, left);
    v.allowed = true;
    return v;
}

ZoneVerdict checkPromote(const ZoneView& view, const std::string& who) {
    ZoneVerdict v;
    const ZoneMember* target = targetOf(view, who, v);
    if (!target)
        return v;
    const auto& m = *target;
    if (!m.learner) {
        v.refusal = "'" + m.label() + "' is a voting member already";
        return v;
    }
    if (!m.started()) {
        v.refusal = "learner " + m.label() +
                    " has not started yet: start etcd there (the line cluster_add printed) and "
                    "wait until cluster_status shows it healthy";
        return v;
    }
    if (!m.healthy()) {
        v.refusal = "learner '" + m.label() + "' is not healthy (" + m.unhealthyReason() +
                    "); promote it once it is";
        return v;
    }
    const auto h = zoneHealth(view);
    if (v.refusal = noChangeNow(view, h, "promote", m); !v.refusal.empty())
        return v;
    // With a quorum now and the learner healthy this always holds; kept so that the rule
    // stays right if the ones above change.
    const int grown = h.voters + 1;
    if (h.healthy_voters + 1 < quorumOf(grown)) {
        v.refusal = "promoting '" + m.label() + "' makes " + std::to_string(grown) +
                    " voting members, whose quorum is " + std::to_string(quorumOf(grown)) +
                    ", but only " + std::to_string(h.healthy_voters + 1) +
                    " of them are healthy (not healthy: " + notHealthy(view) +
                    "). Bring the members that are down back first";
        return v;
    }
    warnEven(v, grown);
    v.allowed = true;
    return v;
}

std::string initialCluster(const ZoneView& view, const std::string& name,
                           const std::string& peer_url) {
    std::string s;
    for (const auto& m : view.members) {
        if (!m.started() || m.name == name)
            continue;
        for (const auto& u : m.peer_urls)
            s += (s.empty() ? "" : ",") + m.name + "=" + u;
    }
    return s + (s.empty() ? "" : ",") + name + "=" + peer_url;
}

std::string zoneDpedRefusal(const std::string& uri) {
    const auto sep = uri.find("://");
    const std::string scheme = sep == std::string::npos ? "" : uri.substr(0, sep);
    if (scheme == "test")
        return "";
    std::string host;
    if (sep != std::string::npos) {
        std::string authority = uri.substr(sep + 3, uri.find('/', sep + 3) - (sep + 3));
        if (auto at = authority.rfind('@'); at != std::string::npos)
            authority.erase(0, at + 1);
        if (!authority.empty() && authority.front() == '[')
            host = authority.substr(1, authority.find(']') - 1);
        else
            host = authority.substr(0, authority.find(':'));
    }
    const bool local = host.empty() || host == "localhost" || host.rfind("127.", 0) == 0 ||
                       host == "::1" || host == "localhost.localdomain";
    if (!local)
        return "";
    return "its libvirt URI '" + uri + "' " +
           (host.empty() ? std::string("names no host") : "names this host (" + host + ")") +
           ", so in a zone it would drive whichever host leads and the next leader would "
           "start its domains a second time; give the hypervisor's own URI "
           "(qemu+tls://HOST/system or qemu+ssh://HOST/system) as the deployable's --uri";
}

} // namespace pcloud::policy
