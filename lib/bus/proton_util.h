#pragma once
// Conversions between proton types and pcloud's plain bus::Message. Internal to lib/bus.

#include "bus/message.h"

#include <proton/message.hpp>

#include <string>

namespace pcloud::bus::detail {

// The body as text: a string or binary body verbatim; anything else in proton's notation.
std::string bodyText(const proton::message& m);
// Approximate payload size used for the hub's size limit (string/binary bodies).
std::size_t bodySize(const proton::message& m);
// A string-valued application property, or "" when absent or not a string.
std::string stringProperty(const proton::message& m, const std::string& key);
std::string idText(const proton::message_id& id);

Message fromProton(const proton::message& m);
proton::message toProton(const std::string& address, const std::string& body,
                         const Properties& properties);

// "amqp://user:pass@host:port" split into its parts; the scheme is optional.
struct ParsedUrl {
    std::string user;
    std::string password;
    std::string host;
    std::string port;
    std::string hostPort() const { return host + ":" + port; }
    bool loopback() const;
};
bool parseUrl(const std::string& url, ParsedUrl& out, std::string& error);

} // namespace pcloud::bus::detail
