#pragma once
/// @file service_notify.hpp
/// Tells a service manager (systemd's `Type=notify`) where tollgate stands:
/// `READY=1` once it listens, `STOPPING=1` when it drains. The protocol is
/// one datagram to the AF_UNIX socket named by `NOTIFY_SOCKET` (sd_notify(3));
/// no libsystemd needed.

#include <string>
#include <string_view>

namespace tollgate::server {

/// Sends `state` to `socket_path` (a path, or `@name` for an abstract
/// socket). True when it was sent; false when `socket_path` is empty (no
/// service manager asked) or the datagram could not go, which changes
/// nothing for the proxy itself.
bool notify_service_manager(std::string_view socket_path, std::string_view state);

}  // namespace tollgate::server
