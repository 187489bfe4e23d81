// libFuzzer target: the request head checks, then Beast on what they accept.
//
// Oracles beyond "no crash, no sanitizer report": an accepted head has only
// CRLF line ends and no control bytes but HTAB; Beast accepts it too and
// frames it the same way (method, target, version, chunked, length); the
// bytes after the head then go through Beast's body parser with the chunk
// extension budget, as the session streams them.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tollgate/net.hpp"
#include "tollgate/proxy/framing.hpp"

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tollgate;
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t end = proxy::find_head_end(input);
    check(end == std::string_view::npos || (end > 0 && end <= input.size()));
    const std::string_view head = end == std::string_view::npos ? input : input.substr(0, end);

    proxy::head_info info;
    const auto error = proxy::validate_request_head(head, {100}, info);
    // Same bytes, same verdict.
    const auto again = proxy::validate_request_head(head, {100});
    check(error.has_value() == again.has_value());
    if (error) {
        check(error->status == 400 || error->status == 431 || error->status == 501 ||
              error->status == 505);
        check(!error->message.empty());
        return 0;
    }

    // What was accepted is plain: CRLF lines, no controls but HTAB.
    for (std::size_t i = 0; i < head.size(); ++i) {
        const auto c = static_cast<unsigned char>(head[i]);
        if (c == '\r') {
            check(i + 1 < head.size() && head[i + 1] == '\n');
        } else if (c == '\n') {
            check(i > 0 && head[i - 1] == '\r');
        } else {
            check(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
    }
    check(head.size() >= 4 && head.substr(head.size() - 4) == "\r\n\r\n");
    check(!(info.chunked && info.content_length));
    check(info.fields <= 100);
    const std::string_view path = proxy::request_path(info.target);
    check(!path.empty() && path.find('?') == std::string_view::npos);

    proxy::chunk_extension_budget budget;
    bool budget_refused = false;
    // Beast keeps a reference to the callback: it must outlive the parser.
    auto on_chunk_header = [&](std::uint64_t, std::string_view extensions, error_code& ec) {
        if (budget.add(extensions)) {
            budget_refused = true;
            ec = http::error::bad_chunk_extension;
        }
    };
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(1024 * 1024);
    parser.on_chunk_header(on_chunk_header);
    error_code ec;
    const std::size_t used = parser.put(asio::buffer(head.data(), head.size()), ec);
    if (ec == http::error::body_limit) {
        // The session answers 413 at the head.
        check(info.content_length && *info.content_length > 1024 * 1024);
        return 0;
    }
    // Beast must accept whatever the checks accepted, the same way.
    check(!ec && parser.is_header_done() && used == head.size());
    check(parser.chunked() == info.chunked);
    check(parser.content_length().has_value() == info.content_length.has_value());
    if (info.content_length) {
        check(*parser.content_length() == *info.content_length);
    }
    check(parser.get().method_string() == info.method);
    check(parser.get().target() == info.target);
    check(parser.get().version() == info.version);

    // The body, as the session streams it through a fixed buffer.
    std::string_view rest = input.substr(head.size());
    char buffer[512];
    while (!parser.is_done() && !rest.empty()) {
        auto& body = parser.get().body();
        body.data = buffer;
        body.size = sizeof buffer;
        const std::size_t n = parser.put(asio::buffer(rest.data(), rest.size()), ec);
        if (ec == http::error::need_buffer) {
            ec = {};
        }
        if (ec) {
            break;  // need_more, or a body error: the session answers 400/413
        }
        if (n == 0 && body.size == sizeof buffer) {
            break;
        }
        rest.remove_prefix(n);
    }
    (void)budget_refused;
    return 0;
}
