#include "store/templates.h"

#include "common/fs.h"
#include "store/model_xml.h"
#include "store/xml_file.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>

#ifndef PCLOUD_TEMPLATE_DIR
#define PCLOUD_TEMPLATE_DIR "/usr/share/pcloud/templates"
#endif

namespace pcloud::store {

using namespace detail;

namespace {

std::string q(const std::string& s) {
    return "\"" + s + "\"";
}

std::string stemOf(const std::string& path) {
    auto slash = path.rfind('/');
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    if (base.size() > 4 && base.compare(base.size() - 4, 4, ".xml") == 0)
        base.resize(base.size() - 4);
    return base;
}

} // namespace

Result<Template> parseTemplate(const std::string& text, const std::string& path,
                               std::vector<Error>* warningsOut) {
    auto parsed = XmlFile::parse(text, path);
    if (!parsed.ok())
        return parsed.error();
    const XmlFile& f = **parsed;
    pugi::xml_node root = f.root();
    const std::string rootName = root.name();
    if (rootName != "template" && rootName != "resource")
        return f.error(root, "the root element is <" + rootName +
                                 ">, expected <template name=\"...\" ...>");
    std::vector<Error> warnings;
    Template t;
    t.source = path;
    // pcloud: name=; Pacemaker Cloud: type= (its name= was the resource's, added later).
    const char* nameAttr = rootName == "template" ? "name" : "type";
    pugi::xml_attribute nameA = root.attribute(nameAttr);
    t.name = nameA ? std::string(nameA.value()) : stemOf(path);
    Element e(f, root, "template " + q(t.name));
    if (!model::isValidName(t.name)) {
        if (nameA)
            return e.invalid(nameAttr, "template names are letters, digits, '-', '_' and '.'");
        return f.error(root, "the template has no name=\"...\" and the file name " + q(t.name) +
                                 " is not a valid name; add name=\"...\"");
    }
    e.ignore("name");
    e.ignore("type");
    if (auto st = e.string("description", t.description); !st)
        return st.error();
    t.resource.type = t.name;
    if (auto st = parseResourceBody(f, e, t.resource, warnings); !st)
        return st.error();
    e.unknownAttributes(warnings);
    // Validate with a placeholder resource name: the template itself has none.
    model::Resource check = t.resource;
    check.name = "x";
    if (auto st = validateResource(check); !st)
        return f.error(root, "template " + q(t.name) + ": " + st.error().message);
    if (warningsOut)
        warningsOut->insert(warningsOut->end(), warnings.begin(), warnings.end());
    return t;
}

std::vector<std::string> TemplateRegistry::defaultDirs() {
    std::vector<std::string> dirs{PCLOUD_TEMPLATE_DIR, "/etc/pcloud/templates"};
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
        dirs.push_back(std::string(xdg) + "/pcloud/templates");
    else if (const char* home = std::getenv("HOME"); home && *home)
        dirs.push_back(std::string(home) + "/.config/pcloud/templates");
    return dirs;
}

void TemplateRegistry::add(Template t) {
    std::string name = t.name;
    templates_[name] = std::move(t);
}

TemplateRegistry TemplateRegistry::load(const std::vector<std::string>& dirs) {
    TemplateRegistry reg;
    for (const auto& dir : dirs) {
        DIR* d = ::opendir(dir.c_str());
        if (!d) {
            if (errno != ENOENT && errno != ENOTDIR)
                reg.warnings_.push_back(makeError(
                    std::string("cannot read template directory: ") + std::strerror(errno), dir));
            continue;
        }
        std::vector<std::string> files;
        while (dirent* ent = ::readdir(d)) {
            std::string n = ent->d_name;
            if (n.size() > 4 && n.compare(n.size() - 4, 4, ".xml") == 0 && n[0] != '.')
                files.push_back(n);
        }
        ::closedir(d);
        std::sort(files.begin(), files.end()); // deterministic within one directory
        std::map<std::string, std::string> seenHere;
        for (const auto& file : files) {
            const std::string path = dir + "/" + file;
            auto text = fs::readFile(path);
            if (!text.ok()) {
                reg.warnings_.push_back(text.error());
                continue;
            }
            auto t = parseTemplate(*text, path, &reg.warnings_);
            if (!t.ok()) {
                Error err = t.error();
                err.message += " (template skipped)";
                reg.warnings_.push_back(std::move(err));
                continue;
            }
            if (auto it = seenHere.find(t->name); it != seenHere.end())
                reg.warnings_.push_back(makeError("template " + q(t->name) +
                                                      " is also defined in " + it->second +
                                                      "; this file wins",
                                                  path));
            seenHere[t->name] = path;
            reg.add(std::move(t).value());
        }
    }
    return reg;
}

std::vector<const Template*> TemplateRegistry::list() const {
    std::vector<const Template*> out;
    for (const auto& [_, t] : templates_)
        out.push_back(&t);
    return out;
}

const Template* TemplateRegistry::find(const std::string& name) const {
    auto it = templates_.find(name);
    return it == templates_.end() ? nullptr : &it->second;
}

Result<model::Resource> TemplateRegistry::instantiate(const std::string& templateName,
                                                      const std::string& resourceName) const {
    const Template* t = find(templateName);
    if (!t) {
        std::string known;
        for (const auto& [n, _] : templates_)
            known += (known.empty() ? "" : ", ") + n;
        return makeError("no resource template named " + q(templateName) +
                         "; known templates: " + (known.empty() ? "(none)" : known));
    }
    if (!model::isValidName(resourceName))
        return makeError("resource name " + q(resourceName) +
                         " is not valid; use 1-64 letters, digits, '-', '_' or '.'");
    model::Resource r = t->resource;
    r.name = resourceName;
    return r;
}

} // namespace pcloud::store
