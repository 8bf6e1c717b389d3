#include "envelope/envelope.h"

#include "common/fs.h"
#include "common/utf8.h"
#include "policy/epoch_fence.h"

#include <nlohmann/json.hpp>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

namespace pcloud::envelope {
namespace {

using nlohmann::json;

struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
    void operator()(X509* x) const { X509_free(x); }
};
struct CtxFree {
    void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct MdCtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The newest OpenSSL error as text (and the queue cleared), for messages.
std::string sslError() {
    unsigned long e = ERR_get_error();
    std::string out;
    if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out = buf;
    }
    ERR_clear_error();
    return out.empty() ? "unknown OpenSSL error" : out;
}

// A PEM passphrase callback that refuses: an encrypted key is an error, never a prompt.
int noPassphrase(char*, int, int, void*) {
    return -1;
}

void putLength(std::string& out, std::size_t n) {
    auto v = static_cast<std::uint32_t>(n);
    for (int shift = 24; shift >= 0; shift -= 8)
        out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void putField(std::string& out, std::string_view s) {
    putLength(out, s.size());
    out.append(s);
}

void putInt(std::string& out, std::uint64_t v) {
    putLength(out, 8);
    for (int shift = 56; shift >= 0; shift -= 8)
        out.push_back(static_cast<char>((v >> shift) & 0xff));
}

bool validAction(std::string_view a) {
    if (a.empty() || a.size() > kMaxAction)
        return false;
    for (char c : a)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    return true;
}

bool validRequestId(std::string_view r) {
    if (r.empty() || r.size() > kMaxRequestId)
        return false;
    for (unsigned char c : r)
        if (c < 0x21 || c > 0x7e)
            return false;
    return true;
}

// What is wrong with the fields, or "" when nothing.
std::string fieldProblem(const Fields& f) {
    if (!validIdentity(f.sender))
        return "field 'sender' must be an identity kind:name";
    if (!validIdentity(f.target))
        return "field 'target' must be an identity kind:name";
    if (!validAction(f.action))
        return "field 'action' must be 1-64 characters of [a-z0-9_-]";
    if (!validRequestId(f.request_id))
        return "field 'request_id' must be 1-128 printable ASCII characters";
    if (f.msgtime < 0 || f.msgtime > kMaxMsgtime)
        return "field 'msgtime' must be milliseconds since 1970 before the year 10000";
    if (f.ttl < 1 || f.ttl > kMaxTtl)
        return "field 'ttl' must be 1 to " + std::to_string(kMaxTtl) + " ms";
    if (f.epoch > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return "field 'epoch' is too large";
    return {};
}

// The single CN of a certificate subject, or nullopt (none, several, or not text).
std::optional<std::string> commonName(X509* cert) {
    X509_NAME* name = X509_get_subject_name(cert);
    if (!name)
        return std::nullopt;
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
        return std::nullopt;
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0)
        return std::nullopt;
    std::string cn(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
    OPENSSL_free(utf8);
    if (cn.find('\0') != std::string::npos)
        return std::nullopt;
    return cn;
}

// The digest to use with this key, or an error: Ed25519 signs the message itself (md NULL),
// ECDSA P-256 uses SHA-256. Nothing else is accepted.
Result<const EVP_MD*> digestFor(EVP_PKEY* key) {
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_ED25519:
        return static_cast<const EVP_MD*>(nullptr);
    case EVP_PKEY_EC: {
        char group[64] = {0};
        std::size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &len) != 1)
            return makeError("the EC key names no curve");
        if (std::string_view(group) != "prime256v1")
            return makeError("the EC key is on curve " + std::string(group) +
                             "; only P-256 (prime256v1) is accepted");
        return EVP_sha256();
    }
    default:
        return makeError(std::string("the key type ") +
                         (EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "?") +
                         " is not accepted (Ed25519 or ECDSA P-256)");
    }
}

Rejection reject(Reject code, std::string message, const Parsed* p = nullptr) {
    Rejection r{code, std::move(message), {}, {}};
    if (p) {
        r.request_id = p->fields.request_id;
        r.sender = p->fields.sender;
    }
    return r;
}

const std::set<std::string>& envelopeKeys() {
    static const std::set<std::string> keys = {"v",      "type",       "sender",  "target",
                                               "action", "request_id", "msgtime", "ttl",
                                               "epoch",  "body",       "cert",    "sig"};
    return keys;
}

} // namespace

const char* toString(Reject r) {
    switch (r) {
    case Reject::Malformed:
        return "malformed-envelope";
    case Reject::Unsigned:
        return "unsigned";
    case Reject::BadSignature:
        return "bad-signature";
    case Reject::UntrustedSigner:
        return "untrusted-signer";
    case Reject::SenderMismatch:
        return "sender-mismatch";
    case Reject::NotAuthorized:
        return "not-authorized";
    case Reject::Expired:
        return "expired";
    case Reject::FromTheFuture:
        return "from-the-future";
    case Reject::Replayed:
        return "replayed";
    case Reject::WrongTarget:
        return "wrong-target";
    case Reject::StaleEpoch:
        return "stale-epoch";
    case Reject::ReplayCacheFull:
        return "replay-cache-full";
    }
    return "?";
}

std::string canonicalBytes(const Fields& f, std::string_view body) {
    static constexpr char kTag[] = "pcloud-envelope-v1";
    std::string out(kTag, sizeof kTag); // with its NUL
    putField(out, f.sender);
    putField(out, f.target);
    putField(out, f.action);
    putField(out, f.request_id);
    putInt(out, static_cast<std::uint64_t>(f.msgtime));
    putInt(out, static_cast<std::uint64_t>(f.ttl));
    putInt(out, f.epoch);
    putField(out, body);
    return out;
}

bool validIdentity(std::string_view id) {
    if (id.size() > kMaxIdentity)
        return false;
    auto colon = id.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon > 16)
        return false;
    for (char c : id.substr(0, colon))
        if (c < 'a' || c > 'z')
            return false;
    std::string_view name = id.substr(colon + 1);
    if (name.empty() || name[0] == '.' || name[0] == '-')
        return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    return true;
}

Status actionIsCommand(const Fields& f, std::string_view command) {
    if (f.action == command)
        return {};
    return makeError("the envelope's action '" + f.action + "' is not the request's command '" +
                     std::string(command) + "'");
}

Status mayCommand(std::string_view sender, std::string_view target,
                  std::string_view agentDeployable) {
    if (!validIdentity(sender) || !validIdentity(target))
        return makeError("sender and target must be identities kind:name");
    auto kindOf = [](std::string_view id) { return id.substr(0, id.find(':')); };
    auto nameOf = [](std::string_view id) { return id.substr(id.find(':') + 1); };
    const std::string_view sk = kindOf(sender), tk = kindOf(target);
    if (sk == "operator")
        return {};
    if (tk == "agent") {
        if (sk != "dped")
            return makeError("an agent takes commands only from operator:* and its deployable's "
                             "dped, not from " +
                             std::string(sender));
        if (agentDeployable.empty())
            return makeError("this agent has no deployable configured, so no dped may command "
                             "it (only operator:*); set deployable= in its config");
        if (nameOf(sender) != agentDeployable)
            return makeError("this agent belongs to deployable '" + std::string(agentDeployable) +
                             "', not to '" + std::string(nameOf(sender)) + "'");
        return {};
    }
    if (tk == "dped") {
        if (sk == "cped")
            return {};
        return makeError("a dped takes commands only from operator:* and cped:*, not from " +
                         std::string(sender));
    }
    if (target == kCommandApi)
        return makeError("the command API (" + std::string(kCommandApi) +
                         ") takes commands only from operator:*, not from " + std::string(sender));
    return makeError("nobody but operator:* may command " + std::string(target));
}

std::string base64Encode(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(bytes.data()),
                            static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::optional<std::string> base64Decode(std::string_view text) {
    if (text.size() % 4 != 0 || text.size() > (1u << 24))
        return std::nullopt;
    std::size_t pad = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '+' || c == '/';
        if (c == '=') {
            // Only as the last one or two characters.
            if (i + 2 < text.size())
                return std::nullopt;
            ++pad;
        } else if (!alpha || pad > 0) {
            return std::nullopt;
        }
    }
    if (pad > 2)
        return std::nullopt;
    std::string out(text.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(text.data()),
                            static_cast<int>(text.size()));
    if (n < 0 || static_cast<std::size_t>(n) < pad)
        return std::nullopt;
    out.resize(static_cast<std::size_t>(n) - pad);
    // Canonical only: the padding bits must be zero, i.e. it encodes back the same.
    if (base64Encode(out) != text)
        return std::nullopt;
    return out;
}

bool isEnvelope(std::string_view bytes) {
    json j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return false;
    auto t = j.find("type");
    return t != j.end() && t->is_string() && t->get<std::string>() == "signed";
}

std::string replyIdOf(std::string_view bytes, const Rejection& r, const std::string& fallback) {
    std::string_view command = bytes;
    auto p = parse(bytes);
    if (auto* parsed = std::get_if<Parsed>(&p))
        command = parsed->body;
    json j = json::parse(command.begin(), command.end(), nullptr, false);
    if (j.is_object())
        if (auto it = j.find("id"); it != j.end() && it->is_string())
            return it->get<std::string>();
    return r.request_id.empty() ? fallback : r.request_id;
}

std::variant<Parsed, Rejection> parse(std::string_view bytes) {
    json j;
    try {
        j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    } catch (const std::exception&) {
        j = json(json::value_t::discarded);
    }
    if (j.is_discarded() || !j.is_object())
        return reject(Reject::Malformed, "the message is not a JSON object");
    Parsed p;
    auto t = j.find("type");
    if (t == j.end() || !t->is_string() || t->get<std::string>() != "signed") {
        Rejection r = reject(Reject::Unsigned, "the command is not signed (no envelope of type "
                                               "'signed'); this receiver takes only signed "
                                               "commands");
        if (auto id = j.find("id"); id != j.end() && id->is_string())
            r.request_id = id->get<std::string>();
        return r;
    }
    auto str = [&](const char* key, std::string& out) -> bool {
        auto it = j.find(key);
        if (it == j.end() || !it->is_string())
            return false;
        out = it->get<std::string>();
        return true;
    };
    // The request id first, so later failures can be correlated.
    if (auto it = j.find("request_id"); it != j.end() && it->is_string())
        p.fields.request_id = it->get<std::string>();
    (void)str("sender", p.fields.sender);
    for (auto it = j.begin(); it != j.end(); ++it)
        if (!envelopeKeys().count(it.key()))
            return reject(Reject::Malformed, "unknown envelope field '" + it.key() + "'", &p);
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != 1)
        return reject(Reject::Malformed, "envelope version 'v' must be 1", &p);
    std::string cert, sig;
    if (!str("cert", cert) || cert.empty() || !str("sig", sig) || sig.empty())
        return reject(Reject::Unsigned, "the envelope carries no certificate or no signature", &p);
    for (const char* key : {"sender", "target", "action", "request_id", "body"}) {
        std::string dummy;
        if (!str(key, dummy))
            return reject(Reject::Malformed,
                          std::string("envelope field '") + key + "' must be a string", &p);
    }
    str("target", p.fields.target);
    str("action", p.fields.action);
    str("body", p.body);
    auto uint = [&](const char* key, std::uint64_t& out) -> bool {
        auto it = j.find(key);
        if (it == j.end() || !it->is_number_unsigned())
            return false;
        out = it->get<std::uint64_t>();
        return true;
    };
    std::uint64_t msgtime = 0, ttl = 0;
    if (!uint("msgtime", msgtime) || msgtime > static_cast<std::uint64_t>(kMaxMsgtime))
        return reject(Reject::Malformed,
                      "envelope field 'msgtime' must be milliseconds since 1970 before the year "
                      "10000",
                      &p);
    if (!uint("ttl", ttl) || ttl < 1 || ttl > static_cast<std::uint64_t>(kMaxTtl))
        return reject(Reject::Malformed,
                      "envelope field 'ttl' must be 1 to " + std::to_string(kMaxTtl) + " ms", &p);
    if (!uint("epoch", p.fields.epoch))
        return reject(Reject::Malformed, "envelope field 'epoch' must be a non-negative integer",
                      &p);
    p.fields.msgtime = static_cast<Millis>(msgtime);
    p.fields.ttl = static_cast<Millis>(ttl);
    if (auto why = fieldProblem(p.fields); !why.empty())
        return reject(Reject::Malformed, "envelope " + why, &p);
    auto der = base64Decode(cert);
    if (!der)
        return reject(Reject::Malformed, "envelope field 'cert' is not canonical base64", &p);
    auto s = base64Decode(sig);
    if (!s)
        return reject(Reject::Malformed, "envelope field 'sig' is not canonical base64", &p);
    p.cert_der = std::move(*der);
    p.signature = std::move(*s);
    return p;
}

// ---- Signer ------------------------------------------------------------------------------

Result<Signer> Signer::fromPem(std::string_view keyPem, std::string_view certPem) {
    BioPtr kb(BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size())));
    EVP_PKEY* key =
        kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, noPassphrase, nullptr) : nullptr;
    if (!key)
        return makeError("not a PEM private key (or an encrypted one): " + sslError());
    Signer s;
    s.key_ = std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
    if (auto md = digestFor(key); !md)
        return md.error();
    BioPtr cb(BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size())));
    X509Ptr cert(cb ? PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!cert)
        return makeError("not a PEM certificate: " + sslError());
    if (X509_check_private_key(cert.get(), key) != 1) {
        ERR_clear_error();
        return makeError("the private key does not belong to the certificate");
    }
    auto cn = commonName(cert.get());
    if (!cn || !validIdentity(*cn))
        return makeError("the certificate's subject needs exactly one CN that is an identity "
                         "kind:name (e.g. dped:web)");
    s.identity_ = *cn;
    int len = i2d_X509(cert.get(), nullptr);
    if (len <= 0)
        return makeError("cannot encode the certificate: " + sslError());
    s.cert_der_.resize(static_cast<std::size_t>(len));
    auto* out = reinterpret_cast<unsigned char*>(s.cert_der_.data());
    i2d_X509(cert.get(), &out);
    return s;
}

Result<Signer> Signer::load(const std::string& keyPath, const std::string& certPath) {
    struct stat st {};
    if (::stat(keyPath.c_str(), &st) != 0)
        return makeError(std::string("cannot read the key: ") + std::strerror(errno), keyPath);
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return makeError(std::string("the key is readable by group or others (mode ") + mode +
                             "); chmod 600 it",
                         keyPath);
    }
    auto key = fs::readFile(keyPath);
    if (!key)
        return makeError("cannot read the key: " + key.error().message, keyPath);
    auto cert = fs::readFile(certPath);
    if (!cert)
        return makeError("cannot read the certificate: " + cert.error().message, certPath);
    auto s = fromPem(*key, *cert);
    if (!s)
        return makeError(s.error().message, keyPath + " + " + certPath);
    return s;
}

Result<std::string> Signer::sign(Fields f, std::string_view body) const {
    if (f.sender.empty())
        f.sender = identity_;
    if (f.sender != identity_)
        return makeError("this signer is " + identity_ + " and cannot sign as " + f.sender);
    if (f.request_id.empty()) {
        unsigned char raw[16];
        if (RAND_bytes(raw, sizeof raw) != 1)
            return makeError("no random bytes for a request id: " + sslError());
        static const char* hex = "0123456789abcdef";
        for (unsigned char c : raw) {
            f.request_id.push_back(hex[c >> 4]);
            f.request_id.push_back(hex[c & 15]);
        }
    }
    if (auto why = fieldProblem(f); !why.empty())
        return makeError("cannot sign: " + why);
    if (invalidUtf8At(body) != std::string_view::npos)
        return makeError("cannot sign: the body is not UTF-8");
    auto md = digestFor(key_.get());
    if (!md)
        return md.error();
    std::string tbs = canonicalBytes(f, body);
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    std::size_t sigLen = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, *md, nullptr, key_.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &sigLen,
                       reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size()) != 1)
        return makeError("signing failed: " + sslError());
    std::string sig(sigLen, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sigLen,
                       reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size()) != 1)
        return makeError("signing failed: " + sslError());
    sig.resize(sigLen);
    json j = json::object();
    j["v"] = 1;
    j["type"] = "signed";
    j["sender"] = f.sender;
    j["target"] = f.target;
    j["action"] = f.action;
    j["request_id"] = f.request_id;
    j["msgtime"] = static_cast<std::uint64_t>(f.msgtime);
    j["ttl"] = static_cast<std::uint64_t>(f.ttl);
    j["epoch"] = f.epoch;
    j["body"] = std::string(body);
    j["cert"] = base64Encode(cert_der_);
    j["sig"] = base64Encode(sig);
    return j.dump();
}

// ---- CaStore -----------------------------------------------------------------------------

Result<CaStore> CaStore::fromPem(std::string_view pem, const std::string& source) {
    CaStore ca;
    ca.store_ = std::shared_ptr<X509_STORE>(X509_STORE_new(), X509_STORE_free);
    if (!ca.store_)
        return makeError("cannot make a certificate store: " + sslError(), source);
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    int n = 0;
    while (bio) {
        X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert)
            break;
        if (X509_STORE_add_cert(ca.store_.get(), cert.get()) != 1)
            return makeError("cannot add a CA certificate: " + sslError(), source);
        ++n;
    }
    ERR_clear_error(); // the end of the PEM data
    if (n == 0)
        return makeError("no PEM certificate in the CA file", source);
    return ca;
}

Result<CaStore> CaStore::loadFile(const std::string& path) {
    auto text = fs::readFile(path);
    if (!text)
        return makeError("cannot read the CA certificate: " + text.error().message, path);
    return fromPem(*text, path);
}

// ---- ReplayCache -------------------------------------------------------------------------

void ReplayCache::purge(Millis now) {
    while (!order_.empty() && order_.begin()->first < now) {
        expiry_.erase(order_.begin()->second);
        order_.erase(order_.begin());
    }
}

bool ReplayCache::contains(const std::string& sender, const std::string& requestId) const {
    return expiry_.count(sender + '\n' + requestId) > 0;
}

Millis ReplayCache::earliestExpiry() const {
    return order_.empty() ? std::numeric_limits<Millis>::max() : order_.begin()->first;
}

void ReplayCache::insert(const std::string& sender, const std::string& requestId, Millis expiry) {
    std::string key = sender + '\n' + requestId;
    auto [it, fresh] = expiry_.emplace(key, expiry);
    if (!fresh) {
        order_.erase({it->second, key});
        it->second = expiry;
    }
    order_.emplace(expiry, std::move(key));
}

std::uint64_t ReplayCache::highestEpoch(const std::string& sender) const {
    auto it = epochs_.find(sender);
    return it == epochs_.end() ? 0 : it->second;
}

void ReplayCache::noteEpoch(const std::string& sender, std::uint64_t epoch) {
    auto& e = epochs_[sender];
    e = policy::checkEpoch(e, epoch).floor;
}

std::string ReplayCache::toJson(Millis now) const {
    json entries = json::array();
    for (const auto& [expiry, key] : order_) {
        if (expiry < now)
            continue;
        auto nl = key.find('\n');
        entries.push_back({{"sender", key.substr(0, nl)},
                           {"request_id", key.substr(nl + 1)},
                           {"expiry", expiry}});
    }
    json epochs = json::object();
    for (const auto& [sender, e] : epochs_)
        epochs[sender] = e;
    return json{{"v", 1}, {"entries", std::move(entries)}, {"epochs", std::move(epochs)}}.dump();
}

Result<ReplayCache> ReplayCache::fromJson(std::string_view text, Millis now, std::size_t capacity) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("v", 0) != 1)
        return makeError("the replay cache state is not a version 1 JSON object");
    ReplayCache c(capacity);
    auto entries = j.find("entries");
    auto epochs = j.find("epochs");
    if (entries == j.end() || !entries->is_array() || epochs == j.end() || !epochs->is_object())
        return makeError("the replay cache state needs 'entries' (array) and 'epochs' (object)");
    for (const auto& e : *entries) {
        if (!e.is_object() || !e.contains("sender") || !e["sender"].is_string() ||
            !e.contains("request_id") || !e["request_id"].is_string() || !e.contains("expiry") ||
            !e["expiry"].is_number_integer())
            return makeError("a replay cache entry needs sender, request_id and expiry");
        Millis expiry = e["expiry"].get<Millis>();
        if (expiry >= now)
            c.insert(e["sender"].get<std::string>(), e["request_id"].get<std::string>(), expiry);
    }
    while (c.expiry_.size() > capacity) { // keep those that expire last
        c.expiry_.erase(c.order_.begin()->second);
        c.order_.erase(c.order_.begin());
    }
    for (auto it = epochs->begin(); it != epochs->end(); ++it) {
        if (!it.value().is_number_unsigned())
            return makeError("epoch of '" + it.key() + "' must be a non-negative integer");
        c.noteEpoch(it.key(), it.value().get<std::uint64_t>());
    }
    return c;
}

// ---- verify ------------------------------------------------------------------------------

VerifyResult verify(std::string_view bytes, const Trust& trust, Millis now, ReplayCache& cache) {
    auto parsed = parse(bytes);
    if (auto* r = std::get_if<Rejection>(&parsed))
        return std::move(*r);
    Parsed& p = std::get<Parsed>(parsed);
    const Fields& f = p.fields;

    // The certificate: DER, every byte used, chaining to the CA at `now`.
    const auto* der = reinterpret_cast<const unsigned char*>(p.cert_der.data());
    const unsigned char* end = der + p.cert_der.size();
    X509Ptr cert(d2i_X509(nullptr, &der, static_cast<long>(p.cert_der.size())));
    if (!cert || der != end) {
        ERR_clear_error();
        return reject(Reject::Malformed, "envelope field 'cert' is not one DER certificate", &p);
    }
    if (!trust.ca.store())
        return reject(Reject::UntrustedSigner, "this receiver has no CA to check signers against",
                      &p);
    std::unique_ptr<X509_STORE_CTX, CtxFree> ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), trust.ca.store(), cert.get(), nullptr) != 1)
        return reject(Reject::UntrustedSigner, "cannot check the certificate: " + sslError(), &p);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()),
                               static_cast<time_t>(now / 1000));
    if (X509_verify_cert(ctx.get()) != 1) {
        int err = X509_STORE_CTX_get_error(ctx.get());
        ERR_clear_error();
        return reject(Reject::UntrustedSigner,
                      std::string("the signer's certificate is not trusted: ") +
                          X509_verify_cert_error_string(err),
                      &p);
    }
    auto cn = commonName(cert.get());
    if (!cn || *cn != f.sender)
        return reject(Reject::SenderMismatch,
                      "the certificate is " +
                          (cn ? "'" + *cn + "'" : std::string("without one CN")) +
                          ", not the sender '" + f.sender + "'",
                      &p);

    // The signature, with the certificate's key.
    EVP_PKEY* key = X509_get0_pubkey(cert.get());
    if (!key) {
        ERR_clear_error();
        return reject(Reject::UntrustedSigner, "the certificate's key cannot be read", &p);
    }
    auto md = digestFor(key);
    if (!md)
        return reject(Reject::UntrustedSigner, md.error().message, &p);
    std::string tbs = canonicalBytes(f, p.body);
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> mctx(EVP_MD_CTX_new());
    bool good =
        mctx && EVP_DigestVerifyInit(mctx.get(), nullptr, *md, nullptr, key) == 1 &&
        EVP_DigestVerify(mctx.get(), reinterpret_cast<const unsigned char*>(p.signature.data()),
                         p.signature.size(), reinterpret_cast<const unsigned char*>(tbs.data()),
                         tbs.size()) == 1;
    ERR_clear_error();
    if (!good)
        return reject(Reject::BadSignature,
                      "the signature does not match the envelope (signed by another key, or "
                      "changed on the way)",
                      &p);

    // From here on the fields are what the sender signed.
    if (f.target != trust.self)
        return reject(Reject::WrongTarget,
                      "the command is for " + f.target + ", this is " + trust.self, &p);
    if (auto st = mayCommand(f.sender, f.target, trust.deployable); !st)
        return reject(Reject::NotAuthorized, st.error().message, &p);
    if (f.msgtime > now + trust.skew)
        return reject(Reject::FromTheFuture,
                      "msgtime is " + std::to_string(f.msgtime - now) +
                          " ms ahead of this receiver's clock (allowed skew " +
                          std::to_string(trust.skew) + " ms)",
                      &p);
    if (f.msgtime < trust.not_before)
        return reject(Reject::Expired,
                      "the command was signed " + std::to_string(trust.not_before - f.msgtime) +
                          " ms before the earliest time this receiver accepts (its start minus "
                          "the allowed skew: it has no replay cache from before)",
                      &p);
    if (f.msgtime + f.ttl < now - trust.skew)
        return reject(Reject::Expired,
                      "the command's ttl of " + std::to_string(f.ttl) + " ms ended " +
                          std::to_string(now - f.msgtime - f.ttl) +
                          " ms ago by this receiver's clock, more than the allowed skew of " +
                          std::to_string(trust.skew) + " ms",
                      &p);
    if (std::uint64_t high = cache.highestEpoch(f.sender);
        !policy::checkEpoch(high, f.epoch).accepted())
        return reject(
            Reject::StaleEpoch,
            policy::staleEpochMessage(f.epoch, high, "this receiver") + "; sender " + f.sender, &p);
    cache.purge(now);
    if (cache.contains(f.sender, f.request_id))
        return reject(Reject::Replayed,
                      "request " + f.request_id + " from " + f.sender + " was accepted already",
                      &p);
    if (cache.full())
        return reject(Reject::ReplayCacheFull,
                      "the replay cache holds " + std::to_string(cache.size()) +
                          " live commands (its bound); refused, not run; a place frees in " +
                          std::to_string(cache.earliestExpiry() - now) + " ms",
                      &p);
    cache.insert(f.sender, f.request_id, f.msgtime + f.ttl + trust.skew);
    cache.noteEpoch(f.sender, f.epoch);
    return Verified{p.fields, std::move(p.body)};
}

} // namespace pcloud::envelope
