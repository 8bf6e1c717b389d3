// cped::openCommand: what cped's command API accepts (docs/security.md "Signed commands").
// Real Ed25519 certificates from a throwaway CA (the openssl CLI), the real verifier.
#include "cped/commands.h"
#include "envelope/envelope.h"
#include "test_pki.h"

#include <gtest/gtest.h>
#include <memory>

namespace pcloud::cped {
namespace {

using envelope::Fields;
using envelope::ReplayCache;
using envelope::Signer;
using envelope::Trust;
using testpki::TestPki;

constexpr Millis kNow = 1'800'000'000'000;

const char* kDelete =
    R"({"v":1,"type":"command","id":"7","command":"deployable_delete","args":{"name":"web"}})";

class OpenCommand : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        pki_ = new TestPki("cmdapi");
        pki_->issue("operator:alice");
        pki_->issue("agent:node01");
        other_ = new TestPki("other");
        other_->issue("operator:mallory");
    }
    static void TearDownTestSuite() {
        delete pki_;
        delete other_;
    }
    void SetUp() override {
        auto ca = envelope::CaStore::loadFile(pki_->caCert());
        ASSERT_TRUE(ca) << ca.error().describe();
        trust_.ca = std::move(*ca);
        trust_.self = envelope::kCommandApi;
    }
    static std::string sign(const TestPki& p, const std::string& who, const std::string& body,
                            const std::string& action = "deployable_delete",
                            const std::string& target = envelope::kCommandApi) {
        auto s = Signer::load(p.keyPath(who), p.certPath(who));
        EXPECT_TRUE(s) << s.error().describe();
        Fields f;
        f.target = target;
        f.action = action;
        f.msgtime = kNow;
        auto bytes = s->sign(f, body);
        EXPECT_TRUE(bytes) << bytes.error().describe();
        return *bytes;
    }
    std::variant<OpenedCommand, RefusedCommand> open(const std::string& bytes, bool required,
                                                     const Trust* t = nullptr) {
        return openCommand(bytes, t ? t : &trust_, kNow, cache_, required, "corr-1");
    }
    // A copy: the argument is usually a temporary.
    static RefusedCommand refused(const std::variant<OpenedCommand, RefusedCommand>& v) {
        const auto* r = std::get_if<RefusedCommand>(&v);
        EXPECT_NE(r, nullptr) << "the request was accepted";
        return r ? *r : RefusedCommand{};
    }

    static TestPki* pki_;
    static TestPki* other_;
    Trust trust_;
    ReplayCache cache_{16};
};
TestPki* OpenCommand::pki_ = nullptr;
TestPki* OpenCommand::other_ = nullptr;

TEST_F(OpenCommand, UnsignedIsRefusedOnlyWhenSignaturesAreRequired) {
    auto hub = open(kDelete, false);
    ASSERT_TRUE(std::holds_alternative<OpenedCommand>(hub));
    EXPECT_EQ(std::get<OpenedCommand>(hub).request.command, "deployable_delete");
    EXPECT_EQ(std::get<OpenedCommand>(hub).sender, "");

    const auto r = refused(open(kDelete, true));
    EXPECT_FALSE(r.reply.ok);
    EXPECT_EQ(r.reply.error_code, "unsigned");
    EXPECT_EQ(r.reply.id, "7"); // correlates with the plain request's id
    EXPECT_NE(r.reply.error_message.find("cped:api"), std::string::npos) << r.reply.error_message;
    // An unreadable plain body still gets an id: the message's correlation id.
    EXPECT_EQ(refused(open("not json", true)).reply.id, "corr-1");
    EXPECT_EQ(refused(open("not json", true)).reply.error_code, "unsigned");
    EXPECT_EQ(refused(open("not json", false)).reply.error_code, "bad-request");
}

TEST_F(OpenCommand, OperatorSignedIsAccepted) {
    for (bool required : {true, false}) {
        auto v = open(sign(*pki_, "operator:alice", kDelete), required);
        ASSERT_TRUE(std::holds_alternative<OpenedCommand>(v))
            << std::get<RefusedCommand>(v).reply.error_message;
        const auto& o = std::get<OpenedCommand>(v);
        EXPECT_EQ(o.sender, "operator:alice");
        EXPECT_EQ(o.request.id, "7");
        EXPECT_EQ(o.request.command, "deployable_delete");
        EXPECT_EQ(o.request.args.value("name", ""), "web");
    }
    EXPECT_EQ(cache_.size(), 2u); // each verified request is recorded
}

TEST_F(OpenCommand, AgentSignedIsNotAuthorizedEvenOnTheHub) {
    for (bool required : {true, false}) {
        const auto r = refused(open(sign(*pki_, "agent:node01", kDelete), required));
        EXPECT_EQ(r.reply.error_code, "not-authorized");
        EXPECT_EQ(r.reply.id, "7");
        EXPECT_EQ(r.sender, "agent:node01");
        EXPECT_NE(r.reply.error_message.find("operator:*"), std::string::npos)
            << r.reply.error_message;
    }
    EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(OpenCommand, ReplayIsRefused) {
    const std::string bytes = sign(*pki_, "operator:alice", kDelete);
    ASSERT_TRUE(std::holds_alternative<OpenedCommand>(open(bytes, true)));
    const auto r = refused(open(bytes, true));
    EXPECT_EQ(r.reply.error_code, "replayed");
    EXPECT_EQ(r.reply.id, "7");
}

TEST_F(OpenCommand, WrongTargetIsRefused) {
    const auto r = refused(
        open(sign(*pki_, "operator:alice", kDelete, "deployable_delete", "dped:web"), true));
    EXPECT_EQ(r.reply.error_code, "wrong-target");
    EXPECT_EQ(r.reply.id, "7");
}

TEST_F(OpenCommand, ActionMustBeTheCommand) {
    // Signed as a harmless list, carrying a delete: refused, whoever signed it.
    const auto r = refused(open(sign(*pki_, "operator:alice", kDelete, "deployable_list"), true));
    EXPECT_EQ(r.reply.error_code, "bad-request");
    EXPECT_EQ(r.reply.id, "7");
    EXPECT_NE(r.reply.error_message.find("deployable_list"), std::string::npos);
    EXPECT_NE(r.reply.error_message.find("deployable_delete"), std::string::npos);
}

TEST_F(OpenCommand, SignerFromAnotherCaIsUntrusted) {
    const auto r = refused(open(sign(*other_, "operator:mallory", kDelete), false));
    EXPECT_EQ(r.reply.error_code, "untrusted-signer");
}

TEST_F(OpenCommand, SignedBodyMustStillBeACommand) {
    const auto r = refused(open(
        sign(*pki_, "operator:alice", R"({"v":2,"type":"command","id":"9","command":"x"})", "x"),
        true));
    EXPECT_EQ(r.reply.error_code, "bad-request");
    EXPECT_EQ(r.reply.id, "9");
}

TEST_F(OpenCommand, WithoutACaAnEnvelopeIsOnlyUnwrapped) {
    auto v = openCommand(sign(*pki_, "agent:node01", kDelete), nullptr, kNow, cache_, false, "c");
    ASSERT_TRUE(std::holds_alternative<OpenedCommand>(v));
    EXPECT_EQ(std::get<OpenedCommand>(v).request.command, "deployable_delete");
    EXPECT_EQ(std::get<OpenedCommand>(v).sender, ""); // nothing was verified
}

} // namespace
} // namespace pcloud::cped
