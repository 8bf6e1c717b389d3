// The signed-envelope verifier (lib/envelope, docs/protocol/agent.md "Signed commands"):
// envelope::verify on the bytes as they come off the bus, for agent:node01 of deployable web,
// at a fixed time, with a CA and two signers whose keys are embedded below (test-only keys
// made for this target with the openssl CLI, valid 2026-2126; they protect nothing).
// Extra checks beyond the sanitizers:
// - an accepted envelope is refused as `replayed` the second time;
// - whatever parse() accepts, signed again by dped:web (fields and body as parsed), parses
//   back to the same fields and body, and verify never says it is malformed, badly signed,
//   from an untrusted signer or a mismatched sender.
#include "envelope/envelope.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>

using namespace pcloud;

namespace {

const char* const kCaPem = R"(-----BEGIN CERTIFICATE-----
MIIBSDCB+6ADAgECAhQG+t7L43HZCRTLh2xIyd2NCTR1BTAFBgMrZXAwGTEXMBUG
A1UEAwwOcGNsb3VkIGZ1enogQ0EwIBcNMjYxMjAxMjIxMDIzWhgPMjEyNjExMDcy
MjEwMjNaMBkxFzAVBgNVBAMMDnBjbG91ZCBmdXp6IENBMCowBQYDK2VwAyEAckjg
wQpkJmv5Z4xO1Kn4CNSP/qACeo6McLfn+FNDUzmjUzBRMB0GA1UdDgQWBBQB0g4y
6Co+n+qusXU5zBgZT7o8IDAfBgNVHSMEGDAWgBQB0g4y6Co+n+qusXU5zBgZT7o8
IDAPBgNVHRMBAf8EBTADAQH/MAUGAytlcANBAIB1lYFFXBkIHDev1sv7CUsHh6S/
BzlUTbgRMK3Z5zbuOYwgqYsQC7+Xat38aHYLvsraKgZFwMJ3odGpIY0s+Aw=
-----END CERTIFICATE-----
)";

const char* const kDpedWebKey = R"(-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKfYuUQcLxbhxVf0qMZ3kCVVFIsAFaz5C199X9LANGuu
-----END PRIVATE KEY-----
)";

const char* const kDpedWebCert = R"(-----BEGIN CERTIFICATE-----
MIHoMIGbAhQVzj3S1N9SqQHrK7WrzkhGojmOGzAFBgMrZXAwGTEXMBUGA1UEAwwO
cGNsb3VkIGZ1enogQ0EwIBcNMjYxMjAxMjIxMDIzWhgPMjEyNjExMDcyMjEwMjNa
MBMxETAPBgNVBAMMCGRwZWQ6d2ViMCowBQYDK2VwAyEAYNGvLCEMozcB0B+dTzAh
eOxXoQ5enpWVlifuyBDCRm4wBQYDK2VwA0EAg0RqlpzY+NkML8HONtZ1JfqvzIx0
8382r7i1qnfFCPEgTIGL6tz7DyJYzWc8vhsvf2C6CU1GoiImuz3F12fdDQ==
-----END CERTIFICATE-----
)";

const char* const kBobKey = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfDmkJdFFhgHS7WEW
2O+7hLmE6Xb12B2snZjCT1KTsuKhRANCAASNOZFiWFrreE/gwioQFRuJJCyMrh7W
qhgIRV3xZjHkw0H9CVO2jQ6sViOAaC7nuVfMGuSqTRGwlPjdJPl5a4++
-----END PRIVATE KEY-----
)";

const char* const kBobCert = R"(-----BEGIN CERTIFICATE-----
MIIBGzCBzgIUFc490tTfUqkB6yu1q85IRqI5jhwwBQYDK2VwMBkxFzAVBgNVBAMM
DnBjbG91ZCBmdXp6IENBMCAXDTI2MTIwMTIyMTAyM1oYDzIxMjYxMTA3MjIxMDIz
WjAXMRUwEwYDVQQDDAxvcGVyYXRvcjpib2IwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAASNOZFiWFrreE/gwioQFRuJJCyMrh7WqhgIRV3xZjHkw0H9CVO2jQ6sViOA
aC7nuVfMGuSqTRGwlPjdJPl5a4++MAUGAytlcANBALtHtr6HN00ZNJId91ptG3c1
dalezWTJMCfH/GQnR+rXaj0E2w7hUXI1FOE8hWdoFGH9KXKZGcVo/Co8/FdIxwY=
-----END CERTIFICATE-----
)";

constexpr Millis kNow = 1'800'000'000'000; // 2027-01-15, fixed: no clock in a fuzzer

struct Setup {
    envelope::Trust trust;
    std::optional<envelope::Signer> web;
    Setup() {
        auto ca = envelope::CaStore::fromPem(kCaPem);
        auto s = envelope::Signer::fromPem(kDpedWebKey, kDpedWebCert);
        auto bob = envelope::Signer::fromPem(kBobKey, kBobCert);
        if (!ca || !s || !bob) {
            std::fprintf(stderr, "fuzz_envelope: the embedded keys do not load\n");
            std::abort();
        }
        trust = envelope::Trust{*ca, "agent:node01", "web"};
        web = *s;
    }
};

[[noreturn]] void fail(const char* what, const std::string& detail) {
    std::fprintf(stderr, "fuzz_envelope: %s: %s\n", what, detail.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Setup setup;
    std::string_view bytes(reinterpret_cast<const char*>(data), size);

    envelope::ReplayCache cache(4);
    auto v = envelope::verify(bytes, setup.trust, kNow, cache);
    if (std::holds_alternative<envelope::Verified>(v)) {
        auto again = envelope::verify(bytes, setup.trust, kNow, cache);
        auto* r = std::get_if<envelope::Rejection>(&again);
        if (!r || r->code != envelope::Reject::Replayed)
            fail("an accepted envelope was not refused as replayed the second time",
                 std::string(bytes));
    } else {
        (void)envelope::toString(std::get<envelope::Rejection>(v).code);
    }

    auto p = envelope::parse(bytes);
    if (auto* parsed = std::get_if<envelope::Parsed>(&p)) {
        envelope::Fields f = parsed->fields;
        f.sender = "dped:web";
        auto resigned = setup.web->sign(f, parsed->body);
        if (!resigned)
            fail("fields that parse do not sign", resigned.error().message);
        auto back = envelope::parse(*resigned);
        auto* b = std::get_if<envelope::Parsed>(&back);
        if (!b)
            fail("a signed envelope does not parse", std::get<envelope::Rejection>(back).message);
        if (b->fields.target != f.target || b->fields.action != f.action ||
            b->fields.request_id != f.request_id || b->fields.msgtime != f.msgtime ||
            b->fields.ttl != f.ttl || b->fields.epoch != f.epoch || b->body != parsed->body)
            fail("a signed envelope parses to other fields", *resigned);
        envelope::ReplayCache fresh(4);
        auto rv = envelope::verify(*resigned, setup.trust, kNow, fresh);
        if (auto* r = std::get_if<envelope::Rejection>(&rv)) {
            switch (r->code) {
            case envelope::Reject::Malformed:
            case envelope::Reject::Unsigned:
            case envelope::Reject::BadSignature:
            case envelope::Reject::UntrustedSigner:
            case envelope::Reject::SenderMismatch:
            case envelope::Reject::Replayed:
            case envelope::Reject::ReplayCacheFull:
                fail("a correctly signed envelope was refused", r->message + "\n" + *resigned);
            default:
                break;
            }
        }
    }
    return 0;
}
