#include "store/templates.h"

#include "common/fs.h"

#include <cstdlib>
#include <gtest/gtest.h>
#include <string>

using namespace pcloud;
using store::TemplateRegistry;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-templates-XXXXXX";
    return ::mkdtemp(tmpl);
}
void writeFile(const std::string& path, const std::string& text) {
    ASSERT_TRUE(fs::writeAtomic(path, text).ok()) << path;
}
bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}
std::string tmpl(const std::string& name, const std::string& interval) {
    return "<template name=\"" + name + "\" class=\"systemd\" unit=\"" + name +
           ".service\" monitor_interval=\"" + interval + "\"/>\n";
}

} // namespace

TEST(Templates, BuiltInTemplatesAllLoadCleanly) {
    auto reg = TemplateRegistry::load({PCLOUD_TEMPLATE_DIR});
    for (const auto& w : reg.warnings())
        ADD_FAILURE() << w.describe();
    for (const char* name : {"apache2", "httpd", "nginx", "postgresql", "mariadb", "mysqld",
                             "chronyd", "ntpd", "sshd", "haproxy", "redis", "dummy"}) {
        const auto* t = reg.find(name);
        ASSERT_NE(t, nullptr) << name;
        EXPECT_FALSE(t->resource.unit.empty()) << name;
        EXPECT_FALSE(t->description.empty()) << name;
        EXPECT_EQ(t->resource.type, name);
    }
    const auto* nginx = reg.find("nginx");
    EXPECT_EQ(nginx->resource.klass, model::ResourceClass::Systemd);
    EXPECT_EQ(nginx->resource.unit, "nginx.service");
    EXPECT_EQ(nginx->resource.monitor_interval, 10'000);
    EXPECT_EQ(nginx->resource.escalation, (model::Escalation{3, 60'000}));
    ASSERT_TRUE(nginx->resource.probe.has_value());
    EXPECT_EQ(nginx->resource.probe->kind, model::ProbeKind::Http);
    EXPECT_EQ(nginx->resource.probe->port, 80);
    EXPECT_EQ(reg.find("postgresql")->resource.probe->kind, model::ProbeKind::Tcp);
    EXPECT_EQ(reg.find("postgresql")->resource.probe->port, 5432);
    EXPECT_FALSE(reg.find("chronyd")->resource.probe.has_value());
    EXPECT_EQ(reg.find("dummy")->resource.klass, model::ResourceClass::Process);
}

TEST(Templates, LaterDirectoriesOverrideEarlierOnesByName) {
    auto builtin = tempDir(), etc = tempDir(), user = tempDir();
    writeFile(builtin + "/nginx.xml", tmpl("nginx", "10s"));
    writeFile(builtin + "/redis.xml", tmpl("redis", "10s"));
    writeFile(etc + "/nginx.xml", tmpl("nginx", "20s"));
    writeFile(etc + "/sshd.xml", tmpl("sshd", "20s"));
    // The file name does not matter, the template name does.
    writeFile(user + "/my-nginx.xml", tmpl("nginx", "30s"));

    auto reg = TemplateRegistry::load({builtin, etc, user});
    EXPECT_TRUE(reg.warnings().empty());
    ASSERT_EQ(reg.list().size(), 3u);
    EXPECT_EQ(reg.list()[0]->name, "nginx"); // sorted
    EXPECT_EQ(reg.find("nginx")->resource.monitor_interval, 30'000);
    EXPECT_EQ(reg.find("nginx")->source, user + "/my-nginx.xml");
    EXPECT_EQ(reg.find("sshd")->resource.monitor_interval, 20'000);
    EXPECT_EQ(reg.find("redis")->resource.monitor_interval, 10'000);

    // Reversed order, reversed winner.
    auto rev = TemplateRegistry::load({user, etc, builtin});
    EXPECT_EQ(rev.find("nginx")->resource.monitor_interval, 10'000);
}

TEST(Templates, BadFilesAreSkippedWithFileAndLineAndOthersStillLoad) {
    auto builtin = tempDir(), user = tempDir();
    writeFile(builtin + "/nginx.xml", tmpl("nginx", "10s"));
    writeFile(user + "/good.xml", tmpl("good", "5s"));
    writeFile(user + "/broken.xml",
              "<template name=\"broken\">\n  <probe kind=\"tcp\"\n</template>\n");
    // A bad override must not remove the earlier good definition.
    writeFile(user + "/nginx.xml",
              "<template name=\"nginx\"\n          monitor_interval=\"soon\"/>\n");
    writeFile(user + "/typo.xml", "<template name=\"typo\" unit=\"x.service\" colour=\"red\"/>\n");
    writeFile(user + "/notes.txt", "not a template");

    auto reg = TemplateRegistry::load({builtin, "/nonexistent/pcloud/templates", user});
    ASSERT_EQ(reg.warnings().size(), 3u);
    // Files are read in name order: broken.xml, good.xml, nginx.xml, typo.xml.
    const auto& broken = reg.warnings()[0];
    EXPECT_EQ(broken.file, user + "/broken.xml");
    EXPECT_EQ(broken.line, 3);
    EXPECT_TRUE(contains(broken.message, "skipped")) << broken.describe();
    const auto& nginx = reg.warnings()[1];
    EXPECT_EQ(nginx.file, user + "/nginx.xml");
    EXPECT_EQ(nginx.line, 2);
    EXPECT_TRUE(contains(nginx.message, "monitor_interval=\"soon\"")) << nginx.describe();
    const auto& typo = reg.warnings()[2];
    EXPECT_EQ(typo.file, user + "/typo.xml");
    EXPECT_TRUE(contains(typo.message, "colour")) << typo.describe();

    EXPECT_NE(reg.find("good"), nullptr);
    EXPECT_NE(reg.find("typo"), nullptr);
    EXPECT_EQ(reg.find("broken"), nullptr);
    ASSERT_NE(reg.find("nginx"), nullptr);
    EXPECT_EQ(reg.find("nginx")->source, builtin + "/nginx.xml");
}

TEST(Templates, InstantiateMakesANamedResource) {
    auto reg = TemplateRegistry::load({PCLOUD_TEMPLATE_DIR});
    auto r = reg.instantiate("apache2", "frontend");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->name, "frontend");
    EXPECT_EQ(r->type, "apache2");
    EXPECT_EQ(r->unit, "apache2.service");
    ASSERT_TRUE(r->probe.has_value());
    EXPECT_EQ(r->probe->path, "/");

    auto unknown = reg.instantiate("lighttpd", "x");
    ASSERT_FALSE(unknown.ok());
    EXPECT_TRUE(contains(unknown.error().message, "lighttpd"));
    EXPECT_TRUE(contains(unknown.error().message, "nginx")) << "lists the known templates";

    auto badName = reg.instantiate("nginx", "no spaces");
    ASSERT_FALSE(badName.ok());
    EXPECT_TRUE(contains(badName.error().message, "no spaces"));
}

TEST(Templates, PacemakerCloudTemplatesAndFileNamesWork) {
    auto dir = tempDir();
    // Pacemaker Cloud's resource_templates/httpd.xml format.
    writeFile(dir + "/httpd.xml", "<resource type=\"httpd\" class=\"lsb\" provider=\"pacemaker\" "
                                  "monitor_interval=\"65s\"/>\n");
    // No name attribute: the file name is the template name.
    writeFile(
        dir + "/memcached.xml",
        "<template class=\"systemd\">\n  <probe kind=\"tcp\" port=\"11211\"/>\n</template>\n");
    auto reg = TemplateRegistry::load({dir});
    for (const auto& w : reg.warnings())
        ADD_FAILURE() << w.describe();
    const auto* httpd = reg.find("httpd");
    ASSERT_NE(httpd, nullptr);
    EXPECT_EQ(httpd->resource.klass, model::ResourceClass::Lsb);
    EXPECT_EQ(httpd->resource.unit, "httpd");
    EXPECT_EQ(httpd->resource.provider, "pacemaker");
    EXPECT_EQ(httpd->resource.monitor_interval, 65'000);
    const auto* mc = reg.find("memcached");
    ASSERT_NE(mc, nullptr);
    EXPECT_EQ(mc->resource.unit, "memcached.service");
    EXPECT_EQ(mc->resource.probe->port, 11211);
}

TEST(Templates, DefaultDirsEndWithTheUserDir) {
    const char* oldXdg = std::getenv("XDG_CONFIG_HOME");
    const std::string savedXdg = oldXdg ? oldXdg : "";
    ::setenv("XDG_CONFIG_HOME", "/tmp/xdg-test", 1);
    auto dirs = TemplateRegistry::defaultDirs();
    ASSERT_EQ(dirs.size(), 3u);
    EXPECT_EQ(dirs[0], PCLOUD_TEMPLATE_DIR);
    EXPECT_EQ(dirs[1], "/etc/pcloud/templates");
    EXPECT_EQ(dirs[2], "/tmp/xdg-test/pcloud/templates");
    ::unsetenv("XDG_CONFIG_HOME");
    const char* home = std::getenv("HOME");
    if (home) {
        EXPECT_EQ(TemplateRegistry::defaultDirs()[2],
                  std::string(home) + "/.config/pcloud/templates");
    }
    if (oldXdg)
        ::setenv("XDG_CONFIG_HOME", savedXdg.c_str(), 1);
}
