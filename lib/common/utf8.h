#pragma once
// UTF-8 well-formedness (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF).
// JSON text must be UTF-8, and nlohmann::json::dump() throws on anything else, so text
// from outside (argv, a typed line) is checked before it goes into a JSON body.

#include <cstddef>
#include <string>
#include <string_view>

namespace pcloud {

// The byte offset of the first byte that is not part of a well-formed sequence, or npos.
inline std::size_t invalidUtf8At(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; // no overlong
            if (c == 0xED)
                hi = 0x9F; // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; // no overlong
            if (c == 0xF4)
                hi = 0x8F; // not above U+10FFFF
        } else {
            return i;
        }
        if (i + len > n || p[i + 1] < lo || p[i + 1] > hi)
            return i;
        for (std::size_t k = 2; k < len; ++k)
            if (p[i + k] < 0x80 || p[i + k] > 0xBF)
                return i;
        i += len;
    }
    return std::string_view::npos;
}

inline bool isValidUtf8(std::string_view s) {
    return invalidUtf8At(s) == std::string_view::npos;
}

// Text from outside (a guest's reply, a name an operator typed, a tool's output) made safe
// to quote in a message that goes into JSON: at most `maxBytes` bytes of it, cut only
// between characters, each byte that is not part of a well-formed UTF-8 sequence replaced
// by '?', and "..." appended when something was cut. A plain substr() can split a
// character, and nlohmann::json::dump() then throws.
inline std::string utf8Excerpt(std::string_view s, std::size_t maxBytes) {
    // Every input byte becomes one output byte, so no more input than this is ever needed.
    s = s.substr(0, maxBytes + 4);
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t bad = invalidUtf8At(s.substr(i));
        std::size_t good = bad == std::string_view::npos ? s.size() - i : bad;
        // Copy the well-formed run, whole characters only.
        std::size_t k = 0;
        while (k < good) {
            const auto c = static_cast<unsigned char>(s[i + k]);
            std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            if (out.size() + len > maxBytes)
                return out + "...";
            out.append(s.substr(i + k, len));
            k += len;
        }
        i += good;
        if (i < s.size()) {
            if (out.size() + 1 > maxBytes)
                return out + "...";
            out.push_back('?');
            ++i;
        }
    }
    return out;
}

} // namespace pcloud
