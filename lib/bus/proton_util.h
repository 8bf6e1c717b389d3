#pragma once
// Conversions between proton types and pcloud's plain bus::Message. Internal to lib/bus.

#include "bus/message.h"

#include <proton/message.hpp>
#include <proton/transport.hpp>

#include <optional>
#include <string>

namespace pcloud::bus::detail {

// The body as text: a string or binary body verbatim; anything else in proton's notation.
std::string bodyText(const proton::message& m);
// The message's encoded AMQP size, whatever its body type (string, binary, list, map...):
// the one number the size cap is checked against, before anything is converted to C++
// types. nullopt when it cannot be encoded (then undecodableReason() says why).
std::optional<std::size_t> messageSize(const proton::message& m);
// Converts every part a pcloud reader looks at (properties as a map of strings to scalars,
// ids, the body as text) and re-encodes the message as forwarding does, so a malformed
// message fails here, in one place, with proton's reason, instead of throwing deep inside
// a handler (or in the hub's send). "" when the message is usable.
std::string undecodableReason(const proton::message& m);
// A string-valued application property, or "" when absent or not a string. Never throws.
std::string stringProperty(const proton::message& m, const std::string& key);
std::string idText(const proton::message_id& id);

// Throws proton::error when the message does not decode (see undecodableReason).
Message fromProton(const proton::message& m);
proton::message toProton(const std::string& address, const std::string& body,
                         const Properties& properties);

// "amqp://user:pass@host:port" split into its parts; the scheme is optional (amqp).
struct ParsedUrl {
    bool tls = false; // amqps://
    std::string user;
    std::string password;
    std::string host;
    std::string port;
    std::string hostPort() const { return host + ":" + port; }
    bool loopback() const;
};
bool parseUrl(const std::string& url, ParsedUrl& out, std::string& error);

// A transport that ended without an AMQP close, in an operator's terms. Most of these are a
// peer that went away (killed, _exit, cable pulled, a port probe that connects and leaves):
// Proton reports those as framing or I/O errors, which read like a protocol bug but are not.
// `protocolError` is set only when the peer sent something that is not AMQP 1.0, or broke it.
struct TransportFailure {
    bool protocolError = false;
    std::string reason; // plain words, or Proton's condition text for a protocol error
};
TransportFailure classifyTransportFailure(const std::string& condition,
                                          const std::string& description);

// "host:port" of the other end of a transport the proactor runs; "" when unknown.
std::string peerAddress(const proton::transport& t);

} // namespace pcloud::bus::detail
