#pragma once
// Internal to pcloud_store: a parsed XML file that remembers the original bytes, so every
// error can name the file and the line an operator has to fix. Shared by the state store
// (db_deployable.xml, db_assemblies.xml) and the resource template loader.

#include "common/clock.h"
#include "common/result.h"

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <pugixml.hpp>

namespace pcloud::store::detail {

class XmlFile {
public:
    // Parses `text` (the file's bytes; `path` only names it in errors). A document that is
    // not well-formed gives an Error with the line and column of the parser's complaint.
    static Result<std::shared_ptr<XmlFile>> parse(std::string text, std::string path);

    pugi::xml_node root() const { return doc_.document_element(); }
    const std::string& path() const { return path_; }

    // 1-based line of a node or an attribute, 0 when unknown.
    int lineOf(pugi::xml_node node) const;
    int lineOf(pugi::xml_node node, pugi::xml_attribute attr) const;
    int lineAtOffset(std::ptrdiff_t offset) const;

    Error error(pugi::xml_node node, std::string message) const {
        return makeError(std::move(message), path_, lineOf(node));
    }
    Error error(pugi::xml_node node, pugi::xml_attribute attr, std::string message) const {
        return makeError(std::move(message), path_, lineOf(node, attr));
    }

private:
    std::string original_; // untouched bytes: line numbers are counted here
    std::string buffer_;   // parsed in place, so node/attribute pointers map to offsets
    pugi::xml_document doc_;
    std::string path_;
};

// Reads the attributes of one element with validation. Every getter remembers the
// attribute as known, so unknownAttributes() can warn about typos that would otherwise be
// silently dropped on the next save. `label` names the element in messages, e.g.
// `resource "httpd" in assembly "web1"`.
class Element {
public:
    Element(const XmlFile& file, pugi::xml_node node, std::string label)
        : file_(file), node_(node), label_(std::move(label)) {}

    pugi::xml_node node() const { return node_; }
    const std::string& label() const { return label_; }
    bool has(const char* attr) const { return !node_.attribute(attr).empty(); }

    // Any string; absent -> nullopt.
    std::optional<std::string> text(const char* attr);
    // A required model::isValidName name.
    Status name(const char* attr, std::string& out);
    // Each of these leaves `out` unchanged when the attribute is absent.
    Status string(const char* attr, std::string& out);
    Status duration(const char* attr, Millis& out, bool allowInfinite, bool allowZero);
    Status failures(const char* attr, int& out);
    Status integer(const char* attr, int& out, int min, int max);
    Status number(const char* attr, double& out, double min);
    Status boolean(const char* attr, bool& out);
    // Attributes older Pacemaker Cloud files carry that pcloud does not use.
    void ignore(const char* attr) { known_.insert(attr); }

    // Warnings for attributes nobody asked for (they are not saved back).
    void unknownAttributes(std::vector<Error>& warnings) const;

    Error invalid(const char* attr, const std::string& why) const;
    Error error(const std::string& message) const { return file_.error(node_, message); }

private:
    const XmlFile& file_;
    pugi::xml_node node_;
    std::string label_;
    std::set<std::string> known_;
};

// `<resource name="httpd">` style label from a node, for messages.
std::string describeNode(pugi::xml_node node);
// Writes a document with two-space indentation and an XML declaration.
std::string toString(const pugi::xml_document& doc);

} // namespace pcloud::store::detail
