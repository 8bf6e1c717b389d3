#include "store/xml_file.h"

#include "common/time_format.h"
#include "common/utf8.h"
#include "model/model.h"

#include <algorithm>
#include <charconv>
#include <sstream>

namespace pcloud::store::detail {

Result<std::shared_ptr<XmlFile>> XmlFile::parse(std::string text, std::string path) {
    std::shared_ptr<XmlFile> f(new XmlFile());
    f->original_ = text;
    f->buffer_ = std::move(text);
    f->path_ = std::move(path);
    // No end-of-line normalisation: a domain XML kept in CDATA must come back byte for byte,
    // \r included. Attribute values still turn raw newlines into spaces (parse_wconv).
    const unsigned options = pugi::parse_default & ~pugi::parse_eol;
    pugi::xml_parse_result res = f->doc_.load_buffer_inplace(f->buffer_.data(), f->buffer_.size(),
                                                             options, pugi::encoding_auto);
    if (!res) {
        const auto offset = static_cast<std::ptrdiff_t>(res.offset);
        const int line = f->lineAtOffset(offset);
        const auto clamped = std::min<std::size_t>(
            static_cast<std::size_t>(std::max<std::ptrdiff_t>(offset, 0)), f->original_.size());
        const auto lineStart = f->original_.rfind('\n', clamped == 0 ? 0 : clamped - 1);
        const std::size_t column =
            clamped - (lineStart == std::string::npos || clamped == 0 ? 0 : lineStart + 1) + 1;
        std::string why = res.description();
        if (res.status == pugi::status_no_document_element)
            why = "the file has no root element (is it empty or truncated?)";
        return makeError("not well-formed XML at column " + std::to_string(column) + ": " + why +
                             ". pcloud did not change the file; fix it by hand or restore it "
                             "from a backup",
                         f->path_, line);
    }
    // pugixml passes bytes through unchecked, and every string of the model goes into JSON
    // (cped's replies, dped's copy of the model), which is UTF-8 only: a stray Latin-1 byte
    // made cped throw on a reply (found by fuzzing). A file that declares another encoding
    // (encoding="ISO-8859-1") has been converted by pugixml and is fine.
    if (res.encoding == pugi::encoding_utf8) {
        if (const auto at = invalidUtf8At(f->original_); at != std::string::npos)
            return makeError("the file is not valid UTF-8 (byte " + std::to_string(at + 1) +
                                 "); declare its encoding (<?xml version=\"1.0\" "
                                 "encoding=\"ISO-8859-1\"?>) or convert it to UTF-8. pcloud "
                                 "did not change the file",
                             f->path_, f->lineAtOffset(static_cast<std::ptrdiff_t>(at)));
    }
    return f;
}

int XmlFile::lineAtOffset(std::ptrdiff_t offset) const {
    if (offset < 0)
        return 0;
    const auto end = std::min<std::size_t>(static_cast<std::size_t>(offset), original_.size());
    return 1 + static_cast<int>(std::count(
                   original_.begin(), original_.begin() + static_cast<std::ptrdiff_t>(end), '\n'));
}

int XmlFile::lineOf(pugi::xml_node node) const {
    if (!node)
        return 0;
    const std::ptrdiff_t off = node.offset_debug();
    if (off < 0)
        return 0;
    return lineAtOffset(off);
}

int XmlFile::lineOf(pugi::xml_node node, pugi::xml_attribute attr) const {
    // In-place parsing leaves attribute names and values pointing into buffer_, at the same
    // offsets they have in the original bytes.
    const char* begin = buffer_.data();
    const char* end = begin + buffer_.size();
    for (const char* p : {attr.value(), attr.name()}) {
        if (attr && p >= begin && p < end)
            return lineAtOffset(p - begin);
    }
    return lineOf(node);
}

namespace {

std::string quoted(const std::string& s) {
    return "\"" + s + "\"";
}

} // namespace

std::optional<std::string> Element::text(const char* attr) {
    known_.insert(attr);
    pugi::xml_attribute a = node_.attribute(attr);
    if (!a)
        return std::nullopt;
    return std::string(a.value());
}

Error Element::invalid(const char* attr, const std::string& why) const {
    pugi::xml_attribute a = node_.attribute(attr);
    std::string what =
        a ? std::string(attr) + "=" + quoted(a.value()) : "missing attribute " + std::string(attr);
    return file_.error(node_, a, label_ + ": " + what + " is not valid: " + why);
}

Status Element::name(const char* attr, std::string& out) {
    auto v = text(attr);
    if (!v)
        return file_.error(node_, label_ + ": the required attribute " + attr +
                                      " is missing; add " + attr + "=\"...\"");
    if (!model::isValidName(*v))
        return invalid(attr, "names are 1-64 characters of letters, digits, '-', '_' and '.', "
                             "not starting with '-' or '.'");
    out = *v;
    return {};
}

Status Element::string(const char* attr, std::string& out) {
    if (auto v = text(attr))
        out = *v;
    return {};
}

Status Element::duration(const char* attr, Millis& out, bool allowInfinite, bool allowZero) {
    auto v = text(attr);
    if (!v)
        return {};
    auto d = parseDuration(*v);
    if (!d.ok())
        return invalid(
            attr, std::string("want seconds (\"30\") or a duration such as 500ms, 30s, 5m, 2h") +
                      (allowInfinite ? " or INFINITY" : ""));
    if (*d == kInfinite && !allowInfinite)
        return invalid(attr, "INFINITY is not allowed here; give a duration such as 30s");
    if (*d == 0 && !allowZero)
        return invalid(attr, "must be longer than zero, e.g. 10s");
    out = *d;
    return {};
}

Status Element::failures(const char* attr, int& out) {
    auto v = text(attr);
    if (!v)
        return {};
    if (*v == "INFINITY" || *v == "infinity") {
        out = model::kUnlimitedFailures;
        return {};
    }
    int n = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || p != v->data() + v->size() || n < 0)
        return invalid(attr, "want a whole number of failures >= 0, or INFINITY for no limit");
    out = n;
    return {};
}

Status Element::integer(const char* attr, int& out, int min, int max) {
    auto v = text(attr);
    if (!v)
        return {};
    int n = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || p != v->data() + v->size() || n < min || n > max)
        return invalid(attr, "want a whole number from " + std::to_string(min) + " to " +
                                 std::to_string(max));
    out = n;
    return {};
}

Status Element::number(const char* attr, double& out, double min) {
    auto v = text(attr);
    if (!v)
        return {};
    double d = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
    if (ec != std::errc() || p != v->data() + v->size() || !(d >= min)) {
        std::ostringstream m;
        m << "want a number >= " << min;
        return invalid(attr, m.str());
    }
    out = d;
    return {};
}

Status Element::boolean(const char* attr, bool& out) {
    auto v = text(attr);
    if (!v)
        return {};
    if (*v == "true" || *v == "yes" || *v == "1")
        out = true;
    else if (*v == "false" || *v == "no" || *v == "0")
        out = false;
    else
        return invalid(attr, "want true or false");
    return {};
}

void Element::unknownAttributes(std::vector<Error>& warnings) const {
    for (pugi::xml_attribute a : node_.attributes()) {
        if (known_.count(a.name()))
            continue;
        warnings.push_back(
            file_.error(node_, a,
                        label_ + ": unknown attribute " + a.name() + "=" + quoted(a.value()) +
                            " ignored (it will not be saved back; check the spelling)"));
    }
}

std::string describeNode(pugi::xml_node node) {
    std::string s = "<" + std::string(node.name());
    if (pugi::xml_attribute n = node.attribute("name"))
        s += " name=" + quoted(n.value());
    return s + ">";
}

namespace {
struct StringWriter : pugi::xml_writer {
    std::string out;
    void write(const void* data, size_t size) override {
        out.append(static_cast<const char*>(data), size);
    }
};
} // namespace

std::string toString(const pugi::xml_document& doc) {
    StringWriter w;
    doc.save(w, "  ", pugi::format_indent, pugi::encoding_utf8);
    return w.out;
}

} // namespace pcloud::store::detail
