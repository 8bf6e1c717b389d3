#pragma once
// Signed command envelopes (docs/protocol/agent.md "Signed commands", docs/security.md).
//
// A command to an agent (or a dped) travels inside an envelope that names who sends it
// (`sender`, an identity `kind:name`), to whom (`target`), what (`action`), a unique
// `request_id`, when (`msgtime`, wall-clock ms) and for how long it is valid (`ttl`, ms), the
// sender's leader `epoch`, the command body, the signer's X.509 certificate and a signature
// over a canonical byte string of all of that (canonicalBytes). The receiver needs only the
// CA certificate: the chain is checked against it, the certificate's CN must be the sender,
// then the signature, the target, whether this sender may command this target at all
// (mayCommand), the time window, the epoch and the replay cache.
//
// Crypto is OpenSSL 3 EVP only (EVP_DigestSign / EVP_DigestVerify): Ed25519 (no digest), or
// ECDSA P-256 with SHA-256; the key type picks the algorithm, never a field of the message.
// Pure apart from OpenSSL: the clock comes in as `now`, nothing is read from disk except by
// the load functions.

#include "common/clock.h"
#include "common/result.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;
typedef struct x509_store_st X509_STORE;

namespace pcloud::envelope {

// Allowed difference between the sender's and the receiver's wall clocks.
inline constexpr Millis kDefaultSkew = 30'000;
// Largest ttl a sender may ask for: it bounds how long a replay cache entry lives.
inline constexpr Millis kMaxTtl = 600'000;
// msgtime must be in years 1970..9999 (so msgtime + ttl + skew never overflows).
inline constexpr Millis kMaxMsgtime = 253'402'300'799'999;
inline constexpr std::size_t kDefaultReplayCapacity = 4096;
inline constexpr std::size_t kMaxRequestId = 128;
inline constexpr std::size_t kMaxAction = 64;
inline constexpr std::size_t kMaxIdentity = 160;

struct Fields {
    std::string sender;      // "dped:web", "operator:alice"; Signer fills its own in
    std::string target;      // "agent:node01", "dped:web"
    std::string action;      // the command type ("restart", "watch", ...)
    std::string request_id;  // unique per sender; Signer makes a random one when empty
    Millis msgtime = 0;      // wall-clock ms since the epoch when it was signed
    Millis ttl = 30'000;     // valid until msgtime + ttl (plus the allowed skew)
    std::uint64_t epoch = 0; // the sender's leader epoch (0 until HA)
};

// Why an envelope was refused. Each code is also the `error.code` of the reply.
enum class Reject {
    Malformed,       // not an envelope: bad JSON, a missing or mistyped field, bad base64
    Unsigned,        // a plain (unsigned) command, or an envelope without cert or signature
    BadSignature,    // the signature does not match the fields and body
    UntrustedSigner, // the certificate does not chain to the CA (or is expired, or its key
                     // type is not Ed25519 / ECDSA P-256)
    SenderMismatch,  // the certificate's CN is not the sender field
    NotAuthorized,   // this sender may not command this target (mayCommand)
    Expired,         // msgtime + ttl < now - skew
    FromTheFuture,   // msgtime > now + skew
    Replayed,        // this sender's request_id was accepted before, within its window
    WrongTarget,     // target is not this receiver
    StaleEpoch,      // epoch is lower than the highest this receiver accepted from the sender
    ReplayCacheFull, // the replay cache is at its bound with live entries: refused, not run
};
const char* toString(Reject r); // "bad-signature", ...

struct Rejection {
    Reject code = Reject::Malformed;
    std::string message;    // a sentence naming what is wrong
    std::string request_id; // for correlating the error reply ("" when unreadable)
    std::string sender;     // as claimed (unverified unless code is after the signature)
};

struct Verified {
    Fields fields;
    std::string body;
};

using VerifyResult = std::variant<Verified, Rejection>;

// The bytes that are signed. Domain tag "pcloud-envelope-v1" and a NUL, then each field as a
// 4-byte big-endian length and its bytes, in this order: sender, target, action, request_id,
// msgtime, ttl, epoch, body; the three integers as 8-byte big-endian values (so their length
// is always 8). No field can run into the next one.
std::string canonicalBytes(const Fields& f, std::string_view body);

// "kind:name": kind [a-z]{1,16}, name [A-Za-z0-9._-] (not starting with '.' or '-'), at most
// kMaxIdentity bytes in all.
bool validIdentity(std::string_view id);

// The target of a request to cped's command API (pcloud.cped): one fixed name, whichever cped
// of a zone serves it (the leader may be any of them).
inline constexpr const char* kCommandApi = "cped:api";

// Who may command whom (docs/security.md "Signed commands"): a target `agent:A` accepts
// `operator:*` and `dped:D` where D is the deployable the agent is configured to belong to
// (`agentDeployable`, empty = none: only operators); a target `dped:D` accepts `operator:*`
// and `cped:*`; the command API `cped:api` (kCommandApi) accepts only `operator:*`. Nobody
// else, nothing else. The error says why.
Status mayCommand(std::string_view sender, std::string_view target,
                  std::string_view agentDeployable);

// A signature covers one action: the request it carries must be that command, or a
// signature an operator gave for `status` could carry a `stop`. Every receiver of signed
// requests (agent, dped, cped's command API) checks this after verify; the error names both.
Status actionIsCommand(const Fields& f, std::string_view command);

// Parsed but not verified: for receivers that have no CA (unauthenticated mode), and the
// first step of verify.
struct Parsed {
    Fields fields;
    std::string body;
    std::string cert_der;
    std::string signature;
};
std::variant<Parsed, Rejection> parse(std::string_view bytes);
// Whether the bytes are a JSON object with "type":"signed" (cheap check before decoding).
bool isEnvelope(std::string_view bytes);
// The id an error reply to a refused message must carry so that its sender can correlate it:
// the "id" of the command inside the envelope, or of the plain command (both unverified),
// else the rejection's request_id, else `fallback`.
std::string replyIdOf(std::string_view bytes, const Rejection& r, const std::string& fallback);

std::string base64Encode(std::string_view bytes);
// Strict: only the standard alphabet, padded, length a multiple of 4, no whitespace.
std::optional<std::string> base64Decode(std::string_view text);

// A private key and its certificate: what a sender signs with.
class Signer {
public:
    // PEM files. The key must not be readable by group or others (chmod 600), must match
    // the certificate, and must be Ed25519 or ECDSA P-256; the certificate's CN is the
    // identity this signer signs as.
    static Result<Signer> load(const std::string& keyPath, const std::string& certPath);
    static Result<Signer> fromPem(std::string_view keyPem, std::string_view certPem);

    const std::string& identity() const { return identity_; }
    // The envelope bytes. An empty sender becomes identity() (another is an error), an empty
    // request_id a random one. The body must be UTF-8 (it travels as a JSON string).
    Result<std::string> sign(Fields fields, std::string_view body) const;

private:
    std::shared_ptr<EVP_PKEY> key_;
    std::string cert_der_;
    std::string identity_;
};

// The CA certificate(s) a receiver trusts.
class CaStore {
public:
    static Result<CaStore> loadFile(const std::string& path);
    static Result<CaStore> fromPem(std::string_view pem, const std::string& source = "CA");
    X509_STORE* store() const { return store_.get(); }

private:
    std::shared_ptr<X509_STORE> store_;
};

// Who the receiver is and what it accepts.
struct Trust {
    CaStore ca;
    std::string self;       // this receiver's identity: "agent:node01"
    std::string deployable; // agents: the deployable they belong to (mayCommand)
    Millis skew = kDefaultSkew;
    // Envelopes signed before this are refused as expired: a receiver that lost its replay
    // cache (the agent after a guest reboot) sets it to its start time minus the skew, so
    // nothing signed before it started can be replayed to it beyond that.
    Millis not_before = 0;
};

// Request ids accepted recently, per sender, and the highest epoch accepted per sender.
// An entry lives until msgtime + ttl + skew (after that the envelope is refused as expired
// anyway). Bounded: when `capacity` live entries are held, a new command is refused with
// replay-cache-full rather than evicting a live entry (which would let that one be
// replayed). Only fully verified commands are recorded, so only key holders fill it.
class ReplayCache {
public:
    explicit ReplayCache(std::size_t capacity = kDefaultReplayCapacity) : capacity_(capacity) {}
    std::size_t size() const { return expiry_.size(); }
    std::size_t capacity() const { return capacity_; }
    void purge(Millis now);
    bool contains(const std::string& sender, const std::string& requestId) const;
    // Time of the earliest expiry (when a full cache frees a place); kNever-like max if empty.
    Millis earliestExpiry() const;
    bool full() const { return expiry_.size() >= capacity_; }
    void insert(const std::string& sender, const std::string& requestId, Millis expiry);
    std::uint64_t highestEpoch(const std::string& sender) const;
    void noteEpoch(const std::string& sender, std::uint64_t epoch);

    // The live entries and the epochs as one JSON object, so a receiver that restarts can
    // keep them (the agent writes it to RUN_DIR/replay.json after each accepted command).
    std::string toJson(Millis now) const;
    // Reads what toJson wrote; entries already expired at `now` are dropped, and at most
    // `capacity` are kept (those expiring last). A bad text is an error naming what.
    static Result<ReplayCache> fromJson(std::string_view text, Millis now,
                                        std::size_t capacity = kDefaultReplayCapacity);

private:
    std::size_t capacity_;
    std::map<std::string, Millis> expiry_;           // sender '\n' request_id -> expiry
    std::set<std::pair<Millis, std::string>> order_; // (expiry, key)
    std::map<std::string, std::uint64_t> epochs_;    // sender -> highest accepted epoch
};

// Checks everything (see the file comment), in this order: parse, certificate chain (at
// `now`), CN == sender, signature, target, mayCommand, time window, epoch, replay. Only a
// command that passes all of them is recorded in `cache`.
VerifyResult verify(std::string_view bytes, const Trust& trust, Millis now, ReplayCache& cache);

} // namespace pcloud::envelope
