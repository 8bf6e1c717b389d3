// The signed command envelope (lib/envelope) with real keys and certificates made by the
// openssl CLI: every rejection kind, the clock skew boundaries (injected clock), the replay
// cache at its bound, the epoch rule and who may command whom.
#include "envelope/envelope.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <memory>

using namespace pcloud;
using namespace pcloud::envelope;
using nlohmann::json;
using testpki::TestPki;

namespace {

const char* kBody = R"({"v":1,"type":"restart","id":"node01-7","unit":"httpd","deadline":30000})";

class Envelope : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        pki_ = new TestPki("a");
        other_ = new TestPki("b");
        pki_->issue("dped:web");
        pki_->issue("dped:db");
        pki_->issue("operator:alice");
        pki_->issue("operator:bob", TestPki::KeyType::P256);
        pki_->issue("operator:carol", TestPki::KeyType::P384);
        pki_->issue("agent:node02");
        other_->issue("dped:web"); // same name, another CA
    }
    static void TearDownTestSuite() {
        delete pki_;
        delete other_;
    }

    void SetUp() override {
        auto ca = CaStore::loadFile(pki_->caCert());
        ASSERT_TRUE(ca) << ca.error().describe();
        trust_.ca = *ca;
        trust_.self = "agent:node01";
        trust_.deployable = "web";
    }

    static Signer signer(const std::string& id, TestPki* pki = nullptr) {
        pki = pki ? pki : pki_;
        auto s = Signer::load(pki->keyPath(id), pki->certPath(id));
        if (!s)
            throw std::runtime_error(s.error().describe());
        return *s;
    }

    Fields fields(const std::string& target = "agent:node01") const {
        Fields f;
        f.target = target;
        f.action = "restart";
        f.msgtime = clock_.nowMs();
        f.ttl = 30'000;
        return f;
    }

    std::string signedBy(const std::string& id, Fields f, std::string_view body = kBody) {
        auto s = signer(id).sign(std::move(f), body);
        if (!s)
            throw std::runtime_error(s.error().describe());
        return *s;
    }

    VerifyResult check(const std::string& bytes) {
        return verify(bytes, trust_, clock_.nowMs(), cache_);
    }

    static Reject code(const VerifyResult& r) {
        if (auto* rej = std::get_if<Rejection>(&r))
            return rej->code;
        ADD_FAILURE() << "the envelope was accepted";
        return Reject::Malformed;
    }
    static std::string message(const VerifyResult& r) {
        auto* rej = std::get_if<Rejection>(&r);
        return rej ? rej->message : "accepted";
    }
    static bool accepted(const VerifyResult& r) { return std::holds_alternative<Verified>(r); }

    // An envelope signed over `signedFields` with the key of `keyOf`, carrying the
    // certificate of `certOf`, and `wireFields` on the wire: what a forger can build.
    static std::string craft(const Fields& signedFields, const Fields& wireFields,
                             std::string_view body, const std::string& keyOf,
                             const std::string& certOf, const EVP_MD* md = nullptr) {
        Fields sf = signedFields, wf = wireFields;
        for (Fields* x : {&sf, &wf})
            if (x->request_id.empty())
                x->request_id = "crafted-1";
        std::string keyPem = pki_->keyPem(keyOf), certPem = pki_->certPem(certOf);
        BIO* kb = BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size()));
        EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
        BIO_free(kb);
        BIO* cb = BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size()));
        X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
        BIO_free(cb);
        if (!key || !cert)
            throw std::runtime_error("cannot read the test key or cert");
        std::string tbs = canonicalBytes(sf, body);
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        std::size_t len = 0;
        EVP_DigestSignInit(ctx, nullptr, md, nullptr, key);
        EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(tbs.data()),
                       tbs.size());
        std::string sig(len, '\0');
        if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                           reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size()) != 1)
            throw std::runtime_error("test signing failed");
        sig.resize(len);
        EVP_MD_CTX_free(ctx);
        int n = i2d_X509(cert, nullptr);
        std::string der(static_cast<std::size_t>(n), '\0');
        auto* out = reinterpret_cast<unsigned char*>(der.data());
        i2d_X509(cert, &out);
        X509_free(cert);
        EVP_PKEY_free(key);
        json j = {{"v", 1},
                  {"type", "signed"},
                  {"sender", wf.sender},
                  {"target", wf.target},
                  {"action", wf.action},
                  {"request_id", wf.request_id},
                  {"msgtime", wf.msgtime},
                  {"ttl", wf.ttl},
                  {"epoch", wf.epoch},
                  {"body", std::string(body)},
                  {"cert", base64Encode(der)},
                  {"sig", base64Encode(sig)}};
        return j.dump();
    }

    static std::string edit(const std::string& bytes, const std::function<void(json&)>& f) {
        json j = json::parse(bytes);
        f(j);
        return j.dump();
    }

    static TestPki* pki_;
    static TestPki* other_;
    ManualClock clock_{SystemClock().nowMs()}; // the certificates are valid from now
    Trust trust_;
    ReplayCache cache_;
};
TestPki* Envelope::pki_ = nullptr;
TestPki* Envelope::other_ = nullptr;

TEST_F(Envelope, ASignedCommandRoundTripsWithEveryFieldAndTheBody) {
    Fields f = fields();
    f.epoch = 3;
    f.request_id = "req-1";
    std::string bytes = signedBy("dped:web", f);
    auto r = check(bytes);
    ASSERT_TRUE(accepted(r)) << message(r);
    const auto& v = std::get<Verified>(r);
    EXPECT_EQ(v.fields.sender, "dped:web"); // filled in from the certificate's CN
    EXPECT_EQ(v.fields.target, "agent:node01");
    EXPECT_EQ(v.fields.action, "restart");
    EXPECT_EQ(v.fields.request_id, "req-1");
    EXPECT_EQ(v.fields.msgtime, clock_.nowMs());
    EXPECT_EQ(v.fields.ttl, 30'000);
    EXPECT_EQ(v.fields.epoch, 3u);
    EXPECT_EQ(v.body, kBody);
    EXPECT_EQ(cache_.size(), 1u);
}

TEST_F(Envelope, EcdsaP256KeysAreAcceptedWithSha256) {
    auto r = check(signedBy("operator:bob", fields()));
    ASSERT_TRUE(accepted(r)) << message(r);
    EXPECT_EQ(std::get<Verified>(r).fields.sender, "operator:bob");
}

TEST_F(Envelope, SignerMakesUniqueRequestIdsAndRefusesAnotherSender) {
    Signer s = signer("dped:web");
    EXPECT_EQ(s.identity(), "dped:web");
    auto a = json::parse(*s.sign(fields(), kBody)), b = json::parse(*s.sign(fields(), kBody));
    EXPECT_EQ(a["request_id"].get<std::string>().size(), 32u);
    EXPECT_NE(a["request_id"], b["request_id"]);
    Fields f = fields();
    f.sender = "dped:db";
    auto bad = s.sign(f, kBody);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("cannot sign as dped:db"), std::string::npos);
    EXPECT_FALSE(s.sign(fields(), "\xff not utf-8"));
    Fields noTtl = fields();
    noTtl.ttl = kMaxTtl + 1;
    EXPECT_FALSE(s.sign(noTtl, kBody));
}

TEST_F(Envelope, SignerRefusesAKeyOthersCanReadAKeyOfAnotherCertAndOtherCurves) {
    std::string key = pki_->keyPath("dped:db");
    ::chmod(key.c_str(), 0644);
    auto open = Signer::load(key, pki_->certPath("dped:db"));
    ::chmod(key.c_str(), 0600);
    ASSERT_FALSE(open);
    EXPECT_NE(open.error().message.find("chmod 600"), std::string::npos) << open.error().message;
    EXPECT_EQ(open.error().file, key);

    auto mixed = Signer::load(pki_->keyPath("dped:db"), pki_->certPath("dped:web"));
    ASSERT_FALSE(mixed);
    EXPECT_NE(mixed.error().message.find("does not belong"), std::string::npos);

    auto p384 = Signer::load(pki_->keyPath("operator:carol"), pki_->certPath("operator:carol"));
    ASSERT_FALSE(p384);
    EXPECT_NE(p384.error().message.find("P-256"), std::string::npos) << p384.error().message;

    EXPECT_FALSE(Signer::load(pki_->dir() + "/nosuch.key", pki_->certPath("dped:web")));
}

TEST_F(Envelope, UnsignedCommandsAndEnvelopesWithoutSignatureAreUnsigned) {
    auto r = check(kBody);
    EXPECT_EQ(code(r), Reject::Unsigned);
    EXPECT_EQ(std::get<Rejection>(r).request_id, "node01-7"); // the reply still correlates
    std::string bytes = signedBy("dped:web", fields());
    EXPECT_EQ(code(check(edit(bytes, [](json& j) { j.erase("sig"); }))), Reject::Unsigned);
    EXPECT_EQ(code(check(edit(bytes, [](json& j) { j["cert"] = ""; }))), Reject::Unsigned);
    EXPECT_STREQ(toString(Reject::Unsigned), "unsigned");
    EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(Envelope, MalformedEnvelopesNameTheField) {
    std::string bytes = signedBy("dped:web", fields());
    EXPECT_EQ(code(check("not json")), Reject::Malformed);
    EXPECT_EQ(code(check("[1]")), Reject::Malformed);
    struct Case {
        const char* what;
        std::function<void(json&)> edit;
        const char* needle;
    };
    std::vector<Case> cases = {
        {"unknown field", [](json& j) { j["alg"] = "none"; }, "unknown envelope field 'alg'"},
        {"version", [](json& j) { j["v"] = 2; }, "'v'"},
        {"ttl 0", [](json& j) { j["ttl"] = 0; }, "'ttl'"},
        {"ttl too long", [](json& j) { j["ttl"] = kMaxTtl + 1; }, "'ttl'"},
        {"negative msgtime", [](json& j) { j["msgtime"] = -1; }, "'msgtime'"},
        {"msgtime as text", [](json& j) { j["msgtime"] = "now"; }, "'msgtime'"},
        {"msgtime past 9999", [](json& j) { j["msgtime"] = kMaxMsgtime + 1; }, "'msgtime'"},
        {"negative epoch", [](json& j) { j["epoch"] = -1; }, "'epoch'"},
        {"sender not an identity", [](json& j) { j["sender"] = "web"; }, "'sender'"},
        {"target not a string", [](json& j) { j["target"] = 5; }, "'target'"},
        {"action with a blank", [](json& j) { j["action"] = "re start"; }, "'action'"},
        {"request id empty", [](json& j) { j["request_id"] = ""; }, "'request_id'"},
        {"cert not base64", [](json& j) { j["cert"] = "a*b="; }, "'cert'"},
        {"sig not canonical", [](json& j) { j["sig"] = "QR=="; }, "'sig'"},
        {"cert not DER", [](json& j) { j["cert"] = base64Encode("hello"); }, "DER"},
        {"cert with trailing bytes",
         [](json& j) {
             j["cert"] = base64Encode(*base64Decode(j["cert"].get<std::string>()) + "x");
         },
         "DER"},
    };
    for (const auto& c : cases) {
        auto r = check(edit(bytes, c.edit));
        EXPECT_EQ(code(r), Reject::Malformed) << c.what;
        EXPECT_NE(message(r).find(c.needle), std::string::npos) << c.what << ": " << message(r);
    }
    EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(Envelope, AnyChangeToASignedFieldOrTheBodyBreaksTheSignature) {
    Fields f = fields();
    f.request_id = "r-1";
    std::string bytes = signedBy("dped:web", f);
    std::vector<std::function<void(json&)>> edits = {
        [](json& j) { j["body"] = R"({"v":1,"type":"stop","id":"node01-7","unit":"httpd"})"; },
        [](json& j) { j["action"] = "stop"; },
        [](json& j) { j["request_id"] = "r-2"; },
        [](json& j) { j["ttl"] = 600'000; },
        [](json& j) { j["msgtime"] = j["msgtime"].get<std::uint64_t>() + 1; },
        [](json& j) { j["epoch"] = 9; },
    };
    for (std::size_t i = 0; i < edits.size(); ++i)
        EXPECT_EQ(code(check(edit(bytes, edits[i]))), Reject::BadSignature) << "edit " << i;
    // Another message's signature, and a signature by another key under this certificate.
    std::string other = signedBy("dped:web", fields());
    EXPECT_EQ(code(check(edit(bytes, [&](json& j) { j["sig"] = json::parse(other)["sig"]; }))),
              Reject::BadSignature);
    Fields wire = f;
    wire.sender = "dped:web";
    EXPECT_EQ(code(check(craft(wire, wire, kBody, "dped:db", "dped:web"))), Reject::BadSignature);
    EXPECT_EQ(cache_.size(), 0u);
    // A forgery with a request id does not burn it: the real one is still accepted.
    EXPECT_TRUE(accepted(check(bytes)));
}

TEST_F(Envelope, CertificatesOfAnotherCaExpiredOrOfOtherCurvesAreUntrusted) {
    auto r = check(*signer("dped:web", other_).sign(fields(), kBody));
    EXPECT_EQ(code(r), Reject::UntrustedSigner);
    EXPECT_NE(message(r).find("not trusted"), std::string::npos) << message(r);

    // The leaf is valid for 365 days; 400 days on, its signature no longer counts.
    std::string late = signedBy("dped:web", fields());
    clock_.advance(400LL * 24 * 3600 * 1000);
    auto expired = verify(late, trust_, clock_.nowMs(), cache_);
    EXPECT_EQ(code(expired), Reject::UntrustedSigner);
    EXPECT_NE(message(expired).find("expired"), std::string::npos) << message(expired);

    clock_.set(SystemClock().nowMs());
    Fields p = fields();
    p.sender = "operator:carol";
    auto curve = check(craft(p, p, kBody, "operator:carol", "operator:carol", EVP_sha256()));
    EXPECT_EQ(code(curve), Reject::UntrustedSigner);
    EXPECT_NE(message(curve).find("P-256"), std::string::npos) << message(curve);

    // No CA at all.
    Trust none;
    none.self = "agent:node01";
    EXPECT_EQ(code(verify(signedBy("dped:web", fields()), none, clock_.nowMs(), cache_)),
              Reject::UntrustedSigner);
}

TEST_F(Envelope, TheCertificatesCnMustBeTheSender) {
    Fields f = fields();
    f.sender = "operator:mallory";
    auto r = check(craft(f, f, kBody, "operator:alice", "operator:alice"));
    EXPECT_EQ(code(r), Reject::SenderMismatch);
    EXPECT_NE(message(r).find("'operator:alice'"), std::string::npos) << message(r);
}

TEST_F(Envelope, OnlyTheAgentsOwnDpedAndOperatorsMayCommandIt) {
    EXPECT_TRUE(accepted(check(signedBy("dped:web", fields()))));
    EXPECT_TRUE(accepted(check(signedBy("operator:alice", fields()))));
    auto db = check(signedBy("dped:db", fields()));
    EXPECT_EQ(code(db), Reject::NotAuthorized);
    EXPECT_NE(message(db).find("deployable 'web'"), std::string::npos) << message(db);
    EXPECT_EQ(code(check(signedBy("agent:node02", fields()))), Reject::NotAuthorized);
    trust_.deployable.clear();
    EXPECT_EQ(code(check(signedBy("dped:web", fields()))), Reject::NotAuthorized);
    EXPECT_TRUE(accepted(check(signedBy("operator:alice", fields()))));
}

TEST_F(Envelope, ACommandForAnotherTargetIsRefused) {
    auto r = check(signedBy("dped:web", fields("agent:node02")));
    EXPECT_EQ(code(r), Reject::WrongTarget);
    EXPECT_NE(message(r).find("agent:node02"), std::string::npos);
    EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(Envelope, SkewBoundariesAreInclusiveByOneMillisecond) {
    const Millis now = clock_.nowMs(), skew = trust_.skew, ttl = 30'000;
    auto at = [&](Millis msgtime) {
        Fields f = fields();
        f.msgtime = msgtime;
        f.ttl = ttl;
        return check(signedBy("dped:web", f));
    };
    EXPECT_TRUE(accepted(at(now + skew)));                      // ahead by exactly the skew
    EXPECT_EQ(code(at(now + skew + 1)), Reject::FromTheFuture); // one ms more
    EXPECT_TRUE(accepted(at(now - ttl - skew)));                // the last ms of its window
    auto late = at(now - ttl - skew - 1);
    EXPECT_EQ(code(late), Reject::Expired);
    EXPECT_NE(message(late).find("ended 30001 ms ago"), std::string::npos) << message(late);
    trust_.skew = 0; // a receiver may be stricter
    EXPECT_EQ(code(at(now + 1)), Reject::FromTheFuture);
    EXPECT_TRUE(accepted(at(now)));
}

TEST_F(Envelope, AReplayWithinTheWindowIsRefusedAndExpiresAfterIt) {
    Fields f = fields();
    f.ttl = 1'000;
    std::string bytes = signedBy("dped:web", f);
    EXPECT_TRUE(accepted(check(bytes)));
    auto again = check(bytes);
    EXPECT_EQ(code(again), Reject::Replayed);
    EXPECT_EQ(std::get<Rejection>(again).request_id, json::parse(bytes)["request_id"]);
    // The same request id from another sender is another request.
    Fields g = fields();
    g.request_id = json::parse(bytes)["request_id"];
    EXPECT_TRUE(accepted(check(signedBy("operator:alice", g))));
    // At the last ms of the window it is still a replay; one ms later it is expired, and
    // the entry is gone.
    clock_.advance(f.ttl + trust_.skew);
    EXPECT_EQ(code(check(bytes)), Reject::Replayed);
    clock_.advance(1);
    EXPECT_EQ(code(check(bytes)), Reject::Expired);
    cache_.purge(clock_.nowMs());
    EXPECT_FALSE(cache_.contains("dped:web", json::parse(bytes)["request_id"]));
}

TEST_F(Envelope, TheReplayCacheAtItsBoundRefusesRatherThanEvicts) {
    ReplayCache small(3);
    const Millis t0 = clock_.nowMs();
    std::vector<std::string> sent;
    for (int i = 0; i < 3; ++i) {
        Fields f = fields();
        f.ttl = 1'000;
        sent.push_back(signedBy("dped:web", f));
        ASSERT_TRUE(accepted(verify(sent.back(), trust_, t0, small)));
    }
    EXPECT_TRUE(small.full());
    Fields late = fields();
    late.msgtime = t0 + 5'000;
    late.ttl = 10'000;
    std::string fourth = signedBy("dped:web", late);
    auto full = verify(fourth, trust_, t0, small);
    EXPECT_EQ(code(full), Reject::ReplayCacheFull);
    EXPECT_NE(message(full).find("frees in 31000 ms"), std::string::npos) << message(full);
    // Nothing was evicted: the first is still caught as a replay.
    EXPECT_EQ(code(verify(sent[0], trust_, t0, small)), Reject::Replayed);
    // Once the first three are past their window (msgtime + ttl + skew), places are free.
    const Millis after = t0 + 1'000 + trust_.skew + 1;
    auto ok = verify(fourth, trust_, after, small);
    EXPECT_TRUE(accepted(ok)) << message(ok);
    EXPECT_EQ(small.size(), 1u);
}

TEST_F(Envelope, AnEpochBelowTheHighestAcceptedFromThatSenderIsStale) {
    auto withEpoch = [&](const std::string& who, std::uint64_t e) {
        Fields f = fields();
        f.epoch = e;
        return check(signedBy(who, f));
    };
    EXPECT_TRUE(accepted(withEpoch("dped:web", 5)));
    auto stale = withEpoch("dped:web", 4);
    EXPECT_EQ(code(stale), Reject::StaleEpoch);
    EXPECT_NE(message(stale).find("stale epoch 4: this receiver has accepted epoch 5"),
              std::string::npos)
        << message(stale);
    EXPECT_NE(message(stale).find("sender dped:web"), std::string::npos) << message(stale);
    EXPECT_TRUE(accepted(withEpoch("dped:web", 5)));       // the same epoch goes on
    EXPECT_TRUE(accepted(withEpoch("operator:alice", 0))); // per sender
    // A forged higher epoch does not raise the bar.
    std::string forged = edit(signedBy("dped:web", fields()), [](json& j) { j["epoch"] = 99; });
    EXPECT_EQ(code(check(forged)), Reject::BadSignature);
    EXPECT_EQ(cache_.highestEpoch("dped:web"), 5u);
}

TEST_F(Envelope, TheReplayCacheSurvivesARestartAsJson) {
    Fields f = fields();
    f.epoch = 4;
    std::string bytes = signedBy("dped:web", f);
    ASSERT_TRUE(accepted(check(bytes)));
    Fields shortLived = fields();
    shortLived.ttl = 1;
    ASSERT_TRUE(accepted(check(signedBy("operator:alice", shortLived))));
    EXPECT_EQ(cache_.size(), 2u);
    // Restored a little later: the short-lived entry is gone, the other still refuses.
    clock_.advance(1 + trust_.skew + 1);
    auto restored = ReplayCache::fromJson(cache_.toJson(clock_.nowMs()), clock_.nowMs());
    ASSERT_TRUE(restored) << restored.error().message;
    EXPECT_EQ(restored->size(), 1u);
    EXPECT_EQ(restored->highestEpoch("dped:web"), 4u);
    EXPECT_EQ(code(verify(bytes, trust_, clock_.nowMs(), *restored)), Reject::Replayed);
    // At most `capacity` are kept, those that expire last.
    auto small = ReplayCache::fromJson(cache_.toJson(0), 0, 1);
    ASSERT_TRUE(small);
    EXPECT_EQ(small->size(), 1u);
    EXPECT_TRUE(small->contains("dped:web", json::parse(bytes)["request_id"]));
    for (const char* bad : {"", "[]", R"({"v":2})", R"({"v":1,"entries":{},"epochs":{}})",
                            R"({"v":1,"entries":[{"sender":"a"}],"epochs":{}})",
                            R"({"v":1,"entries":[],"epochs":{"a":-1}})"})
        EXPECT_FALSE(ReplayCache::fromJson(bad, 0)) << bad;
}

TEST_F(Envelope, NothingSignedBeforeNotBeforeIsAccepted) {
    trust_.not_before = clock_.nowMs() - 1'000;
    Fields before = fields();
    before.msgtime = trust_.not_before - 1;
    auto r = check(signedBy("dped:web", before));
    EXPECT_EQ(code(r), Reject::Expired);
    EXPECT_NE(message(r).find("1 ms before the earliest time"), std::string::npos) << message(r);
    Fields at = fields();
    at.msgtime = trust_.not_before;
    EXPECT_TRUE(accepted(check(signedBy("dped:web", at))));
}

TEST(EnvelopeRules, WhoMayCommandWhom) {
    struct Case {
        const char* sender;
        const char* target;
        const char* deployable;
        bool ok;
    };
    const Case cases[] = {
        {"dped:web", "agent:node01", "web", true},
        {"operator:alice", "agent:node01", "web", true},
        {"operator:alice", "agent:node01", "", true},
        {"dped:db", "agent:node01", "web", false},
        {"dped:web", "agent:node01", "", false},
        {"agent:node02", "agent:node01", "web", false},
        {"cped:host1", "agent:node01", "web", false},
        {"node:host1", "agent:node01", "web", false},
        {"cped:host1", "dped:web", "", true},
        {"operator:alice", "dped:web", "", true},
        {"dped:db", "dped:web", "", false},
        {"agent:node01", "dped:web", "", false},
        {"dped:web", "cped:host1", "", false},
        {"operator:alice", "cped:host1", "", true},
        // The command API: operators only (docs/security.md "Signed commands").
        {"operator:alice", "cped:api", "", true},
        {"operator:alice", "cped:api", "web", true},
        {"agent:node01", "cped:api", "", false},
        {"agent:node01", "cped:api", "web", false},
        {"dped:web", "cped:api", "", false},
        {"cped:host1", "cped:api", "", false},
        {"node:host1", "cped:api", "", false},
        {"operatorx:alice", "cped:api", "", false},
        {"dped:web", "agent:node01", "webx", false},
        {"dpedx:web", "agent:node01", "web", false},
        {"bogus", "agent:node01", "web", false},
    };
    for (const auto& c : cases)
        EXPECT_EQ(static_cast<bool>(mayCommand(c.sender, c.target, c.deployable)), c.ok)
            << c.sender << " -> " << c.target << " (deployable '" << c.deployable << "')";
}

TEST(EnvelopeRules, ASignatureCarriesOnlyItsOwnCommand) {
    Fields f;
    f.action = "status";
    EXPECT_TRUE(actionIsCommand(f, "status").ok());
    Status s = actionIsCommand(f, "stop");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().message,
              "the envelope's action 'status' is not the request's command 'stop'");
    EXPECT_FALSE(actionIsCommand(f, "").ok());
}

TEST(EnvelopeRules, IdentitiesAreKindColonName) {
    EXPECT_TRUE(validIdentity("agent:node01"));
    EXPECT_TRUE(validIdentity("operator:alice.b_c-d"));
    EXPECT_FALSE(validIdentity("agent"));
    EXPECT_FALSE(validIdentity(":node01"));
    EXPECT_FALSE(validIdentity("agent:"));
    EXPECT_FALSE(validIdentity("Agent:node01"));
    EXPECT_FALSE(validIdentity("agent:node 01"));
    EXPECT_FALSE(validIdentity("agent:-x"));
    EXPECT_FALSE(validIdentity("agent:a:b"));
    EXPECT_FALSE(validIdentity("agent:" + std::string(200, 'a')));
}

TEST(EnvelopeRules, CanonicalBytesCannotBeShiftedBetweenFields) {
    Fields a, b;
    a.sender = "ab";
    a.target = "c";
    b.sender = "a";
    b.target = "bc";
    EXPECT_NE(canonicalBytes(a, "x"), canonicalBytes(b, "x"));
    Fields c = a;
    EXPECT_NE(canonicalBytes(a, "x"), canonicalBytes(c, "x "));
    // The layout, spelled out: tag NUL, then length-prefixed fields, integers as 8 bytes.
    Fields f;
    f.sender = "s";
    f.target = "t";
    f.action = "a";
    f.request_id = "r";
    f.msgtime = 0x0102;
    f.ttl = 3;
    f.epoch = 4;
    std::string want("pcloud-envelope-v1\0", 19);
    auto field = [&](std::string_view v) {
        want += std::string("\0\0\0", 3) + static_cast<char>(v.size());
        want += v;
    };
    field("s");
    field("t");
    field("a");
    field("r");
    field(std::string("\0\0\0\0\0\0\x01\x02", 8));
    field(std::string("\0\0\0\0\0\0\0\x03", 8));
    field(std::string("\0\0\0\0\0\0\0\x04", 8));
    field("{}");
    EXPECT_EQ(canonicalBytes(f, "{}"), want);
}

TEST(EnvelopeRules, Base64IsStrict) {
    EXPECT_EQ(base64Encode("hello"), "aGVsbG8=");
    EXPECT_EQ(*base64Decode("aGVsbG8="), "hello");
    EXPECT_EQ(*base64Decode(""), "");
    EXPECT_EQ(*base64Decode("aGk="), "hi");
    EXPECT_FALSE(base64Decode("aGVsbG8"));   // not padded
    EXPECT_FALSE(base64Decode("aGVs bG8=")); // a blank
    EXPECT_FALSE(base64Decode("aG=sbG8="));  // '=' inside
    EXPECT_FALSE(base64Decode("aGk9"
                              "="));    // 5 characters
    EXPECT_FALSE(base64Decode("aGl=")); // padding bits set: not canonical
    EXPECT_FALSE(base64Decode("===="));
}

} // namespace
