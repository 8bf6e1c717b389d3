#pragma once
// Resource templates: one XML file per service type (templates/nginx.xml ...) giving the
// unit, class, monitor interval, escalation and optional readiness probe, so an operator
// adds "nginx" to an assembly without spelling those out (docs/store.md).
//
// Directories are read in order and a later directory overrides an earlier one by
// template name: the built-in dir, then /etc/pcloud/templates, then the user's dir. A bad
// file is skipped with a warning naming the file and line; it never stops the others.

#include "common/result.h"
#include "model/model.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::store {

struct Template {
    std::string name;        // e.g. "nginx"; the resource's type when instantiated
    std::string description; // free text for `pcloudsh template list`
    std::string source;      // the file it came from
    // The resource a template makes (name left empty; type = template name).
    model::Resource resource;
};

// Parses one template file's text. Accepts pcloud's <template name="..."> and Pacemaker
// Cloud's <resource type="..." class="..." monitor_interval="..."/>. The template name is
// the name (or type) attribute, else the file name without ".xml".
Result<Template> parseTemplate(const std::string& text, const std::string& path,
                               std::vector<Error>* warnings = nullptr);

class TemplateRegistry {
public:
    // The built-in dir (PCLOUD_TEMPLATE_DIR), /etc/pcloud/templates, then
    // $XDG_CONFIG_HOME/pcloud/templates or ~/.config/pcloud/templates.
    static std::vector<std::string> defaultDirs();
    // Loads *.xml from each dir in order (missing dirs are skipped quietly).
    static TemplateRegistry load(const std::vector<std::string>& dirs = defaultDirs());

    // Sorted by name.
    std::vector<const Template*> list() const;
    const Template* find(const std::string& name) const;
    // A Resource named `resourceName` made from the template.
    Result<model::Resource> instantiate(const std::string& templateName,
                                        const std::string& resourceName) const;

    // Files skipped or parts ignored while loading, each naming file and line.
    const std::vector<Error>& warnings() const { return warnings_; }
    // Adds (or overrides) one template; used by load().
    void add(Template t);

private:
    std::map<std::string, Template> templates_;
    std::vector<Error> warnings_;
};

} // namespace pcloud::store
