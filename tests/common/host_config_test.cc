#include "common/host_config.h"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>

using namespace pcloud;
using namespace pcloud::hostconfig;

TEST(HostConfig, DefaultsAreSafe) {
    HostConfig c;
    EXPECT_EQ(c.apachectl, "apachectl");
    EXPECT_EQ(c.nginx, "nginx");
    EXPECT_EQ(c.referee_dirs, (std::vector<std::string>{"/etc/pcloud/referee"}));
    EXPECT_EQ(c.qemu_commandline, QemuCommandline::None);
    EXPECT_FALSE(c.allow_host_devices);
}

TEST(HostConfig, ParsesEveryKey) {
    auto r = parse("# pcloud host configuration\n"
                   "\n"
                   "apachectl = apache2 -f /srv/web/httpd.conf -d /srv/web\n"
                   "  nginx=/usr/sbin/nginx -c /srv/nginx.conf  \n"
                   "referee_dir = /etc/apache2/pcloud/\n"
                   "referee_dir = /etc/nginx/pcloud\n"
                   "qemu_commandline = netdev-user\n"
                   "allow_host_devices = yes\n",
                   "/etc/pcloud/pcloud.conf");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->source, "/etc/pcloud/pcloud.conf");
    EXPECT_EQ(r->apachectl, "apache2 -f /srv/web/httpd.conf -d /srv/web");
    EXPECT_EQ(r->nginx, "/usr/sbin/nginx -c /srv/nginx.conf");
    // Listed directories replace the default one; a trailing slash is dropped.
    EXPECT_EQ(r->referee_dirs,
              (std::vector<std::string>{"/etc/apache2/pcloud", "/etc/nginx/pcloud"}));
    EXPECT_EQ(r->qemu_commandline, QemuCommandline::NetdevUser);
    EXPECT_TRUE(r->allow_host_devices);
}

TEST(HostConfig, BadLinesNameFileLineAndTheFix) {
    struct Case {
        std::string text;
        int line;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"apachectl apache2\n", 1, "expected 'key = value'"},
        {"# c\n = x\n", 2, "no key before '='"},
        {"nginx =\n", 1, "'nginx' has no value"},
        {"nginx = a\nnginx = b\n", 2, "'nginx' is set twice"},
        {"apachectl = sh -c 'touch /x'\n", 1, "run without a shell"},
        {"nginx = nginx; rm -rf /\n", 1, "run without a shell"},
        {"referee_dir = etc/pcloud\n", 1, "must be an absolute directory path"},
        {"referee_dir = /etc/../tmp\n", 1, "without '..'"},
        {"referee_dir = /etc/pcloud/..\n", 1, "without '..'"},
        {"referee_dir = /\n", 1, "would let pcloud write anywhere"},
        {"qemu_commandline = all\n", 1, "use none or netdev-user"},
        {"allow_host_devices = maybe\n", 1, "is not yes or no"},
        {"\n\nhaproxy_cmd = x\n", 3, "unknown key 'haproxy_cmd' (known: apachectl nginx"},
    };
    for (const auto& c : cases) {
        auto r = parse(c.text, "/etc/pcloud/pcloud.conf");
        ASSERT_FALSE(r.ok()) << c.text;
        EXPECT_EQ(r.error().file, "/etc/pcloud/pcloud.conf") << c.text;
        EXPECT_EQ(r.error().line, c.line) << c.text;
        EXPECT_NE(r.error().describe().find(c.says), std::string::npos)
            << c.text << " -> " << r.error().describe();
    }
}

TEST(HostConfig, LoadMissingDefaultIsDefaultsButAMissingNamedFileIsAnError) {
    auto r = load("/nonexistent/pcloud.conf", false);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->source, "");
    EXPECT_EQ(r->referee_dirs, HostConfig{}.referee_dirs);
    r = load("/nonexistent/pcloud.conf", true);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().describe().find("/nonexistent/pcloud.conf"), std::string::npos);
}

TEST(HostConfig, LoadRefusesAFileOthersCanWrite) {
    char tmpl[] = "/tmp/pcloud-hostcfg-XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    std::string path = dir + "/pcloud.conf";
    {
        std::ofstream f(path);
        f << "nginx = /usr/sbin/nginx\n";
    }
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    auto r = load(path, true);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->nginx, "/usr/sbin/nginx");
    ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
    r = load(path, true);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().describe().find("writable by group or others"), std::string::npos)
        << r.error().describe();
    EXPECT_NE(r.error().describe().find("chmod 644 " + path), std::string::npos);
    // A broken line in a real file names the file and the line.
    {
        std::ofstream f(path);
        f << "nginx = /usr/sbin/nginx\nbogus\n";
    }
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    r = load(path, true);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().describe().rfind(path + ":2: ", 0), 0u) << r.error().describe();
    std::system(("rm -rf " + dir).c_str());
}

TEST(HostConfig, FenceAgentsAndImageDirs) {
    HostConfig d;
    EXPECT_EQ(d.fence_agents_dir, "/usr/sbin");
    EXPECT_TRUE(d.fence_agents.empty());
    EXPECT_EQ(d.image_dirs,
              (std::vector<std::string>{"/var/lib/libvirt/images", "/var/lib/pcloud"}));
    auto r = parse("fence_agents_dir = /usr/local/sbin/\n"
                   "fence_agent = fence_virsh\n"
                   "fence_agent = fence_ipmilan\n"
                   "image_dir = /srv/images\n",
                   "p.conf");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->fence_agents_dir, "/usr/local/sbin");
    EXPECT_EQ(r->fence_agents, (std::vector<std::string>{"fence_virsh", "fence_ipmilan"}));
    EXPECT_EQ(r->image_dirs, (std::vector<std::string>{"/srv/images"})); // replaces the defaults
    for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
             {"fence_agent = /bin/sh\n", "not a fence agent name"},
             {"fence_agent = fence_a/b\n", "not a fence agent name"},
             {"fence_agents_dir = sbin\n", "absolute directory"},
             {"fence_agents_dir = /a/../b\n", "without '..'"},
             {"image_dir = images\n", "absolute directory"}}) {
        auto bad = parse(text, "p.conf");
        ASSERT_FALSE(bad.ok()) << text;
        EXPECT_EQ(bad.error().line, 1);
        EXPECT_NE(bad.error().message.find(says), std::string::npos) << bad.error().message;
    }
}

TEST(HostConfig, FloatingIpAndItsInterface) {
    EXPECT_FALSE(HostConfig{}.floating_ip.has_value()); // no floating address by default
    auto r = parse("floating_ip = 10.9.0.100/24\nfloating_dev = veth-a0\n", "p.conf");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    ASSERT_TRUE(r->floating_ip.has_value());
    EXPECT_EQ(r->floating_ip->address, (10u << 24) | (9u << 16) | 100u);
    EXPECT_EQ(r->floating_ip->prefix, 24);
    EXPECT_EQ(r->floating_ip->toString(), "10.9.0.100/24");
    EXPECT_EQ(r->floating_dev, "veth-a0");
    // A /32 and a /31 have no network or broadcast address to refuse.
    EXPECT_TRUE(parseIpv4Cidr("192.168.1.0/32").ok());
    EXPECT_TRUE(parseIpv4Cidr("192.168.1.255/31").ok());
}

TEST(HostConfig, BadFloatingIpLinesNameFileLineAndValue) {
    struct Case {
        std::string text;
        int line;
        std::string says;
    };
    const std::string dev = "floating_dev = eth0\n";
    const std::vector<Case> cases = {
        {dev + "floating_ip = 10.9.0.100\n", 2, "floating_ip '10.9.0.100' has no prefix length"},
        {dev + "floating_ip = 10.9.0.100/0\n", 2, "bad prefix length (a decimal from 1 to 32)"},
        {dev + "floating_ip = 10.9.0.100/33\n", 2, "bad prefix length"},
        {dev + "floating_ip = 10.9.0.100/024\n", 2, "bad prefix length"},
        {dev + "floating_ip = 10.9.0/24\n", 2, "'10.9.0/24' is not an IPv4 address"},
        {dev + "floating_ip = 10.9.0.1.2/24\n", 2, "is not an IPv4 address"},
        {dev + "floating_ip = 10.9.0.256/24\n", 2, "is not an IPv4 address"},
        {dev + "floating_ip = 10.09.0.1/24\n", 2, "without leading zeros"},
        {dev + "floating_ip = 10.9.0.x/24\n", 2, "is not an IPv4 address"},
        {dev + "floating_ip = 10.9.0.1./24\n", 2, "is not an IPv4 address"},
        {dev + "floating_ip = 10.9.0.0/24\n", 2, "the network address of its prefix"},
        {dev + "floating_ip = 10.9.0.255/24\n", 2, "the broadcast address of its prefix"},
        {dev + "floating_ip = 127.0.0.2/8\n", 2, "not a unicast host address"},
        {dev + "floating_ip = 224.0.0.5/24\n", 2, "not a unicast host address"},
        {dev + "floating_ip = fd00::100/64\n", 2, "IPv6 address; only IPv4"},
        {"floating_ip = 10.9.0.100/24\nfloating_ip = 10.9.0.101/24\n", 2,
         "'floating_ip' is set twice"},
        {"floating_ip = 10.9.0.100/24\nfloating_dev = eth0:1\n", 2,
         "floating_dev 'eth0:1' is not a network interface name"},
        {"floating_ip = 10.9.0.100/24\nfloating_dev = averyveryverylongname\n", 2,
         "is not a network interface name (1 to 15 characters"},
        {"floating_ip = 10.9.0.100/24\nfloating_dev = ../x\n", 2, "not a network interface"},
        {"# zone address\nfloating_ip = 10.9.0.100/24\n", 2,
         "floating_ip is set but floating_dev is not"},
        {"floating_dev = eth0\n", 1, "floating_dev is set but floating_ip is not"},
    };
    for (const auto& c : cases) {
        auto r = parse(c.text, "/etc/pcloud/pcloud.conf");
        ASSERT_FALSE(r.ok()) << c.text;
        EXPECT_EQ(r.error().file, "/etc/pcloud/pcloud.conf") << c.text;
        EXPECT_EQ(r.error().line, c.line) << c.text;
        EXPECT_NE(r.error().describe().find(c.says), std::string::npos)
            << c.text << " -> " << r.error().describe();
    }
}

// TLS to etcd: three absolute paths, the client certificate and key both or neither, and
// not without the CA; each error names the line.
TEST(HostConfig, EtcdTlsFiles) {
    auto ok = parse("etcd_ca = /etc/pcloud/etcd/ca.crt\netcd_cert = /etc/pcloud/etcd/c.crt\n"
                    "etcd_key = /etc/pcloud/etcd/c.key\n",
                    "/etc/pcloud/pcloud.conf");
    ASSERT_TRUE(ok.ok()) << ok.error().describe();
    EXPECT_EQ(ok->etcd_ca, "/etc/pcloud/etcd/ca.crt");
    EXPECT_EQ(ok->etcd_cert, "/etc/pcloud/etcd/c.crt");
    EXPECT_EQ(ok->etcd_key, "/etc/pcloud/etcd/c.key");
    auto caOnly = parse("etcd_ca = /etc/pcloud/etcd/ca.crt\n", "/etc/pcloud/pcloud.conf");
    ASSERT_TRUE(caOnly.ok()) << caOnly.error().describe();
    EXPECT_TRUE(caOnly->etcd_cert.empty());
    struct Case {
        std::string text;
        int line;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"etcd_ca = ca.crt\n", 1, "etcd_ca 'ca.crt' must be an absolute file path"},
        {"etcd_ca = /etc/../x\n", 1, "must be an absolute file path"},
        {"etcd_ca = /a\netcd_cert = /c\n", 2, "etcd_cert is set but etcd_key is not"},
        {"etcd_ca = /a\netcd_key = /k\n", 2, "etcd_key is set but etcd_cert is not"},
        {"etcd_cert = /c\netcd_key = /k\n", 2, "etcd_cert is set but etcd_ca is not"},
        {"etcd_ca = /a\netcd_ca = /b\n", 2, "'etcd_ca' is set twice"},
    };
    for (const auto& c : cases) {
        auto r = parse(c.text, "/etc/pcloud/pcloud.conf");
        ASSERT_FALSE(r.ok()) << c.text;
        EXPECT_EQ(r.error().line, c.line) << c.text;
        EXPECT_NE(r.error().describe().find(c.says), std::string::npos)
            << c.text << " -> " << r.error().describe();
    }
}
