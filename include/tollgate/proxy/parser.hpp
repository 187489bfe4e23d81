#pragma once
/// @file parser.hpp
/// Beast's parser, except for trailer fields: Beast's http::parser inserts
/// them into the message it parsed the header into, and a message whose
/// header has not been written yet (a chunked body that is only the last
/// chunk and its trailers arrives before the first write) would carry them
/// out as header fields, past every check of the head: an untrusted org
/// header, a second Host, Authorization, X-Forwarded-For. Trailers are
/// dropped instead, which RFC 9110 section 6.5.1 allows; the re-framed
/// chunked body ends with an empty trailer section.

#include <boost/beast/http.hpp>

#include "tollgate/net.hpp"

namespace tollgate::proxy {

template <bool isRequest, class Body>
class header_only_parser : public http::parser<isRequest, Body> {
public:
    using http::parser<isRequest, Body>::parser;

private:
    void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                       error_code&) override {
        if (!this->is_header_done()) {
            this->get().insert(name, name_string, value);
        }
    }
};

}  // namespace tollgate::proxy
