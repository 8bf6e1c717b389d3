#pragma once
// A bus message as pcloud code sees it: a UTF-8 body (JSON by convention, see
// docs/protocol/bus.md) plus the few AMQP fields request/reply needs. No proton types here,
// so code above the bus does not depend on Proton.

#include <map>
#include <string>

namespace pcloud::bus {

// AMQP application properties, string-valued (e.g. {"coalesce-key", "hb.node01"}).
using Properties = std::map<std::string, std::string>;

struct Message {
    std::string address; // the logical address it arrived on (prefix removed)
    std::string body;
    Properties properties;
    std::string correlationId; // requests and replies: the request's "id"
    std::string replyTo;       // requests: where the reply goes (used verbatim)
    std::string subject;
    // The AMQP user-id: who the broker says sent it. RabbitMQ refuses a message whose user-id
    // is not the sender's login (its certificate's CN with SASL EXTERNAL); the TLS hub does the
    // same and stamps the peer's identity on a message without one. Empty when the sender set
    // none on RabbitMQ, or on a plain bus (docs/security.md "Senders").
    std::string userId;
};

} // namespace pcloud::bus
