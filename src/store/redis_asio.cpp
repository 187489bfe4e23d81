#include "tollgate/store/redis_asio.hpp"

#include <poll.h>

namespace tollgate::store {

std::shared_ptr<redis_asio_link> redis_asio_link::attach(asio::io_context& ioc,
                                                         redisAsyncContext* ac) {
    auto link = std::make_shared<redis_asio_link>(ioc, ac, private_tag{});
    error_code ec;
    link->socket_.assign(ac->c.fd, ec);
    if (ec) {
        link->ac_ = nullptr;
        return nullptr;
    }
    ac->ev.data = link.get();
    ac->ev.addRead = &on_add_read;
    ac->ev.delRead = &on_del_read;
    ac->ev.addWrite = &on_add_write;
    ac->ev.delWrite = &on_del_write;
    ac->ev.cleanup = &on_cleanup;
    return link;
}

redis_asio_link::redis_asio_link(asio::io_context& ioc, redisAsyncContext* ac, private_tag)
    : ioc_(ioc), socket_(ioc), ac_(ac) {}

redis_asio_link::~redis_asio_link() {
    // hiredis owns the socket: never let the descriptor close it.
    if (socket_.is_open()) {
        socket_.release();
    }
}

void redis_asio_link::on_add_read(void* self) {
    auto* link = static_cast<redis_asio_link*>(self);
    link->want_read_ = true;
    link->arm_read();
}

void redis_asio_link::on_del_read(void* self) {
    static_cast<redis_asio_link*>(self)->want_read_ = false;
}

void redis_asio_link::on_add_write(void* self) {
    auto* link = static_cast<redis_asio_link*>(self);
    link->want_write_ = true;
    link->schedule_write();
}

void redis_asio_link::on_del_write(void* self) {
    static_cast<redis_asio_link*>(self)->want_write_ = false;
}

void redis_asio_link::on_cleanup(void* self) {
    // hiredis is about to close the socket: take it out of the reactor first
    // (this cancels outstanding waits; their handlers see ac_ == nullptr).
    auto* link = static_cast<redis_asio_link*>(self);
    link->ac_ = nullptr;
    link->want_read_ = false;
    link->want_write_ = false;
    if (link->socket_.is_open()) {
        link->socket_.release();
    }
}

void redis_asio_link::set_read_interest(bool interest) {
    read_interest_ = interest;
    arm_read();
}

void redis_asio_link::arm_read() {
    // While hiredis reads, it re-adds the read *before* running the reply
    // callbacks that may take the interest away: decide afterwards, in read().
    if (ac_ == nullptr || reading_ || in_read_ || !want_read_ || !read_interest_) {
        return;
    }
    reading_ = true;
    socket_.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this()](error_code ec) {
                           self->reading_ = false;
                           if (!ec) {
                               self->read();
                           }
                       });
}

void redis_asio_link::read() {
    if (ac_ == nullptr) {
        return;
    }
    in_read_ = true;
    // May run reply callbacks, and may free the context (then ac_ is null).
    redisAsyncHandleRead(ac_);
    in_read_ = false;
    arm_read();
}

void redis_asio_link::schedule_write() {
    // Inside a flush, hiredis re-adding write means "not done": flush() waits
    // for writability afterwards instead of posting again.
    if (ac_ == nullptr || writing_ || in_flush_) {
        return;
    }
    writing_ = true;
    asio::post(ioc_, [self = shared_from_this()] {
        self->writing_ = false;
        self->flush();
    });
}

void redis_asio_link::arm_write() {
    if (ac_ == nullptr || writing_ || !want_write_) {
        return;
    }
    writing_ = true;
    socket_.async_wait(asio::posix::stream_descriptor::wait_write,
                       [self = shared_from_this()](error_code ec) {
                           self->writing_ = false;
                           if (ec) {
                               return;
                           }
                           self->flush();
                       });
}

void redis_asio_link::flush() {
    if (ac_ == nullptr || !want_write_) {
        return;
    }
    in_flush_ = true;
    // Completes a pending connect first, then writes what is buffered.
    redisAsyncHandleWrite(ac_);
    in_flush_ = false;
    if (ac_ != nullptr && want_write_) {
        arm_write();
    }
}

void redis_asio_link::poll_idle() {
    if (ac_ == nullptr || reading_) {
        return;
    }
    pollfd p{ac_->c.fd, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        auto keep = shared_from_this();  // the owner may drop us while hiredis disconnects
        read();
    }
}

}  // namespace tollgate::store
