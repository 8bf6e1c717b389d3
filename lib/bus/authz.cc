#include "bus/authz.h"

#include "bus/address.h"

namespace pcloud::bus::authz {

namespace {

bool startsWith(const std::string& s, const std::string& prefix) {
    return s.size() > prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// The suffix after `prefix`, or "" when `address` is not `prefix` + something.
std::string suffix(const std::string& address, const std::string& prefix) {
    return startsWith(address, prefix) ? address.substr(prefix.size()) : std::string();
}

bool isEvents(const std::string& address) {
    const std::string topic(kEventsTopic);
    return address == topic || startsWith(address, topic + ".");
}

Decision allow(std::string why) {
    return {true, std::move(why)};
}
Decision deny(std::string why) {
    return {false, std::move(why)};
}

const std::string kCommandApi = "pcloud.cped";
const std::string kJournal = "pcloud.journal";
const std::string kAgent = "pcloud.agent.";
const std::string kReports = "pcloud.reports.";
const std::string kDped = "pcloud.dped.";
const std::string kNode = "pcloud.node.";   // a pcloud-node's requests (docs/protocol/node.md)
const std::string kNodes = "pcloud.nodes."; // its events topic

} // namespace

const char* toString(Direction d) {
    return d == Direction::Send ? "send" : "receive";
}

Decision authorize(const Peer& peer, Direction direction, const std::string& address, bool dynamic,
                   const Context& context) {
    if (peer.insecure)
        return allow("plain listener (--insecure-listen): peers are not authenticated");
    const pki::Identity& id = peer.identity;
    const bool send = direction == Direction::Send;
    if (dynamic)
        return send ? deny("a dynamic address is only for receiving replies")
                    : allow("every authenticated peer may have reply queues");
    const std::string reply(kDynamicPrefix);
    if (startsWith(address, reply)) {
        if (!send)
            return deny("a reply queue belongs to the link that asked for it");
        // Requests are served by cped (the command API), dpeds (cped's requests) and nodes
        // (dpeds' requests). Agents answer on their reports queue and operators serve
        // nothing, so neither may put a forged reply in someone's reply queue.
        if (id.kind == pki::Kind::Cped || id.kind == pki::Kind::Dped || id.kind == pki::Kind::Node)
            return allow("services answer the requests they were sent");
        return deny("only cped, dpeds and nodes answer requests");
    }
    if (isEvents(address)) {
        if (send)
            return id.kind == pki::Kind::Cped ? allow("cped publishes events")
                                              : deny("only cped publishes events");
        if (id.kind == pki::Kind::Operator || id.kind == pki::Kind::Cped || id.events)
            return allow("operators and the events role may subscribe to events");
        return deny("subscribing to events needs an operator identity or the events role");
    }
    switch (id.kind) {
    case pki::Kind::Cped:
        // The control daemon serves the command API and reads the journal; it commands
        // dpeds and agents but never competes for their queues.
        if (send)
            return allow("cped may send to any address");
        if (address == kCommandApi || address == kJournal)
            return allow("cped serves the command API and reads the journal");
        return deny("cped consumes only " + kCommandApi + " and " + kJournal);
    case pki::Kind::Operator:
        if (address == kCommandApi)
            return send ? allow("operators use the command API")
                        : deny("only cped serves the command API");
        return deny("operators may use only the command API, events and replies");
    case pki::Kind::Agent: {
        if (send && address == kReports + id.name)
            return allow("an agent reports on its own queue");
        if (!send && address == kAgent + id.name)
            return allow("an agent reads its own command queue");
        return deny("agent " + id.name + " may send only to " + kReports + id.name +
                    " and receive only from " + kAgent + id.name);
    }
    case pki::Kind::Dped: {
        if (!send && address == kDped + id.name)
            return allow("a dped serves its own queue");
        // Any host's node: which host a deployable runs on is dped's --node, not the model.
        // The node checks every request against its own host configuration and epochs.
        if (send ? startsWith(address, kNode) : startsWith(address, kNodes))
            return allow("dpeds drive hosts through their pcloud-node");
        if (send && address == kJournal)
            return allow("dpeds write the journal");
        std::string assembly = send ? suffix(address, kAgent) : suffix(address, kReports);
        if (!assembly.empty() && context.ownsAssembly && context.ownsAssembly(id.name, assembly))
            return allow("assembly " + assembly + " belongs to deployable " + id.name);
        return deny("dped " + id.name + " may use only " + kDped + id.name + ", " + kJournal +
                    " and the agent addresses of its own assemblies");
    }
    case pki::Kind::Node:
        if (!send && address == kNode + id.name)
            return allow("a node serves its own request queue");
        if (send && address == kNodes + id.name)
            return allow("a node publishes its own events");
        return deny("node " + id.name + " may receive only from " + kNode + id.name +
                    " and send only to " + kNodes + id.name);
    }
    return deny("unknown identity kind");
}

} // namespace pcloud::bus::authz
