#include "tollgate/server/service_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

namespace tollgate::server {

bool notify_service_manager(std::string_view socket_path, std::string_view state) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() < 2 || socket_path.size() >= sizeof addr.sun_path ||
        (socket_path[0] != '/' && socket_path[0] != '@')) {
        return false;
    }
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    if (socket_path[0] == '@') {
        addr.sun_path[0] = '\0';  // abstract namespace
    }
    const auto length =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size());
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    const ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                                  reinterpret_cast<const sockaddr*>(&addr), length);
    ::close(fd);
    return sent == static_cast<ssize_t>(state.size());
}

}  // namespace tollgate::server
