#include "tollgate/proxy/framing.hpp"

namespace tollgate::proxy {

std::size_t find_head_end(std::string_view data) {
    for (std::size_t i = data.find('\n'); i != std::string_view::npos; i = data.find('\n', i + 1)) {
        if (i + 1 < data.size() && data[i + 1] == '\n') {
            return i + 2;
        }
        if (i + 2 < data.size() && data[i + 1] == '\r' && data[i + 2] == '\n') {
            return i + 3;
        }
    }
    return std::string_view::npos;
}

std::optional<framing_error> validate_request_head(std::string_view head,
                                                   const head_limits& limits) {
    std::size_t lines = 0;
    for (char c : head) {
        lines += c == '\n';
    }
    // Start line and the blank line are not fields.
    if (lines >= 2 && lines - 2 > limits.max_headers) {
        return framing_error{431, "too many request header fields"};
    }
    return std::nullopt;
}

std::optional<framing_error> validate_response_head(std::string_view) {
    return std::nullopt;
}

}  // namespace tollgate::proxy
