#include "bus/proton_util.h"

#include <proton/binary.hpp>
#include <proton/codec/map.hpp>
#include <proton/netaddr.h>
#include <proton/scalar.hpp>
#include <proton/types.hpp>
#include <proton/value.hpp>

#include <cstdint>
#include <map>
#include <vector>

namespace pcloud::bus::detail {

namespace {

// proton::transport keeps its pn_transport_t to itself; the socket address is only in the C
// proactor API. A derived wrapper may read the protected handle of its own copy.
struct RawTransport : proton::transport {
    explicit RawTransport(const proton::transport& t) : proton::transport(t) {}
    pn_transport_t* get() const { return pn_object(); }
};

} // namespace

TransportFailure classifyTransportFailure(const std::string& condition,
                                          const std::string& description) {
    const std::string framing = "amqp:connection:framing-error";
    if (condition == "proton:io") {
        // "Connection reset by peer - disconnected :5672 (connection aborted)": the tail names
        // no useful address (the peer's is logged separately), so only the cause is kept.
        auto tail = description.find(" - disconnected");
        return {false, tail == std::string::npos ? description : description.substr(0, tail)};
    }
    if (condition == framing && description == "connection aborted")
        return {false, "the connection ended without an AMQP close"};
    if (condition == framing && description == "No protocol header found (connection aborted)")
        return {false, "the peer left before sending anything"};
    // A TLS peer that closed its socket without a TLS close_notify (killed, or just gone).
    if (condition == framing && description.find("SSL Failure") != std::string::npos &&
        description.find("unexpected eof") != std::string::npos)
        return {false, "the connection ended without a TLS or AMQP close"};
    if (condition == "amqp:resource-limit-exceeded" &&
        description.find("idle-timeout expired") != std::string::npos)
        return {false, "no heartbeat within the idle timeout"};
    return {true, description.empty() ? condition : condition + ": " + description};
}

std::string peerAddress(const proton::transport& t) {
    pn_transport_t* raw = RawTransport(t).get();
    if (!raw)
        return {};
    const pn_netaddr_t* addr = pn_transport_remote_addr(raw);
    if (!addr)
        return {};
    char buf[256];
    int n = pn_netaddr_str(addr, buf, sizeof buf);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf)
        return {};
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string bodyText(const proton::message& m) {
    const proton::value& b = m.body();
    switch (b.type()) {
    case proton::STRING:
        return proton::get<std::string>(b);
    case proton::BINARY: {
        auto bin = proton::get<proton::binary>(b);
        return std::string(bin.begin(), bin.end());
    }
    case proton::NULL_TYPE:
        return {};
    default:
        return proton::to_string(b);
    }
}

std::optional<std::size_t> messageSize(const proton::message& m) {
    try {
        // On a copy: a conversion that fails leaves Proton's cached property map half
        // filled, and the next look at the same object would then succeed and hide it.
        proton::message copy(m);
        std::vector<char> bytes;
        copy.encode(bytes);
        return bytes.size();
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::string undecodableReason(const proton::message& m) {
    try {
        // On fresh copies, for the reason given in messageSize().
        (void)fromProton(proton::message(m));
        // The hub forwards the message, a client may reply to or store it: each re-encodes
        // it, which converts the properties to scalars (a list-valued property throws here).
        proton::message copy(m);
        std::vector<char> bytes;
        copy.encode(bytes);
        return {};
    } catch (const std::exception& e) {
        std::string why = e.what();
        return why.empty() ? "undecodable message" : why;
    }
}

std::string stringProperty(const proton::message& m, const std::string& key) {
    try {
        const auto& props = m.properties();
        if (props.empty() || !props.exists(key))
            return {};
        proton::scalar v = props.get(key);
        if (v.type() == proton::STRING)
            return proton::get<std::string>(v);
    } catch (const std::exception&) {
    }
    return {};
}

std::string idText(const proton::message_id& id) {
    if (id.empty())
        return {};
    if (id.type() == proton::STRING)
        return proton::get<std::string>(id);
    return proton::to_string(id);
}

Message fromProton(const proton::message& m) {
    Message out;
    out.address = m.to();
    out.body = bodyText(m);
    out.correlationId = idText(m.correlation_id());
    out.replyTo = m.reply_to();
    out.subject = m.subject();
    out.userId = m.user();
    const auto& props = m.properties();
    if (!props.empty()) {
        std::map<std::string, proton::scalar> all;
        proton::get(props.value(), all);
        for (const auto& [k, v] : all)
            out.properties[k] =
                v.type() == proton::STRING ? proton::get<std::string>(v) : proton::to_string(v);
    }
    return out;
}

proton::message toProton(const std::string& address, const std::string& body,
                         const Properties& properties) {
    proton::message m;
    m.to(address);
    m.body(body);
    for (const auto& [k, v] : properties)
        m.properties().put(k, v);
    return m;
}

bool ParsedUrl::loopback() const {
    return host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]";
}

bool parseUrl(const std::string& url, ParsedUrl& out, std::string& error) {
    std::string rest = url;
    auto scheme = rest.find("://");
    if (scheme != std::string::npos) {
        std::string s = rest.substr(0, scheme);
        if (s != "amqp" && s != "amqps") {
            error = "unsupported URL scheme '" + s + "' in '" + url +
                    "' (amqps:// for TLS, or amqp://)";
            return false;
        }
        out.tls = s == "amqps";
        rest = rest.substr(scheme + 3);
    }
    auto at = rest.rfind('@');
    if (at != std::string::npos) {
        std::string info = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = info.find(':');
        out.user = info.substr(0, colon);
        out.password = colon == std::string::npos ? "" : info.substr(colon + 1);
    }
    auto slash = rest.find('/');
    if (slash != std::string::npos)
        rest = rest.substr(0, slash);
    auto colon = rest.rfind(':');
    if (colon == std::string::npos ||
        (rest.find(']') != std::string::npos && colon < rest.find(']'))) {
        out.host = rest;
        out.port = out.tls ? "5671" : "5672";
    } else {
        out.host = rest.substr(0, colon);
        out.port = rest.substr(colon + 1);
    }
    if (out.host.empty()) {
        error = "no host in AMQP URL '" + url + "' (expected amqp://HOST:PORT)";
        return false;
    }
    if (out.port.empty() || out.port.find_first_not_of("0123456789") != std::string::npos) {
        error = "bad port '" + out.port + "' in AMQP URL '" + url + "'";
        return false;
    }
    return true;
}

} // namespace pcloud::bus::detail
