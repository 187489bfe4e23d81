#pragma once
/// @file redis_asio.hpp
/// Drives one hiredis async context (`redisAsyncContext`) from an Asio
/// io_context: hiredis's addRead/delRead/addWrite/delWrite/cleanup hooks
/// become `async_wait`s on a `posix::stream_descriptor` over hiredis's
/// socket, whose completions call redisAsyncHandleRead/HandleWrite.
///
///  * The descriptor is never closed by Asio: hiredis owns the socket, and
///    the cleanup hook (run by hiredis just before it closes it) `release()`s
///    the descriptor, which also cancels any wait still outstanding.
///  * Writes: the first flush after commands are queued is posted (the
///    socket is nearly always writable, so every command queued in this turn
///    of the loop goes out in one write without a trip through epoll); only
///    a write that could not finish waits for writability.
///  * Reads are armed only while the owner expects replies
///    (`set_read_interest`). An idle connection therefore holds no operation
///    on the io_context, which can run out of work and return when the
///    worker drains. A peer that closed an idle connection is noticed with
///    `poll_idle()` before the connection is used again.
///
/// Thread-safety: none; everything runs on the io_context's thread.

#include <memory>

#include <hiredis/async.h>

#include "tollgate/net.hpp"

namespace tollgate::store {

class redis_asio_link : public std::enable_shared_from_this<redis_asio_link> {
    struct private_tag {};

public:
    /// Installs the hooks on `ac` (fresh from redisAsyncConnect, before any
    /// command). The link stays attached until hiredis frees `ac`. Returns
    /// null if the socket cannot be registered (the caller frees `ac`).
    static std::shared_ptr<redis_asio_link> attach(asio::io_context& ioc, redisAsyncContext* ac);

    redis_asio_link(asio::io_context& ioc, redisAsyncContext* ac, private_tag);
    ~redis_asio_link();
    redis_asio_link(const redis_asio_link&) = delete;
    redis_asio_link& operator=(const redis_asio_link&) = delete;

    /// Whether a read may be armed: true while replies are outstanding.
    void set_read_interest(bool interest);

    /// For an idle connection (no read armed): if the socket is readable
    /// (the server closed it, or sent an error), lets hiredis read now, which
    /// may disconnect and free the context. Cheap: one poll(2) with timeout 0.
    void poll_idle();

    /// False once hiredis has cleaned the context up.
    bool attached() const noexcept { return ac_ != nullptr; }

private:
    static void on_add_read(void* self);
    static void on_del_read(void* self);
    static void on_add_write(void* self);
    static void on_del_write(void* self);
    static void on_cleanup(void* self);

    void arm_read();
    void read();
    void schedule_write();
    void arm_write();
    void flush();

    asio::io_context& ioc_;
    asio::posix::stream_descriptor socket_;
    redisAsyncContext* ac_;
    bool want_read_ = false;
    bool want_write_ = false;
    bool read_interest_ = false;
    bool reading_ = false;
    bool writing_ = false;  ///< a flush is posted or a write wait is armed
    bool in_flush_ = false;
    bool in_read_ = false;
};

}  // namespace tollgate::store
