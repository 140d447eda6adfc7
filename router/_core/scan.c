/* Incremental WebSocket frame-header scan: see scan.h. Mirrors router/frames.py line by line
 * (FrameScanner._walk / _header / _data_frame / _finish_close), so a differential test can
 * hold the two to the same outputs. */
#include "scan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static uint64_t close_counter; /* shared by every scanner of the process, like frames.py's */

void ws_scan_init(ws_scan *s, int masked, uint64_t max_message, int allow_rsv, int gated,
                  ws_admit_fn admit, void *admit_ctx) {
    memset(s, 0, sizeof *s);
    s->masked = masked ? 1 : 0;
    s->max_message = max_message;
    s->allow_rsv = allow_rsv ? 1 : 0;
    s->gated = gated ? 1 : 0;
    s->admit = admit;
    s->admit_ctx = admit_ctx;
    s->close_code = -1;
    s->fed_at_boundary = 1;
    s->frame_kept = 1;
    s->msg_opcode = -1;
    s->err_offset = -1;
}

static int fail(ws_scan *s, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err_msg, sizeof s->err_msg, fmt, ap);
    va_end(ap);
    s->err_code = code;
    return -1;
}

static int finish_close(ws_scan *s) {
    int n = s->close_len;
    s->collecting_close = 0;
    if (s->close_masked)
        for (int i = 0; i < n; i++)
            s->close_buf[i] ^= s->close_mask[i & 3];
    if (n == 1)
        return fail(s, 1002, "close frame with a 1-byte payload");
    if (n) {
        s->close_code = s->close_buf[0] << 8 | s->close_buf[1];
        s->close_reason_len = n - 2;
        memcpy(s->close_reason, s->close_buf + 2, (size_t)(n - 2));
    } else {
        s->close_code = 1005;
    }
    return 0;
}

static void collect_close(ws_scan *s, const uint8_t *p, size_t len) {
    size_t room = sizeof s->close_buf - (size_t)s->close_len;
    if (len > room) /* cannot happen: a control frame is <= 125 bytes */
        len = room;
    memcpy(s->close_buf + s->close_len, p, len);
    s->close_len += (int)len;
}

static int data_frame(ws_scan *s, int opcode, int fin, uint64_t length) {
    if (opcode == 0) {
        if (s->msg_opcode < 0)
            return fail(s, 1002, "continuation frame without a message in progress");
        s->msg_size = (s->msg_size + length < s->msg_size) ? UINT64_MAX : s->msg_size + length;
    } else {
        if (s->msg_opcode >= 0)
            return fail(s, 1002, "new data frame before the previous message finished");
        s->msg_opcode = opcode;
        s->msg_size = length;
    }
    if (s->max_message && s->msg_size > s->max_message)
        return fail(s, 1009, "message of at least %llu bytes exceeds %llu",
                    (unsigned long long)s->msg_size, (unsigned long long)s->max_message);
    if (fin) {
        s->messages++;
        s->msg_opcode = -1;
    }
    if (s->gated && opcode) { /* the rules first: a bad frame is not asked about */
        int ok = s->admit ? s->admit(s->admit_ctx, opcode) : 1;
        if (ok == WS_HOLD) { /* not now: as if this frame had not been read (header undoes) */
            if (fin)
                s->messages--;
            s->msg_opcode = -1;
            s->msg_size = 0;
            return 1;
        }
        s->dropping = !ok;
        if (s->dropping)
            s->dropped++;
    }
    return 0;
}

/* Parse the header at buf[0:avail]: its length, 0 when incomplete, -1 on a framing error, -2
 * when its message is held (WS_HOLD: nothing of the header counted). */
static int header(ws_scan *s, const uint8_t *buf, size_t avail) {
    if (avail < 2)
        return 0;
    int b0 = buf[0], b1 = buf[1];
    uint64_t length = (uint64_t)(b1 & 0x7F);
    size_t size = 2;
    if (length == 126)
        size = 4;
    else if (length == 127)
        size = 10;
    if (b1 & 0x80)
        size += 4;
    if (avail < size)
        return 0;
    if (length == 126) {
        length = (uint64_t)buf[2] << 8 | buf[3];
    } else if (length == 127) {
        length = 0;
        for (int i = 2; i < 10; i++)
            length = length << 8 | buf[i];
        if (length >> 63)
            return fail(s, 1002, "64-bit payload length with the top bit set");
    }
    if (((b1 & 0x80) != 0) != s->masked)
        return fail(s, 1002,
                    s->masked ? "unmasked frame from the client" : "masked frame from the server");
    int opcode = b0 & 0x0F;
    int fin = (b0 & 0x80) != 0;
    if ((b0 & 0x70) && !s->allow_rsv)
        return fail(s, 1002, "reserved bits set without a negotiated extension");
    s->frames++;
    if (opcode <= 2) {
        int r = data_frame(s, opcode, fin, length);
        if (r < 0)
            return -1;
        if (r > 0) {
            s->frames--;
            return -2;
        }
    } else if (opcode >= 8 && opcode <= 10) {
        if (length > 125)
            return fail(s, 1002, "control frame with a %llu-byte payload",
                        (unsigned long long)length);
        if (!fin)
            return fail(s, 1002, "fragmented control frame");
        if (opcode == 8) {
            if (!s->close_seen)
                s->close_seq = __atomic_add_fetch(&close_counter, 1, __ATOMIC_RELAXED);
            s->close_seen = 1;
            s->collecting_close = 1;
            s->close_len = 0;
            s->close_masked = (b1 & 0x80) != 0;
            if (s->close_masked)
                memcpy(s->close_mask, buf + size - 4, 4);
        }
    } else {
        return fail(s, 1002, "reserved opcode %#x", opcode);
    }
    s->remaining = length;
    if (!length && s->collecting_close && finish_close(s))
        return -1;
    return (int)size;
}

/* Append src[0:len] to the output (a no-op count when out is NULL). */
#define EMIT(src, len)                                                                             \
    do {                                                                                           \
        size_t len_ = (len);                                                                       \
        if (out && len_)                                                                           \
            memmove(out + w, (src), len_);                                                         \
        w += len_;                                                                                 \
    } while (0)

size_t ws_scan_feed(ws_scan *s, const uint8_t *data, size_t n, uint8_t *out) {
    size_t w = 0;
    long keep; /* start of the run of data being forwarded; -1 inside a cut frame or held header */
    int gated = s->gated;
    s->bytes += n;
    s->held = 0;
    s->held_at = 0;
    if (!s->remaining && !s->partial_len && s->msg_opcode < 0 && n > 1) {
        /* Fast path, the common case: data is exactly one whole unfragmented text or binary
         * frame (FIN, no RSV, a 7- or 16-bit length, masked as it must be) within the limit.
         * Same outcome as the loop below (frames.py has the same shortcut). */
        int b0 = data[0];
        if ((b0 == 0x81 || b0 == 0x82) && (data[1] & 0x80) == (s->masked ? 0x80 : 0)) {
            uint64_t limit = s->max_message ? s->max_message : (uint64_t)1 << 63;
            uint64_t length = data[1] & 0x7F;
            size_t size = 2;
            if (length == 126) {
                length = n > 3 ? ((uint64_t)data[2] << 8 | data[3]) : limit;
                size = 4;
            }
            if ((length < 127 || size == 4) &&
                size + (s->masked ? 4 : 0) + length == n && length <= limit) {
                s->frames++;
                s->messages++;
                s->fed_at_boundary = 1;
                int ok = !s->gated || !s->admit ? 1 : s->admit(s->admit_ctx, b0 & 0x0F);
                if (ok == WS_HOLD) {
                    s->frames--;
                    s->messages--;
                    s->bytes -= n;
                    s->held = 1;
                    return 0;
                }
                if (ok) {
                    s->dropping = 0;
                    EMIT(data, n);
                    return w;
                }
                s->dropping = 1;
                s->dropped++;
                return 0;
            }
        }
    }
    if (s->remaining) {
        keep = s->frame_kept ? 0 : -1;
        s->fed_at_boundary = !s->frame_kept;
    } else if (s->partial_len) {
        keep = gated ? -1 : 0;
        s->fed_at_boundary = gated;
    } else {
        keep = 0;
        s->fed_at_boundary = 1;
    }
    size_t pos = 0;
    long start = -1; /* where the frame whose header was parsed last starts in data */
    while (pos < n) {
        uint64_t remaining = s->remaining;
        if (remaining) {
            size_t avail = n - pos;
            if (remaining > avail) {
                if (s->collecting_close)
                    collect_close(s, data + pos, avail);
                s->remaining = remaining - avail;
                break;
            }
            if (s->collecting_close) {
                collect_close(s, data + pos, (size_t)remaining);
                if (finish_close(s))
                    goto error;
            }
            pos += (size_t)remaining;
            s->remaining = 0;
            continue;
        }
        if (s->partial_len) { /* only at pos 0: the header started in the previous feed */
            uint8_t buf[2 * WS_MAX_HEADER + 2];
            int plen = s->partial_len;
            size_t take = n < WS_MAX_HEADER ? n : WS_MAX_HEADER;
            memcpy(buf, s->partial, (size_t)plen);
            memcpy(buf + plen, data, take);
            int used = header(s, buf, (size_t)plen + take);
            if (used == -2) { /* held: the header's start stays in partial, data is unread */
                s->bytes -= n;
                s->held = 1;
                return w;
            }
            if (used < 0)
                goto error;
            if (!used) {
                memcpy(s->partial, buf, (size_t)plen + take);
                s->partial_len = plen + (int)take;
                if (keep == 0)
                    EMIT(data, n);
                return w;
            }
            s->partial_len = 0;
            if (!(s->dropping && (buf[0] & 0x0F) < 8) && keep < 0) {
                EMIT(buf, (size_t)plen); /* the held start of a forwarded header */
                keep = 0;
            }
            pos = (size_t)used - (size_t)plen;
            continue;
        }
        start = (long)pos;
        int used = header(s, data + pos, n - pos);
        if (used == -2) { /* held: what precedes the message goes out, the rest is unread */
            if (keep >= 0 && (long)pos > keep)
                EMIT(data + keep, pos - (size_t)keep);
            s->bytes -= n - pos;
            s->held = 1;
            s->held_at = pos;
            return w;
        }
        if (used < 0)
            goto error;
        if (!used) {
            memcpy(s->partial, data + pos, n - pos);
            s->partial_len = (int)(n - pos);
            if (keep >= 0 && gated) { /* hold the header back until it is whole */
                if ((long)pos > keep)
                    EMIT(data + keep, pos - (size_t)keep);
                keep = -1;
            }
            break;
        }
        if (gated) { /* (a plain scanner never cuts: keep stays 0) */
            if (s->dropping && (data[pos] & 0x0F) < 8) { /* a frame of a refused message */
                if (keep >= 0) {
                    if ((long)pos > keep)
                        EMIT(data + keep, pos - (size_t)keep);
                    keep = -1;
                }
            } else if (keep < 0) {
                keep = (long)pos;
            }
        }
        pos += (size_t)used;
    }
    s->frame_kept = keep >= 0; /* the feed may end inside a frame's payload */
    if (keep >= 0 && (size_t)keep < n)
        EMIT(data + keep, n - (size_t)keep);
    return w;
error:
    s->err_offset = start;
    if (start < 0) /* the bad frame began before this feed: nothing of it goes out */
        return 0;
    if (keep >= 0 && start > keep)
        EMIT(data + keep, (size_t)(start - keep));
    return w;
}

long ws_scan_to_boundary(ws_scan *s, const uint8_t *data, size_t n) {
    size_t used = 0;
    while (s->partial_len && used < n) { /* a forwarded split header, byte by byte (<= 13) */
        ws_scan_feed(s, data + used, 1, NULL);
        if (s->err_code)
            return -1;
        used++;
    }
    if (s->partial_len || used == n)
        return (long)used;
    size_t take = n - used;
    if (s->remaining < take)
        take = (size_t)s->remaining;
    if (take) {
        ws_scan_feed(s, data + used, take, NULL);
        if (s->err_code)
            return -1;
    }
    return (long)(used + take);
}
