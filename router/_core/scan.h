/* Incremental WebSocket frame-header scan of one direction, with the throttle gate.
 *
 * A line-by-line port of router/frames.py FrameScanner/GatedScanner (the reference): same
 * checks, same counters, same boundaries, same error kinds, messages and offsets. Pure: no
 * I/O, no allocation, no clock; libc only. Payloads are skipped arithmetically; only the at
 * most 125 bytes of a close frame are kept (its code and reason are worth logging).
 */
#ifndef WSGATE_SCAN_H
#define WSGATE_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define WS_MAX_HEADER 14
/* ws_scan_feed may write up to this many bytes more than it read (a held header). */
#define WS_HEADROOM 16

/* Asked once per new data message (at its first frame): 1 = deliver it, 0 = refuse it (cut out
 * of the stream), WS_HOLD = not now: the feed stops before the message's first frame, as if the
 * bytes from there on had not been read yet (s->held, s->held_at), to be fed again later. */
typedef int (*ws_admit_fn)(void *ctx, int opcode);
#define WS_HOLD (-1)

typedef struct ws_scan {
    /* configuration */
    int masked;           /* frames must be masked (client -> backend) */
    int allow_rsv;        /* an extension was negotiated */
    int gated;            /* messages may be refused (admit is asked) */
    uint64_t max_message; /* 0 = no limit */
    ws_admit_fn admit;
    void *admit_ctx;
    /* counters */
    uint64_t bytes, frames, messages, dropped;
    int dropping;      /* the current data message was refused */
    int close_seen;
    uint64_t close_seq; /* orders close frames across scanners: who closed first */
    int close_code;     /* -1 none yet */
    uint8_t close_reason[125];
    int close_reason_len;
    int fed_at_boundary; /* forwarded stream was between frames before the last feed */
    int held;            /* the last feed stopped at a message admit answered WS_HOLD ... */
    size_t held_at;      /* ... and data[held_at:n] was not consumed (feed it again later) */
    /* frame state */
    uint64_t remaining; /* payload bytes of the current frame still to skip */
    int frame_kept;     /* that frame is forwarded */
    uint8_t partial[WS_MAX_HEADER + 2];
    int partial_len; /* start of a header split across feeds */
    int msg_opcode;  /* -1 between messages */
    uint64_t msg_size;
    int collecting_close; /* a close frame's payload is being collected */
    uint8_t close_buf[125];
    int close_len;
    uint8_t close_mask[4];
    int close_masked;
    /* the error that stopped the stream: 0 none, 1002 or 1009 */
    int err_code;
    long err_offset; /* index in the failing feed where the bad frame starts, -1 earlier */
    char err_msg[96];
} ws_scan;

void ws_scan_init(ws_scan *s, int masked, uint64_t max_message, int allow_rsv, int gated,
                  ws_admit_fn admit, void *admit_ctx);

/* Scan data[0:n]; write the bytes to forward to out (may be data - WS_HEADROOM .. data: the
 * writes never overtake the reads; else a buffer of n + WS_HEADROOM bytes). Returns the count
 * written. On a framing error s->err_code is set and the count is what precedes the bad frame
 * (nothing more may be fed). When admit answered WS_HOLD, s->held is set and the scan stopped
 * at data[held_at] (the held message's first frame, or its header's start held from an earlier
 * feed): the state and counters are as if data[held_at:n] had never been fed; the caller feeds
 * those bytes (and only them, then what follows) again. */
size_t ws_scan_feed(ws_scan *s, const uint8_t *data, size_t n, uint8_t *out);

/* Scan only as much of data as finishes the forwarded frame; return that count (the caller
 * forwards data[0:count] unchanged). -1 on a framing error. */
long ws_scan_to_boundary(ws_scan *s, const uint8_t *data, size_t n);

/* The scanned stream is between frames. */
static inline int ws_scan_at_boundary(const ws_scan *s) {
    return !s->remaining && !s->partial_len;
}

/* The FORWARDED stream is between frames (a frame may be injected there). */
static inline int ws_scan_out_at_boundary(const ws_scan *s) {
    if (s->remaining)
        return !s->frame_kept;
    return !s->partial_len || s->gated;
}

#endif
