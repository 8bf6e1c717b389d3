#include "cped/floating_ip.h"

#include "common/log.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <linux/filter.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pcloud::cped {

namespace {

std::array<std::uint8_t, 42> arpRequest(const MacAddress& mac, std::uint32_t senderIp,
                                        std::uint32_t targetIp) {
    std::array<std::uint8_t, 42> f{};
    auto put16 = [&](std::size_t at, std::uint16_t v) {
        f[at] = static_cast<std::uint8_t>(v >> 8);
        f[at + 1] = static_cast<std::uint8_t>(v);
    };
    auto put32 = [&](std::size_t at, std::uint32_t v) {
        put16(at, static_cast<std::uint16_t>(v >> 16));
        put16(at + 2, static_cast<std::uint16_t>(v));
    };
    std::fill_n(f.begin(), 6, 0xff); // Ethernet destination: broadcast
    std::copy(mac.begin(), mac.end(), f.begin() + 6);
    put16(12, ETH_P_ARP);
    put16(14, ARPHRD_ETHER); // ARP: hardware type
    put16(16, ETH_P_IP);     // protocol type
    f[18] = 6;               // hardware address length
    f[19] = 4;               // protocol address length
    put16(20, ARPOP_REQUEST);
    std::copy(mac.begin(), mac.end(), f.begin() + 22); // sender hardware address
    put32(28, senderIp);
    // 32..37: target hardware address, zero (RFC 5227: ignored)
    put32(38, targetIp);
    return f;
}

} // namespace

std::array<std::uint8_t, 42> gratuitousArpFrame(const MacAddress& mac, std::uint32_t ip) {
    return arpRequest(mac, ip, ip);
}

std::array<std::uint8_t, 42> arpProbeFrame(const MacAddress& mac, std::uint32_t ip) {
    return arpRequest(mac, 0, ip);
}

std::string toString(const MacAddress& mac) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                  mac[4], mac[5]);
    return buf;
}

namespace {

std::string nlError(int err) {
    return nl_geterror(err);
}

// netlink through libnl-route-3 for the address, an AF_PACKET socket on the interface for
// ARP. Both sockets are opened once, so they stay in the network namespace they were
// opened in.
class NetlinkLink final : public AddressLink {
public:
    ~NetlinkLink() override {
        if (packet_ >= 0)
            ::close(packet_);
        if (sock_)
            nl_socket_free(sock_);
    }

    Status open(const hostconfig::Ipv4Cidr& address, const std::string& dev) {
        address_ = address;
        dev_ = dev;
        sock_ = nl_socket_alloc();
        if (!sock_)
            return makeError("cannot allocate a netlink socket");
        if (int err = nl_connect(sock_, NETLINK_ROUTE); err < 0)
            return makeError("cannot open a netlink socket: " + nlError(err));
        rtnl_link* link = nullptr;
        if (int err = rtnl_link_get_kernel(sock_, 0, dev.c_str(), &link); err < 0) {
            if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV)
                return makeError("floating_dev '" + dev + "': no such network interface");
            return makeError("floating_dev '" + dev +
                             "': cannot read the interface: " + nlError(err));
        }
        ifindex_ = rtnl_link_get_ifindex(link);
        const unsigned arptype = rtnl_link_get_arptype(link);
        nl_addr* hw = rtnl_link_get_addr(link);
        const bool ether = arptype == ARPHRD_ETHER && hw && nl_addr_get_len(hw) == 6;
        if (ether)
            std::memcpy(mac_.data(), nl_addr_get_binary_addr(hw), 6);
        rtnl_link_put(link);
        if (!ether)
            return makeError("floating_dev '" + dev +
                             "' is not an Ethernet interface (gratuitous ARP needs one)");

        // Only ARP frames whose sender IP is the address reach this socket (offset 28 in
        // the Ethernet frame); it is bound after the filter so that none slips through.
        packet_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (packet_ < 0)
            return makeError(std::string("cannot open an AF_PACKET socket (needs CAP_NET_RAW): ") +
                             std::strerror(errno));
        sock_filter code[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 28),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, address_.address, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, 64),
            BPF_STMT(BPF_RET | BPF_K, 0),
        };
        sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
        if (::setsockopt(packet_, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
            return makeError(std::string("cannot filter ARP frames: ") + std::strerror(errno));
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ARP);
        sll.sll_ifindex = ifindex_;
        if (::bind(packet_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0)
            return makeError("cannot bind an ARP socket to '" + dev + "': " + std::strerror(errno));
        return Status::success();
    }

    Result<bool> hasAddress() override {
        nl_cache* cache = nullptr;
        if (int err = rtnl_addr_alloc_cache(sock_, &cache); err < 0)
            return makeError("cannot list the addresses of '" + dev_ + "': " + nlError(err));
        const std::uint32_t want = htonl(address_.address);
        bool found = false;
        for (nl_object* o = nl_cache_get_first(cache); o && !found; o = nl_cache_get_next(o)) {
            auto* a = reinterpret_cast<rtnl_addr*>(o);
            nl_addr* local = rtnl_addr_get_local(a);
            found = rtnl_addr_get_ifindex(a) == ifindex_ && rtnl_addr_get_family(a) == AF_INET &&
                    local && nl_addr_get_len(local) == 4 &&
                    std::memcmp(nl_addr_get_binary_addr(local), &want, 4) == 0;
        }
        nl_cache_free(cache);
        return found;
    }

    Status addAddress() override { return change(true); }
    Status removeAddress() override { return change(false); }

    Status sendGratuitousArp() override { return send(gratuitousArpFrame(mac_, address_.address)); }
    Status sendProbe() override { return send(arpProbeFrame(mac_, address_.address)); }

    std::vector<MacAddress> takeClaimsByOthers() override {
        std::vector<MacAddress> out;
        std::uint8_t buf[64];
        for (;;) {
            sockaddr_ll from{};
            socklen_t len = sizeof from;
            ssize_t n =
                ::recvfrom(packet_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
            if (n < 0)
                break; // EAGAIN: read them all
            if (n < 42 || from.sll_pkttype == PACKET_OUTGOING)
                continue;
            MacAddress sender;
            std::copy(buf + 22, buf + 28, sender.begin());
            if (sender != mac_)
                out.push_back(sender);
        }
        return out;
    }

private:
    Status change(bool add) {
        rtnl_addr* a = rtnl_addr_alloc();
        const std::uint32_t ip = htonl(address_.address);
        nl_addr* local = nl_addr_build(AF_INET, &ip, 4);
        nl_addr_set_prefixlen(local, address_.prefix);
        rtnl_addr_set_ifindex(a, ifindex_);
        rtnl_addr_set_local(a, local);
        nl_addr* brd = nullptr;
        if (add && address_.prefix <= 30) { // as `ip addr add ... brd +` and IPaddr2 do
            const std::uint32_t b = htonl(address_.address | (~0u >> address_.prefix));
            brd = nl_addr_build(AF_INET, &b, 4);
            rtnl_addr_set_broadcast(a, brd);
        }
        int err = add ? rtnl_addr_add(sock_, a, 0) : rtnl_addr_delete(sock_, a, 0);
        if (brd)
            nl_addr_put(brd);
        nl_addr_put(local);
        rtnl_addr_put(a);
        if (!add && (err == -NLE_NOADDR || err == -NLE_OBJ_NOTFOUND))
            return Status::success(); // already gone
        if (err < 0)
            return makeError(std::string("cannot ") + (add ? "add " : "delete ") +
                             address_.toString() + (add ? " to '" : " from '") + dev_ + "': " +
                             nlError(err) + (err == -NLE_PERM ? " (needs CAP_NET_ADMIN)" : ""));
        return Status::success();
    }

    Status send(const std::array<std::uint8_t, 42>& frame) {
        sockaddr_ll to{};
        to.sll_family = AF_PACKET;
        to.sll_protocol = htons(ETH_P_ARP);
        to.sll_ifindex = ifindex_;
        to.sll_halen = 6;
        std::fill_n(to.sll_addr, 6, 0xff);
        if (::sendto(packet_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to),
                     sizeof to) != static_cast<ssize_t>(frame.size()))
            return makeError("cannot send ARP on '" + dev_ + "': " + std::strerror(errno));
        return Status::success();
    }

    hostconfig::Ipv4Cidr address_;
    std::string dev_;
    nl_sock* sock_ = nullptr;
    int ifindex_ = 0;
    MacAddress mac_{};
    int packet_ = -1;
};

} // namespace

Result<std::unique_ptr<AddressLink>> openNetlinkLink(const hostconfig::Ipv4Cidr& address,
                                                     const std::string& dev) {
    auto link = std::make_unique<NetlinkLink>();
    if (auto st = link->open(address, dev); !st)
        return st.error();
    return std::unique_ptr<AddressLink>(std::move(link));
}

FloatingIp::FloatingIp(std::string address, std::string dev, std::unique_ptr<AddressLink> link)
    : address_(std::move(address)), dev_(std::move(dev)), link_(std::move(link)) {}

FloatingIp::~FloatingIp() {
    release();
}

void FloatingIp::acquire(Millis now) {
    std::lock_guard lock(mutex_);
    if (wanted_)
        return;
    wanted_ = true;
    claimed_by_.clear();
    // Frames queued before this term (the previous leader's announcements) say nothing
    // about it.
    link_->takeClaimsByOthers();
    ensure(now);
    tickLocked(now);
}

void FloatingIp::release() {
    std::lock_guard lock(mutex_);
    wanted_ = false;
    garps_left_ = 0;
    if (!held_)
        return;
    if (auto st = link_->removeAddress(); !st) {
        PCLOUD_LOG(Error,
                   "Cannot delete the floating address after leading; another leader may "
                   "then hold it too. Retrying every 5 s",
                   {{"address", address_}, {"dev", dev_}, {"error", st.error().describe()}});
        next_check_ = 0; // the next tick tries again
        return;
    }
    held_ = false;
    PCLOUD_LOG(Notice, "Floating address released", {{"address", address_}, {"dev", dev_}});
}

// Called while wanted: makes sure the address is on the interface, and starts a burst of
// gratuitous ARPs when it was not (or was not ours).
void FloatingIp::ensure(Millis now) {
    next_check_ = now + kRecheckInterval;
    auto present = link_->hasAddress();
    if (!present) {
        PCLOUD_LOG(Error, "Cannot check the floating address; trying again in 5 s",
                   {{"address", address_}, {"dev", dev_}, {"error", present.error().describe()}});
        return;
    }
    if (*present && held_)
        return;
    if (*present) {
        conflicts_.push_back("present");
        PCLOUD_LOG(Warning,
                   "The floating address is already on the interface, not added by this cped "
                   "(left by a cped that was killed, or set by hand): this cped takes it over "
                   "and deletes it when it stops leading; check that no other host holds it",
                   {{"address", address_}, {"dev", dev_}});
    } else {
        if (held_)
            PCLOUD_LOG(Warning, "Someone removed the floating address; adding it again",
                       {{"address", address_}, {"dev", dev_}});
        held_ = false;
        // Asks whether another host holds the address before taking it (RFC 5227); an
        // answer is logged by readClaims().
        if (auto st = link_->sendProbe(); !st)
            PCLOUD_LOG(Warning, "Cannot send an ARP probe for the floating address",
                       {{"address", address_}, {"dev", dev_}, {"error", st.error().describe()}});
        if (auto st = link_->addAddress(); !st) {
            PCLOUD_LOG(Error, "Cannot add the floating address; trying again in 5 s",
                       {{"address", address_}, {"dev", dev_}, {"error", st.error().describe()}});
            return;
        }
        PCLOUD_LOG(Notice, "Floating address added", {{"address", address_}, {"dev", dev_}});
    }
    held_ = true;
    garps_left_ = kGarpCount;
    next_garp_ = now;
}

void FloatingIp::readClaims() {
    auto claims = link_->takeClaimsByOthers();
    if (!wanted_ && !held_)
        return; // the leader's own announcements, read only so that they do not pile up
    for (const auto& mac : claims) {
        if (!claimed_by_.insert(mac).second)
            continue;
        conflicts_.push_back(toString(mac));
        PCLOUD_LOG(Error,
                   "Another host answers for the floating address: two hosts may hold it; "
                   "find the host with this MAC and remove the address there",
                   {{"address", address_}, {"dev", dev_}, {"mac", toString(mac)}});
    }
}

Millis FloatingIp::tick(Millis now) {
    std::lock_guard lock(mutex_);
    return tickLocked(now);
}

Millis FloatingIp::tickLocked(Millis now) {
    readClaims();
    if (wanted_) {
        if (now >= next_check_)
            ensure(now);
        if (garps_left_ > 0 && now >= next_garp_) {
            if (auto st = link_->sendGratuitousArp(); !st)
                PCLOUD_LOG(
                    Warning, "Cannot send a gratuitous ARP for the floating address",
                    {{"address", address_}, {"dev", dev_}, {"error", st.error().describe()}});
            else
                ++garps_sent_;
            --garps_left_;
            next_garp_ = now + kGarpInterval;
        }
    } else if (now >= next_check_) {
        // Not leading: the address must not be here. It may be a delete that failed, or an
        // address left by a cped that was killed while it led (its next leader holds it too).
        next_check_ = now + kRecheckInterval;
        if (!held_) {
            auto present = link_->hasAddress();
            if (present && *present) {
                held_ = true;
                conflicts_.push_back("present");
                PCLOUD_LOG(Warning,
                           "The floating address is on the interface but this cped does not "
                           "lead (left by a cped that was killed, or set by hand): deleting it",
                           {{"address", address_}, {"dev", dev_}});
            }
        }
        if (held_ && link_->removeAddress()) {
            held_ = false;
            PCLOUD_LOG(Notice, "Floating address released", {{"address", address_}, {"dev", dev_}});
        }
    }
    Millis due = next_check_;
    if (wanted_ && garps_left_ > 0)
        due = std::min(due, next_garp_);
    return std::max<Millis>(0, due - now);
}

bool FloatingIp::held() const {
    std::lock_guard lock(mutex_);
    return held_;
}

int FloatingIp::garpsSent() const {
    std::lock_guard lock(mutex_);
    return garps_sent_;
}

std::vector<std::string> FloatingIp::conflicts() const {
    std::lock_guard lock(mutex_);
    return conflicts_;
}

Result<std::unique_ptr<FloatingIp>> makeFloatingIp(const hostconfig::HostConfig& host) {
    if (!host.floating_ip)
        return std::unique_ptr<FloatingIp>();
    auto link = openNetlinkLink(*host.floating_ip, host.floating_dev);
    if (!link)
        return makeError(link.error().message + " (floating_ip " + host.floating_ip->toString() +
                             ")",
                         host.source.empty() ? hostconfig::kDefaultPath : host.source);
    return std::make_unique<FloatingIp>(host.floating_ip->toString(), host.floating_dev,
                                        std::move(*link));
}

} // namespace pcloud::cped
