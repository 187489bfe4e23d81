// libFuzzer target: the response head checks (an upstream's answer), then
// Beast on what they accept, then the body as the session relays it.
// Oracles as in fuzz_request.cpp.

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/net.hpp"
#include "tollgate/proxy/framing.hpp"
#include "tollgate/proxy/headers.hpp"

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
    const std::string_view head = end == std::string_view::npos ? input : input.substr(0, end);

    proxy::head_info info;
    const auto error = proxy::validate_response_head(head, info);
    if (error) {
        check(error->status == 502 && !error->message.empty());
        return 0;
    }
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
    check(info.status >= 100 && info.status <= 599);
    check(!(info.chunked && info.content_length));
    const bool no_body = info.status < 200 || info.status == 204;
    check(!no_body || (!info.chunked && info.content_length.value_or(0) == 0));

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(boost::none);
    if (info.status / 100 == 1 || info.status == 204 || info.status == 304) {
        parser.skip(true);
    }
    error_code ec;
    std::string scratch;
    const std::string_view for_beast = proxy::beast_response_head(head, scratch);
    const std::size_t used = parser.put(asio::buffer(for_beast.data(), for_beast.size()), ec);
    check(!ec && parser.is_header_done() && used == for_beast.size());
    check(parser.get().result_int() == info.status);
    check(parser.get().version() == info.version);
    check(parser.chunked() == info.chunked);
    check(parser.content_length().has_value() == info.content_length.has_value());
    if (info.content_length) {
        check(*parser.content_length() == *info.content_length);
    }

    // The raw rewrite session uses for a final response (relay_whole_response)
    // writes what the parsed path writes, and a head tollgate would accept.
    if (info.status >= 200 && info.fields <= proxy::head_info::max_listed) {
        proxy::response_rewrite edit;
        if (!info.chunked && info.status != 204 && info.status != 304) {
            edit.content_length = info.content_length;
        }
        std::string raw;
        proxy::render_response_head(head, info, edit, raw);
        http::response<http::empty_body> res{parser.get().base()};
        proxy::strip_hop_by_hop(res);
        res.version(11);
        if (edit.content_length) {
            res.content_length(*edit.content_length);
        }
        res.keep_alive(true);
        std::string parsed;
        proxy::render_head(res.base(), parsed);
        // Beast files a repeated name next to its first occurrence; the raw
        // path keeps the upstream's order. Same status line, and per name
        // the same values in the same order.
        proxy::head_info again;
        check(!proxy::validate_response_head(raw, again));
        proxy::head_info from_beast;
        check(!proxy::validate_response_head(parsed, from_beast));
        check(raw.substr(0, raw.find('\r')) == parsed.substr(0, parsed.find('\r')));
        check(again.fields == from_beast.fields);
        auto by_name = [](const proxy::head_info& h) {
            std::map<std::string, std::vector<std::string_view>> out;
            for (std::size_t i = 0; i < h.fields && i < proxy::head_info::max_listed; ++i) {
                std::string name(h.listed[i].name);
                for (auto& c : name) {
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                }
                out[name].push_back(h.listed[i].value);
            }
            return out;
        };
        check(by_name(again) == by_name(from_beast));
    }

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
            break;
        }
        if (n == 0 && body.size == sizeof buffer) {
            break;
        }
        rest.remove_prefix(n);
    }
    if (!parser.is_done() && !ec && !parser.chunked() && !parser.content_length()) {
        parser.put_eof(ec);  // a close-delimited body ends with the connection
    }
    return 0;
}
