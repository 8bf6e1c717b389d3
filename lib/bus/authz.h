#pragma once
// Authorization at link attach (docs/security.md, "Who may use which address"): one pure
// function decides whether a peer with a verified identity may attach a link to an address.
// The hub calls it for every sender and receiver link; a denial closes the link with
// amqp:unauthorized-access.

#include "pki/identity.h"

#include <functional>
#include <string>

namespace pcloud::bus::authz {

// Seen from the peer: Send = the peer sends to the address (the hub's receiver link),
// Receive = the peer consumes or subscribes (the hub's sender link).
enum class Direction { Send, Receive };
const char* toString(Direction d);

struct Peer {
    pki::Identity identity;
    // A peer of a plain amqp:// listener (--insecure-listen): nothing was proven, and it
    // is let through unrestricted, as before TLS; the hub warns at start.
    bool insecure = false;
};

struct Context {
    // Whether deployable `deployable` holds the assembly named (or with uuid) `assembly`:
    // cped answers from its model. Unset = no dped may use any agent's addresses.
    std::function<bool(const std::string& deployable, const std::string& assembly)> ownsAssembly;
};

struct Decision {
    bool allow = false;
    std::string reason; // why, in an operator's words (also for an allow)
};

// `address` is the logical address (prefix stripped); `dynamic` = a receiver asking the hub
// for a fresh reply queue (address then empty).
Decision authorize(const Peer& peer, Direction direction, const std::string& address, bool dynamic,
                   const Context& context);

} // namespace pcloud::bus::authz
