#pragma once
// The zone's floating address (docs/ha.md "Floating IP"): while this cped leads, it holds
// the configured IPv4 address on one Ethernet interface, and tells the segment with
// gratuitous ARP so that switches and neighbours send the address's traffic here at once,
// as Pacemaker's IPaddr2 and keepalived do. It gives the address up when it stops leading.
//
// FloatingIp decides when to act; an AddressLink acts. The real link is netlink
// (libnl-route-3) and an AF_PACKET socket; tests of the schedule pass a fake. FloatingIp
// reads no clock: every call takes `now` (monotonic ms), and tick() returns when it wants
// to be called again, so cped drives it from its supervision loop and tests from a
// ManualClock.

#include "common/clock.h"
#include "common/host_config.h"
#include "common/result.h"

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pcloud::cped {

using MacAddress = std::array<std::uint8_t, 6>;

// One gratuitous ARP as sent on the wire (42 bytes, RFC 5227 §3 "ARP Announcement"):
// an Ethernet broadcast from `mac`, an ARP request whose sender and target IP are both `ip`
// (host byte order), the target hardware address zero.
std::array<std::uint8_t, 42> gratuitousArpFrame(const MacAddress& mac, std::uint32_t ip);
// An ARP probe (RFC 5227 §2.1.1): sender IP 0.0.0.0, target `ip`. A host that holds `ip`
// answers it (Linux does; it does not answer a gratuitous ARP for its own address).
std::array<std::uint8_t, 42> arpProbeFrame(const MacAddress& mac, std::uint32_t ip);
// "02:00:0a:09:00:64"
std::string toString(const MacAddress& mac);

// What FloatingIp does to the host.
class AddressLink {
public:
    virtual ~AddressLink() = default;
    // Whether the address is on the interface now (any prefix length).
    virtual Result<bool> hasAddress() = 0;
    virtual Status addAddress() = 0;
    // Success also when the address is already gone.
    virtual Status removeAddress() = 0;
    virtual Status sendGratuitousArp() = 0;
    virtual Status sendProbe() = 0;
    // The MAC addresses of other hosts whose ARP frames claimed the address (sender IP ==
    // the address) since the last call.
    virtual std::vector<MacAddress> takeClaimsByOthers() = 0;
};

// The real link on `dev`, in the network namespace of the calling thread (its sockets stay
// there). Needs CAP_NET_ADMIN and CAP_NET_RAW. Fails when the interface does not exist or
// is not Ethernet, naming it.
Result<std::unique_ptr<AddressLink>> openNetlinkLink(const hostconfig::Ipv4Cidr& address,
                                                     const std::string& dev);

class FloatingIp {
public:
    static constexpr int kGarpCount = 5;             // like keepalived's vrrp_garp_master_repeat
    static constexpr Millis kGarpInterval = 200;     // between two of them
    static constexpr Millis kRecheckInterval = 5000; // is it still there?

    // `address` ("10.9.0.100/24") and `dev` name it in logs.
    FloatingIp(std::string address, std::string dev, std::unique_ptr<AddressLink> link);
    // Releases the address (a clean exit must not leave it behind).
    ~FloatingIp();

    // This node leads: add the address (taking it over if it is already there) and start
    // the gratuitous ARPs, the first at once. Does nothing while it is already wanted.
    void acquire(Millis now);
    // This node no longer leads, or stops: delete the address now (if this object holds it).
    // A failed delete is logged and retried by tick().
    void release();
    // Sends the gratuitous ARP that is due, logs other hosts that claim the address, and
    // every kRecheckInterval checks the interface: while wanted, adds the address again if
    // someone removed it (or retries a failed add); while not, deletes it if it is there (a
    // failed delete, or one left by a cped killed while it led). Returns the ms until it
    // wants to be called again.
    Millis tick(Millis now);

    bool held() const;
    int garpsSent() const;
    // Conflicts logged so far: "present" (found on the interface, not added by this object)
    // or the MAC of another host that answered for the address.
    std::vector<std::string> conflicts() const;

private:
    // These run with mutex_ held.
    void ensure(Millis now);
    void readClaims();
    Millis tickLocked(Millis now);

    const std::string address_;
    const std::string dev_;
    std::unique_ptr<AddressLink> link_;
    mutable std::mutex mutex_; // tick() runs on cped's loop, release() on the coordinator's
    bool wanted_ = false;      // this node leads
    bool held_ = false;        // on the interface because of this object: delete on release
    int garps_left_ = 0;
    Millis next_garp_ = 0;
    Millis next_check_ = 0;
    int garps_sent_ = 0;
    std::set<MacAddress> claimed_by_; // logged in this term
    std::vector<std::string> conflicts_;
};

// The FloatingIp of the host configuration, or null when it has no floating_ip. Fails when
// floating_dev does not exist (a configuration error: cped exits 78), naming it and the file.
Result<std::unique_ptr<FloatingIp>> makeFloatingIp(const hostconfig::HostConfig& host);

} // namespace pcloud::cped
