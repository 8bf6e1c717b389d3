#include "virt/guest_xml.h"
#include "virt/libvirt_hypervisor.h"

#include <gtest/gtest.h>

using namespace pcloud::virt;

namespace {
const char* kOperatorXml = R"(<domain type='qemu'>
  <name>web1</name>
  <memory unit='MiB'>128</memory>
  <os><type>hvm</type></os>
  <devices>
    <serial type='pty'/>
  </devices>
</domain>)";
}

TEST(InjectAgentChannel, AddsChannelAndUuid) {
    auto out = injectAgentChannel(kOperatorXml, "/var/lib/pcloud/web1.agent.sock",
                                  "6c0e3b6e-1111-4222-8333-944455556666", "assembly web1");
    ASSERT_TRUE(out.ok()) << out.error().describe();
    EXPECT_EQ(agentChannelPath(*out), "/var/lib/pcloud/web1.agent.sock");
    EXPECT_EQ(domainUuidOf(*out).value_or(""), "6c0e3b6e-1111-4222-8333-944455556666");
    EXPECT_EQ(domainNameOf(*out).value_or(""), "web1");
    EXPECT_NE(out->find("<serial type=\"pty\""), std::string::npos) << "kept operator devices";
    EXPECT_NE(out->find("name=\"org.pcloud.agent.0\""), std::string::npos);
    EXPECT_NE(out->find("type=\"virtio\""), std::string::npos);

    // Idempotent: a second pass changes nothing.
    auto again = injectAgentChannel(*out, "/other.sock", "11111111-2222-4333-8444-555555555555");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *out);
}

TEST(InjectAgentChannel, KeepsOperatorsChannelAndUuid) {
    const std::string xml = R"(<domain type='qemu'><name>db</name>
      <uuid>aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee</uuid>
      <devices><channel type='unix'><source mode='bind' path='/mine.sock'/>
      <target type='virtio' name='org.pcloud.agent.0'/></channel></devices></domain>)";
    auto out = injectAgentChannel(xml, "/theirs.sock", "11111111-2222-4333-8444-555555555555");
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(agentChannelPath(*out), "/mine.sock");
    EXPECT_EQ(domainUuidOf(*out).value_or(""), "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
}

TEST(InjectAgentChannel, AddsDevicesWhenMissing) {
    auto out = injectAgentChannel("<domain type='qemu'><name>x</name></domain>", "/x.sock", "");
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(agentChannelPath(*out), "/x.sock");
    EXPECT_FALSE(domainUuidOf(*out).has_value());
}

TEST(InjectAgentChannel, BadInputSaysWhatAndWhere) {
    auto notXml = injectAgentChannel("<domain type='qemu'>\n<name>x</name>\n<devices>", "/x.sock",
                                     "", "assembly web2");
    ASSERT_FALSE(notXml.ok());
    EXPECT_NE(notXml.error().message.find("assembly web2"), std::string::npos);
    EXPECT_NE(notXml.error().message.find("not well-formed"), std::string::npos);
    EXPECT_NE(notXml.error().message.find("line 3"), std::string::npos) << notXml.error().message;

    auto noDomain = injectAgentChannel("<vm><name>x</name></vm>", "/x.sock", "", "assembly a");
    ASSERT_FALSE(noDomain.ok());
    EXPECT_NE(noDomain.error().message.find("<domain>"), std::string::npos);

    auto noName = injectAgentChannel("<domain type='qemu'/>", "/x.sock", "", "assembly a");
    ASSERT_FALSE(noName.ok());
    EXPECT_NE(noName.error().message.find("<name>"), std::string::npos);
}

TEST(InjectAgentChannel, InjectedXmlIsAcceptedByLibvirt) {
    LibvirtHypervisor hv;
    ASSERT_TRUE(hv.open("test:///default").ok());
    const std::string xml = "<domain type='test'><name>pcloud-inject</name><memory>65536</memory>"
                            "<os><type>hvm</type></os></domain>";
    auto out = injectAgentChannel(xml, "/tmp/pcloud-inject.sock", randomUuid());
    ASSERT_TRUE(out.ok());
    auto started = hv.createTransient(*out);
    ASSERT_TRUE(started.ok()) << started.error().describe();
    EXPECT_EQ(started->uuid, domainUuidOf(*out).value());
    EXPECT_TRUE(hv.destroy("pcloud-inject").ok());
}

TEST(TinyGuestXml, TinyGuestInUsesDpedsLayoutAndAFreshUuid) {
    auto g = tinyGuestIn("n1", "/cache/guest/agent", "/state", 18081);
    EXPECT_EQ(g.kernel, "/cache/guest/agent/vmlinuz");
    EXPECT_EQ(g.initrd, "/cache/guest/agent/initrd.img");
    EXPECT_EQ(g.consoleLog, "/state/n1.console.log");
    EXPECT_EQ(g.channelSocket, "/state/channels/n1.sock");
    EXPECT_EQ(g.httpPort, 18081);
    EXPECT_EQ(g.uuid.size(), 36u);
    EXPECT_NE(g.uuid, tinyGuestIn("n1", "/g", "/s", 1).uuid);
    auto xml = renderTinyGuestXml(g);
    ASSERT_TRUE(xml.ok()) << xml.error().describe();
    EXPECT_EQ(domainUuidOf(*xml).value_or(""), g.uuid);
}

TEST(TinyGuestXml, RendersTheTemplate) {
    TinyGuest g;
    g.name = "tiny-1";
    g.uuid = "6c0e3b6e-1111-4222-8333-944455556666";
    g.kernel = "/cache/vmlinuz";
    g.initrd = "/cache/initrd.img";
    g.consoleLog = "/state/tiny-1.console.log";
    g.channelSocket = "/state/tiny-1.agent.sock";
    g.httpPort = 18080;
    auto xml = renderTinyGuestXml(g);
    ASSERT_TRUE(xml.ok()) << xml.error().describe();
    EXPECT_EQ(xml->find('@'), std::string::npos) << "unfilled key in:\n" << *xml;
    EXPECT_EQ(domainNameOf(*xml).value_or(""), "tiny-1");
    EXPECT_EQ(agentChannelPath(*xml), "/state/tiny-1.agent.sock");
    EXPECT_NE(xml->find("<domain type='qemu'"), std::string::npos);
    EXPECT_NE(xml->find("pcloud.assembly=tiny-1"), std::string::npos);
    EXPECT_NE(xml->find("hostfwd=tcp:127.0.0.1:18080-:80"), std::string::npos);

    g.httpPort = 0;
    EXPECT_FALSE(renderTinyGuestXml(g).ok());
    g.httpPort = 1;
    g.kernel.clear();
    auto noKernel = renderTinyGuestXml(g);
    ASSERT_FALSE(noKernel.ok());
    EXPECT_NE(noKernel.error().message.find("build-guest.sh"), std::string::npos);
}

TEST(TinyGuestXml, RandomUuidIsV4) {
    std::string u = randomUuid();
    ASSERT_EQ(u.size(), 36u);
    EXPECT_EQ(u[14], '4');
    EXPECT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    EXPECT_NE(u, randomUuid());
}
