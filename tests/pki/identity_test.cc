#include "pki/identity.h"

#include <gtest/gtest.h>

using namespace pcloud::pki;

TEST(Identity, ParsesKindAndName) {
    auto id = parseIdentity("agent:node01");
    ASSERT_TRUE(id) << id.error().describe();
    EXPECT_EQ(id->kind, Kind::Agent);
    EXPECT_EQ(id->name, "node01");
    EXPECT_EQ(id->text(), "agent:node01");
    EXPECT_EQ(id->fileStem(), "agent.node01");
}

TEST(Identity, RefusesBadKindsAndNames) {
    EXPECT_FALSE(parseIdentity("node01"));
    EXPECT_FALSE(parseIdentity("root:x"));
    EXPECT_FALSE(parseIdentity("agent:"));
    EXPECT_FALSE(parseIdentity("agent:../x"));
    EXPECT_FALSE(parseIdentity("agent:a/b"));
    auto e = parseIdentity("wizard:merlin");
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message.find("wizard"), std::string::npos);
}

TEST(Identity, ParsesTheSubjectProtonReports) {
    auto s = parseSubject("serialNumber=4A0B,OU=events,CN=operator:alice,O=pcloud");
    ASSERT_TRUE(s) << s.error().describe();
    EXPECT_EQ(s->identity.text(), "operator:alice");
    EXPECT_TRUE(s->identity.events);
    EXPECT_EQ(s->serial, "4A0B");
    auto plain = parseSubject("serialNumber=0ff,CN=dped:web,O=pcloud");
    ASSERT_TRUE(plain);
    EXPECT_FALSE(plain->identity.events);
    EXPECT_EQ(plain->serial, "FF");
}

TEST(Identity, RefusesSubjectsPcloudPkiDoesNotIssue) {
    EXPECT_FALSE(parseSubject("CN=agent:a,O=pcloud"));                      // no serial
    EXPECT_FALSE(parseSubject("serialNumber=AB,O=pcloud"));                 // no CN
    EXPECT_FALSE(parseSubject("serialNumber=AB,CN=agent:a\\,CN=cped:x"));   // escaped
    EXPECT_FALSE(parseSubject("serialNumber=AB,CN=agent:a+OU=events"));     // multi-valued
    EXPECT_FALSE(parseSubject("serialNumber=AB,CN=agent:a,CN=operator:b")); // two CNs
    EXPECT_FALSE(parseSubject("serialNumber=XYZ,CN=agent:a"));              // not hex
    EXPECT_FALSE(parseSubject("serialNumber=AB,CN=alice"));                 // no identity
}

TEST(Identity, DenyListNormalizesAndNamesBadLines) {
    auto d = parseDenyList("# comment\n\n0x00ab\n  CD \n", "revoked");
    ASSERT_TRUE(d) << d.error().describe();
    EXPECT_EQ(d->size(), 2u);
    EXPECT_TRUE(d->count("AB"));
    EXPECT_TRUE(d->count("CD"));
    auto bad = parseDenyList("AB\nnot-hex\n", "/etc/pcloud/pki/revoked");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().describe(),
              "/etc/pcloud/pki/revoked:2: 'not-hex' is not a serial number in hex");
}

TEST(Identity, MissingDenyListIsEmpty) {
    auto d = loadDenyList("/nonexistent/pcloud/revoked");
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->empty());
}
