// The agent protocol decoders (docs/protocol/agent.md): controller -> agent commands
// (proto::decodeCommand) and agent -> controller reports (proto::decodeReport), both fed
// the same bytes. A decoded command must encode to a body that decodes again.
#include "proto/agent_messages.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <variant>

using namespace pcloud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view body(reinterpret_cast<const char*>(data), size);
    constexpr Millis kNow = 1'764'000'000'000; // 2025-11-24, fixed: no clock in a fuzzer
    auto c = proto::decodeCommand(body, 64 * 1024, kNow);
    if (auto* cmd = std::get_if<proto::Command>(&c)) {
        std::string again = proto::encodeCommand(*cmd);
        auto c2 = proto::decodeCommand(again, again.size() + 1, kNow);
        if (auto* f = std::get_if<proto::DecodeFailure>(&c2)) {
            std::fprintf(stderr, "re-encoded command does not decode: %s: %s\nbody: %s\n",
                         f->code.c_str(), f->message.c_str(), again.c_str());
            std::abort();
        }
    }
    auto r = proto::decodeReport(body);
    if (r) {
        // The encoders are what the agent sends; they must take whatever was decoded.
        if (auto* h = std::get_if<proto::Hello>(&r->body))
            (void)proto::encodeHello(*h);
        else if (auto* s = std::get_if<proto::UnitState>(&r->body))
            (void)proto::encodeService(*s);
        else if (auto* hb = std::get_if<proto::Heartbeat>(&r->body))
            (void)proto::encodeHeartbeat(*hb);
        else if (auto* rep = std::get_if<proto::Reply>(&r->body))
            (void)proto::encodeReply(*rep);
    }
    return 0;
}
