#pragma once
// Result<T>: the return type of parsers, the store and the policy engine, which do not throw
// (Proton's engine "never throws"; see STYLE.md section 5). An Error says what is wrong and
// where: the file, the line and the object, so an operator can fix it without a debugger.

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace pcloud {

struct Error {
    std::string message; // a sentence: what is wrong and, where possible, the fix
    std::string file;    // the file the error is about, if any
    int line = 0;        // 1-based line in that file, 0 when unknown

    // "FILE:LINE: message", or just the message when there is no file.
    std::string describe() const {
        if (file.empty())
            return message;
        if (line > 0)
            return file + ":" + std::to_string(line) + ": " + message;
        return file + ": " + message;
    }
};

inline Error makeError(std::string message, std::string file = {}, int line = 0) {
    return Error{std::move(message), std::move(file), line};
}

template <typename T> class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}     // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {} // NOLINT(google-explicit-constructor)

    bool ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<T>(v_); }
    const T& value() const& { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const { return std::get<Error>(v_); }

private:
    std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(Error error) : error_(std::move(error)) {} // NOLINT(google-explicit-constructor)
    static Status success() { return {}; }

    bool ok() const { return !error_.has_value(); }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return *error_; }

private:
    std::optional<Error> error_;
};

} // namespace pcloud
