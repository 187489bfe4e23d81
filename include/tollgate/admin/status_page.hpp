#pragma once
/// @file status_page.hpp
/// `/status`: one self-contained HTML page (no external assets) that polls
/// `/debug/keys` and `/metrics` on the admin port and shows the gateway's
/// state live.

#include <string_view>

namespace tollgate::admin {

/// The page, as served (text/html; charset=utf-8).
std::string_view status_page_html();

}  // namespace tollgate::admin
